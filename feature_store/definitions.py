"""The Feast repo in Python: entities, sources and feature views.

Each feature view reads from a PushSource (the real-time worker pushes fresh rows
into it) whose batch source is a PostgreSQL table built by tables.py.

Timestamps and TTL: every row of a feature table is stamped with the build time, not
with the time of the data (MovieLens is from 1997-98), and the views have no TTL.
The rows are snapshots "as of now", so this is what they mean; it also keeps
materialization working for old data, and keeps the Redis online store's
newer-timestamp-wins rule sane: rows stamped 1998 would lose to any real-time push
forever, while build-time rows replace older pushes whose effect they already include.
"""

from __future__ import annotations

from datetime import timedelta

from feast import Entity, FeatureView, Field, PushSource, ValueType
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource
from feast.types import Array, FeastType, Float64, Int64, String

from feature_store.schema import ITEM_DEFAULTS, ITEM_TABLE, TIMESTAMP_FIELD, USER_DEFAULTS, USER_TABLE

NO_TTL = timedelta(0)  # Feast: zero means features never expire


def _dtype(default: object) -> FeastType:
    if isinstance(default, list):
        return Array(String)
    if isinstance(default, float):
        return Float64
    if isinstance(default, int):
        return Int64
    raise TypeError(f"no Feast type for a feature defaulting to {default!r}")


def _fields(defaults: dict[str, object]) -> list[Field]:
    return [Field(name=name, dtype=_dtype(value)) for name, value in defaults.items()]


user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING, description="A user.")
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING, description="An item.")

user_stats_source = PostgreSQLSource(name="user_stats_source", table=USER_TABLE, timestamp_field=TIMESTAMP_FIELD)
item_stats_source = PostgreSQLSource(name="item_stats_source", table=ITEM_TABLE, timestamp_field=TIMESTAMP_FIELD)

user_push = PushSource(name="user_features_push", batch_source=user_stats_source)
item_push = PushSource(name="item_features_push", batch_source=item_stats_source)

user_features = FeatureView(
    name="user_features",
    entities=[user],
    ttl=NO_TTL,
    schema=[Field(name="user_id", dtype=String), *_fields(USER_DEFAULTS)],
    source=user_push,
    online=True,
    description="Interaction counts, average rating and recent items per user.",
)
item_features = FeatureView(
    name="item_features",
    entities=[item],
    ttl=NO_TTL,
    schema=[Field(name="item_id", dtype=String), *_fields(ITEM_DEFAULTS)],
    source=item_push,
    online=True,
    description="Popularity, ratings and categories per item.",
)

OBJECTS = [
    user,
    item,
    user_stats_source,
    item_stats_source,
    user_push,
    item_push,
    user_features,
    item_features,
]
