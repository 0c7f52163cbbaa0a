"""The real-time worker: interactions stream -> Feast online store, in seconds.

It reads the interactions stream through a consumer group (at-least-once: entries are
acknowledged only after their effects are written), recomputes the touched users' features
from PostgreSQL, the durable record, and pushes them through the Feast push source, so a
replayed entry writes the same features again: processing is idempotent per interaction by
construction. Once a user's features are pushed it bumps the user's cache generation
(storage/cache.py): the next answer is ranked with the new features, and an interaction
whose bump at acknowledgement was lost (a Redis hiccup) still shows.

Entries left pending by a crashed consumer are claimed again after `claim_idle_ms`; a
malformed entry is acknowledged and dropped (PostgreSQL holds the interaction, a sweep
pushes its user). Interactions whose stream entry was never written (Redis down when they
were logged) are caught by a periodic sweep over the users active since the online store
was last in sync with PostgreSQL.

Faults. The sync point is a marker in the online store itself (schema.synced_key, set by
materialize and advanced by every sweep), not in the worker's memory, so a restarted worker
catches up on what it missed while it was down, and the marker is lost or rolled back with
the data it describes: it needs no table of its own, and a PostgreSQL copy could not tell a
wiped store from a full one. Any error (PostgreSQL or Redis away, the consumer group gone)
is logged once; the loop retries every `retry_s` and, on the first success, recovers:

1. the consumer group, created again at id 0 when Redis lost it (restarted empty: the
   stream comes back with the next XADD, the group does not), so entries written since
   are read too;
2. the online store: no marker means it was wiped; it is rebuilt with `materialize` (item
   and user features from PostgreSQL, which also bumps the feature version, so ranking
   reloads its item features from the refilled store);
3. this consumer's own unacknowledged entries, read during the fault (otherwise they would
   wait `claim_idle_ms`);
4. a sweep from the marker: every user whose features may lag PostgreSQL.

PostgreSQL is one connection, replaced when it is closed or broken (PostgreSQL restarted):
psycopg_pool's reconnection backs off exponentially (1, 2, 4, ... s), which after a long
outage would leave the worker idle long after the server is back; a fixed retry of
`retry_s` reconnects within that of PostgreSQL serving again. For the same reason the
worker's Redis client does not retry by itself. While a fault lasts `healthy` is False
(the service's health check says NOT_SERVING); when idle the worker probes PostgreSQL
every `probe_every_s` so an outage shows without waiting for traffic.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

import pandas as pd
import psycopg
import redis
from prometheus_client import Counter, Histogram
from redis.backoff import NoBackoff
from redis.retry import Retry

from core.config import Settings
from core.metrics import LATENCY_BUCKETS
from feature_store.schema import synced_key
from feature_store.store import feature_store, materialize
from feature_store.tables import user_feature_rows
from storage import cache
from storage.streams import GROUP, STREAM, Event

log = logging.getLogger(__name__)

PUSH_SOURCE = "user_features_push"

ENTRIES = Counter("recsys_worker_entries", "interaction stream entries handled (features pushed, acknowledged)")
LAG = Histogram("recsys_worker_lag_seconds", "from an interaction's stream entry to its user's features pushed",
                buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0))
PUSH_SECONDS = Histogram("recsys_worker_push_seconds", "one push: features from PostgreSQL, written through Feast",
                         buckets=LATENCY_BUCKETS)
# last_active_at is the logging transaction's start time (PostgreSQL's clock): one committed
# late, or a skew between this host's clock and the server's, still falls inside a sweep.
SWEEP_OVERLAP_S = 5.0

Entries = list[tuple[bytes, dict[bytes, bytes] | None]]


class OnlineStoreLost(RuntimeError):
    """The online store's sync marker vanished while the worker ran (Redis wiped)."""


