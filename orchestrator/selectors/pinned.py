"""pinned: the request's pinned items (promotions.pinned: position -> item) at their positions.

Only pins whose item survived the filters take their position; a pin whose item was filtered out
(unknown, inactive, seen, excluded) leaves the position to the ranked reserve, so the answer
still has k items whenever k candidates survive."""

from __future__ import annotations

from orchestrator.pipeline import Candidate, Selector, Slots
from orchestrator.query import RequestQuery


class Pinned(Selector):
    name = "pinned"

    def enable(self, q: RequestQuery) -> str | None:
        return None if q.pinned else "nothing pinned"

    def select(self, q: RequestQuery, ranked: list[Candidate], slots: Slots) -> None:
        by_id = {c.item_id: c for c in ranked}
        for pos, item_id in sorted(q.pinned.items()):
            c = by_id.pop(item_id, None)
            if pos < slots.k and c is not None and pos not in slots.fixed:
                slots.fixed[pos] = c
