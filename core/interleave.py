"""How ranked candidate lists from several sources merge into one: shared by the retrieval
service (core/candidates.py) and the orchestrator's candidate stage
(orchestrator/sources.py), which must agree on it, and free of torch and faiss so the
orchestrator can import it."""

from __future__ import annotations

from collections.abc import Sequence


def interleave(
    lists: Sequence[Sequence[str]], limit: int, weights: Sequence[float] | None = None,
) -> list[tuple[str, int, int]]:
    """(item id, list index, rank) of at most `limit` distinct items, best first.

    Lists interleave by weight / (1 + rank): with equal weights, round-robin by rank in list
    order. An item in several lists is placed once, where it ranks best (the earlier list
    winning ties), as a round-robin that skips items already taken would place it.
    """
    best: dict[str, tuple[float, int, int]] = {}
    for li, items in enumerate(lists):
        w = 1.0 if weights is None else weights[li]
        for r, item_id in enumerate(items):
            key = (-w / (1 + r), li, r)
            if item_id not in best or key < best[item_id]:
                best[item_id] = key
    return [(item_id, li, r) for item_id, (_, li, r) in sorted(best.items(), key=lambda kv: kv[1])[:limit]]


def order_scores(n: int) -> list[float]:
    """Scores for n merged candidates kept in their order, 1 / (1 + position): the sources' own scores do not
    compare across sources, and whatever sorts by these keeps the merged order."""
    return [1 / (1 + p) for p in range(n)]
