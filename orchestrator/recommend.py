"""The Recommender's RPCs as query -> pipeline -> response: Recommend, SimilarItems, Trending.

Plain async Python over its dependencies (pool, Redis, two gRPC stubs, the catalogue), so
tests call it without a server. The validation layer (orchestrator/validation.py) turns a
request into a query; the pipelines (orchestrator/pipelines.py) are lists of the registered
components; this module looks up the cache, runs the pipeline and decorates the answer.
Side effects (cache write, exposure log) run after the response is sent.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from core import tracing
from core.config import Settings
from core.errors import NotFound
from core.log_limit import RateLimitedLog
from core.logs import set_request, user_hash
from orchestrator.cache import ModelVersion, RecommendationCache
from orchestrator.catalog import Catalog
from orchestrator.config import OrchestratorConfig
from orchestrator.convert import item_to_pb
from orchestrator.dependencies import Breakers
from orchestrator.exposures import ExposureLog
from orchestrator.histories import HotHistories
from orchestrator.hydrators import HISTORY_LIMIT
from orchestrator.pipeline import Candidate, Pipeline, StageRecord, Trace
from orchestrator.pipelines import Pipelines
from orchestrator.query import RECOMMEND, SIMILAR_ITEMS, TRENDING, Deps, RequestQuery
from orchestrator.reasons import reason
from orchestrator.sources.retrieval import RECENT_FOR_MODEL
from orchestrator.stats import Stats
from orchestrator.validation import recommend_query, similar_query, trending_query
from protos import internal_pb2_grpc as ipb_grpc
from protos import recsys_pb2 as pb
from storage.records import ItemRecord

__all__ = ["HISTORY_LIMIT", "RECENT_FOR_MODEL", "Recommender"]

Remaining = Callable[[], float | None]
After = Callable[[], Awaitable[None]]
Answer = pb.RecommendResponse | pb.SimilarItemsResponse | pb.TrendingResponse

# An answer's size, well under the 4 MiB a gRPC client accepts by default (docs/api-limits.md): k up to 500
# items with up to 10,000-character descriptions and 16 KiB of attributes each would be far more.
MAX_RESPONSE_BYTES = 2 * 1024 * 1024
MAX_ITEM_MESSAGES = 200_000  # items' messages kept for decoration; all dropped at once past it


def bound_response(response: Answer, limit: int = MAX_RESPONSE_BYTES) -> None:
    """Over the limit, items lose their description and attributes, then their metadata (GetItem has it
    all), the last items first: the top of the list keeps everything."""
    size = response.ByteSize()
    for strip in (_strip_long_fields, _strip_metadata):
        for scored in reversed(response.items):
            if size <= limit:
                return
            if scored.HasField("item"):
                before = scored.ByteSize()
                strip(scored)
                size -= before - scored.ByteSize()


def _strip_long_fields(scored: pb.ScoredItem) -> None:
    scored.item.ClearField("description")
    scored.item.ClearField("attributes")


def _strip_metadata(scored: pb.ScoredItem) -> None:
    scored.ClearField("item")


def stage_traces(trace: Trace) -> list[pb.StageTrace]:
    return [_stage_pb(r) for r in trace.stages]


def _stage_pb(r: StageRecord) -> pb.StageTrace:
    st = pb.StageTrace(stage=r.stage, candidates_in=r.candidates_in, candidates_out=r.candidates_out,
                       latency_ms=r.latency_ms, note=r.note, removed=r.removed, start_ms=r.start_ms,
                       outcome=r.outcome)
    for name, ids in r.removed_ids.items():
        st.removed_item_ids[name].item_ids.extend(ids)
    return st


log = logging.getLogger(__name__)


class Recommender:
    def __init__(
        self, settings: Settings, pool: AsyncConnectionPool, redis: Redis,
        retrieval: ipb_grpc.RetrievalStub, ranking: ipb_grpc.RankingStub, catalog: Catalog,
        exposures: ExposureLog, config: OrchestratorConfig | None = None, stats: Stats | None = None,
        breakers: Breakers | None = None,
    ) -> None:
        self.settings = settings
        self.config = config or OrchestratorConfig()
        self.catalog = catalog
        histories = HotHistories(settings.hot_history_items, min(settings.hot_history_max_age_s, settings.cache_ttl_s))
        self.deps = Deps(settings, pool, redis, retrieval, ranking, catalog, exposures, stats or Stats(redis),
                         breakers or Breakers(), histories)
        self.histories = histories
        self.stats = self.deps.stats
        self.pool, self.redis = pool, redis
        self.versions = ModelVersion(self.deps)
        self.cache = RecommendationCache(self.deps, self.versions)
        self.pipelines = Pipelines(self.deps)
        self._degraded_log = RateLimitedLog(log, interval_s=10.0)
        self._items_pb: dict[str, tuple[ItemRecord, pb.Item]] = {}  # item id -> (record, its message)

    # ------------------------------------------------------------------ Recommend

    async def recommend(self, req: pb.RecommendRequest, remaining: Remaining) -> pb.RecommendResponse:
        """The answer, its side effects run before returning (tests, batch jobs)."""
        response, after = await self.recommend_with_effects(req, remaining)
        await after()
        return response

    async def recommend_with_effects(
        self, req: pb.RecommendRequest, remaining: Remaining,
    ) -> tuple[pb.RecommendResponse, After]:
        """The answer, and its side effects (cache write, exposure log) to run once it is sent."""
        q = recommend_query(req, self.config, remaining)
        set_request(request_id=q.request_id, user=user_hash(q.user_id), surface=q.surface)
        tracing.annotate(request_id=q.request_id, surface=q.surface)
        q.scratch["request"] = req
        pipeline = self.pipelines.recommend(q.params.sources)
        cached = await self.cache.lookup(q, req)
        if cached is not None and req.debug:  # a debug call reports the hit and recomputes, to show the trace
            q.scratch["cache_hit"], cached = True, None
        if cached is not None:
            cached.request_id = q.request_id
            q.scratch["cache_hit"] = True
            return cached, self._effects(pipeline, q, cached)
        chosen = await pipeline.run(q)
        self.versions.seen(q.model_version)
        response = pb.RecommendResponse(
            request_id=q.request_id, model_version=q.model_version, experiment_variant=q.variant,
            degraded=bool(q.trace.degraded), degraded_reasons=q.trace.degraded,
            items=[self._decorate(c, ranked=True) for c in chosen],
        )
        if req.debug:
            response.debug.CopyFrom(pb.DebugTrace(stages=stage_traces(q.trace),
                                                  cache_hit=bool(q.scratch.get("cache_hit")),
                                                  model_version=q.model_version))
        bound_response(response)
        if response.degraded:
            self._degraded(RECOMMEND, q)
        return response, self._effects(pipeline, q, response)

    def _degraded(self, rpc: str, q: RequestQuery) -> None:
        """Counted per stage; one warning per RPC and stage every 10 s (an outage is thousands of answers)."""
        self.stats.degraded(rpc, q.trace.degraded_by)
        key = f"{rpc}:{','.join(q.trace.degraded_by)}"
        self._degraded_log.warning(key, "degraded %s answer: %s", rpc, "; ".join(q.trace.degraded))

    @staticmethod
    def _effects(pipeline: Pipeline, q: RequestQuery, response: pb.RecommendResponse) -> After:
        async def run() -> None:
            for effect in pipeline.after(q, response):  # one after another: no task per effect
                await effect

        return run

    # ------------------------------------------------------------------ SimilarItems, Trending

    async def similar_items(self, req: pb.SimilarItemsRequest, remaining: Remaining) -> pb.SimilarItemsResponse:
        q = similar_query(req, self.config, remaining)
        set_request(request_id=q.request_id, user=user_hash(q.user_id), surface=q.surface)
        tracing.annotate(request_id=q.request_id, surface=q.surface)
        if self.catalog.get(q.item_id) is None:
            raise NotFound(f"item_id: no item {q.item_id!r}")
        chosen = await self.pipelines.similar_items(q.item_sources).run(q)
        response = pb.SimilarItemsResponse(
            request_id=q.request_id, model_version=q.model_version, degraded=bool(q.trace.degraded),
            degraded_reasons=q.trace.degraded, items=[self._decorate(c) for c in chosen])
        if response.degraded:
            self._degraded(SIMILAR_ITEMS, q)
        if req.debug:
            response.debug.CopyFrom(pb.DebugTrace(stages=stage_traces(q.trace), model_version=q.model_version))
        bound_response(response)
        return response

    async def trending(self, req: pb.TrendingRequest, remaining: Remaining) -> pb.TrendingResponse:
        """Trending in a window ("1h", "24h", "7d"; time-decayed counts) or all-time popular,
        overall or in a category and/or a user segment: the retrieval service's trending source."""
        q = trending_query(req, self.config, remaining)
        set_request(request_id=q.request_id, surface=q.surface)
        tracing.annotate(request_id=q.request_id, surface=q.surface)
        chosen = await self.pipelines.trending.run(q)
        items = []
        for c in chosen:
            item = self._decorate(c)
            item.reason = reason(c.source, "", self.catalog, scope=q.category, segment=bool(q.segment))
            items.append(item)
        response = pb.TrendingResponse(
            request_id=q.request_id, model_version=q.model_version, degraded=bool(q.trace.degraded),
            degraded_reasons=q.trace.degraded, items=items)
        if response.degraded:
            self._degraded(TRENDING, q)
        if req.debug:
            response.debug.CopyFrom(pb.DebugTrace(stages=stage_traces(q.trace), model_version=q.model_version))
        bound_response(response)
        return response

    # ------------------------------------------------------------------ decoration

    def _decorate(self, c: Candidate, ranked: bool = False) -> pb.ScoredItem:
        """The public item: metadata, a reason; Recommend's score is the ranking's, the others' the source's."""
        return pb.ScoredItem(
            item_id=c.item_id, score=c.score if ranked else c.retrieval_score, source=c.source,
            score_parts=c.parts.as_dict() if c.parts is not None else {},
            reason=reason(c.source, c.anchor, self.catalog, scope=c.scope, picked=c.picked),
            item=self._item_pb(c.item) if c.item is not None else None,
        )

    def _item_pb(self, record: ItemRecord) -> pb.Item:
        """The item's message, made once per catalogue record (a changed item is a new record object)."""
        held = self._items_pb.get(record.item_id)
        if held is not None and held[0] is record:
            return held[1]
        if len(self._items_pb) >= MAX_ITEM_MESSAGES:
            self._items_pb.clear()
        msg = item_to_pb(record)
        self._items_pb[record.item_id] = (record, msg)
        return msg
