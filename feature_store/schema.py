"""Feature names, their defaults and the PostgreSQL tables that back them.

Plain Python (no feast import) so serving code and tests can read the schema cheaply.
The default of each feature also fixes its Feast type: list -> Array(String),
int -> Int64, float -> Float64.
"""

from __future__ import annotations

import copy

USER_TABLE = "feature_user_stats"
ITEM_TABLE = "feature_item_stats"
TIMESTAMP_FIELD = "event_timestamp"

# Redis key bumped after every materialization so serving processes refresh caches.
VERSION_KEY = "recsys:features:version"


def synced_key(project: str) -> str:
    """Redis key: unix time up to which the project's online user features reflect PostgreSQL.

    materialize() sets it, the real-time worker's sweeps advance it. It lives in the online
    store itself, so it is lost or rolled back with the data it describes: missing means the
    store was wiped (the worker rebuilds it), older means Redis came back from an older copy.
    """
    return f"recsys:features:{project}:synced_at"

RECENT_ITEMS_LIMIT = 50
RECENT_POPULARITY_DAYS = 7
INTERACTION_TYPES = ("view", "click", "add_to_cart", "purchase", "rating", "like")

USER_DEFAULTS: dict[str, object] = {
    # Distinct items, most recently touched first, at most RECENT_ITEMS_LIMIT.
    "recent_item_ids": [],
    "n_interactions": 0,
    **{f"count_{t}": 0 for t in INTERACTION_TYPES},
    "avg_rating": 0.0,
}

ITEM_DEFAULTS: dict[str, object] = {
    "popularity": 0,
    "recent_popularity": 0,
    "avg_rating": 0.0,
    "n_ratings": 0,
    "categories": [],
}


def user_defaults() -> dict[str, object]:
    return copy.deepcopy(USER_DEFAULTS)


def item_defaults() -> dict[str, object]:
    return copy.deepcopy(ITEM_DEFAULTS)
