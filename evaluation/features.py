"""What serving reads from PostgreSQL and Feast, computed from a training split in memory.

The served pipeline is evaluated in process on the training split only, so the
feature values the ranking service would get from Feast (feature_store/tables.py
computes them in SQL) and the history the orchestrator hydrates from PostgreSQL
(storage/interactions.py user_history) are computed here with pandas, with the same
definitions; tests/test_evaluation.py checks them against the SQL on real PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from feature_store.schema import (
    INTERACTION_TYPES,
    RECENT_ITEMS_LIMIT,
    RECENT_POPULARITY_DAYS,
    item_defaults,
    user_defaults,
)
from training.dataset import Dataset
from training.ranker import attributes_of, request_attributes, timed_histories


def user_histories(train: Dataset, limit: int = 1000) -> dict[str, list[str]]:
    """user_history(): each user's distinct items, ORDER BY max(ts) DESC, item_id; at most `limit`
    (training.ranker.timed_histories, which the ranker's training reads, without the times)."""
    return {u: items[:limit] for u, (items, _) in timed_histories(train.interactions).items()}


def user_attributes(train: Dataset) -> dict[str, dict[str, str]]:
    """The orchestrator's UserContext.attributes: demographics as strings, empty values dropped."""
    return {u: request_attributes(d) for u, d in attributes_of(train).items()}


def item_features(train: Dataset) -> dict[str, dict[str, Any]]:
    """feature_item_stats: one dict per catalogue item (defaults for items without interactions)."""
    inter = train.interactions
    newest = inter["ts"].max() if len(inter) else None
    rated = inter[inter["type"] == "rating"]
    stats = pd.DataFrame({"popularity": inter.groupby("item_id").size()})
    if newest is not None:
        recent = inter[inter["ts"] > newest - pd.Timedelta(days=RECENT_POPULARITY_DAYS)]
        stats["recent_popularity"] = recent.groupby("item_id").size()
    stats["avg_rating"] = rated.groupby("item_id")["value"].mean()
    stats["n_ratings"] = rated.groupby("item_id").size()
    out = {}
    for item_id, categories in zip(train.items["item_id"], train.items["categories"], strict=True):
        f = item_defaults()
        if item_id in stats.index:
            row = stats.loc[item_id]
            for name in ("popularity", "recent_popularity", "n_ratings"):
                f[name] = int(row[name]) if pd.notna(row.get(name)) else 0
            f["avg_rating"] = float(row["avg_rating"]) if pd.notna(row["avg_rating"]) else 0.0
        f["categories"] = list(categories)
        out[item_id] = f
    return out


def user_features(train: Dataset) -> dict[str, dict[str, Any]]:
    """feature_user_stats: recent distinct items (latest touch first; same time: later row first), counts."""
    inter = train.interactions.reset_index(drop=True)
    order = pd.DataFrame({"user_id": inter["user_id"], "item_id": inter["item_id"], "ts": inter["ts"],
                          "row": np.arange(len(inter))})
    last = order.sort_values(["user_id", "item_id", "ts", "row"]).groupby(["user_id", "item_id"]).tail(1)
    last = last.sort_values(["user_id", "ts", "row"], ascending=[True, False, False])
    recent = {u: list(g["item_id"].head(RECENT_ITEMS_LIMIT)) for u, g in last.groupby("user_id", sort=False)}
    counts = inter.groupby(["user_id", "type"]).size().unstack(fill_value=0)
    avg = inter[inter["type"] == "rating"].groupby("user_id")["value"].mean()
    out = {}
    for user_id in train.users["user_id"]:
        f = user_defaults()
        f["recent_item_ids"] = recent.get(user_id, [])
        if user_id in counts.index:
            row = counts.loc[user_id]
            for t in INTERACTION_TYPES:
                f[f"count_{t}"] = int(row.get(t, 0))
            f["n_interactions"] = int(row.sum())
        f["avg_rating"] = float(avg.get(user_id, 0.0))
        out[user_id] = f
    return out


class OfflineUserFeatures:
    """The one method of feature_store.store.OnlineFeatures the ranking service calls, from memory."""

    def __init__(self, features: dict[str, dict[str, Any]]) -> None:
        self.features = features

    def user_features(self, user_id: str) -> dict[str, Any]:
        return self.features.get(user_id) or user_defaults()
