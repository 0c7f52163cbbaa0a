"""The Feast FeatureStore for these Settings: apply, materialize, and online reads.

Serving budget: per request read only the user's features (one entity) from Redis;
item features for all candidates live in process memory, bulk-loaded with
`all_item_features` and reloaded when `version()` changes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import psycopg
import redis

from core.config import Settings
from feature_store.repo_config import repo_config
from feature_store.schema import ITEM_DEFAULTS, USER_DEFAULTS, VERSION_KEY, synced_key
from feature_store.tables import build_feature_tables, user_feature_rows

if TYPE_CHECKING:
    import feast

ITEM_CHUNK = 500  # entities per get_online_features call in bulk reads
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def feature_store(settings: Settings) -> feast.FeatureStore:
    from feast import FeatureStore

    config = repo_config(settings)
    return FeatureStore(config=config, repo_path=str(config.repo_path))


def apply(settings: Settings, store: feast.FeatureStore | None = None) -> None:
    """Register entities, sources and feature views (idempotent)."""
    from feature_store.definitions import OBJECTS

    (store or feature_store(settings)).apply(list(OBJECTS))


def materialize(settings: Settings) -> int:
    """Rebuild the feature tables, load them all into Redis, bump the version key and set
    the sync marker (schema.synced_key) to the build time.

    Returns the number of rows materialized (users + items).
    """
    as_of = datetime.now(UTC)
    counts = build_feature_tables(settings.database_url, as_of)
    store = feature_store(settings)
    apply(settings, store)  # cheap, and a fresh var_dir then needs no separate step
    # The whole table: rows carry build timestamps, so the range only needs to cover them.
    store.materialize(start_date=_EPOCH, end_date=as_of + timedelta(days=1))
    client = redis.Redis.from_url(settings.redis_url)
    try:
        with client.pipeline(transaction=True) as pipe:
            pipe.set(VERSION_KEY, str(time.time_ns()))
            pipe.set(synced_key(settings.feast_project), repr(as_of.timestamp()))
            pipe.execute()
    finally:
        client.close()
    return sum(counts.values())


def _rows(values: Mapping[str, Sequence[object]], defaults: Mapping[str, object], n: int) -> list[dict[str, object]]:
    """Column lists from Feast -> one dict per entity, missing values replaced by defaults."""
    rows: list[dict[str, object]] = [{} for _ in range(n)]
    for name, default in defaults.items():
        column = values[name]
        for row, value in zip(rows, column, strict=True):
            row[name] = (list(default) if isinstance(default, list) else default) if value is None else value
    return rows


class OnlineFeatures:
    """Serving-side reader of the online store; create one per process."""

    def __init__(self, settings: Settings) -> None:
        self._store = feature_store(settings)
        self._redis = redis.Redis.from_url(settings.redis_url)
        self._user_refs = [f"user_features:{name}" for name in USER_DEFAULTS]
        self._item_refs = [f"item_features:{name}" for name in ITEM_DEFAULTS]
        try:  # also loads the registry now rather than on the first request
            self._store.get_feature_view("user_features")
            self._store.get_feature_view("item_features")
        except Exception as exc:
            raise RuntimeError(
                f"Feast project {settings.feast_project!r} has no feature views in "
                f"{self._store.config.registry.path}: run feature materialization first ({exc})"
            ) from exc

    def user_features(self, user_id: str) -> dict[str, object]:
        """One user's features; an unknown user gets the defaults (empty lists, zeros)."""
        response = self._store.get_online_features(self._user_refs, [{"user_id": user_id}])
        return _rows(response.to_dict(), USER_DEFAULTS, 1)[0]

    def all_item_features(self, item_ids: list[str]) -> dict[str, dict[str, object]]:
        """Features of many items, by item id (for an in-memory cache, not per request)."""
        out: dict[str, dict[str, object]] = {}
        for start in range(0, len(item_ids), ITEM_CHUNK):
            chunk = item_ids[start : start + ITEM_CHUNK]
            response = self._store.get_online_features(self._item_refs, {"item_id": chunk})
            out.update(zip(chunk, _rows(response.to_dict(), ITEM_DEFAULTS, len(chunk)), strict=True))
        return out

    def lagging(self, conn: psycopg.Connection, user_ids: list[str]) -> list[str]:
        """The users whose online features differ from what PostgreSQL gives now: the worker's
        consistency, checked by tests and `make chaos`."""
        expected = {r["user_id"]: r for r in user_feature_rows(conn, user_ids, datetime.now(UTC))}
        out: list[str] = []
        for start in range(0, len(user_ids), ITEM_CHUNK):
            chunk = user_ids[start : start + ITEM_CHUNK]
            response = self._store.get_online_features(self._user_refs, [{"user_id": u} for u in chunk])
            for u, row in zip(chunk, _rows(response.to_dict(), USER_DEFAULTS, len(chunk)), strict=True):
                want = expected.get(u, USER_DEFAULTS)
                if any(row[n] != want[n] for n in USER_DEFAULTS):
                    out.append(u)
        return out

    def version(self) -> str | None:
        """The current materialization version; changes after every materialize()."""
        value = self._redis.get(VERSION_KEY)
        return value.decode() if isinstance(value, bytes) else value

    def close(self) -> None:
        self._redis.close()


__all__ = ["OnlineFeatures", "apply", "feature_store", "materialize"]
