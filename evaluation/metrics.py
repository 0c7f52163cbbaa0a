"""Full-catalogue ranking metrics, per user.

Every catalogue item is ranked for every evaluated user (no sampled negatives), after
the user's training items are excluded. The relevant items of a user are their
held-out items that are not training items (those could never be recommended).

    Recall@K  = hits in the top K / number of relevant items
    NDCG@K    = sum over hits at 0-based rank r < K of 1 / log2(r + 2), divided by the
                same sum for a perfect list (min(K, relevant) hits at the top)
    HitRate@K = 1 if any relevant item is in the top K
    Coverage@10 = distinct items in anyone's top 10 / catalogue size (one number per model)

Ties in score are broken by one fixed random order of the catalogue, so that a model
scoring everything alike does not profit from the order of item ids.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

KS = (10, 20, 50)
COVERAGE_K = 10


def metric_names(ks: tuple[int, ...] = KS) -> list[str]:
    return [f"{m}@{k}" for m in ("recall", "ndcg", "hitrate") for k in ks]


def tie_order(n_items: int, seed: int = 0) -> np.ndarray:
    """A fixed random permutation of the columns, used to break ties."""
    return np.random.default_rng(seed).permutation(n_items)


def top_k(scores: np.ndarray, exclude: sp.csr_matrix | np.ndarray, k: int, ties: np.ndarray) -> np.ndarray:
    """[U, k] column indices of each row's best k items, -1 where fewer than k are rankable.

    `exclude` (bool, same shape as scores, dense or sparse) marks items that must not be ranked;
    items scored -inf are not ranked either. NaN scores are an error in the model.
    """
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN; a model must return finite scores or -inf")
    s = np.array(scores, dtype=np.float64)  # a copy: the mask below must not touch the caller's array
    mask = exclude.toarray() if sp.issparse(exclude) else np.asarray(exclude)
    s[mask.astype(bool)] = -np.inf
    permuted = -s[:, ties]
    want, k = k, min(k, s.shape[1])
    if k < s.shape[1]:
        # candidates: the k best plus every item tied with the k-th, then an exact stable sort of those
        kth = np.partition(permuted, k - 1, axis=1)[:, k - 1 : k]
        order = np.argsort(np.where(permuted <= kth, permuted, np.inf), axis=1, kind="stable")[:, :k]
    else:
        order = np.argsort(permuted, axis=1, kind="stable")
    cols = ties[order]
    rankable = np.isfinite(np.take_along_axis(s, cols, axis=1))
    top = np.where(rankable, cols, -1)
    if want > k:  # a catalogue smaller than k: the slots past its end stay empty
        top = np.pad(top, ((0, 0), (0, want - k)), constant_values=-1)
    return top


def user_metrics(top: np.ndarray, relevant: sp.csr_matrix, ks: tuple[int, ...] = KS) -> dict[str, np.ndarray]:
    """Per-user metrics from [U, max(ks)] top lists (-1 = empty slot) and [U, n_items] relevant items."""
    n_rel = np.asarray(relevant.sum(axis=1)).ravel().astype(np.float64)
    if (n_rel == 0).any():
        raise ValueError("every evaluated user needs at least one relevant item")
    if top.shape[0] == 0:
        return {f"{m}@{k}": np.zeros(0) for k in ks for m in ("recall", "ndcg", "hitrate")}
    rel = relevant.tocsr()
    rows = np.repeat(np.arange(top.shape[0]), top.shape[1]).reshape(top.shape)
    hit = np.asarray(rel[rows.ravel(), np.maximum(top, 0).ravel()]).reshape(top.shape).astype(bool) & (top >= 0)
    discount = 1.0 / np.log2(np.arange(top.shape[1]) + 2.0)
    ideal_cum = np.cumsum(discount)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        if k > top.shape[1]:
            raise ValueError(f"top lists have {top.shape[1]} columns, K={k} needs at least {k}")
        hits_k = hit[:, :k]
        n_hits = hits_k.sum(axis=1)
        dcg = (hits_k * discount[:k]).sum(axis=1)
        idcg = ideal_cum[np.minimum(n_rel, k).astype(int) - 1]
        out[f"recall@{k}"] = n_hits / n_rel
        out[f"ndcg@{k}"] = dcg / idcg
        out[f"hitrate@{k}"] = (n_hits > 0).astype(np.float64)
    return out


def coverage(top: np.ndarray, n_items: int, k: int = COVERAGE_K) -> float:
    """Share of the catalogue that appears in at least one user's top k."""
    shown = top[:, :k]
    return float(len(np.unique(shown[shown >= 0])) / n_items) if n_items else 0.0
