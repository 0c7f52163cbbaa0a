"""Sources answered by the retrieval service: one component per configured source, one call per request.

Every retrieval source of a request registers its SourceRequests in `prepare`; sources
without a timeout of their own then share one Retrieve call (RetrieveRequest.separate_sources:
each source answered on its own), a source with its own timeout gets a call of its own. The
retrieval service works through a request's sources one after another either way, and one
call instead of four keeps concurrent requests from queueing behind each other's calls there.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import grpc

from orchestrator.pipeline import Candidate, budget
from orchestrator.query import Deps, RequestQuery
from orchestrator.source_config import CandidateSource
from orchestrator.sources.configured import ConfiguredSource, user_query
from protos import internal_pb2 as ipb

RECENT_FOR_MODEL = 50  # the user tower's window


def user_context(q: RequestQuery) -> ipb.UserContext:
    ctx = q.scratch.get("user_context")
    if ctx is None:
        recent = q.history[:RECENT_FOR_MODEL]
        ctx = q.scratch["user_context"] = ipb.UserContext(
            user_id=q.user_id, recent_item_ids=[h.item_id for h in recent], recent_timestamps=[h.ts for h in recent],
            attributes={key: str(v) for key, v in q.demographics.items() if v is not None and v != ""},
        )
    return ctx


@dataclass
class _Calls:
    """The Retrieve calls of one request."""

    shared: list[ipb.SourceRequest] = field(default_factory=list)
    slices: dict[str, tuple[int, int]] = field(default_factory=dict)  # source name -> (first, n) of `shared`
    task: asyncio.Task | None = None


class RetrievalSource(ConfiguredSource):
    """One configured source (CandidateSource) of a Recommend surface, or an item-anchored source of
    SimilarItems, or the trending source of Trending."""

    def __init__(self, spec: CandidateSource, deps: Deps) -> None:
        super().__init__(spec, deps)
        # sources sharing the request's call are held by that call's gRPC deadline, not a timer each; a
        # source with a budget of its own gets the timer: it holds even sub-millisecond budgets exactly
        self.timer = bool(spec.timeout_ms)

    def requests(self, q: RequestQuery) -> list[ipb.SourceRequest]:
        """The SourceRequests of this source for this query (one per picked category with preferred_categories)."""
        s = self.spec
        k = self.k(q)
        cats = user_query(q).preferred_categories if s.preferred_categories else (s.category or q.category,)
        segment = s.segment or (q.segment if s.retrieval_source in ("trending", "segment_popular") else "")
        window = s.window or (q.window if s.retrieval_source == "trending" else "")
        return [ipb.SourceRequest(name=s.retrieval_source, k=k, window=window, category=c, segment=segment)
                for c in cats]

    def prepare(self, q: RequestQuery) -> None:
        reqs = self.requests(q)
        q.scratch[("retrieve_requests", self.name)] = reqs
        if not self.spec.timeout_ms:
            calls = q.scratch.get("retrieve_calls")
            if calls is None or calls.task is not None:  # a later round (fill sources): a call of its own
                calls = q.scratch["retrieve_calls"] = _Calls()
            q.scratch[("retrieve_calls", self.name)] = calls
            calls.slices[self.name] = (len(calls.shared), len(reqs))
            calls.shared.extend(reqs)

    async def fetch(self, q: RequestQuery) -> list[Candidate]:
        reqs = q.scratch[("retrieve_requests", self.name)]
        if self.spec.timeout_ms:
            groups, version = await self._own_call(q, reqs)
        else:
            groups, version = await self._shared_call(q)
        if version and not q.model_version:
            q.model_version = version
        out: list[Candidate] = []
        for req, found in zip(reqs, groups, strict=True):
            out += self._own_candidates(req, found)
        return out

    # -- the calls

    def _base(self, q: RequestQuery) -> ipb.RetrieveRequest:
        base = q.scratch.get("retrieve_base")
        if base is None:
            base = q.scratch["retrieve_base"] = ipb.RetrieveRequest(
                request_id=q.request_id, item_id=q.item_id, separate_sources=True,
                user=user_context(q) if q.user_id else None, exclude_item_ids=sorted(q.seen))
        return base

    async def _own_call(self, q: RequestQuery, reqs: list[ipb.SourceRequest]) -> tuple[list[ipb.CandidateList], str]:
        request = ipb.RetrieveRequest()
        request.CopyFrom(self._base(q))
        request.k = max(r.k for r in reqs)
        request.sources.extend(reqs)
        resp = await self.deps.retrieval.Retrieve(request, timeout=self.timeout_s)
        return _groups(resp, len(reqs)), resp.model_version

    async def _shared_call(self, q: RequestQuery) -> tuple[list[ipb.CandidateList], str]:
        calls: _Calls = q.scratch[("retrieve_calls", self.name)]
        if calls.task is None:
            request = ipb.RetrieveRequest()
            request.CopyFrom(self._base(q))
            request.k = max(r.k for r in calls.shared)
            request.sources.extend(calls.shared)
            timeout = budget(self, q)
            calls.task = asyncio.ensure_future(self.deps.retrieval.Retrieve(request, timeout=timeout))
        resp = await asyncio.shield(calls.task)  # one source's own timeout must not cancel the others' call
        first, n = calls.slices[self.name]
        return _groups(resp, len(calls.shared))[first : first + n], resp.model_version

    def _own_candidates(self, req: ipb.SourceRequest, found: ipb.CandidateList) -> list[Candidate]:
        """What the source itself found. The retrieval service fills a short answer with popular items;
        here the popular source does that job, so the fill (source "popular", or outside the asked
        category) is dropped. The trending source's own all-time fallback is labelled "popular" too."""
        own = {req.name, "popular"} if req.name == "trending" else {req.name}
        items = self.deps.catalog.items
        picked = self.spec.preferred_categories
        group = f"{self.name}:{req.category}" if picked else self.name
        out: list[Candidate] = []
        for item_id, score, src, anchor in zip(found.item_ids, found.scores, found.sources, found.anchor_item_ids,
                                               strict=True):
            if src not in own:
                continue
            if req.category:
                it = items.get(item_id)
                if it is None or req.category not in it.categories:
                    continue
            out.append(Candidate(item_id, src, score, score, anchor, req.category, picked, group))
        return out

    def failure_note(self, exc: BaseException) -> str:
        shared = "" if self.spec.timeout_ms else " (the request's shared Retrieve call)"
        if isinstance(exc, grpc.aio.AioRpcError):
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return f"{self.stage} timed out (DEADLINE_EXCEEDED){shared}: skipped"
            return f"{self.stage} failed ({exc.code().name}){shared}: skipped"
        return ""


def _groups(resp: ipb.RetrieveResponse, n: int) -> list[ipb.CandidateList]:
    if len(resp.groups) != n:  # a retrieval service from before separate_sources
        raise grpc.aio.AioRpcError(grpc.StatusCode.UNIMPLEMENTED, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                   f"expected {n} source groups, got {len(resp.groups)}")
    return list(resp.groups)


def item_sources(names: tuple[str, ...], deps: Deps) -> list[RetrievalSource]:
    """SimilarItems' sources: retrieval sources anchored on the request's item (k = the query's want)."""
    return [RetrievalSource(CandidateSource(n, 1), deps) for n in names]


def trending_source(deps: Deps) -> RetrievalSource:
    """Trending's source: the request's window, category and segment (k = the query's want)."""
    return RetrievalSource(CandidateSource("trending", 1), deps)