class PushWorker:
    def __init__(
        self, settings: Settings, consumer: str = "worker-1", batch: int = 500, block_ms: int = 500,
        claim_idle_ms: int = 30_000, sweep_every_s: float = 60.0, retry_s: float = 0.5, probe_every_s: float = 1.0,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.sweep_every_s = sweep_every_s
        self.retry_s = retry_s
        self.probe_every_s = probe_every_s
        self.redis = redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=2, socket_timeout=block_ms / 1000 + 5,
            retry=Retry(NoBackoff(), 0),  # run() retries and then recovers
        )
        self.store = feature_store(settings)
        self._synced_key = synced_key(settings.feast_project)
        self._conn: psycopg.Connection | None = None
        self.processed = 0
        self.rebuilds = 0  # online store rebuilds (Redis came back empty)
        self.failed_attempts = 0  # loop iterations that failed (each fault's retries)
        self.healthy = False  # reaches Redis and PostgreSQL, recovered
        self._must_recover = True  # at start, and after any fault
        self._fault_since: float | None = None
        self._next_sweep = 0.0
        self._next_probe = 0.0

    # ------------------------------------------------------------------ the loop

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                if self._must_recover:
                    self.recover()
                self.step()
            except Exception as exc:  # unacknowledged entries wait for us
                self._fault(exc)
                stop.wait(self.retry_s)

    def step(self) -> int:
        n = self._read(">", block=True) + self._claim_stale()
        now = time.monotonic()
        if now >= self._next_sweep:
            self.sweep()
        elif not n and now >= self._next_probe:
            self._db().execute("SELECT 1")
            self._next_probe = now + self.probe_every_s
        return n

    def recover(self) -> None:
        """Group, online store, own pending entries, sweep: see the module docstring."""
        self._ensure_group()
        if self._synced_at() is None:
            self.rebuild()
        self.drain_pending()
        self.sweep()
        self._must_recover = False
        self.healthy = True
        if self._fault_since is not None:
            log.info("worker: recovered after %.1f s", time.monotonic() - self._fault_since)
            self._fault_since = None

    def _fault(self, exc: Exception) -> None:
        if isinstance(exc, psycopg.OperationalError) and self._conn is not None:
            self._conn.close()  # a new one next time
            self._conn = None
        self.healthy = False
        self._must_recover = True
        self.failed_attempts += 1
        if self._fault_since is None:  # once per outage; the recovery is logged too
            self._fault_since = time.monotonic()
            expected = isinstance(exc, psycopg.OperationalError | redis.ConnectionError | redis.TimeoutError
                                  | redis.ResponseError | OnlineStoreLost)
            log.warning("worker: %s; retrying every %.1f s", _describe(exc), self.retry_s, exc_info=not expected)

    # ------------------------------------------------------------------ the stream

    def _ensure_group(self) -> None:
        try:
            self.redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        else:
            log.info("worker: created consumer group %s on %s", GROUP, STREAM)

    def drain_pending(self) -> None:
        """Entries this consumer read before a crash, a restart or a fault but never acknowledged."""
        while self._read("0", block=False):
            pass

    def _read(self, start: str, block: bool) -> int:
        reply = self.redis.xreadgroup(GROUP, self.consumer, {STREAM: start}, count=self.batch,
                                      block=self.block_ms if block else None)
        entries = [(eid, fields) for _, msgs in reply or [] for eid, fields in msgs]
        if entries:
            self.handle(entries)
        return len(entries)

    def _claim_stale(self) -> int:
        """Take over entries another (dead) consumer read but never acknowledged."""
        _, claimed, *_ = self.redis.xautoclaim(STREAM, GROUP, self.consumer, self.claim_idle_ms, "0-0",
                                               count=self.batch)
        if claimed:
            self.handle(claimed)
        return len(claimed)

    def handle(self, entries: Entries) -> None:
        events: list[Event] = []
        malformed = 0
        for _, fields in entries:
            if not fields:  # trimmed from the stream while pending: nothing left to read
                continue
            try:
                events.append(Event.from_fields(fields))
            except (KeyError, ValueError, UnicodeDecodeError):
                malformed += 1
        if malformed:
            log.warning("worker: dropped %d malformed stream entries", malformed)
        users = {e.user_id for e in events}
        self.push_users(sorted(users))
        cache.bump_sync(self.redis, users, self.settings.cache_ttl_s)
        self.redis.xack(STREAM, GROUP, *(eid for eid, _ in entries))  # only now: at-least-once
        self.processed += len(entries)
        ENTRIES.inc(len(entries))
        now_ms = time.time() * 1000
        for eid, _ in entries:  # a stream id starts with the milliseconds Redis wrote it at
            LAG.observe(max(0.0, now_ms - int(eid.split(b"-")[0])) / 1000)

    # ------------------------------------------------------------------ features

    def _db(self) -> psycopg.Connection:
        """The worker's connection to PostgreSQL, replaced when closed or broken."""
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.settings.database_url, autocommit=True, connect_timeout=2)
        return self._conn

    def push_users(self, user_ids: list[str]) -> None:
        if not user_ids:
            return
        start = time.perf_counter()
        rows = user_feature_rows(self._db(), user_ids, datetime.now(UTC))
        if rows:
            from feast.data_source import PushMode

            self.store.push(PUSH_SOURCE, pd.DataFrame(rows), to=PushMode.ONLINE)
        PUSH_SECONDS.observe(time.perf_counter() - start)

    def _synced_at(self) -> float | None:
        raw = self.redis.get(self._synced_key)
        return float(raw) if raw is not None else None

    def rebuild(self) -> int:
        """Refill a wiped online store from PostgreSQL (item and user features); returns the rows."""
        log.warning("worker: the online store has no sync marker (Redis restarted empty?): rebuilding it")
        started = time.monotonic()
        n = materialize(self.settings)
        self.rebuilds += 1
        log.info("worker: online store rebuilt from PostgreSQL (%d rows) in %.1f s", n, time.monotonic() - started)
        return n

    def sweep(self) -> int:
        """Push every user active since the online store was last in sync with PostgreSQL.

        Catches interactions whose stream entry was lost, and what happened while no worker
        ran. The marker moves to the sweep's start only if it still exists (SET XX): a store
        wiped meanwhile keeps no marker, so it is rebuilt rather than taken for in sync.
        """
        since = self._synced_at()
        if since is None:
            raise OnlineStoreLost("the online store lost its sync marker (Redis wiped?)")
        conn = self._db()
        row = conn.execute("SELECT extract(epoch FROM statement_timestamp())::float8").fetchone()
        assert row is not None
        users = [r[0] for r in conn.execute(
            "SELECT user_id FROM users WHERE last_active_at >= to_timestamp(%s)", (since - SWEEP_OVERLAP_S,))]
        for start in range(0, len(users), self.batch):
            self.push_users(users[start : start + self.batch])
        self.redis.set(self._synced_key, repr(row[0]), xx=True)
        self._next_sweep = time.monotonic() + self.sweep_every_s
        return len(users)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self.redis.close()


def _describe(exc: Exception) -> str:
    """One line naming what failed: the first line of the error, after the server it came from."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, psycopg.Error):
        return f"PostgreSQL: {first}"
    if isinstance(exc, redis.RedisError):
        return f"Redis: {first}"
    return f"{type(exc).__name__}: {first}"
