"""The Recommend pipeline: cache, hydration, candidate sources, ranking, filters, selection, decoration.

Plain async Python over its dependencies (pool, Redis, two gRPC stubs, the catalogue)
so tests call it without a server. Optional stages fail open: a candidate source failing
or late -> the others' candidates; every source down -> precomputed recommendations,
else popular items from the catalogue; ranking down or slow -> retrieval order; Redis
down -> no cache. The response says when it was degraded.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import grpc
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from core.config import Settings
from core.errors import InvalidArgument, NotFound
from core.interleave import order_scores
from core.segments import parse_segment, segment_tokens
from orchestrator import filter_expr, selection
from orchestrator import filters as flt
from orchestrator.catalog import Catalog
from orchestrator.config import OrchestratorConfig, PipelineParams
from orchestrator.convert import item_to_pb
from orchestrator.exposures import ExposureLog
from orchestrator.preferences import preferred_categories
from orchestrator.reasons import reason
from orchestrator.selection import Diversity, Promotions
from orchestrator.sources import Call, Group, Merged, UserQuery, fill_target, merge, own_candidates, plan
from orchestrator.stats import Stats
from orchestrator.trace import Trace
from orchestrator.validation import check_id, check_k, request_params
from protos import recsys_pb2 as pb
from protos import recsys_pb2_grpc as pb_grpc
from storage import cache
from storage.interactions import HistoryEntry, user_history, user_history_with_types
from storage.precomputed import get_precomputed
from storage.records import UserRecord
from storage.users import get_user

log = logging.getLogger(__name__)

SIMILAR_MODES = {"": ("similar_items", "content"), "similar": ("similar_items", "content"),
                 "also_bought": ("also_bought",), "all": ("also_bought", "similar_items", "content")}
ITEM_SOURCES = ("similar_items", "content", "also_bought")  # sources that know the anchor item
TRENDING_WINDOWS = ("1h", "24h", "7d")
HISTORY_LIMIT = 1000  # seen-filter horizon
RECENT_FOR_MODEL = 50  # the user tower's window
DEADLINE_MARGIN_S = 0.02  # time to filter, select, decorate and send after the last downstream call (2 busy cores)
DEBUG_REMOVED_IDS = 100  # removed ids listed per filter in the debug trace

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
    scopes: list[str] = field(default_factory=list)  # per candidate: the category it was asked for, or ""
    picked: list[bool] = field(default_factory=list)  # per candidate: that category is one the user picked

    @classmethod
    def unranked(cls, cands: pb.CandidateList) -> Ranked:
        """Candidates in the order given, scored by their source (ranking skipped or unavailable)."""
        return cls(list(cands.item_ids), list(cands.sources), list(cands.anchor_item_ids),
                   list(range(len(cands.item_ids))), list(cands.scores))

    @classmethod
    def merged(cls, m: Merged, ranked: pb.RankResponse | None = None) -> Ranked:
        """Merged candidates in the ranker's order; without one, in retrieval order scored 1 / (1 + position):
        the sources' own scores do not compare across sources."""
        if ranked is None:
            order, scores, names, parts = list(range(len(m))), order_scores(len(m)), [], []
        else:
            order, scores = list(ranked.order), list(ranked.scores)
            names, parts = list(ranked.score_part_names), list(ranked.score_parts)
        return cls(list(m.item_ids), list(m.sources), list(m.anchors), order, scores, names, parts,
                   list(m.scopes), list(m.picked))

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
            if self.scopes:
                self.scopes.append("")
                self.picked.append(False)

    def item_id(self, p: int) -> str:
        return self.item_ids[self.order[p]]


class _Failed(NamedTuple):
    """A source call that failed or ran late; its stage record says which."""

    call: Call
    code: grpc.StatusCode
    record: pb.StageTrace


def _failure(exc: grpc.aio.AioRpcError | TimeoutError, timeout: float) -> tuple[grpc.StatusCode, str]:
    """A failed source call's status and its trace note."""
    code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else grpc.StatusCode.DEADLINE_EXCEEDED
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return code, f"timed out ({code.name} after {timeout * 1000:.3g} ms): skipped"
    return code, f"failed ({code.name}): skipped"


