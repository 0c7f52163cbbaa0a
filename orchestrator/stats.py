"""Serving counters (cache hits and misses, degraded answers), kept in process and added
to a Redis hash every few seconds, so every replica's numbers sum in one place
(`recsys stats`) without a Redis round trip per request."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from redis.asyncio import Redis

log = logging.getLogger(__name__)

KEY = "recsys:stats"


class Stats:
    def __init__(self, redis: Redis, interval_s: float = 5.0) -> None:
        self.redis = redis
        self.interval_s = interval_s
        self.pending: Counter[str] = Counter()

    def count(self, name: str, n: int = 1) -> None:
        self.pending[name] += n

    async def flush(self) -> None:
        delta, self.pending = self.pending, Counter()
        if not delta:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for name, n in delta.items():
                    pipe.hincrby(KEY, name, n)
                await pipe.execute()
        except Exception as exc:  # keep the counts for the next try
            self.pending.update(delta)
            log.warning("stats flush failed: %s", exc)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.flush()


def hit_rate(counts: dict[str, int]) -> float | None:
    hits, misses = counts.get("cache_hit", 0), counts.get("cache_miss", 0)
    return hits / (hits + misses) if hits + misses else None
