"""promoted_reserve: `reserved_share` of the k slots are kept for promoted items, when there are
enough of them among the candidates; they are shown in score order with the rest."""

from __future__ import annotations

import math

from orchestrator.pipeline import Candidate, Selector, Slots
from orchestrator.query import RequestQuery
from orchestrator.selection import greedy
from orchestrator.selectors.diversity import diversity


class PromotedReserve(Selector):
    name = "promoted_reserve"

    def enable(self, q: RequestQuery) -> str | None:
        return None if q.params.reserved_share and q.params.promoted else "no reserved share"

    def select(self, q: RequestQuery, ranked: list[Candidate], slots: Slots) -> None:
        promoted = q.params.promoted
        have = sum(1 for c in slots.chosen if c.item_id in promoted)
        n = min(math.floor(q.params.reserved_share * slots.k) - have, slots.free)
        pool = [c for c in ranked if c.item_id in promoted]
        slots.chosen += greedy(pool, n, diversity(q), [*slots.chosen, *slots.fixed.values()])