def _cache_field(req: pb.RecommendRequest, variant: str) -> str:
    """The cache entry of a request shape: everything but the user (the hash key) and the request id."""
    return cache.fingerprint(
        req.context.surface or "home", variant, check_k(req.k),
        *(m.SerializeToString(deterministic=True) for m in (req.filters, req.diversity, req.promotions)),
    )


def _candidates(scored: list[tuple[str, float]], source: str) -> pb.CandidateList:
    return pb.CandidateList(item_ids=[i for i, _ in scored], scores=[s for _, s in scored],
                            sources=[source] * len(scored), anchor_item_ids=[""] * len(scored))


def _merged(cands: pb.CandidateList) -> Merged:
    """A fallback answer (precomputed, popular) as merged candidates."""
    n = len(cands.item_ids)
    return Merged(list(cands.item_ids), list(cands.scores), list(cands.sources), list(cands.anchor_item_ids),
                  [""] * n, [False] * n)


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
            user, history = await self._hydrate(user_id, trace, st)
            st.candidates_out = len(history)
        profile = user.demographics if user else {}
        types_by_item = {h.item_id: h.types for h in history}
        seen = set() if req.filters.include_seen else {
            h.item_id for h in history if not h.types.isdisjoint(params.seen_types)}
        recent = history[:RECENT_FOR_MODEL]
        user_ctx = pb.UserContext(
            user_id=user_id, recent_item_ids=[h.item_id for h in recent], recent_timestamps=[h.ts for h in recent],
            attributes={key: str(v) for key, v in profile.items() if v is not None and v != ""},
        )
        query = UserQuery(len(history), bool(segment_tokens(profile)),
                          tuple(preferred_categories(user.preferences if user else None)),
                          params.cold_start_interactions)
        # Ask for more than k: filters and selection remove some.
        want = min(1000, max(4 * k, 200))

        with trace.stage("retrieve") as st:
            request = pb.RetrieveRequest(request_id=request_id, user=user_ctx, exclude_item_ids=sorted(seen))
            found, model_version = await self._sources(request, params, query, k, want, remaining, trace, st, surface)
            st.candidates_out = len(found)
        with trace.stage("rank", len(found)) as st:
            if params.ranker:
                ranked = await self._rank(request_id, user_ctx, found, req.context, remaining, trace, st,
                                          model_version)
            else:
                ranked, st.note = Ranked.merged(found), "skipped: ranker off for this variant"
            ranked.add_missing(_business_items(params, req), "promoted")
            st.candidates_out = len(ranked)
        with trace.stage("filter", len(ranked)) as st:
            rules = flt.request_rules(req.filters, seen, self.catalog, expression, types_by_item)
            out = flt.filter_items(range(len(ranked)), ranked.item_id, rules,
                                   DEBUG_REMOVED_IDS if req.debug else 0)
            kept = out.kept
            st.removed.update(out.removed)
            for name, ids in out.removed_ids.items():
                st.removed_item_ids[name].item_ids.extend(ids)
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
    ) -> tuple[UserRecord | None, list[HistoryEntry]]:
        """The user (demographics, preferences) and history (most recent first, with interaction types and
        times) from PostgreSQL."""
        try:
            async with self.pool.connection() as conn:
                user = await get_user(conn, user_id)
                history = await user_history_with_types(conn, user_id, HISTORY_LIMIT)
        except Exception as exc:
            trace.degrade(st, f"user history unavailable: {type(exc).__name__}")
            return None, []
        if user is None:
            st.note = "unknown user: cold start"
        return user, history

    async def _sources(
        self, request: pb.RetrieveRequest, params: PipelineParams, query: UserQuery, k: int, want: int,
        remaining: Remaining, trace: Trace, st: pb.StageTrace, surface: str,
    ) -> tuple[Merged, str]:
        """The surface's candidate sources, gated, called concurrently, merged. Fill sources are called after
        the others, only when those came up short (a warm user's answer needs no popular filler: one call
        less). A failed or late source is skipped (the answer degraded unless the source is optional); all
        of them failing -> the fallback."""
        calls, gated = plan(params.sources, query, want)
        for stage, why in gated:
            trace.note(stage, f"gated off: {why}")
        main, fill = [c for c in calls if not c.spec.fill], [c for c in calls if c.spec.fill]
        results = await self._call_sources(main, request, remaining, trace)
        found = len({i for r in results if isinstance(r, Group) for i in r.item_ids})
        target = fill_target(want, k)
        if fill and found < target:
            results += await self._call_sources(fill, request, remaining, trace)
        for c in fill if fill and found >= target else []:
            trace.note(c.stage, f"not needed: the other sources found {found} candidates")
        groups = [r for r in results if isinstance(r, Group)]
        failures = [r for r in results if isinstance(r, _Failed)]
        if results and not groups:
            return _merged(await self._without_retrieval(request, want, failures[0].code, trace, st, surface)), ""
        for f in failures:
            if not f.call.spec.optional:
                trace.degrade(f.record, f"{f.call.stage} {f.record.note}")
        if not results:
            st.note = "every source gated off: the catalogue's popular items"
            return _merged(self._fallback(want, set(request.exclude_item_ids))), ""
        st.note = f"{len(groups)} of {len(results)} sources answered"
        return merge(groups, want, target), next((g.model_version for g in groups if g.model_version), "")

    async def _call_sources(
        self, calls: list[Call], base: pb.RetrieveRequest, remaining: Remaining, trace: Trace,
    ) -> list[Group | _Failed]:
        """The calls' candidates, concurrently. A source with its own timeout gets a Retrieve call of its
        own; the others share one call (RetrieveRequest.separate_sources) under the default timeout: the
        retrieval service works through a request's sources one after another either way, and one call
        instead of four keeps concurrent requests from queueing behind each other's calls there."""
        shared = [c for c in calls if not c.spec.timeout_ms]
        own = [c for c in calls if c.spec.timeout_ms] + (shared if len(shared) < 2 else [])
        jobs = [self._call_source(c, base, remaining, trace) for c in own]
        if len(shared) >= 2:
            jobs.append(self._call_shared(shared, base, remaining, trace))
        out: list[Group | _Failed] = []
        for r in await asyncio.gather(*jobs):
            out.extend(r if isinstance(r, list) else [r])
        return out

    async def _retrieve_within(self, request: pb.RetrieveRequest, timeout: float) -> pb.RetrieveResponse:
        # gRPC keeps deadlines to the millisecond, so a fast answer can beat a sub-millisecond one;
        # the event loop's timer holds the call to its budget exactly (and cancels it).
        return await asyncio.wait_for(self.retrieval.Retrieve(request, timeout=timeout), timeout)

    async def _call_source(
        self, call: Call, base: pb.RetrieveRequest, remaining: Remaining, trace: Trace,
    ) -> Group | _Failed:
        """One source's Retrieve call under its own timeout; its trace stage says how it went."""
        request = pb.RetrieveRequest()
        request.CopyFrom(base)
        request.k = call.k
        request.sources.append(call.source_request())
        configured = call.spec.timeout_ms / 1000 if call.spec.timeout_ms else self.settings.retrieval_timeout_s
        timeout = max(_timeout(configured, remaining), 0.0)
        with trace.stage(call.stage) as st:
            try:
                resp = await self._retrieve_within(request, timeout)
            except (grpc.aio.AioRpcError, TimeoutError) as exc:
                code, st.note = _failure(exc, timeout)
                return _Failed(call, code, st)
            group = own_candidates(call, resp.candidates, self._in_category)
            st.candidates_out = len(group.item_ids)
            group.model_version = resp.model_version
            return group

    async def _call_shared(
        self, calls: list[Call], base: pb.RetrieveRequest, remaining: Remaining, trace: Trace,
    ) -> list[Group | _Failed]:
        """Several sources in one Retrieve call, each answered on its own; each keeps its trace stage."""
        request = pb.RetrieveRequest()
        request.CopyFrom(base)
        request.k = max(c.k for c in calls)
        request.separate_sources = True
        request.sources.extend(c.source_request() for c in calls)
        timeout = max(_timeout(self.settings.retrieval_timeout_s, remaining), 0.0)
        shared = f"one Retrieve call for {len(calls)} sources"
        records = [trace.note(c.stage, shared) for c in calls]
        start = time.perf_counter()
        try:
            resp = await self._retrieve_within(request, timeout)
            if len(resp.groups) != len(calls):  # a retrieval service from before separate_sources
                raise grpc.aio.AioRpcError(grpc.StatusCode.UNIMPLEMENTED, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                           f"expected {len(calls)} source groups, got {len(resp.groups)}")
        except (grpc.aio.AioRpcError, TimeoutError) as exc:
            code, note = _failure(exc, timeout)
            for st in records:
                st.note, st.latency_ms = f"{note} ({shared})", (time.perf_counter() - start) * 1000
            return [_Failed(c, code, st) for c, st in zip(calls, records, strict=True)]
        latency = (time.perf_counter() - start) * 1000
        out: list[Group | _Failed] = []
        for call, st, found in zip(calls, records, resp.groups, strict=True):
            group = own_candidates(call, found, self._in_category)
            group.model_version = resp.model_version
            st.candidates_out, st.latency_ms = len(group.item_ids), latency
            out.append(group)
        return out

    def _in_category(self, item_id: str, category: str) -> bool:
        it = self.catalog.items.get(item_id)
        return it is not None and category in it.categories

    async def _retrieve(
        self, request: pb.RetrieveRequest, remaining: Remaining, trace: Trace, st: pb.StageTrace,
        surface: str = "home",
    ) -> tuple[pb.CandidateList, str]:
        try:
            timeout = _timeout(self.settings.retrieval_timeout_s, remaining)
            resp = await self.retrieval.Retrieve(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return await self._without_retrieval(request, request.k, exc.code(), trace, st, surface), ""
        return resp.candidates, resp.model_version

    async def _without_retrieval(
        self, request: pb.RetrieveRequest, k: int, code: grpc.StatusCode, trace: Trace, st: pb.StageTrace,
        surface: str,
    ) -> pb.CandidateList:
        """Retrieval failed: the user's precomputed recommendations if any, else the catalogue's popular items."""
        exclude = set(request.exclude_item_ids)
        pre = await self._precomputed(request.user.user_id, surface, exclude) if request.user.user_id else None
        if pre is not None and pre.item_ids:
            trace.degrade(st, f"retrieval failed ({code.name}): precomputed recommendations instead")
            return pre
        trace.degrade(st, f"retrieval failed ({code.name}): popular items instead")
        return self._fallback(k, exclude)

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
        self, request_id: str, user: pb.UserContext, found: Merged, context: pb.Context,
        remaining: Remaining, trace: Trace, st: pb.StageTrace, model_version: str = "",
    ) -> Ranked:
        if not found.item_ids:
            return Ranked.merged(found)
        request = pb.RankRequest(request_id=request_id, user=user, context=context, candidates=found.to_pb(),
                                 model_version=model_version)  # the version retrieval answered with
        try:
            resp = await self.ranking.Rank(request, timeout=_timeout(self.settings.ranking_timeout_s, remaining))
        except grpc.aio.AioRpcError as exc:
            trace.degrade(st, f"ranking failed ({exc.code().name}): retrieval order")
            return Ranked.merged(found)
        return Ranked.merged(found, resp)

    def _decorate(self, ranked: Ranked, p: int) -> pb.ScoredItem:
        i = ranked.order[p]
        item_id, source, anchor = ranked.item_ids[i], ranked.sources[i], ranked.anchors[i]
        scope, picked = (ranked.scopes[i], ranked.picked[i]) if ranked.scopes else ("", False)
        m = len(ranked.part_names)
        item = self.catalog.get(item_id)
        return pb.ScoredItem(
            item_id=item_id, score=ranked.scores[p], source=source,
            score_parts=dict(zip(ranked.part_names, ranked.parts[p * m : (p + 1) * m], strict=True)),
            reason=reason(source, anchor, self.catalog, scope=scope, picked=picked),
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
