"""Fallback sources: what a request is answered with when no other source answered (retrieval down).

In order: the user's precomputed recommendations (`recsys batch precompute`), then the
catalogue's popular items (in process memory: they never fail). For SimilarItems and Trending
the catalogue's popular items are a fill instead (they top up a short answer, and stand in
when retrieval is down): popular items sharing a category with the anchor, or of the category.
"""

from __future__ import annotations

import logging

from orchestrator.pipeline import Candidate, Source
from orchestrator.query import RECOMMEND, SIMILAR_ITEMS, Deps, RequestQuery
from storage.precomputed import get_precomputed

log = logging.getLogger(__name__)


class Precomputed(Source):
    name = "precomputed"
    fallback = True
    optional = True  # unavailable too: the next fallback says why the answer is degraded
    instead = "precomputed recommendations"

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.timeout_s = deps.settings.retrieval_timeout_s

    def enable(self, q: RequestQuery) -> str | None:
        return None if q.rpc == RECOMMEND and q.user_id else "only for a known user's Recommend"

    async def fetch(self, q: RequestQuery) -> list[Candidate]:
        async with self.deps.pool.connection() as conn:
            row = await get_precomputed(conn, q.user_id, q.surface)
        return [Candidate(i, "precomputed", s, s) for i, s in (row or []) if i not in q.seen]


class CataloguePopular(Source):
    name = "fallback_popular"
    instead = "popular items"
    fail_open = False  # in process memory: it does not fail

    def __init__(self, deps: Deps, fill: bool = False) -> None:
        self.catalog = deps.catalog
        self.fill = fill
        self.fallback = not fill

    async def fetch(self, q: RequestQuery) -> list[Candidate]:
        popular = self.catalog.popular
        if q.rpc == SIMILAR_ITEMS:  # popular items sharing a category with the anchor, then the rest
            anchor = self.catalog.get(q.item_id)
            cats = set(anchor.categories) if anchor else set()
            near = [(i, s) for i, s in popular if (it := self.catalog.get(i)) and not cats.isdisjoint(it.categories)]
            popular = near or popular
        elif q.category:
            popular = [(i, s) for i, s in popular if (it := self.catalog.get(i)) and q.category in it.categories]
        out: list[Candidate] = []
        for i, s in popular:
            if i not in q.seen:
                out.append(Candidate(i, "fallback_popular", s, s, scope=q.category))
                if len(out) >= q.want:
                    break
        return out
