"""inactive: items the catalogue does not know, or whose status is not active (out of stock, retired).

Runs first, so later filters see known items (Candidate.item set by the catalogue hydrator)."""

from __future__ import annotations

from collections.abc import Callable

from orchestrator.pipeline import Candidate, Filter
from orchestrator.query import RequestQuery


class Inactive(Filter):
    name = "inactive"

    def keep(self, q: RequestQuery) -> Callable[[Candidate], bool]:
        return lambda c: c.item is not None and c.item.status == "active"
