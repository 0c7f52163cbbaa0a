"""The exposure log: what was shown to whom, for A/B attribution.

Exposures are buffered in memory and written with one COPY per flush interval, so
the request path never waits on PostgreSQL for them. A crash loses at most one
interval of exposures; shutdown flushes what is buffered.

A row PostgreSQL refuses (a data error: text it cannot store, a constraint) must not
block the rows behind it: a refused COPY is split in halves until the bad rows stand
alone, and those are dropped and counted (`exposures_dropped`). A connection error keeps
every unwritten row for the next flush.
"""

from __future__ import annotations

import asyncio
import logging

import psycopg
from psycopg_pool import AsyncConnectionPool

from core.errors import RecsysError
from core.log_limit import Outage, RateLimitedLog
from orchestrator.stats import Stats

log = logging.getLogger(__name__)
_drops = RateLimitedLog(log)

Row = tuple[str, str, str, str, list[str]]
_COPY = "COPY exposures (request_id, user_id, surface, variant, item_ids) FROM STDIN"
# What PostgreSQL (or psycopg, dumping a value) says about the rows themselves, not the connection.
_ROW_ERRORS = (psycopg.DataError, psycopg.IntegrityError)


class ExposureLog:
    def __init__(self, pool: AsyncConnectionPool, interval_s: float = 0.5, max_buffer: int = 50_000,
                 stats: Stats | None = None) -> None:
        self.pool = pool
        self.interval_s = interval_s
        self.max_buffer = max_buffer
        self.stats = stats
        self.dropped = 0  # rows PostgreSQL refused, since start
        self._rows: list[Row] = []

    @property
    def buffered(self) -> int:
        return len(self._rows)

    def add(self, request_id: str, user_id: str, surface: str, variant: str, item_ids: list[str]) -> None:
        if len(self._rows) >= self.max_buffer:  # PostgreSQL is down or slow: shed, never block serving
            log.warning("exposure buffer full (%d); dropping the oldest", len(self._rows))
            del self._rows[: len(self._rows) // 2]
        self._rows.append((request_id, user_id, surface, variant, item_ids))

    async def flush(self) -> int:
        """Write the buffered rows; returns how many were written. Rows PostgreSQL refuses are dropped;
        on any other error the unwritten rows go back to the head of the buffer and it raises."""
        rows, self._rows = self._rows, []
        pending = [rows] if rows else []  # a stack of batches, the next one last
        written = 0
        while pending:
            batch = pending.pop()
            try:
                await self._copy(batch)
            except _ROW_ERRORS as exc:
                if len(batch) > 1:
                    half = len(batch) // 2
                    pending += [batch[half:], batch[:half]]
                else:
                    self._drop(batch[0], exc)
                continue
            except Exception:
                self._rows[:0] = [row for b in [batch, *reversed(pending)] for row in b]  # for the next try
                raise
            written += len(batch)
        return written

    async def _copy(self, rows: list[Row]) -> None:
        async with self.pool.connection() as conn, conn.cursor() as cur:
            async with cur.copy(_COPY) as cp:
                for row in rows:
                    await cp.write_row(row)

    def _drop(self, row: Row, exc: Exception) -> None:
        self.dropped += 1
        if self.stats is not None:
            self.stats.count("exposures_dropped")
        _drops.warning("exposure", "exposure row of request %r refused by PostgreSQL, dropped: %s",
                       row[0][:64], str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    async def run(self) -> None:
        outage = Outage(log, "exposure flush (rows kept for the next try)", (RecsysError, psycopg.OperationalError))
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.flush()
            except Exception as exc:
                outage.failed(exc)
            else:
                outage.ok()
