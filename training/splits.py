"""Train / validation / test splits of a Dataset's interactions.

Two protocols, each giving a tuning pair (inner train -> validation) and a final pair
(train -> test); validation is carved out of train the same way test is carved out
of all interactions, so nothing from the test period reaches tuning.

- per-user: each user's last `frac` of interactions by time are test. Ties in time
  keep the input order (a stable sort), so the split is deterministic.
- global-time: one cut-off time for everyone; interactions at or after it are test.
  Per-user splits let a model see other users' future; this one does not.
- cold-users: a random `frac` of the users (seeded) are test users with every one of
  their interactions held out: what a model recommends to a newcomer from their
  demographics alone, before the first interaction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from training.dataset import Dataset

PROTOCOLS = ("per-user", "global-time", "cold-users")
COLD_USERS = "cold-users"
TEST_FRACTION = 0.2


@dataclass
class Split:
    """Interactions before and after the cut, and where the cut is."""

    train: pd.DataFrame
    test: pd.DataFrame
    cutoff: pd.Timestamp | None = None  # global-time only: test = ts >= cutoff


@dataclass
class ProtocolSplits:
    protocol: str
    dataset: Dataset  # all interactions
    tune: Split  # inner train -> validation (hyper-parameters are chosen here)
    final: Split  # train (= inner train + validation) -> test

    def train_dataset(self, stage: str) -> Dataset:
        """The data a model may fit on at `stage` ("tune" or "final"): all users and items, train interactions."""
        split = self.tune if stage == "tune" else self.final
        return with_interactions(self.dataset, split.train)

    def describe(self) -> dict[str, object]:
        def sizes(s: Split) -> dict[str, object]:
            out: dict[str, object] = {"train": len(s.train), "held_out": len(s.test),
                                      "held_out_users": int(s.test["user_id"].nunique())}
            if s.cutoff is not None:
                out["cutoff"] = s.cutoff.isoformat()
            return out

        return {"protocol": self.protocol, "test_fraction": TEST_FRACTION,
                "interactions": len(self.dataset.interactions),
                "tune": sizes(self.tune), "final": sizes(self.final)}


def with_interactions(dataset: Dataset, interactions: pd.DataFrame) -> Dataset:
    return Dataset(users=dataset.users, items=dataset.items, interactions=interactions.reset_index(drop=True))


def per_user_split(interactions: pd.DataFrame, frac: float = TEST_FRACTION) -> Split:
    """Each user's last round(frac * n) interactions by time (at least 1, at most n - 1) are test.

    A user with one interaction keeps it in train: there is nothing to learn from before it.
    """
    inter = interactions.reset_index(drop=True)
    users = inter["user_id"].to_numpy()
    ts = _ns(inter)
    order = np.lexsort((np.arange(len(inter)), ts, users))  # by user, then time, then input order
    u_sorted = users[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = u_sorted[1:] != u_sorted[:-1]
    start = np.flatnonzero(first)
    counts = np.diff(np.append(start, len(order)))
    n_test = np.where(counts >= 2, np.clip(np.floor(frac * counts + 0.5), 1, counts - 1), 0).astype(int)
    # position of each sorted row within its user; test = the last n_test of each user
    pos = np.arange(len(order)) - np.repeat(start, counts)
    is_test_sorted = pos >= np.repeat(counts - n_test, counts)
    is_test = np.zeros(len(inter), dtype=bool)
    is_test[order] = is_test_sorted
    return Split(train=inter[~is_test].reset_index(drop=True), test=inter[is_test].reset_index(drop=True))


def global_time_split(interactions: pd.DataFrame, frac: float = TEST_FRACTION) -> Split:
    """One cut-off: the time of the first interaction of the last `frac` of all interactions.

    Everything at or after it is test, so interactions sharing the cut-off second stay together
    (test can be slightly more than `frac`).
    """
    inter = interactions.reset_index(drop=True)
    if len(inter) < 2:
        raise ValueError(f"a global-time split needs at least 2 interactions, got {len(inter)}")
    ts = np.sort(_ns(inter))
    n_test = max(1, int(np.floor(frac * len(ts) + 0.5)))
    cutoff_ns = ts[len(ts) - n_test]
    if cutoff_ns == ts[0]:
        raise ValueError("every interaction shares the earliest timestamp: no cut-off separates them")
    is_test = _ns(inter) >= cutoff_ns
    cutoff = pd.Timestamp(cutoff_ns, unit="ns", tz="UTC")
    return Split(train=inter[~is_test].reset_index(drop=True), test=inter[is_test].reset_index(drop=True),
                 cutoff=cutoff)


def cold_user_split(interactions: pd.DataFrame, frac: float = TEST_FRACTION, seed: int = 0) -> Split:
    """round(frac * users) users drawn at random (seeded) hold out all their interactions."""
    inter = interactions.reset_index(drop=True)
    users = np.sort(inter["user_id"].unique())
    if len(users) < 2:
        raise ValueError(f"a cold-users split needs at least 2 users, got {len(users)}")
    n_test = int(np.clip(np.floor(frac * len(users) + 0.5), 1, len(users) - 1))
    test_users = np.random.default_rng(seed).choice(users, size=n_test, replace=False)
    is_test = inter["user_id"].isin(test_users).to_numpy()
    return Split(train=inter[~is_test].reset_index(drop=True), test=inter[is_test].reset_index(drop=True))


def make_splits(dataset: Dataset, protocol: str, frac: float = TEST_FRACTION) -> ProtocolSplits:
    if protocol == COLD_USERS:  # validation users are drawn from the training users, with another seed
        final = cold_user_split(dataset.interactions, frac, seed=0)
        tune = cold_user_split(final.train, frac, seed=1)
        return ProtocolSplits(protocol=protocol, dataset=dataset, tune=tune, final=final)
    if protocol == "per-user":
        cut = per_user_split
    elif protocol == "global-time":
        cut = global_time_split
    else:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    final = cut(dataset.interactions, frac)
    tune = cut(final.train, frac)
    return ProtocolSplits(protocol=protocol, dataset=dataset, tune=tune, final=final)


def _ns(inter: pd.DataFrame) -> np.ndarray:
    """Interaction times as int64 nanoseconds since the epoch (UTC)."""
    return inter["ts"].astype("int64").to_numpy()
