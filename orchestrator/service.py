"""The Recommender gRPC service (the public API): a thin translation to the orchestrator's logic."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from redis.asyncio import Redis

from core import metrics, tls
from core.breaker import Breaker
from core.config import Settings
from core.errors import InvalidArgument, NotFound
from core.grpc_server import handles_errors, serve
from core.service_auth import auth_on
from orchestrator import config, paging
from orchestrator.auth import api_key_interceptor
from orchestrator.catalog import Catalog
from orchestrator.convert import item_from_pb, item_status, item_to_pb, user_from_pb, user_to_pb
from orchestrator.dependencies import Breakers, GuardedPool, guarded_channel, guarded_pool, redis_breaker
from orchestrator.exposures import ExposureLog
from orchestrator.interactions import log_interactions
from orchestrator.paging import page_size
from orchestrator.rate_limits import RateLimiter, redis_client, scope_defaults
from orchestrator.recommend import Recommender
from orchestrator.stats import Stats
from orchestrator.validation import check_batch, check_id, update_fields
from protos import internal_pb2_grpc as ipb_grpc
from protos import recsys_pb2 as pb
from protos import recsys_pb2_grpc as pb_grpc
from storage import cache
from storage.api_keys import ApiKey, find_key
from storage.items import ITEM_FIELDS, get_item, list_items, upsert_items
from storage.users import USER_FIELDS, get_user, list_users, upsert_user

log = logging.getLogger(__name__)

# A restarted downstream is used again within a second: gRPC's default reconnect backoff
# grows to minutes, and every request in between would be degraded.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class RecommenderServicer(pb_grpc.RecommenderServicer):
    def __init__(self, recommender: Recommender) -> None:
        self.rec = recommender
        self._background: set[asyncio.Task] = set()

    def _after(self, coro) -> None:  # noqa: ANN001
        """Run a side effect after the response; keep a reference so it is not collected."""
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("side effect failed: %s", task.exception())

    @handles_errors
    async def Recommend(self, request: pb.RecommendRequest, context: grpc.aio.ServicerContext) -> pb.RecommendResponse:
        response, after = await self.rec.recommend_with_effects(request, context.time_remaining)
        self._after(after())
        return response

    @handles_errors
    async def SimilarItems(
        self, request: pb.SimilarItemsRequest, context: grpc.aio.ServicerContext
    ) -> pb.SimilarItemsResponse:
        return await self.rec.similar_items(request, context.time_remaining)

    @handles_errors
    async def Trending(self, request: pb.TrendingRequest, context: grpc.aio.ServicerContext) -> pb.TrendingResponse:
        return await self.rec.trending(request, context.time_remaining)

    @handles_errors
    async def LogInteractions(
        self, request: pb.LogInteractionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.LogInteractionsResponse:
        return await log_interactions(self.rec.pool, self.rec.redis, list(request.interactions),
                                      self.rec.settings.cache_ttl_s, self.rec.deps.breakers, self.rec.histories)

    @handles_errors
    async def GetUser(self, request: pb.GetUserRequest, context: grpc.aio.ServicerContext) -> pb.User:
        user_id = check_id("user_id", request.user_id)
        async with self.rec.pool.connection() as conn:
            user = await get_user(conn, user_id)
        if user is None:
            raise NotFound(f"user_id: no user {user_id!r}")
        return user_to_pb(user)

    @handles_errors
    async def UpsertUser(self, request: pb.UpsertUserRequest, context: grpc.aio.ServicerContext) -> pb.User:
        if not request.HasField("user"):
            raise InvalidArgument("user", "is required")
        record = user_from_pb(request.user)
        fields = update_fields(request.update_mask, USER_FIELDS, "the user")
        async with self.rec.pool.connection() as conn:
            stored = user_to_pb(await upsert_user(conn, record, fields))
        # the new demographics and preferences show in the next answer: this process's hot history goes,
        # and the generation bump makes the others' (and the cached answers) stale
        self.rec.histories.forget([record.user_id])
        try:
            async with self.rec.deps.breakers.redis_guard():
                await cache.bump(self.rec.redis, {record.user_id}, self.rec.settings.cache_ttl_s)
        except Exception as exc:  # noqa: BLE001 - stored; cached answers and held histories age out
            log.debug("user stored; the cache bump skipped: %s", exc)
        return stored

    @handles_errors
    async def GetItem(self, request: pb.GetItemRequest, context: grpc.aio.ServicerContext) -> pb.Item:
        item_id = check_id("item_id", request.item_id)
        async with self.rec.pool.connection() as conn:
            item = await get_item(conn, item_id)
        if item is None:
            raise NotFound(f"item_id: no item {item_id!r}")
        return item_to_pb(item)

    @handles_errors
    async def ListItems(self, request: pb.ListItemsRequest, context: grpc.aio.ServicerContext) -> pb.ListItemsResponse:
        size = page_size(request.page_size)
        status = item_status(request.status) if request.status != pb.ITEM_STATUS_UNSPECIFIED else ""
        start = paging.after(request.page_token, "items", status)
        async with self.rec.pool.connection() as conn:
            rows = await list_items(conn, start, size + 1, status or None)
        more, rows = len(rows) > size, rows[:size]
        return pb.ListItemsResponse(items=[item_to_pb(r) for r in rows],
                                    next_page_token=paging.token("items", rows[-1].item_id, status) if more else "")

    @handles_errors
    async def ListUsers(self, request: pb.ListUsersRequest, context: grpc.aio.ServicerContext) -> pb.ListUsersResponse:
        size = page_size(request.page_size)
        start = paging.after(request.page_token, "users")
        async with self.rec.pool.connection() as conn:
            rows = await list_users(conn, start, size + 1)
        more, rows = len(rows) > size, rows[:size]
        return pb.ListUsersResponse(users=[user_to_pb(r) for r in rows],
                                    next_page_token=paging.token("users", rows[-1].user_id) if more else "")

    @handles_errors
    async def UpsertItems(
        self, request: pb.UpsertItemsRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpsertItemsResponse:
        check_batch("items", len(request.items))
        fields = update_fields(request.update_mask, ITEM_FIELDS, "item")
        records = [item_from_pb(it, f"items[{i}]") for i, it in enumerate(request.items)]
        ids = [r.item_id for r in records]
        if len(set(ids)) != len(ids):
            raise InvalidArgument("items", "holds the same item_id more than once")
        async with self.rec.pool.connection() as conn:
            upserted, created = await upsert_items(conn, records, fields)
        await self.rec.catalog.refresh()  # this replica sees the change at once (status, metadata)
        return pb.UpsertItemsResponse(upserted=upserted, created=created)


def export_gauges(pool: GuardedPool, exposures: ExposureLog, breakers: Breakers, recommender: Recommender) -> None:
    """What /metrics reads at scrape time (core/metrics.py): nothing on the request path."""
    metrics.gauge("recsys_dependency_up", "1 while the dependency's circuit breaker is closed, 0 while open",
                  ["dependency"], lambda: [([b.name], 0.0 if b.is_open else 1.0) for b in breakers.all()])
    metrics.gauge("recsys_dependency_trips", "times the dependency's breaker opened since start", ["dependency"],
                  lambda: [([b.name], float(b.trips)) for b in breakers.all()])
    metrics.gauge("recsys_db_pool", "the PostgreSQL pool: pool_size, pool_available, requests_waiting", ["stat"],
                  lambda: [([k], float(v)) for k, v in pool.get_stats().items()
                           if k in ("pool_size", "pool_available", "requests_waiting")])
    metrics.gauge("recsys_exposure_buffer_rows", "exposure rows waiting for the next COPY", [],
                  lambda: [([], float(exposures.buffered))])
    held = recommender.histories
    metrics.gauge("recsys_hot_histories", "users' histories held in memory (orchestrator/histories.py): users, "
                  "items, and lookups found (hits) or not (misses) since start", ["stat"],
                  lambda: [(["users"], float(len(held))), (["items"], float(held.size)),
                           (["hits"], float(held.hits)), (["misses"], float(held.misses))])
    metrics.info("recsys_model_version", "the model version this replica last saw retrieval serve",
                 lambda: {"version": recommender.versions.current})


@dataclass
class Downstream:
    """Retrieval and ranking as the orchestrator calls them: gRPC stubs over guarded channels to the
    separate services, or stubs over servicers loaded in this process (the co-located deployment,
    recsys/colocated.py; core/in_process.py). Either way they raise AioRpcError, so every fail-open
    path is the same."""

    retrieval: Any  # ipb_grpc.RetrievalStub, or an InProcessStub over a RetrievalServicer
    ranking: Any  # ipb_grpc.RankingStub, or an InProcessStub over a RankingServicer
    retrieval_breaker: Breaker | None = None
    ranking_breaker: Breaker | None = None
    healthy: Callable[[], bool] = lambda: True  # co-located: a model is loaded
    close: Callable[[], Awaitable[None]] | None = None


def remote_downstream(settings: Settings) -> Downstream:
    """The separate deployment: channels to the retrieval and ranking services, each behind a breaker."""
    if not settings.service_token:
        log.warning("RECSYS_SERVICE_TOKEN is not set: calls to retrieval and ranking carry no service token "
                    "(they refuse them unless their auth is off)")
    retrieval_channel, retrieval_breaker = guarded_channel(
        "retrieval", settings.retrieval_addr, CHANNEL_OPTIONS, settings)  # the settings' TLS and service token
    ranking_channel, ranking_breaker = guarded_channel(
        "ranking", settings.ranking_addr, CHANNEL_OPTIONS, settings)

    async def close() -> None:
        await retrieval_channel.close()
        await ranking_channel.close()

    return Downstream(ipb_grpc.RetrievalStub(retrieval_channel), ipb_grpc.RankingStub(ranking_channel),
                      retrieval_breaker, ranking_breaker, close=close)


async def run(settings: Settings, downstream: Downstream | None = None) -> None:
    """Serve the Recommender; `downstream` None: the separate retrieval and ranking services."""
    authenticate = auth_on(settings, settings.orchestrator_addr)  # before loading: a wrong setting fails fast
    server_tls = tls.server_tls(settings)
    rate_defaults = scope_defaults(settings)
    pool = await guarded_pool(settings.database_url, settings.db_checkout_timeout_s)
    redis = Redis.from_url(settings.redis_url, socket_timeout=0.25, socket_connect_timeout=0.25)
    catalog = Catalog(pool)
    await catalog.refresh()
    await catalog.refresh_popular()
    stats = Stats(redis)
    exposures = ExposureLog(pool, stats=stats)  # counts the rows PostgreSQL refuses (exposures_dropped)
    background = [asyncio.create_task(t) for t in (catalog.watch(), exposures.run(), stats.run())]
    down = downstream or remote_downstream(settings)
    breakers = Breakers(pool.breaker, redis_breaker(redis), down.retrieval_breaker, down.ranking_breaker)
    recommender = Recommender(
        settings, pool, redis, down.retrieval, down.ranking, catalog, exposures, config.load(settings.config_path),
        stats, breakers,
    )
    background.append(asyncio.create_task(recommender.versions.watch()))
    export_gauges(pool, exposures, breakers, recommender)
    # rate limits only with API keys (no key, no limit); the limiter's own client: a tighter timeout
    limiter = RateLimiter(redis_client(settings.redis_url), rate_defaults, breakers.redis) if authenticate else None

    def register(server: grpc.aio.Server) -> None:
        pb_grpc.add_RecommenderServicer_to_server(RecommenderServicer(recommender), server)

    async def close() -> None:
        for task in background:
            task.cancel()
        for b in breakers.all():
            b.stop()
        await exposures.flush()
        await stats.flush()
        if down.close is not None:
            await down.close()
        await redis.aclose()
        if limiter is not None:
            await limiter.aclose()
        await pool.close()

    interceptors = [api_key_interceptor(lambda key: _find_key(pool, key), limiter)] if authenticate else []
    # not ready while PostgreSQL cannot be reached at all (its breaker open): answers are cold starts
    await serve(settings.orchestrator_addr, ["Recommender"], register, on_shutdown=close,
                metrics_addr=settings.orchestrator_metrics_addr, extra_interceptors=interceptors,
                reflect=settings.reflection, tls=server_tls, reuse_port=settings.orchestrator_processes > 1,
                healthy=lambda: not breakers.postgres.is_open and down.healthy())


async def _find_key(pool: GuardedPool, key: str) -> ApiKey | None:
    async with pool.connection() as conn:
        return await find_key(conn, key)
