"""quota: a source with `quota` (a share of the k slots) gets that many of its best candidates shown,
when it has them, so a new source is not crowded out by the ranker's favourites. Within the
diversity caps; quota items are shown in score order with the rest."""

from __future__ import annotations

import math
from collections.abc import Callable

from orchestrator.pipeline import Candidate, Selector, Slots
from orchestrator.query import RequestQuery
from orchestrator.selection import greedy
from orchestrator.selectors.diversity import diversity


def _of(name: str) -> Callable[[Candidate], bool]:
    """Candidates credited to the configured source `name` (its merge group, or one per category)."""
    prefix = f"{name}:"
    return lambda c: c.group == name or c.group.startswith(prefix)


class SourceQuota(Selector):
    name = "source_quota"

    def enable(self, q: RequestQuery) -> str | None:
        return None if any(s.quota for s in q.params.sources) else "no source has a quota"

    def select(self, q: RequestQuery, ranked: list[Candidate], slots: Slots) -> None:
        for spec in q.params.sources:
            if not spec.quota:
                continue
            mine = _of(spec.name)
            have = sum(1 for c in slots.chosen if mine(c))
            n = min(math.floor(spec.quota * slots.k) - have, slots.free)
            pool = [c for c in ranked if mine(c)]
            picked = greedy(pool, n, diversity(q), [*slots.chosen, *slots.fixed.values()])
            slots.chosen += picked
            taken = {c.item_id for c in picked}
            ranked = [c for c in ranked if c.item_id not in taken]
