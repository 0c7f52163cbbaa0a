"""seen: items the user already interacted with in a way the surface counts as seen
(`seen_types`; `filters.include_seen` keeps them)."""

from __future__ import annotations

from collections.abc import Callable

from orchestrator.pipeline import Candidate, Filter
from orchestrator.query import RequestQuery


class Seen(Filter):
    name = "seen"

    def enable(self, q: RequestQuery) -> str | None:
        return None if q.seen else "nothing seen"

    def keep(self, q: RequestQuery) -> Callable[[Candidate], bool]:
        seen = q.seen
        return lambda c: c.item_id not in seen
