"""anchor: SimilarItems never answers with the item it was asked about."""

from __future__ import annotations

from collections.abc import Callable

from orchestrator.pipeline import Candidate, Filter
from orchestrator.query import RequestQuery


class Anchor(Filter):
    name = "anchor"

    def enable(self, q: RequestQuery) -> str | None:
        return None if q.item_id else "no anchor item"

    def keep(self, q: RequestQuery) -> Callable[[Candidate], bool]:
        anchor = q.item_id
        return lambda c: c.item_id != anchor
