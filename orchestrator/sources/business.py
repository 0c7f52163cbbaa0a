"""Promoted and pinned items as candidates: a business rule may show an item no source found.

They join after the merge (beyond the candidate limit), so ranking scores them with the rest
and the filters still apply: a pinned item that is unknown, inactive or seen is removed, and
its position is refilled (orchestrator/selectors/pinned.py).
"""

from __future__ import annotations

from orchestrator.pipeline import Candidate, Source
from orchestrator.query import RECOMMEND, RequestQuery


class BusinessItems(Source):
    name = "promoted"
    append = True  # added after the merge, never cut by the candidate limit
    fail_open = False  # pure logic

    def enable(self, q: RequestQuery) -> str | None:
        if q.rpc != RECOMMEND:
            return "only Recommend has promotions"
        return None if q.params.promoted or q.pinned else "no promoted or pinned items"

    async def fetch(self, q: RequestQuery) -> list[Candidate]:
        ids = sorted(q.params.promoted | set(q.pinned.values()))
        return [Candidate(i, "promoted", 0.0, 0.0) for i in ids]
