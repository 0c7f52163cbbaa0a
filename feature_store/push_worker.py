"""The real-time worker: interactions stream -> Feast online store, in seconds.

It reads the interactions stream through a consumer group (at-least-once: entries are
acknowledged only after their effects are written), recomputes the touched users'
features from PostgreSQL, the durable record, and pushes them through the Feast push
source, so a replayed entry writes the same features again: processing is idempotent
per interaction by construction. Once a user's features are pushed it bumps the user's
cache generation (storage/cache.py): the next answer is ranked with the new features, and
an interaction whose bump at acknowledgement was lost (a Redis hiccup) still shows.

Entries left pending by a crashed consumer are claimed again after `claim_idle_ms`.
Interactions whose stream entry was never written (Redis down when they were logged)
are caught by a periodic sweep over users whose last activity is newer than the
previous sweep.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

import pandas as pd
import psycopg
import redis

from core.config import Settings
from feature_store.store import feature_store
from feature_store.tables import user_feature_rows
from storage import cache
from storage.streams import GROUP, STREAM, Event

log = logging.getLogger(__name__)

PUSH_SOURCE = "user_features_push"


class PushWorker:
    def __init__(
        self, settings: Settings, consumer: str = "worker-1", batch: int = 500, block_ms: int = 500,
        claim_idle_ms: int = 30_000, sweep_every_s: float = 60.0,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.sweep_every_s = sweep_every_s
        self.redis = redis.Redis.from_url(settings.redis_url)
        self.store = feature_store(settings)
        self.conn = psycopg.connect(settings.database_url, autocommit=True)
        self.processed = 0
        self._last_sweep = datetime.now(UTC)
        try:
            self.redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def run(self, stop: threading.Event) -> None:
        self.drain_pending()
        while not stop.is_set():
            try:
                self.step()
            except Exception as exc:  # Redis or PostgreSQL away: unacknowledged entries wait for us
                log.warning("worker: %s; retrying in 1 s", exc)
                stop.wait(1.0)

    def step(self) -> int:
        n = self._read(">", block=True) + self._claim_stale()
        if datetime.now(UTC) - self._last_sweep >= timedelta(seconds=self.sweep_every_s):
            self.sweep()
        return n

    def drain_pending(self) -> None:
        """Entries this consumer read before a crash or restart but never acknowledged."""
        while self._read("0", block=False):
            pass

    def _read(self, start: str, block: bool) -> int:
        reply = self.redis.xreadgroup(GROUP, self.consumer, {STREAM: start}, count=self.batch,
                                      block=self.block_ms if block else None)
        entries = [(eid, fields) for _, msgs in reply or [] for eid, fields in msgs if fields]
        if entries:
            self.handle(entries)
        return len(entries)

    def _claim_stale(self) -> int:
        """Take over entries another (dead) consumer read but never acknowledged."""
        _, claimed, *_ = self.redis.xautoclaim(STREAM, GROUP, self.consumer, self.claim_idle_ms, "0-0",
                                               count=self.batch)
        entries = [(eid, fields) for eid, fields in claimed if fields]
        if entries:
            self.handle(entries)
        return len(entries)

    def handle(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        events = [Event.from_fields(fields) for _, fields in entries]
        self.push_users(sorted({e.user_id for e in events}))
        cache.bump_sync(self.redis, {e.user_id for e in events}, self.settings.cache_ttl_s)
        self.redis.xack(STREAM, GROUP, *(eid for eid, _ in entries))  # only now: at-least-once
        self.processed += len(entries)

    def push_users(self, user_ids: list[str]) -> None:
        if not user_ids:
            return
        rows = user_feature_rows(self.conn, user_ids, datetime.now(UTC))
        if rows:
            from feast.data_source import PushMode

            self.store.push(PUSH_SOURCE, pd.DataFrame(rows), to=PushMode.ONLINE)

    def sweep(self) -> int:
        """Push users active since the last sweep: catches interactions whose stream entry was lost."""
        since, self._last_sweep = self._last_sweep, datetime.now(UTC)
        users = [r[0] for r in self.conn.execute(
            "SELECT user_id FROM users WHERE last_active_at >= %s", (since - timedelta(seconds=5),))]
        for start in range(0, len(users), self.batch):
            self.push_users(users[start : start + self.batch])
        return len(users)

    def close(self) -> None:
        self.conn.close()
        self.redis.close()
