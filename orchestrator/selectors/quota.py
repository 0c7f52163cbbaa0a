"""quota: a source with `quota` (a share of the k slots) gets that many of its best candidates shown,
when it has them, so a new source is not crowded out by the ranker's favourites. Within the
diversity caps; quota items are shown in score order with the rest."""

from __future__ import annotations

from collections.abc import Callable

from orchestrator.pipeline import Candidate, Selector, Slots
from orchestrator.query import RequestQuery
from orchestrator.selectors.diversity import reserve


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
            picked = reserve(q, ranked, slots, _of(spec.name), spec.quota)
            taken = {c.item_id for c in picked}
            ranked = [c for c in ranked if c.item_id not in taken]
