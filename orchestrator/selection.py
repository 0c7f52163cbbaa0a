"""Selection math shared by the selectors: diversity (MMR over category overlap, caps per category
and price band) and the greedy pick that respects them.

Maximal marginal relevance trades relevance (the normalized score) against similarity to what
is already chosen (Jaccard overlap of categories); hard caps limit items per category and per
price band. Pure functions over candidates (Candidate.item holds the catalogue record).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.pipeline import Candidate

PRICE_BANDS = (10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0)  # upper edges; above the last: one band


@dataclass(frozen=True)
class Diversity:
    mmr_lambda: float = 1.0  # 1 = relevance only; 0 = diversity only
    max_per_category: int = 0  # 0 = no cap
    max_per_price_band: int = 0

    @property
    def active(self) -> bool:
        return self.mmr_lambda < 1.0 or self.max_per_category > 0 or self.max_per_price_band > 0


def price_band(price: float | None) -> int:
    if price is None:
        return -1
    for i, edge in enumerate(PRICE_BANDS):
        if price < edge:
            return i
    return len(PRICE_BANDS)


def _jaccard(a: Sequence[str], b: Sequence[str]) -> float:
    if not a or not b:
        return 0.0
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb)


def _categories(c: Candidate) -> list[str]:
    return c.item.categories if c.item is not None else []


def _band(c: Candidate) -> int:
    return price_band(c.item.price if c.item is not None else None)


def greedy(
    pool: Sequence[Candidate], n: int, diversity: Diversity, already: Sequence[Candidate] = (),
) -> list[Candidate]:
    """Pick up to n of pool (best score first): MMR when lambda < 1, within the caps; `already` counts toward
    the caps and the similarity."""
    if n <= 0 or not pool:
        return []
    lam = diversity.mmr_lambda
    ranked = sorted(pool, key=lambda c: -c.score)
    if not diversity.active:
        return ranked[:n]
    lo, hi = ranked[-1].score, ranked[0].score
    span = (hi - lo) or 1.0
    per_cat: Counter[str] = Counter(cat for c in already for cat in _categories(c))
    per_band: Counter[int] = Counter(_band(c) for c in already)
    chosen: list[Candidate] = []
    remaining = ranked
    while remaining and len(chosen) < n:
        best, best_value = None, -math.inf
        for c in remaining:
            cats, band = _categories(c), _band(c)
            if diversity.max_per_category and any(per_cat[x] >= diversity.max_per_category for x in cats):
                continue
            if diversity.max_per_price_band and band >= 0 and per_band[band] >= diversity.max_per_price_band:
                continue
            if lam >= 1.0:  # plain relevance order: the first allowed one is the best
                best = c
                break
            sim = max((_jaccard(cats, _categories(o)) for o in [*already, *chosen]), default=0.0)
            value = lam * (c.score - lo) / span - (1 - lam) * sim
            if value > best_value:
                best, best_value = c, value
        if best is None:  # the caps exclude everything left
            break
        chosen.append(best)
        remaining = [c for c in remaining if c is not best]
        per_cat.update(_categories(best))
        per_band[_band(best)] += 1
    return chosen
