"""A weighted scorer over retrieval score and Feast features.

score = w_retrieval * retrieval score (min-max within the request)
      + w_popularity * log-popularity (relative to the most popular item)
      + w_rating * Bayesian-shrunk average rating, centred
      + w_affinity * share of the user's recent items sharing a category with the item

The weights are plain configuration; the learned ranker replaces this class behind
the same `score` signature.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ScorerWeights:
    retrieval: float = 1.0
    popularity: float = 0.15
    rating: float = 0.05
    affinity: float = 0.15
    rating_prior: float = 3.5   # average rating assumed for items with few ratings
    rating_prior_n: float = 10  # how many ratings the prior is worth


@dataclass(frozen=True)
class ScoredCandidate:
    index: int  # position in the input
    score: float
    parts: dict[str, float]


def category_profile(recent_item_ids: Sequence[str], items: Mapping[str, Mapping[str, Any]]) -> Counter[str]:
    """How often each category appears among the user's recent items."""
    profile: Counter[str] = Counter()
    for item_id in recent_item_ids:
        profile.update(items.get(item_id, {}).get("categories") or [])
    return profile


class WeightedScorer:
    version = "weighted-v1"

    def __init__(self, weights: ScorerWeights | None = None) -> None:
        self.w = weights or ScorerWeights()

    def score(
        self,
        retrieval_scores: Sequence[float],
        item_features: Sequence[Mapping[str, Any]],
        profile: Counter[str],
        max_popularity: int,
    ) -> list[ScoredCandidate]:
        w = self.w
        lo, hi = (min(retrieval_scores), max(retrieval_scores)) if retrieval_scores else (0.0, 0.0)
        span = (hi - lo) or 1.0
        n_recent = sum(profile.values()) or 1
        log_max = math.log1p(max(max_popularity, 1))
        out = []
        for i, (rs, f) in enumerate(zip(retrieval_scores, item_features, strict=True)):
            n = float(f.get("n_ratings") or 0)
            avg = float(f.get("avg_rating") or 0.0)
            shrunk = (avg * n + w.rating_prior * w.rating_prior_n) / (n + w.rating_prior_n)
            cats = f.get("categories") or []
            parts = {
                "retrieval": w.retrieval * (rs - lo) / span,
                "popularity": w.popularity * math.log1p(float(f.get("popularity") or 0)) / log_max,
                "rating": w.rating * (shrunk - w.rating_prior),
                "affinity": w.affinity * sum(profile[c] for c in cats) / n_recent / max(len(cats), 1),
            }
            out.append(ScoredCandidate(i, sum(parts.values()), parts))
        out.sort(key=lambda s: (-s.score, s.index))
        return out
