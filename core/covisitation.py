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
import pandas as pd

from core import npz_store
from training.dataset import Dataset

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


def build(dataset: Dataset, config: CovisitationConfig | None = None) -> Covisitation:
    cfg = config or CovisitationConfig()
    item_ids = [str(i) for i in dataset.items["item_id"]]
    n = len(item_ids)
    inter = dataset.interactions
    weight = interaction_weights(inter["type"].to_numpy(), inter["value"].to_numpy(), cfg.rating_max)
    keep = weight > 0
    item = pd.Categorical(inter["item_id"][keep], categories=item_ids).codes.astype(np.int64)
    user = pd.factorize(inter["user_id"][keep])[0]
    ts = inter["ts"][keep].astype("int64").to_numpy() / 1e9  # datetime64[ns, UTC] -> unix seconds
    weight = weight[keep]
    order = np.lexsort((ts, user))  # each user's interactions in time order
    item, user, ts, weight = item[order], user[order], ts[order], weight[order]

    src, dst, w = [], [], []
    for lag in range(1, cfg.max_lag + 1):
        a, b = slice(0, len(item) - lag), slice(lag, len(item))
        ok = (user[a] == user[b]) & (ts[b] - ts[a] <= cfg.window_s) & (item[a] != item[b]) & (item[a] >= 0) \
            & (item[b] >= 0)
        if not ok.any():
            break  # no user has this many interactions within the window
        pair_w = weight[a][ok] * weight[b][ok]
        src += [item[a][ok], item[b][ok]]
        dst += [item[b][ok], item[a][ok]]
        w += [pair_w, pair_w]
    if not src:
        return Covisitation(item_ids, np.zeros(n + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), cfg)

    keys, inverse = np.unique(np.concatenate(src) * n + np.concatenate(dst), return_inverse=True)
    counts = np.bincount(inverse, weights=np.concatenate(w))
    a, b = keys // n, keys % n
    totals = np.bincount(a, weights=counts, minlength=n)
    scores = counts / np.sqrt(totals[a] * totals[b])
    ok = counts >= cfg.min_count
    a, b, scores = a[ok], b[ok], scores[ok]

    order = np.lexsort((-scores, a))  # by item, best first
    a, b, scores = a[order], b[order], scores[order]
    starts = np.searchsorted(a, np.arange(n))
    rank = np.arange(len(a)) - starts[a]
    top = rank < cfg.top_n
    a, b, scores = a[top], b[top], scores[top]
    indptr = np.zeros(n + 1, dtype=np.int64)
    indptr[1:] = np.cumsum(np.bincount(a, minlength=n))
    return Covisitation(item_ids, indptr, b.astype(np.int32), scores.astype(np.float32), cfg)
