"""The base of every source a surface configures ([[surface.<name>.sources]]): its spec's name,
weight, gate, fill, optional, quota and k, scaled to the request's candidate budget."""

from __future__ import annotations

import math

from core.segments import segment_tokens
from orchestrator.pipeline import Source
from orchestrator.preferences import preferred_categories
from orchestrator.query import RECOMMEND, Deps, RequestQuery
from orchestrator.source_config import BASE_BUDGET, GATES, MAX_K, CandidateSource, UserQuery


def user_query(q: RequestQuery) -> UserQuery:
    """What the gates look at (known once the user is hydrated)."""
    uq = q.scratch.get("user_query")
    if uq is None:
        prefs = q.user.preferences if q.user else None
        uq = q.scratch["user_query"] = UserQuery(
            len(q.history), bool(segment_tokens(q.demographics)), tuple(preferred_categories(prefs)),
            q.params.cold_start_interactions)
    return uq


class ConfiguredSource(Source):
    def __init__(self, spec: CandidateSource, deps: Deps) -> None:
        self.spec = spec
        self.deps = deps
        self.name = spec.name
        self.weight = spec.weight
        self.fill = spec.fill
        self.optional = spec.optional
        self.quota = spec.quota
        self.timeout_s = spec.timeout_ms / 1000 if spec.timeout_ms else deps.settings.retrieval_timeout_s

    def enable(self, q: RequestQuery) -> str | None:
        return GATES[self.spec.gate](user_query(q)) if q.rpc == RECOMMEND else None

    def k(self, q: RequestQuery) -> int:
        """Candidates to ask for: the spec's k, scaled up for requests wanting more than 200 (Recommend);
        the query's own budget for SimilarItems and Trending."""
        if q.rpc != RECOMMEND:
            return q.want
        return min(MAX_K, math.ceil(self.spec.k * max(1.0, q.want / BASE_BUDGET)))
