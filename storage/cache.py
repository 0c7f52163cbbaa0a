"""Redis keys: the per-user recommendation cache.

One hash per user holds every cached answer for that user (one field per surface, variant,
request shape and model version) and the user's generation: a counter every accepted
interaction bumps. An answer is stored with the generation read before it was computed and
served only while the generation is unchanged, so any interaction (weak or strong) shows in
the next answer, even one logged while that answer was being computed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from redis import Redis as SyncRedis
from redis.asyncio import Redis

_PREFIX = "recsys:rec:"
GENERATION = "gen"


def user_key(user_id: str) -> str:
    return f"{_PREFIX}{user_id}"


def fingerprint(*parts: object) -> str:
    """A stable field name for a request shape (surface, variant, k, filters, model version...)."""
    return hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=12).hexdigest()


async def get(redis: Redis, user_id: str, field: str) -> tuple[int, bytes | None]:
    """(the user's generation, the cached answer if it was written at that generation)."""
    gen_raw, raw = await redis.hmget(user_key(user_id), [GENERATION, field])
    gen = int(gen_raw or 0)
    if raw is None:
        return gen, None
    stored, _, value = raw.partition(b":")
    return gen, value if stored.isdigit() and int(stored) == gen else None


async def put(redis: Redis, user_id: str, field: str, generation: int, value: bytes, ttl_s: int) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(user_key(user_id), field, b"%d:" % generation + value)
        pipe.expire(user_key(user_id), ttl_s)
        await pipe.execute()


def _bump(pipe: Any, user_ids: Iterable[str], ttl_s: int) -> None:
    for user_id in user_ids:
        pipe.hincrby(user_key(user_id), GENERATION, 1)
        pipe.expire(user_key(user_id), ttl_s)


async def bump(redis: Redis, user_ids: set[str], ttl_s: int) -> None:
    """The users did something: their cached answers are stale from now on. (Never delete the hash
    instead: that would reset the generation, and an answer computed before could match it again.)"""
    if not user_ids:
        return
    async with redis.pipeline(transaction=False) as pipe:
        _bump(pipe, user_ids, ttl_s)
        await pipe.execute()


def bump_sync(redis: SyncRedis, user_ids: set[str], ttl_s: int) -> None:
    """bump() for a synchronous client (the real-time worker)."""
    if user_ids:
        with redis.pipeline(transaction=False) as pipe:
            _bump(pipe, user_ids, ttl_s)
            pipe.execute()
