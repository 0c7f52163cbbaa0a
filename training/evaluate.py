"""Held-out evaluation: rank the whole catalogue for each user's last interaction.

Items the user already interacted with are excluded from the ranking (serving filters
them too), and the held-out item's rank gives Recall@K (hit in the top K; one relevant
item per user) and NDCG@K (1 / log2(rank + 2) when in the top K).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from training.examples import Examples

Scorer = Callable[[torch.Tensor], torch.Tensor]  # holdout positions [P] -> scores [P, n_items + 1]


def ranks(scorer: Scorer, ex: Examples, batch_size: int = 1024) -> torch.Tensor:
    """[U] 0-based rank of each held-out item among all items not seen before (float: ties)."""
    out = []
    for positions in ex.holdout.split(batch_size):
        scores = scorer(positions).clone()
        scores[:, 0] = -torch.inf  # padding is not an item
        rows, seen = ex.prior(positions)
        scores[rows, seen] = -torch.inf
        target = scores.gather(1, ex.items[positions].unsqueeze(1))
        # ties share the middle place: a model scoring everything equal must not look perfect
        above, equal = (scores > target).sum(dim=1), (scores == target).sum(dim=1) - 1
        out.append(above + equal / 2)
    return torch.cat(out) if out else torch.empty(0)


def ranking_metrics(rank: torch.Tensor, recall_k: int = 20, ndcg_k: int = 10) -> dict[str, float]:
    if len(rank) == 0:
        return {f"recall@{recall_k}": 0.0, f"ndcg@{ndcg_k}": 0.0}
    rank = rank.double()
    ndcg = torch.where(rank < ndcg_k, 1.0 / torch.log2(rank + 2.0), 0.0)
    return {f"recall@{recall_k}": float((rank < recall_k).double().mean()), f"ndcg@{ndcg_k}": float(ndcg.mean())}


def popularity_scorer(ex: Examples, n_items: int) -> Scorer:
    """The baseline: every user gets the most frequent training items."""
    counts = ex.item_counts(n_items)
    return lambda positions: counts.expand(len(positions), -1)
