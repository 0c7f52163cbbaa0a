"""The model interface of the evaluation harness.

A model family plugs in as a `Family`: a name and `candidates()`, the small grid of
configured, unfitted Recommenders. The harness fits each candidate on the inner
training split, picks the one with the best validation NDCG@10, then fits that one
again on the whole training split (once per seed when stochastic) and scores test.

Contract of a Recommender:
- `fit` may be called more than once on the same object; each call starts over.
- `train` holds every user and item of the data set but ONLY training interactions:
  nothing about the validation or test periods is reachable from it.
- `score` returns float32 [len(user_ids), len(catalog)], columns in `catalog` order,
  higher = better; -inf marks items the model does not propose at all. The harness
  excludes each user's training items itself, so a model need not mask them.
- `params` (optional attribute, a dict) names the hyper-parameters, for the report.
- `reused_seconds` (optional attribute, set by fit): seconds of fitting work the fit
  took from a cache shared with another candidate or family; the harness adds it to
  the fit time it measures, so reported fit times are what a fit costs on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from training.dataset import Dataset


@runtime_checkable
class Recommender(Protocol):
    name: str

    def fit(self, train: Dataset, catalog: list[str], seed: int) -> None:
        """train: all users and items, ONLY the training interactions; catalog: item ids in score() column order."""
        ...

    def score(self, user_ids: list[str]) -> np.ndarray:
        """float32 [len(user_ids), len(catalog)], higher = better; the harness masks each user's train items."""
        ...


@dataclass(frozen=True)
class Family:
    """A model family: its grid of hyper-parameter candidates, chosen by validation NDCG@10."""

    name: str  # the name used on the command line and in the report
    candidates: Callable[[], list[Recommender]]
    stochastic: bool = False  # reported as mean ± std over the harness's seeds (3) instead of one run
    description: str = ""


def params_of(model: Recommender) -> dict[str, object]:
    return dict(getattr(model, "params", {}) or {})
