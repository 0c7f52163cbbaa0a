"""Neighbourhood models over the binary user x item matrix, cosine similarity.

user-kNN: a user's score for an item = sum of similarities of their k most similar
users who interacted with it. item-kNN: sum over the user's items of the item's
similarity to each, keeping only each item's k most similar items.
Similarities are dense matrices: fine for catalogues and user bases up to ~20K.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from evaluation.baselines.matrix import UserItems, l2_normalize_rows
from training.dataset import Dataset


def _keep_top_k(sim: np.ndarray, k: int) -> np.ndarray:
    """Each row of `sim` with all but its k largest entries set to 0."""
    if k >= sim.shape[1]:
        return sim
    drop = np.argpartition(-sim, k, axis=1)[:, k:]
    out = sim.copy()
    np.put_along_axis(out, drop, 0.0, axis=1)
    return out


class UserKNN:
    name = "user-knn"

    def __init__(self, k: int) -> None:
        self.k = k
        self.params = {"k": k}
        self.ui: UserItems | None = None

    def fit(self, train: Dataset, catalog: list[str], seed: int) -> None:
        self.ui = UserItems.build(train, catalog)
        self.Xn = l2_normalize_rows(self.ui.X).astype(np.float32).tocsr()

    def score(self, user_ids: list[str]) -> np.ndarray:
        assert self.ui is not None, "fit first"
        rows = self.ui.rows(user_ids)
        q = l2_normalize_rows(self.ui.block(user_ids)).astype(np.float32)
        sim = (q @ self.Xn.T).toarray()
        known = rows >= 0
        sim[np.flatnonzero(known), rows[known]] = 0.0  # a user is not their own neighbour
        sim = _keep_top_k(sim, self.k)
        return np.asarray((sp.csr_matrix(sim) @ self.ui.X).toarray(), dtype=np.float32)


class ItemKNN:
    name = "item-knn"

    def __init__(self, k: int) -> None:
        self.k = k
        self.params = {"k": k}
        self.ui: UserItems | None = None

    def fit(self, train: Dataset, catalog: list[str], seed: int) -> None:
        self.ui = UserItems.build(train, catalog)
        cols = l2_normalize_rows(self.ui.X.T.tocsr()).astype(np.float32)
        sim = (cols @ cols.T).toarray()
        np.fill_diagonal(sim, 0.0)
        self.sim = sp.csr_matrix(_keep_top_k(sim, self.k))  # row i: item i's k nearest items

    def score(self, user_ids: list[str]) -> np.ndarray:
        assert self.ui is not None, "fit first"
        return np.asarray((self.ui.block(user_ids) @ self.sim).toarray(), dtype=np.float32)


def user_knn_candidates() -> list[UserKNN]:
    return [UserKNN(k) for k in (5, 10, 20, 50, 100)]


def item_knn_candidates() -> list[ItemKNN]:
    return [ItemKNN(k) for k in (50, 100, 200, 400, 800)]
