"""Popular in the user's segments: the classic cold-start baseline.

The same lists and scoring rule as the served segment_popular source (core.segments:
age band, gender, occupation, location; lift-weighted counts), with overall popularity
under it so items outside every segment list still have an order.
"""

from __future__ import annotations

import numpy as np

from core import segments
from evaluation.baselines.matrix import UserItems, item_counts
from training.dataset import Dataset
from training.sources import build_segments

BACKOFF = 1e-3  # overall popularity, scaled to at most this: below any segment list's score


class SegmentPopular:
    name = "segment-popular"
    params: dict[str, object] = {}

    def fit(self, train: Dataset, catalog: list[str], seed: int) -> None:
        self.lists = build_segments(train)
        self.column = {item_id: j for j, item_id in enumerate(catalog)}
        counts = item_counts(UserItems.build(train, catalog).X).astype(np.float32)
        self.base = counts / max(float(counts.max()), 1.0) * BACKOFF
        self.tokens = {str(u): segments.segment_tokens(d)
                       for u, d in zip(train.users["user_id"], train.users["demographics"], strict=True)}

    def score(self, user_ids: list[str]) -> np.ndarray:
        out = np.tile(self.base, (len(user_ids), 1))
        for row, user_id in enumerate(user_ids):
            for item_id, score in self.lists.scores(self.tokens.get(user_id, [])).items():
                j = self.column.get(item_id)
                if j is not None:
                    out[row, j] += score
        return out


def candidates() -> list[SegmentPopular]:
    return [SegmentPopular()]
