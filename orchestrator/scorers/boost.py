"""promotion_boost: promoted items get a boost on their normalized score (surface `promotion_boost`,
request `promotions.boost`); every score is then in [0, 1] plus the boost."""

from __future__ import annotations

from orchestrator.pipeline import Candidate, Scorer
from orchestrator.query import RequestQuery


class PromotionBoost(Scorer):
    name = "promotion_boost"
    fail_open = False  # pure logic

    def enable(self, q: RequestQuery) -> str | None:
        return None if q.params.promotion_boost and q.params.promoted else "no boost"

    async def score(self, q: RequestQuery, candidates: list[Candidate]) -> list[Candidate]:
        lo = min((c.score for c in candidates), default=0.0)
        span = (max((c.score for c in candidates), default=0.0) - lo) or 1.0
        promoted, boost = q.params.promoted, q.params.promotion_boost
        for c in candidates:
            c.score = (c.score - lo) / span + (boost if c.item_id in promoted else 0.0)
        return sorted(candidates, key=lambda c: -c.score)
