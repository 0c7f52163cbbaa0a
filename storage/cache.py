"""Redis keys: the per-user recommendation cache.

One hash per user holds every cached answer for that user (one field per surface, variant,
request shape and model version) and the user's generation: a counter every accepted
interaction bumps. An answer is stored with the generation read before it was computed and
served only while the generation is unchanged, so any interaction (weak or strong) shows in
the next answer, even one logged while that answer was being computed.

A second counter, the history generation, moves only when the user's row or history changes
(interactions, UpsertUser), not when the worker's feature push makes answers stale: the
orchestrator's hot histories (orchestrator/histories.py) are tagged with it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from redis import Redis as SyncRedis
from redis.asyncio import Redis

_PREFIX = "recsys:rec:"
GENERATION = "gen"
HISTORY_GENERATION = "hgen"


def user_key(user_id: str) -> str:
    return f"{_PREFIX}{user_id}"


def fingerprint(*parts: object) -> str:
    """A stable field name for a request shape (surface, variant, k, filters, model version...)."""
    return hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=12).hexdigest()


async def get(redis: Redis, user_id: str, field: str) -> tuple[int, int, bytes | None]:
    """(the user's generation, their history generation, the cached answer if it was written at that
    generation)."""
    gen_raw, history_raw, raw = await redis.hmget(user_key(user_id), [GENERATION, HISTORY_GENERATION, field])
    gen, history = int(gen_raw or 0), int(history_raw or 0)
    if raw is None:
        return gen, history, None
    stored, _, value = raw.partition(b":")
    return gen, history, value if stored.isdigit() and int(stored) == gen else None


async def put(redis: Redis, user_id: str, field: str, generation: int, value: bytes, ttl_s: int) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(user_key(user_id), field, b"%d:" % generation + value)
        pipe.expire(user_key(user_id), ttl_s)
        await pipe.execute()


def _bump(pipe: Any, user_ids: Iterable[str], ttl_s: int, history: bool) -> None:
    for user_id in user_ids:
        pipe.hincrby(user_key(user_id), GENERATION, 1)
        if history:
            pipe.hincrby(user_key(user_id), HISTORY_GENERATION, 1)
        pipe.expire(user_key(user_id), ttl_s)


async def bump(redis: Redis, user_ids: set[str], ttl_s: int) -> dict[str, int]:
    """The users' row or history changed: their cached answers and held histories are stale from now on.
    Each user's new history generation. (Never delete the hash instead: that would reset the generations,
    and an answer computed before could match them again.)"""
    if not user_ids:
        return {}
    order = list(user_ids)
    async with redis.pipeline(transaction=False) as pipe:
        _bump(pipe, order, ttl_s, history=True)
        replies = await pipe.execute()
    return {user_id: int(replies[3 * i + 1]) for i, user_id in enumerate(order)}


def bump_sync(redis: SyncRedis, user_ids: set[str], ttl_s: int) -> None:
    """The users' features changed (the real-time worker): their cached answers are stale; their
    histories, which the worker does not change, are not."""
    if user_ids:
        with redis.pipeline(transaction=False) as pipe:
            _bump(pipe, user_ids, ttl_s, history=False)
            pipe.execute()
