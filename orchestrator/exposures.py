"""The exposure log: what was shown to whom, for A/B attribution.

Exposures are buffered in memory and written with one COPY per flush interval, so
the request path never waits on PostgreSQL for them. A crash loses at most one
interval of exposures; shutdown flushes what is buffered.
"""

from __future__ import annotations

import asyncio
import logging

from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)

Row = tuple[str, str, str, str, list[str]]
_COPY = "COPY exposures (request_id, user_id, surface, variant, item_ids) FROM STDIN"


class ExposureLog:
    def __init__(self, pool: AsyncConnectionPool, interval_s: float = 0.5, max_buffer: int = 50_000) -> None:
        self.pool = pool
        self.interval_s = interval_s
        self.max_buffer = max_buffer
        self._rows: list[Row] = []

    def add(self, request_id: str, user_id: str, surface: str, variant: str, item_ids: list[str]) -> None:
        if len(self._rows) >= self.max_buffer:  # PostgreSQL is down or slow: shed, never block serving
            log.warning("exposure buffer full (%d); dropping the oldest", len(self._rows))
            del self._rows[: len(self._rows) // 2]
        self._rows.append((request_id, user_id, surface, variant, item_ids))

    async def flush(self) -> int:
        rows, self._rows = self._rows, []
        if not rows:
            return 0
        try:
            async with self.pool.connection() as conn, conn.cursor() as cur:
                async with cur.copy(_COPY) as cp:
                    for row in rows:
                        await cp.write_row(row)
        except Exception:
            self._rows[:0] = rows  # keep them for the next try
            raise
        return len(rows)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.flush()
            except Exception as exc:
                log.warning("exposure flush failed, will retry: %s", exc)
