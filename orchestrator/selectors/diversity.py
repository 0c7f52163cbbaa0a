"""top_k: the free slots from the ranked candidates, best first, with the surface's diversity
(MMR `mmr_lambda`, `max_per_category`, `max_per_price_band`; the request's `diversity` overrides).
Always the last selector: it fills whatever the others left."""

from __future__ import annotations

import math
from collections.abc import Callable

from orchestrator.pipeline import Candidate, Selector, Slots
from orchestrator.query import RequestQuery
from orchestrator.selection import Diversity, greedy


def diversity(q: RequestQuery) -> Diversity:
    p = q.params
    return Diversity(p.mmr_lambda, p.max_per_category, p.max_per_price_band)


def reserve(q: RequestQuery, ranked: list[Candidate], slots: Slots, mine: Callable[[Candidate], bool],
            share: float) -> list[Candidate]:
    """Keep floor(share * k) slots, less those already holding one of `mine`, for the best of `mine` in
    `ranked` (within the diversity caps); returns what it placed."""
    have = sum(1 for c in slots.chosen if mine(c))
    n = min(math.floor(share * slots.k) - have, slots.free)
    picked = greedy([c for c in ranked if mine(c)], n, diversity(q), [*slots.chosen, *slots.fixed.values()])
    slots.chosen += picked
    return picked


class TopK(Selector):
    name = "top_k"

    def select(self, q: RequestQuery, ranked: list[Candidate], slots: Slots) -> None:
        slots.chosen += greedy(ranked, slots.free, diversity(q), [*slots.chosen, *slots.fixed.values()])
