"""Co-visitation: "people who interacted with this also interacted with": item-to-item
neighbour lists from pairs of one user's interactions close in time.

Two interactions of a user form a pair when they are at most `max_lag` interactions
and `window_s` seconds apart (a session, loosely). Each pair counts the product of the
two interactions' weights: a purchase outweighs an add-to-cart, a click, a view; a
rating counts by its value, and low ratings count nothing. Scores are co-counts
normalised like a cosine, C(a, b) / sqrt(S(a) S(b)) with S the item's total co-count,
so a film everyone watched does not top every list. Each item keeps its `top_n`
best neighbours.

    <version>/covisitation.npz   indptr, neighbours, scores (CSR over item_ids)
    <version>/covisitation.json  item_ids and the build config
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from core import npz_store

NAME = "covisitation"  # covisitation.npz + covisitation.json in a version folder
NPZ = f"{NAME}.npz"

# Interaction strength by type; "rating" is weighted by its value (rating_weight).
TYPE_WEIGHTS = {"purchase": 1.0, "add_to_cart": 0.6, "like": 0.5, "click": 0.3, "view": 0.1}


@dataclass
class CovisitationConfig:
    window_s: float = 86_400.0  # pairs at most a day apart
    max_lag: int = 20  # ... and at most this many interactions apart in the user's sequence
    top_n: int = 100  # neighbours kept per item
    min_count: float = 1.0  # pairs with a weighted co-count below this are noise
    rating_max: float = 5.0  # the rating scale: ratings below 40% of it count nothing


def interaction_weights(types: np.ndarray, values: np.ndarray, rating_max: float = 5.0) -> np.ndarray:
    """Strength of each interaction, 0..1: by type, and for ratings by value (5/5 -> 1, 2/5 -> 0)."""
    types = np.asarray(types, dtype=object)
    values = np.asarray(values, dtype=np.float64)
    out = np.zeros(len(types), dtype=np.float64)
    for name, w in TYPE_WEIGHTS.items():
        out[types == name] = w
    rated = types == "rating"
    low = 0.4 * rating_max
    out[rated] = np.clip((values[rated] - low) / (rating_max - low), 0.0, 1.0)
    return out


@dataclass
class Covisitation:
    item_ids: list[str]
    indptr: np.ndarray  # int64 [n_items + 1]; item i's neighbours are entries indptr[i]:indptr[i + 1]
    neighbours: np.ndarray  # int32 indices into item_ids, best first
    scores: np.ndarray  # float32, same length
    config: CovisitationConfig = field(default_factory=CovisitationConfig)
    _row: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._row = {item_id: i for i, item_id in enumerate(self.item_ids)}

    def row(self, item_id: str) -> int | None:
        return self._row.get(item_id)

    def neighbours_of(self, item_id: str, k: int | None = None) -> list[tuple[str, float]]:
        """Up to k (all when None) neighbours of an item, best first; [] for an item without any."""
        i = self._row.get(item_id)
        if i is None:
            return []
        lo, hi = int(self.indptr[i]), int(self.indptr[i + 1])
        hi = hi if k is None else min(hi, lo + k)
        return [(self.item_ids[j], float(s)) for j, s in
                zip(self.neighbours[lo:hi].tolist(), self.scores[lo:hi].tolist(), strict=True)]

    def save(self, version_dir: Path) -> None:
        npz_store.save(version_dir, NAME, {"indptr": self.indptr, "neighbours": self.neighbours, "scores": self.scores},
                       {"config": asdict(self.config), "item_ids": self.item_ids})


def load(version_dir: Path) -> Covisitation | None:
    """The version's co-visitation lists; None when the version was built without them."""
    stored = npz_store.load(version_dir, NAME)
    if stored is None:
        return None
    z, meta = stored
    config = CovisitationConfig(**meta["config"])
    return Covisitation(meta["item_ids"], z["indptr"], z["neighbours"], z["scores"], config)
