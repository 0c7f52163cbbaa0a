"""Item features for every catalogue item, held in process memory.

Ranking scores a few hundred candidates per request; reading their features from
the online store per request costs milliseconds, so the whole item table is loaded
once and reloaded when the feature version in Redis changes (after materialization).
A missing version (Redis restarted empty, before the worker refilled it) is not a new one:
the snapshot in memory stays until a materialization writes a real version.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg
import redis.exceptions

from core.log_limit import Outage
from feature_store.store import OnlineFeatures
from storage.db import connect

log = logging.getLogger(__name__)


class ItemFeatureCache:
    def __init__(self, online: OnlineFeatures, database_url: str) -> None:
        self.online = online
        self.database_url = database_url
        self.features: dict[str, dict[str, Any]] = {}
        self.max_popularity = 1
        self.version: str | None = None
        self.loaded = False

    def refresh(self) -> bool:
        """Reload all item features if the materialized version changed; True when reloaded."""
        version = self.online.version()
        if self.loaded and (version is None or version == self.version):
            return False
        with connect(self.database_url) as conn:
            ids = [r["item_id"] for r in conn.execute("SELECT item_id FROM items")]
        features = self.online.all_item_features(ids)
        self.features, self.version = features, version  # swap whole: requests see one snapshot
        self.loaded = True
        self.max_popularity = max((int(f.get("popularity") or 0) for f in features.values()), default=1)
        log.info("ranking loaded features of %d items (version %s)", len(features), version)
        return True

    def get(self, item_id: str) -> dict[str, Any]:
        return self.features.get(item_id, {})

    async def watch(self, interval_s: float = 5.0) -> None:
        outage = Outage(log, "item feature refresh (serving the snapshot we have)",
                        (psycopg.OperationalError, redis.exceptions.RedisError))
        while True:
            await asyncio.sleep(interval_s)
            try:
                await asyncio.to_thread(self.refresh)
            except Exception as exc:
                outage.failed(exc)
            else:
                outage.ok()
