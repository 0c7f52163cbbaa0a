"""The Recommend pipeline: cache, hydration, retrieval, ranking, filters, selection, decoration.

Plain async Python over its dependencies (pool, Redis, two gRPC stubs, the catalogue)
so tests call it without a server. Optional stages fail open: ranking down or slow
-> retrieval order; retrieval down -> popular items from the catalogue; Redis down
-> no cache. The response says when it was degraded.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from orchestrator import filter_expr, selection
from orchestrator import filters as flt
from orchestrator.catalog import Catalog
from orchestrator.config import OrchestratorConfig, PipelineParams
from orchestrator.convert import item_to_pb
from orchestrator.exposures import ExposureLog
from orchestrator.reasons import reason
from orchestrator.selection import Diversity, Promotions
from orchestrator.stats import Stats
from orchestrator.trace import Trace
from orchestrator.validation import check_id, check_k, request_params
from protos import recsys_pb2 as pb
from protos import recsys_pb2_grpc as pb_grpc
from recsys.config import Settings
from recsys.errors import InvalidArgument, NotFound
from storage import cache
from storage.interactions import user_history, user_history_with_types
from storage.precomputed import get_precomputed
from storage.users import get_user
from training.segments import parse_segment

log = logging.getLogger(__name__)

SIMILAR_MODES = {"": ("similar_items", "content"), "similar": ("similar_items", "content"),
                 "also_bought": ("also_bought",), "all": ("also_bought", "similar_items", "content")}
ITEM_SOURCES = ("similar_items", "content", "also_bought")  # sources that know the anchor item
TRENDING_WINDOWS = ("1h", "24h", "7d")
HISTORY_LIMIT = 1000  # seen-filter horizon
RECENT_FOR_MODEL = 50  # the user tower's window
DEADLINE_MARGIN_S = 0.005  # leave time to answer after the last downstream call

Remaining = Callable[[], float | None]


@dataclass
class Ranked:
    """Candidates in ranked order, columnar as they come off the wire.

    Position p is the p-th best: candidate index order[p] of the arrays, score scores[p],
    score parts parts[p * len(part_names) : (p + 1) * len(part_names)].
    """

    item_ids: list[str]
    sources: list[str]
    anchors: list[str]
    order: list[int]
    scores: list[float]
    part_names: list[str] = field(default_factory=list)
    parts: list[float] = field(default_factory=list)

    @classmethod
    def unranked(cls, cands: pb.CandidateList) -> Ranked:
        """Candidates in the order given, scored by their source (ranking skipped or unavailable)."""
        return cls(list(cands.item_ids), list(cands.sources), list(cands.anchor_item_ids),
                   list(range(len(cands.item_ids))), list(cands.scores))

    def __len__(self) -> int:
        return len(self.order)

    def add_missing(self, item_ids: list[str], source: str) -> None:
        """Append items that are not candidates yet (promoted, pinned), scored at the bottom."""
        present = set(self.item_ids)
        floor = min(self.scores, default=0.0)
        for item_id in item_ids:
            if item_id in present:
                continue
            present.add(item_id)
            self.item_ids.append(item_id)
            self.sources.append(source)
            self.anchors.append("")
            self.order.append(len(self.item_ids) - 1)
            self.scores.append(floor)
            self.parts.extend([0.0] * len(self.part_names))

    def item_id(self, p: int) -> str:
        return self.item_ids[self.order[p]]


def _cache_field(req: pb.RecommendRequest, variant: str) -> str:
    """The cache entry of a request shape: everything but the user (the hash key) and the request id."""
    return cache.fingerprint(
        req.context.surface or "home", variant, check_k(req.k),
        *(m.SerializeToString(deterministic=True) for m in (req.filters, req.diversity, req.promotions)),
    )


def _candidates(scored: list[tuple[str, float]], source: str) -> pb.CandidateList:
    return pb.CandidateList(item_ids=[i for i, _ in scored], scores=[s for _, s in scored],
                            sources=[source] * len(scored), anchor_item_ids=[""] * len(scored))


def _business_items(params: PipelineParams, req: pb.RecommendRequest) -> list[str]:
    return sorted(params.promoted | set(req.promotions.pinned.values()))


def _timeout(configured: float, remaining: Remaining) -> float:
    """A downstream call's timeout: its own budget, capped by what the caller's deadline leaves."""
    left = remaining()
    return configured if left is None else min(configured, left - DEADLINE_MARGIN_S)


class Recommender:
    def __init__(
        self, settings: Settings, pool: AsyncConnectionPool, redis: Redis,
        retrieval: pb_grpc.RetrievalStub, ranking: pb_grpc.RankingStub, catalog: Catalog,
        exposures: ExposureLog, config: OrchestratorConfig | None = None, stats: Stats | None = None,
    ) -> None:
        self.settings = settings
        self.config = config or OrchestratorConfig()
        self.stats = stats or Stats(redis)
        self.pool = pool
        self.redis = redis
        self.retrieval = retrieval
        self.ranking = ranking
        self.catalog = catalog
        self.exposures = exposures

    # ------------------------------------------------------------------ Recommend

    async def recommend(self, req: pb.RecommendRequest, remaining: Remaining) -> pb.RecommendResponse:
        user_id = check_id("user_id", req.user_id)
        k = check_k(req.k)
        if req.request_id:
            check_id("request_id", req.request_id)
        expression = filter_expr.parse(req.filters.expression) if req.filters.expression else None
        request_id = req.request_id or uuid.uuid4().hex
        surface = req.context.surface or "home"
        assignment = self.config.experiments.assign(user_id, surface, req.experiment_variant)
        params = request_params(self.config.surface(surface), assignment.params, req)
        trace = Trace()

        with trace.stage("cache_lookup") as st:
            cached = await self._cache_get(user_id, _cache_field(req, assignment.label), trace, st)
        self.stats.count("cache_hit" if cached is not None else "cache_miss")
        if cached is not None and not req.debug:
            cached.request_id = request_id
            return cached

        with trace.stage("hydrate") as st:
            profile, history = await self._hydrate(user_id, trace, st)
            st.candidates_out = len(history)
        types_by_item = dict(history)
        seen = set() if req.filters.include_seen else {i for i, t in history if not t.isdisjoint(params.seen_types)}
        user_ctx = pb.UserContext(
            user_id=user_id, recent_item_ids=[i for i, _ in history[:RECENT_FOR_MODEL]],
            attributes={key: str(v) for key, v in profile.items() if v is not None and v != ""},
        )
        # Ask for more than k: filters and selection remove some.
        want = min(1000, max(4 * k, 200))

        with trace.stage("retrieve") as st:
            request = pb.RetrieveRequest(request_id=request_id, user=user_ctx, k=want, exclude_item_ids=sorted(seen))
            found, model_version = await self._retrieve(request, remaining, trace, st, surface)
            st.candidates_out = len(found.item_ids)
        with trace.stage("rank", len(found.item_ids)) as st:
            if params.ranker:
                ranked = await self._rank(request_id, user_ctx, found, req.context, remaining, trace, st)
            else:
                ranked, st.note = Ranked.unranked(found), "skipped: ranker off for this variant"
            ranked.add_missing(_business_items(params, req), "promoted")
            st.candidates_out = len(ranked)
        with trace.stage("filter", len(ranked)) as st:
            rules = flt.request_rules(req.filters, seen, self.catalog, expression, types_by_item)
            kept, removed = flt.apply_rules(range(len(ranked)), ranked.item_id, rules)
            st.removed.update(removed)
            st.candidates_out = len(kept)
        with trace.stage("select", len(kept)) as st:
            picked = selection.select(
                [ranked.item_id(p) for p in kept], [ranked.scores[p] for p in kept], k, self.catalog.get,
                Diversity(params.mmr_lambda, params.max_per_category, params.max_per_price_band),
                Promotions(params.promoted, params.promotion_boost, params.reserved_share,
                           dict(req.promotions.pinned)),
            )
            chosen = [kept[j] for j in picked]
            st.candidates_out = len(chosen)

        response = pb.RecommendResponse(
            request_id=request_id, model_version=model_version, experiment_variant=assignment.label,
            degraded=bool(trace.degraded), degraded_reasons=trace.degraded,
            items=[self._decorate(ranked, p) for p in chosen],
        )
        if req.debug:
            response.debug.CopyFrom(pb.DebugTrace(stages=trace.stages, cache_hit=cached is not None,
                                                  model_version=model_version))
        if response.degraded:
            self.stats.count("degraded")
        return response

    async def after_recommend(self, req: pb.RecommendRequest, response: pb.RecommendResponse) -> None:
        """Side effects once the answer is sent: cache write (healthy answers only), exposure log."""
        surface = req.context.surface or "home"
        if not response.degraded and not req.debug:
            try:
                await cache.put(self.redis, req.user_id, _cache_field(req, response.experiment_variant),
                                response.SerializeToString(), self.settings.cache_ttl_s)
            except Exception as exc:  # a cache is optional
                log.warning("cache write failed: %s", exc)
        self.exposures.add(response.request_id, req.user_id, surface, response.experiment_variant,
                           [i.item_id for i in response.items])

    async def _cache_get(
        self, user_id: str, field_: str, trace: Trace, st: pb.StageTrace
    ) -> pb.RecommendResponse | None:
        try:
            raw = await cache.get(self.redis, user_id, field_)
        except Exception as exc:
            trace.degrade(st, f"cache unavailable: {type(exc).__name__}")
            return None
        st.note = "hit" if raw else "miss"
        return pb.RecommendResponse.FromString(raw) if raw else None

    async def _hydrate(
        self, user_id: str, trace: Trace, st: pb.StageTrace
    ) -> tuple[dict, list[tuple[str, set[str]]]]:
        """The user's demographics and history (most recent first, with interaction types) from PostgreSQL."""
        try:
            async with self.pool.connection() as conn:
                user = await get_user(conn, user_id)
                history = await user_history_with_types(conn, user_id, HISTORY_LIMIT)
        except Exception as exc:
            trace.degrade(st, f"user history unavailable: {type(exc).__name__}")
            return {}, []
        if user is None:
            st.note = "unknown user: cold start"
        return (user.demographics if user else {}), history

    async def _retrieve(
        self, request: pb.RetrieveRequest, remaining: Remaining, trace: Trace, st: pb.StageTrace,
        surface: str = "home",
    ) -> tuple[pb.CandidateList, str]:
        try:
            timeout = _timeout(self.settings.retrieval_timeout_s, remaining)
            resp = await self.retrieval.Retrieve(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            exclude = set(request.exclude_item_ids)
            pre = await self._precomputed(request.user.user_id, surface, exclude) if request.user.user_id else None
            if pre is not None and pre.item_ids:
                trace.degrade(st, f"retrieval failed ({exc.code().name}): precomputed recommendations instead")
                return pre, ""
            trace.degrade(st, f"retrieval failed ({exc.code().name}): popular items instead")
            return self._fallback(request.k, exclude), ""
        return resp.candidates, resp.model_version

    def _fallback(self, k: int, exclude: set[str]) -> pb.CandidateList:
        top = [(i, s) for i, s in self.catalog.popular[: k + len(exclude)] if i not in exclude][:k]
        return _candidates(top, "fallback_popular")

    async def _precomputed(self, user_id: str, surface: str, exclude: set[str]) -> pb.CandidateList | None:
        """The batch job's answer for this user and surface, if any (the degraded path)."""
        try:
            async with self.pool.connection() as conn:
                row = await get_precomputed(conn, user_id, surface)
        except Exception as exc:
            log.warning("precomputed recommendations unavailable: %s", exc)
            return None
        if row is None:
            return None
        return _candidates([(i, s) for i, s in row if i not in exclude], "precomputed")

    async def _rank(
        self, request_id: str, user: pb.UserContext, found: pb.CandidateList, context: pb.Context,
        remaining: Remaining, trace: Trace, st: pb.StageTrace,
    ) -> Ranked:
        if not found.item_ids:
            return Ranked.unranked(found)
        request = pb.RankRequest(request_id=request_id, user=user, context=context, candidates=found)
        try:
            resp = await self.ranking.Rank(request, timeout=_timeout(self.settings.ranking_timeout_s, remaining))
        except grpc.aio.AioRpcError as exc:
            trace.degrade(st, f"ranking failed ({exc.code().name}): retrieval order")
            return Ranked.unranked(found)
        return Ranked(list(found.item_ids), list(found.sources), list(found.anchor_item_ids), list(resp.order),
                      list(resp.scores), list(resp.score_part_names), list(resp.score_parts))

    def _decorate(self, ranked: Ranked, p: int) -> pb.ScoredItem:
        i = ranked.order[p]
        item_id, source, anchor = ranked.item_ids[i], ranked.sources[i], ranked.anchors[i]
        m = len(ranked.part_names)
        item = self.catalog.get(item_id)
        return pb.ScoredItem(
            item_id=item_id, score=ranked.scores[p], source=source,
            score_parts=dict(zip(ranked.part_names, ranked.parts[p * m : (p + 1) * m], strict=True)),
            reason=reason(source, anchor, self.catalog),
            item=item_to_pb(item) if item else None,
        )

    # ------------------------------------------------------------------ SimilarItems, Trending

    async def similar_items(self, req: pb.SimilarItemsRequest, remaining: Remaining) -> pb.SimilarItemsResponse:
        item_id = check_id("item_id", req.item_id)
        k = check_k(req.k)
        mode = req.mode.strip().lower()
        if mode not in SIMILAR_MODES:
            raise InvalidArgument("mode", f"must be one of {', '.join(m for m in SIMILAR_MODES if m)} or empty "
                                          f"(similar), got {req.mode!r}")
        anchor = self.catalog.get(item_id)
        if anchor is None:
            raise NotFound(f"item_id: no item {item_id!r}")
        request_id = req.request_id or uuid.uuid4().hex
        seen: set[str] = set()
        if req.user_id:
            async with self.pool.connection() as conn:
                seen = set(await user_history(conn, check_id("user_id", req.user_id), HISTORY_LIMIT))
        want = min(1000, max(4 * k, 100))
        request = pb.RetrieveRequest(
            request_id=request_id, item_id=item_id, k=want,
            sources=[pb.SourceRequest(name=name, k=want) for name in SIMILAR_MODES[mode]],
        )
        trace = Trace()
        with trace.stage("retrieve") as st:
            found, version = await self._retrieve(request, remaining, trace, st)
        ranked = Ranked.unranked(found)
        rules = [("anchor", lambda i: i != item_id), *flt.request_rules(req.filters, seen, self.catalog)]
        kept, _ = flt.apply_rules(range(len(ranked)), ranked.item_id, rules)
        if not kept or ranked.sources[ranked.order[kept[0]]] not in ITEM_SOURCES:
            # Retrieval does not know this item (yet) or is down: same-category popular items.
            cats = set(anchor.categories)
            kept = [p for p in kept if not cats.isdisjoint(self.catalog.items[ranked.item_id(p)].categories)] or kept
        return pb.SimilarItemsResponse(
            request_id=request_id, model_version=version, items=[self._decorate(ranked, p) for p in kept[:k]]
        )

    async def trending(self, req: pb.TrendingRequest, remaining: Remaining) -> pb.TrendingResponse:
        """Trending in a window ("1h", "24h", "7d"; time-decayed counts) or all-time popular,
        overall or in a category and/or a user segment: the retrieval service's trending source."""
        k = check_k(req.k)
        if req.window and req.window not in TRENDING_WINDOWS:
            raise InvalidArgument("window", f"must be one of {', '.join(TRENDING_WINDOWS)} or empty (all time), "
                                            f"got {req.window!r}")
        segment = ""
        if req.segment:
            try:
                segment = parse_segment(req.segment)
            except ValueError as exc:
                raise InvalidArgument("segment", str(exc)) from None
        request_id = req.request_id or uuid.uuid4().hex
        want = min(1000, 2 * k + 20)  # room for the catalogue's status filter
        request = pb.RetrieveRequest(request_id=request_id, k=want, sources=[pb.SourceRequest(
            name="trending", k=want, window=req.window, category=req.category, segment=segment)])
        trace = Trace()
        with trace.stage("retrieve") as st:
            found, _ = await self._retrieve(request, remaining, trace, st)
        if trace.degraded:  # retrieval down: the catalogue's all-time counts, in the category asked for
            found = pb.CandidateList(item_ids=[i for i, _ in self.catalog.popular],
                                     scores=[s for _, s in self.catalog.popular],
                                     sources=["fallback_popular"] * len(self.catalog.popular),
                                     anchor_item_ids=[""] * len(self.catalog.popular))
        ranked = Ranked.unranked(found)
        rules = [("inactive", self.catalog.is_active)]
        if req.category:
            rules.append(("category", lambda i: req.category in self.catalog.items[i].categories))
        kept, _ = flt.apply_rules(range(len(ranked)), ranked.item_id, rules)
        items = []
        for p in kept[:k]:
            item = self._decorate(ranked, p)
            item.reason = reason(item.source, "", self.catalog, scope=req.category, segment=bool(segment))
            items.append(item)
        return pb.TrendingResponse(request_id=request_id, items=items)
