"""EASE (Steck 2019): a closed-form item x item linear model, and its recency-weighted variant.

B = I - P / diag(P) with P = (X'X + lambda I)^-1, diag(B) = 0; a user's scores are
their history row times B. The recency-weighted variant fits the same B but, at
scoring time, weights each training item by 0.5 ** (age / half-life), age measured
back from the user's latest training interaction (a per-user constant shift of the
reference time would scale a user's scores, not reorder them).
"""

from __future__ import annotations

import math
import time

import numpy as np

from evaluation.baselines.matrix import UserItems
from training.dataset import Dataset

LAMBDAS = (50.0, 100.0, 200.0, 400.0, 800.0, 1600.0)
# MovieLens users rate in sessions, seconds apart: the useful half-lives go down to minutes (1 day = 1440,
# 1 week = 10080); inf = no decay, plain EASE
HALF_LIVES_MINUTES = (1.0, 2.0, 5.0, 15.0, 60.0, 360.0, 1440.0, 10080.0, math.inf)


_CACHE: list[tuple[Dataset, list[str], float, UserItems, np.ndarray, float]] = []
_CACHE_SIZE = 1  # the grid is lambda-major: consecutive candidates share B


def fit_cached(train: Dataset, catalog: list[str], lam: float) -> tuple[UserItems, np.ndarray, float]:
    """(UserItems, B, seconds reused) for this training set and lambda: the recency grid shares one B per lambda."""
    for data, cat, lam_, ui, b, seconds in _CACHE:
        if data is train and cat == catalog and lam_ == lam:
            return ui, b, seconds
    t0 = time.perf_counter()
    ui = UserItems.build(train, catalog)
    b = ease_weights(ui, lam)
    _CACHE.append((train, list(catalog), lam, ui, b, time.perf_counter() - t0))  # holding `train` keeps `is` sound
    del _CACHE[:-_CACHE_SIZE]
    return ui, b, 0.0


def ease_weights(ui: UserItems, lam: float) -> np.ndarray:
    g = (ui.X.T @ ui.X).toarray().astype(np.float64)
    g[np.diag_indices_from(g)] += lam
    p = np.linalg.inv(g)
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    return b.astype(np.float32)


class EASE:
    name = "ease"

    def __init__(self, lam: float) -> None:
        self.lam = lam
        self.params: dict[str, object] = {"lambda": lam}
        self.ui: UserItems | None = None

    def fit(self, train: Dataset, catalog: list[str], seed: int) -> None:
        self.ui = UserItems.build(train, catalog)
        self.B = ease_weights(self.ui, self.lam)

    def score(self, user_ids: list[str]) -> np.ndarray:
        assert self.ui is not None, "fit first"
        return np.asarray(self.ui.block(user_ids) @ self.B, dtype=np.float32)


class RecencyEASE(EASE):
    name = "ease-recency"

    def __init__(self, lam: float, half_life_minutes: float) -> None:
        super().__init__(lam)
        self.half_life_minutes = half_life_minutes
        self.params = {"lambda": lam, "half_life_minutes": half_life_minutes}

    def fit(self, train: Dataset, catalog: list[str], seed: int) -> None:
        self.ui, self.B, self.reused_seconds = fit_cached(train, catalog, self.lam)

    def score(self, user_ids: list[str]) -> np.ndarray:
        assert self.ui is not None, "fit first"
        return np.asarray(self.ui.recency_weights(user_ids, self.half_life_minutes * 60.0) @ self.B, dtype=np.float32)


def ease_candidates() -> list[EASE]:
    return [EASE(lam) for lam in LAMBDAS]


def recency_candidates() -> list[EASE]:
    return [RecencyEASE(lam, h) for lam in LAMBDAS for h in HALF_LIVES_MINUTES]
