"""new_arrivals: the most recently created active items, from the catalogue in process memory.

A catalogue's newest items have no interactions yet, so the learned ranker scores them low;
give the source a slot quota on the surface to keep room for them:

    [[surface.home.sources]]
    name = "new_arrivals"
    k = 50            # candidates (the newest 50 active items)
    quota = 0.2       # 20% of the k slots shown, when it has that many candidates left
"""

from __future__ import annotations

import heapq

from orchestrator.pipeline import Candidate
from orchestrator.query import Deps, RequestQuery
from orchestrator.source_config import CandidateSource
from orchestrator.sources.configured import ConfiguredSource

MAX_NEWEST = 1000


class NewArrivals(ConfiguredSource):
    def __init__(self, spec: CandidateSource, deps: Deps) -> None:
        super().__init__(spec, deps)
        self._newest: list[str] = []
        self._at_version = -1

    def newest(self) -> list[str]:
        """Active items, newest first (recomputed only when the catalogue changed)."""
        catalog = self.deps.catalog
        if self._at_version != catalog.version:
            active = (it for it in catalog.items.values() if it.status == "active" and it.created_at is not None)
            top = heapq.nlargest(MAX_NEWEST, active, key=lambda it: (it.created_at, it.item_id))
            self._newest, self._at_version = [it.item_id for it in top], catalog.version
        return self._newest

    async def fetch(self, q: RequestQuery) -> list[Candidate]:
        picked = [i for i in self.newest() if i not in q.seen][: self.k(q)]
        src = self.spec.retrieval_source
        return [Candidate(i, src, 1 / (1 + r), 1 / (1 + r), group=self.name) for r, i in enumerate(picked)]
