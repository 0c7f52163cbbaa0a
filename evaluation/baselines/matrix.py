"""The user x item matrix every collaborative baseline fits on.

Every interaction counts as implicit feedback (repeats collapse to one); alongside
it, the age of each user-item pair: time from the user's latest interaction with the
item to the user's latest training interaction, for recency weighting at scoring time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from training.dataset import Dataset


@dataclass
class UserItems:
    catalog: list[str]
    user_row: dict[str, int]  # users with at least one training interaction on a catalogue item
    X: sp.csr_matrix  # float32 [n_users, n_items], 1 where the user interacted with the item
    age_s: sp.csr_matrix  # float64, same sparsity as X: seconds before the user's latest interaction

    @classmethod
    def build(cls, train: Dataset, catalog: list[str]) -> UserItems:
        inter = train.interactions
        cols = pd.Index(catalog).get_indexer(inter["item_id"])
        keep = cols >= 0  # interactions with items outside the catalogue cannot be scored
        frame = pd.DataFrame({
            "user": inter["user_id"].to_numpy()[keep],
            "col": cols[keep],
            "t": inter["ts"].astype("int64").to_numpy()[keep] / 1e9,
        })
        last = frame.groupby(["user", "col"], sort=True)["t"].max().reset_index()
        users, rows = np.unique(last["user"].to_numpy(), return_inverse=True)
        user_last = last.groupby("user", sort=True)["t"].max().to_numpy()[rows]
        shape = (len(users), len(catalog))
        ones = np.ones(len(last), dtype=np.float32)
        X = sp.csr_matrix((ones, (rows, last["col"].to_numpy())), shape=shape)
        # +1 s keeps every stored age non-zero, so the sparsity pattern matches X exactly
        age = sp.csr_matrix((user_last - last["t"].to_numpy() + 1.0, (rows, last["col"].to_numpy())), shape=shape)
        return cls(catalog=list(catalog), user_row={u: i for i, u in enumerate(users)}, X=X, age_s=age)

    @property
    def n_items(self) -> int:
        return len(self.catalog)

    def rows(self, user_ids: list[str]) -> np.ndarray:
        """Matrix row of each user, -1 for users without training interactions."""
        return np.array([self.user_row.get(u, -1) for u in user_ids], dtype=np.int64)

    def block(self, user_ids: list[str], matrix: sp.csr_matrix | None = None) -> sp.csr_matrix:
        """Rows of X (or of `matrix`, aligned with X) for these users; unknown users get empty rows."""
        m = self.X if matrix is None else matrix
        rows = self.rows(user_ids)
        known = rows >= 0
        picked = m[np.where(known, rows, 0)]
        out = (sp.diags(known.astype(m.dtype)) @ picked).tocsr()  # zero the rows of unknown users
        out.eliminate_zeros()
        return out

    def recency_weights(self, user_ids: list[str], half_life_s: float) -> sp.csr_matrix:
        """X's rows for these users with each item weighted 0.5 ** (age / half-life)."""
        w = self.block(user_ids, self.age_s).tocsr(copy=True)
        if np.isinf(half_life_s):
            w.data = np.ones_like(w.data)
        else:
            w.data = np.power(0.5, (w.data - 1.0) / half_life_s)
        return w.astype(np.float32)


def item_counts(X: sp.csr_matrix) -> np.ndarray:
    """Users per item."""
    return np.asarray(X.sum(axis=0)).ravel()


def l2_normalize_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    return sp.diags(1.0 / np.maximum(norms, 1e-12)) @ m
