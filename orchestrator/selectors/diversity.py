"""top_k: the free slots from the ranked candidates, best first, with the surface's diversity
(MMR `mmr_lambda`, `max_per_category`, `max_per_price_band`; the request's `diversity` overrides).
Always the last selector: it fills whatever the others left."""

from __future__ import annotations

from orchestrator.pipeline import Candidate, Selector, Slots
from orchestrator.query import RequestQuery
from orchestrator.selection import Diversity, greedy


def diversity(q: RequestQuery) -> Diversity:
    p = q.params
    return Diversity(p.mmr_lambda, p.max_per_category, p.max_per_price_band)


class TopK(Selector):
    name = "top_k"

    def select(self, q: RequestQuery, ranked: list[Candidate], slots: Slots) -> None:
        slots.chosen += greedy(ranked, slots.free, diversity(q), [*slots.chosen, *slots.fixed.values()])
