"""ranker: the ranking service rescores the candidates (learned ranker over features).

Fails open: ranking down or late -> the sources' merged order, marked degraded. The model
version retrieval answered with travels in the RankRequest, so ranking scores with the same
version (or says in its answer that it could not)."""

from __future__ import annotations

import grpc

from orchestrator.pipeline import Candidate, Scorer, budget
from orchestrator.query import RECOMMEND, Deps, RequestQuery
from orchestrator.sources.retrieval import user_context
from protos import internal_pb2 as ipb


class ScoreParts:
    """One candidate's row of the ranker's score parts, kept as a view until the answer shows it."""

    __slots__ = ("names", "parts", "start")

    def __init__(self, names: list[str], parts: list[float], start: int) -> None:
        self.names, self.parts, self.start = names, parts, start

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.names, self.parts[self.start : self.start + len(self.names)], strict=True))


class Ranker(Scorer):
    name = "ranker"
    timer = False  # the call's own gRPC deadline (its budget, capped by the caller's) holds it

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.timeout_s = deps.settings.ranking_timeout_s

    def enable(self, q: RequestQuery) -> str | None:
        if q.rpc != RECOMMEND:
            return "only Recommend is ranked"
        return None if q.params.ranker else "ranker off for this variant"

    async def score(self, q: RequestQuery, candidates: list[Candidate]) -> list[Candidate]:
        if not candidates:
            return candidates
        request = ipb.RankRequest(
            request_id=q.request_id, user=user_context(q), context=q.context, model_version=q.model_version,
            candidates=ipb.CandidateList(
                item_ids=[c.item_id for c in candidates], scores=[c.retrieval_score for c in candidates],
                sources=[c.source for c in candidates], anchor_item_ids=[c.anchor for c in candidates]),
        )
        resp = await self.deps.ranking.Rank(request, timeout=budget(self, q))
        names, parts, m = list(resp.score_part_names), list(resp.score_parts), len(resp.score_part_names)
        out: list[Candidate] = []
        for p, (i, score) in enumerate(zip(resp.order, resp.scores, strict=True)):
            c = candidates[i]
            c.score = score
            c.parts = ScoreParts(names, parts, p * m) if m else None  # a dict only for the items shown
            out.append(c)
        if len(out) != len(candidates):  # a scorer never drops a candidate: keep the ones it did not return
            given = {id(c) for c in out}
            floor = min((c.score for c in out), default=0.0)
            for c in candidates:
                if id(c) not in given:
                    c.score = floor
                    out.append(c)
        return out

    def failure_note(self, exc: BaseException) -> str:
        code = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else type(exc).__name__
        return f"ranking failed ({code}): retrieval order"
