"""Redis keys: the per-user recommendation cache.

One hash per user holds every cached answer for that user (one field per surface,
variant and request shape), so a strong event invalidates them all with one DEL.
"""

from __future__ import annotations

import hashlib

from redis.asyncio import Redis

_PREFIX = "recsys:rec:"


def user_key(user_id: str) -> str:
    return f"{_PREFIX}{user_id}"


def fingerprint(*parts: object) -> str:
    """A stable field name for a request shape (surface, variant, k, filters...)."""
    return hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=12).hexdigest()


async def get(redis: Redis, user_id: str, field: str) -> bytes | None:
    return await redis.hget(user_key(user_id), field)


async def put(redis: Redis, user_id: str, field: str, value: bytes, ttl_s: int) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(user_key(user_id), field, value)
        pipe.expire(user_key(user_id), ttl_s)
        await pipe.execute()


async def invalidate_user(redis: Redis, user_id: str) -> None:
    await redis.delete(user_key(user_id))
