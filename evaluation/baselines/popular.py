"""Most popular: the same list for everyone, by how many users interacted with each item."""

from __future__ import annotations

import numpy as np

from evaluation.baselines.matrix import UserItems, item_counts
from training.dataset import Dataset


class MostPopular:
    name = "most-popular"
    params: dict[str, object] = {}

    def __init__(self) -> None:
        self.counts = np.zeros(0, dtype=np.float32)

    def fit(self, train: Dataset, catalog: list[str], seed: int) -> None:
        self.counts = item_counts(UserItems.build(train, catalog).X).astype(np.float32)

    def score(self, user_ids: list[str]) -> np.ndarray:
        return np.tile(self.counts, (len(user_ids), 1))


def candidates() -> list[MostPopular]:
    return [MostPopular()]
