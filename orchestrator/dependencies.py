"""The orchestrator's dependencies behind circuit breakers (core/breaker.py): PostgreSQL, Redis,
retrieval and ranking. Callers keep calling the pool, the stubs and Redis as before:

- PostgreSQL: `GuardedPool.connection()` refuses at once while the breaker is open and turns a
  connection failure into Unavailable (UNAVAILABLE to a client, a fail-open path in the pipeline);
  a checkout waits at most `checkout_timeout_s`, never the pool's default 30 s;
- retrieval and ranking: a client interceptor on each channel, so every stub call is guarded;
- Redis: `Breakers.redis_guard()` around the cache's and the interaction log's calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import grpc
import psycopg
import redis.exceptions
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from core import tls, tracing
from core.breaker import Breaker, summary
from core.config import Settings
from core.errors import Unavailable
from storage.db import async_pool

_GRPC_DOWN = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
_HEALTH_CHECK = "/grpc.health.v1.Health/Check"


def _not_answering(exc: BaseException) -> bool:
    """A dependency that did not answer in time or at all (cancelled: our timer gave up on it)."""
    return isinstance(exc, asyncio.CancelledError | TimeoutError | ConnectionError)


def postgres_down(exc: BaseException) -> bool:
    return isinstance(exc, psycopg.OperationalError) or _not_answering(exc)


def redis_down(exc: BaseException) -> bool:
    return isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError) or _not_answering(exc)


def grpc_down(exc: BaseException) -> bool:
    return (isinstance(exc, grpc.aio.AioRpcError) and exc.code() in _GRPC_DOWN) or _not_answering(exc)


class GuardedPool(AsyncConnectionPool):
    """An AsyncConnectionPool whose checkouts go through a breaker."""

    breaker: Breaker | None = None

    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[Any]:
        if self.breaker is None:
            async with super().connection(timeout) as conn:
                yield conn
            return
        try:
            async with self.breaker.guard(), super().connection(timeout) as conn:
                yield conn
        except psycopg.OperationalError as exc:  # the server went away, or no connection in time
            raise Unavailable(f"PostgreSQL unavailable ({summary(exc)})") from exc

    async def probe(self) -> None:
        async with super().connection(timeout=0.5) as conn:
            await conn.execute("SELECT 1")


async def guarded_pool(database_url: str, checkout_timeout_s: float) -> GuardedPool:
    p = await async_pool(database_url, checkout_timeout_s=checkout_timeout_s, cls=GuardedPool)
    assert isinstance(p, GuardedPool)
    p.breaker = Breaker("PostgreSQL", p.probe, postgres_down)
    return p


class BreakerInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Every unary call on the channel through the breaker, except the health check (its probe)."""

    def __init__(self, breaker: Breaker) -> None:
        self.breaker = breaker

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        if details.method in (_HEALTH_CHECK, _HEALTH_CHECK.encode()):
            return await continuation(details, request)
        async with self.breaker.guard():
            call = await continuation(details, request)
            return await call


class CredentialInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds the stack's service token to every call (internal services refuse calls without it)."""

    def __init__(self, token: str) -> None:
        self._pair = ("authorization", f"Bearer {token}")

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = grpc.aio.Metadata(*(details.metadata or ()), self._pair)
        return await continuation(details._replace(metadata=metadata), request)


def guarded_channel(
    name: str, addr: str, options: list[tuple[str, Any]], settings: Settings | None = None,
) -> tuple[grpc.aio.Channel, Breaker]:
    """A channel to an internal service whose calls go through a breaker probed with its health check
    (on the same channel: the probe sees what the calls see, TLS included), with the settings' TLS and
    service token (None: plaintext, no token)."""
    settings = settings or Settings()
    holder: list[grpc.aio.Channel] = []

    async def probe() -> None:
        reply = await health_pb2_grpc.HealthStub(holder[0]).Check(health_pb2.HealthCheckRequest(), timeout=0.5)
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise Unavailable(f"{name} says {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}")

    breaker = Breaker(name, probe, grpc_down)
    interceptors: list[grpc.aio.ClientInterceptor] = [BreakerInterceptor(breaker)]
    if settings.service_token:  # still sent under mutual TLS: a certificate alone does not admit a caller
        interceptors.append(CredentialInterceptor(settings.service_token))
    interceptors += tracing.client_interceptors()
    channel = tls.aio_channel(addr, settings, options=options, interceptors=interceptors)
    holder.append(channel)
    return channel, breaker


@dataclass
class Breakers:
    """The process's breakers (None: unguarded, as in-process tests run)."""

    postgres: Breaker | None = None
    redis: Breaker | None = None
    retrieval: Breaker | None = None
    ranking: Breaker | None = None

    def redis_guard(self) -> AbstractAsyncContextManager[None]:
        return self.redis.guard() if self.redis is not None else nullcontext()

    def all(self) -> list[Breaker]:
        return [b for b in (self.postgres, self.redis, self.retrieval, self.ranking) if b is not None]


def redis_breaker(client: Redis) -> Breaker:
    async def probe() -> None:
        await client.ping()

    return Breaker("Redis", probe, redis_down)
