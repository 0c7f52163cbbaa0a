"""Selection: from ranked, filtered candidates to the k items shown.

Three steps, each optional:
1. promotions: promoted items get a score boost, and may have a share of the slots
   reserved for them;
2. diversity: maximal marginal relevance (MMR) trades relevance against similarity to
   what is already chosen (similarity = Jaccard overlap of categories), and hard caps
   limit items per category and per price band;
3. pinned items go to fixed positions.

Pure functions over plain values: the pipeline passes ids, scores and catalogue records.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from storage.records import ItemRecord

PRICE_BANDS = (10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0)  # upper edges; above the last: one band


@dataclass(frozen=True)
class Diversity:
    mmr_lambda: float = 1.0  # 1 = relevance only; 0 = diversity only
    max_per_category: int = 0  # 0 = no cap
    max_per_price_band: int = 0

    @property
    def active(self) -> bool:
        return self.mmr_lambda < 1.0 or self.max_per_category > 0 or self.max_per_price_band > 0


@dataclass(frozen=True)
class Promotions:
    item_ids: frozenset[str] = frozenset()
    boost: float = 0.0  # added to a promoted item's (normalized) score
    reserved_share: float = 0.0  # share of the k slots kept for promoted items, when there are enough
    pinned: dict[int, str] = field(default_factory=dict)  # 0-based position -> item id


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


def _normalized(scores: Sequence[float]) -> list[float]:
    lo, hi = min(scores, default=0.0), max(scores, default=0.0)
    span = (hi - lo) or 1.0
    return [(s - lo) / span for s in scores]


def select(
    ids: Sequence[str], scores: Sequence[float], k: int, item: Callable[[str], ItemRecord | None],
    diversity: Diversity | None = None, promotions: Promotions | None = None,
) -> list[int]:
    """Indices into ids (best first) of the items to show, at most k."""
    diversity, promotions = diversity or Diversity(), promotions or Promotions()
    rel = _normalized(scores)
    if promotions.boost:
        rel = [r + promotions.boost if i in promotions.item_ids else r for r, i in zip(rel, ids, strict=True)]
    pinned_ids = set(promotions.pinned.values())
    pool = [j for j in range(len(ids)) if ids[j] not in pinned_ids]
    n_free = k - sum(1 for pos in promotions.pinned if pos < k)
    reserved = min(math.floor(promotions.reserved_share * k), n_free)
    promoted = [j for j in pool if ids[j] in promotions.item_ids]
    chosen = _greedy(ids, rel, promoted, min(reserved, len(promoted)), item, diversity, [])
    taken = set(chosen)
    chosen += _greedy(ids, rel, [j for j in pool if j not in taken], n_free - len(chosen), item, diversity, chosen)
    chosen.sort(key=lambda j: -rel[j])  # reserved slots interleave by score, not at the top
    return _pin(ids, chosen, promotions.pinned, k)


def _greedy(
    ids: Sequence[str], rel: list[float], pool: list[int], n: int, item: Callable[[str], ItemRecord | None],
    diversity: Diversity, already: list[int],
) -> list[int]:
    """Pick n from pool: MMR when lambda < 1, respecting the caps; `already` counts toward caps and similarity."""
    records = {j: item(ids[j]) for j in [*pool, *already]}
    cats = {j: r.categories if r else [] for j, r in records.items()}
    bands = {j: price_band(r.price if r else None) for j, r in records.items()}
    per_cat: Counter[str] = Counter(c for j in already for c in cats[j])
    per_band: Counter[int] = Counter(bands[j] for j in already)
    chosen: list[int] = []
    remaining = sorted(pool, key=lambda j: -rel[j])
    lam = diversity.mmr_lambda
    while remaining and len(chosen) < n:
        best, best_value = None, -math.inf
        for j in remaining:
            if diversity.max_per_category and any(per_cat[c] >= diversity.max_per_category for c in cats[j]):
                continue
            if diversity.max_per_price_band and bands[j] >= 0 and per_band[bands[j]] >= diversity.max_per_price_band:
                continue
            if lam >= 1.0:  # plain relevance order: the first allowed one is the best
                best = j
                break
            sim = max((_jaccard(cats[j], cats[c]) for c in [*already, *chosen]), default=0.0)
            value = lam * rel[j] - (1 - lam) * sim
            if value > best_value:
                best, best_value = j, value
        if best is None:  # the caps exclude everything left
            break
        chosen.append(best)
        remaining.remove(best)
        per_cat.update(cats[best])
        per_band[bands[best]] += 1
    return chosen


def _pin(ids: Sequence[str], chosen: list[int], pinned: dict[int, str], k: int) -> list[int]:
    if not pinned:
        return chosen[:k]
    index = {i: j for j, i in enumerate(ids)}
    out: list[int] = []
    rest = iter(chosen)
    for pos in range(k):
        if pos in pinned and pinned[pos] in index:
            out.append(index[pinned[pos]])
            continue
        nxt = next(rest, None)
        if nxt is None:
            break
        out.append(nxt)
    return out
