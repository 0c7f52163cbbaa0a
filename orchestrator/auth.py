"""API keys on the public API: `authorization: Bearer <key>` on every Recommender call (docs/security.md).

Scopes: read (Recommend, SimilarItems, Trending, GetUser, GetItem), write (read's, and LogInteractions,
UpsertUser, UpsertItems), admin (everything, a method added later included). A missing or unknown key is
UNAUTHENTICATED, a key without the scope PERMISSION_DENIED. Health checks and reflection stay open.

Keys are looked up in PostgreSQL and remembered for TTL_S: a revoked key stops working within about a
second, and a busy client costs PostgreSQL one lookup per second per replica, not one per call. While
PostgreSQL is down, keys already remembered keep working (their entry is kept until it answers again);
a key not seen before gets UNAVAILABLE (retry), since it can be neither accepted nor refused.

A key that may make the call is then held to its rate limits (orchestrator/rate_limits.py): its limits
come with its record, so a change reaches every replica within TTL_S too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from core.log_limit import RateLimitedLog
from core.service_auth import CheckingInterceptor, bearer
from orchestrator.rate_limits import RateLimiter
from protos import recsys_pb2
from storage.api_keys import SCOPES, ApiKey

SERVICE = "/" + recsys_pb2.DESCRIPTOR.services_by_name["Recommender"].full_name + "/"
READ = ("Recommend", "SimilarItems", "Trending", "GetUser", "GetItem", "ListItems")
WRITE = ("LogInteractions", "UpsertUser", "UpsertItems")
METHOD_SCOPE = {**{m: "read" for m in READ}, **{m: "write" for m in WRITE}}  # any other method: admin
TTL_S = 1.0
MAX_ENTRIES = 10_000  # unknown keys are remembered too: a flood of made-up keys cannot grow memory past this

_unchecked = RateLimitedLog(logging.getLogger(__name__))
Lookup = Callable[[str], Awaitable[ApiKey | None]]


def required_scope(method: str) -> str:
    """The scope a full method name ("/recsys.v1.Recommender/Recommend") needs."""
    return METHOD_SCOPE.get(method.rsplit("/", 1)[-1], "admin")


def allows(scope: str, needed: str) -> bool:
    return SCOPES.index(scope) >= SCOPES.index(needed)


class KeyCache:
    """Key -> its record (None: unknown), each for TTL_S; least recently used entries go first."""

    def __init__(self, lookup: Lookup, ttl_s: float = TTL_S, max_entries: int = MAX_ENTRIES) -> None:
        self._lookup = lookup
        self._ttl_s = ttl_s
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[float, ApiKey | None]] = OrderedDict()
        self._pending: dict[str, asyncio.Task[ApiKey | None]] = {}

    async def get(self, key: str) -> ApiKey | None:
        entry = self._entries.get(key)
        if entry is not None and entry[0] > time.monotonic():
            self._entries.move_to_end(key)
            return entry[1]
        task = self._pending.get(key)
        if task is None:  # one lookup per key at a time: concurrent calls share it, and a caller that
            task = asyncio.create_task(self._refresh(key, entry))  # gives up (deadline) does not cancel it
            self._pending[key] = task
            task.add_done_callback(lambda t: self._done(key, t))
        return await asyncio.shield(task)

    async def _refresh(self, key: str, entry: tuple[float, ApiKey | None] | None) -> ApiKey | None:
        try:
            found = await self._lookup(key)
        except Exception:
            if entry is None:
                raise
            found = entry[1]  # PostgreSQL away: the remembered answer holds until it is back
        self._entries[key] = (time.monotonic() + self._ttl_s, found)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return found

    def _done(self, key: str, task: asyncio.Task[ApiKey | None]) -> None:
        self._pending.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" warning when every caller gave up


def api_key_interceptor(lookup: Lookup, limiter: RateLimiter | None = None) -> CheckingInterceptor:
    """The Recommender's API-key check; `lookup` finds a key's record in PostgreSQL; `limiter`, when given,
    refuses a call over the key's rate limits."""
    cache = KeyCache(lookup)

    async def check(method: str, request: Any, context: grpc.aio.ServicerContext) -> None:
        key = bearer(context.invocation_metadata())
        if not key:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "missing API key: send metadata 'authorization: Bearer <key>' "
                                "(an operator creates one with `recsys keys create --scope read`)")
        try:
            found = await cache.get(key)
        except Exception as exc:  # Unavailable (PostgreSQL down, breaker open), or a query that failed
            _unchecked.warning("api-key", "cannot check an API key: %s", exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "cannot check the API key now (PostgreSQL "
                                "unavailable): retry")
        if found is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "unknown API key: check it, or create one with `recsys keys create`")
        if found.revoked_at is not None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                f"API key {found.id} was revoked: create a new one with `recsys keys create`")
        needed = required_scope(method)
        if not allows(found.scope, needed):
            name = method.rsplit("/", 1)[-1]
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"API key {found.id} has scope {found.scope!r}; {name} needs {needed!r}: "
                                f"use a key created with `recsys keys create --scope {needed}`")
        if limiter is not None:
            await limiter.enforce(found, request, context)

    return CheckingInterceptor(check, lambda method: method.startswith(SERVICE))
