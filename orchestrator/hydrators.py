"""Hydrators: the user before the sources run (query hydration), the catalogue record of each candidate."""

from __future__ import annotations

import time

from orchestrator.pipeline import Candidate, Hydrator, QueryHydrator
from orchestrator.query import Deps, RequestQuery
from storage.interactions import user_and_history

HISTORY_LIMIT = 1000  # seen-filter horizon


class UserHistory(QueryHydrator):
    """The user (demographics, preferences) and history (most recent first, with interaction types and
    times) from PostgreSQL, or from this process's hot histories while the user's history generation
    has not moved (orchestrator/histories.py), and what the surface counts as seen. Fails open: a cold
    start, degraded."""

    name = "user"

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.timeout_s = deps.settings.retrieval_timeout_s  # a history read takes about a millisecond

    def enable(self, q: RequestQuery) -> str | None:
        return None if q.user_id else "no user"

    async def hydrate(self, q: RequestQuery) -> None:
        generation = q.scratch.get("history_gen")  # read by the cache lookup (orchestrator/histories.py)
        held = self.deps.histories.get(q.user_id, generation)
        if held is not None:
            q.user, q.history = held
        else:
            read_at = time.monotonic()
            async with self.deps.pool.connection() as conn:
                q.user, q.history = await user_and_history(conn, q.user_id, HISTORY_LIMIT)
            self.deps.histories.put(q.user_id, generation, read_at, q.user, q.history)
        if not q.filters.include_seen:
            seen_types = q.params.seen_types
            q.seen = {h.item_id for h in q.history if not h.types.isdisjoint(seen_types)}

    def failure_note(self, exc: BaseException) -> str:
        return f"user history unavailable ({type(exc).__name__}): cold start"


class CatalogueItems(Hydrator):
    """Each candidate's catalogue record (in process memory): what filters, diversity and decoration read."""

    name = "catalogue"
    fail_open = False  # a dict lookup

    def __init__(self, deps: Deps) -> None:
        self.catalog = deps.catalog

    async def hydrate(self, q: RequestQuery, candidates: list[Candidate]) -> None:
        get = self.catalog.items.get
        for c in candidates:
            c.item = get(c.item_id)
