"""Matrix factorization by alternating least squares for implicit feedback (Hu, Koren, Volinsky 2008).

Every (user, item) cell is fitted: observed ones to 1 with confidence 1 + alpha, the
rest to 0 with confidence 1. Each half-step solves one small ridge system per user
(or item), using Y'Y + alpha * Y_u'Y_u so only the user's own items cost anything.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from evaluation.baselines.matrix import UserItems
from training.dataset import Dataset


def _half_step(R: sp.csr_matrix, Y: np.ndarray, alpha: float, reg: float) -> np.ndarray:
    """Solve for the factors of R's rows given the column factors Y."""
    f = Y.shape[1]
    base = Y.T @ Y + reg * np.eye(f)
    out = np.zeros((R.shape[0], f))
    for u in range(R.shape[0]):
        idx = R.indices[R.indptr[u] : R.indptr[u + 1]]
        if len(idx) == 0:
            continue
        Yu = Y[idx]
        out[u] = np.linalg.solve(base + alpha * (Yu.T @ Yu), (1.0 + alpha) * Yu.sum(axis=0))
    return out


class ALS:
    name = "als"

    def __init__(self, factors: int, reg: float, alpha: float, iterations: int = 15) -> None:
        self.factors, self.reg, self.alpha, self.iterations = factors, reg, alpha, iterations
        self.params = {"factors": factors, "reg": reg, "alpha": alpha, "iterations": iterations}
        self.ui: UserItems | None = None

    def fit(self, train: Dataset, catalog: list[str], seed: int) -> None:
        self.ui = UserItems.build(train, catalog)
        X = self.ui.X.astype(np.float64).tocsr()
        Xt = X.T.tocsr()
        rng = np.random.default_rng(seed)
        self.item_f = rng.normal(0.0, 0.01, size=(X.shape[1], self.factors))
        self.user_f = np.zeros((X.shape[0], self.factors))
        for _ in range(self.iterations):
            self.user_f = _half_step(X, self.item_f, self.alpha, self.reg)
            self.item_f = _half_step(Xt, self.user_f, self.alpha, self.reg)

    def score(self, user_ids: list[str]) -> np.ndarray:
        assert self.ui is not None, "fit first"
        rows = self.ui.rows(user_ids)
        users = np.where((rows >= 0)[:, None], self.user_f[np.maximum(rows, 0)], 0.0)
        return (users @ self.item_f.T).astype(np.float32)


def candidates() -> list[ALS]:
    # a coarse search on validation (factors 32..128, reg 1..100, alpha 0.5..10) put the optimum inside this grid
    return [ALS(f, reg, alpha) for f in (32, 64) for reg in (5.0, 10.0, 20.0) for alpha in (0.25, 0.5, 1.0)]
