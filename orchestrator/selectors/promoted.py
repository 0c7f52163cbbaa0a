"""promoted_reserve: `reserved_share` of the k slots are kept for promoted items, when there are
enough of them among the candidates; they are shown in score order with the rest."""

from __future__ import annotations

from orchestrator.pipeline import Candidate, Selector, Slots
from orchestrator.query import RequestQuery
from orchestrator.selectors.diversity import reserve


class PromotedReserve(Selector):
    name = "promoted_reserve"

    def enable(self, q: RequestQuery) -> str | None:
        return None if q.params.reserved_share and q.params.promoted else "no reserved share"

    def select(self, q: RequestQuery, ranked: list[Candidate], slots: Slots) -> None:
        promoted = q.params.promoted
        reserve(q, ranked, slots, lambda c: c.item_id in promoted, q.params.reserved_share)
