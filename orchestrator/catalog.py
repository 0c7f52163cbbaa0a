"""The item catalogue in process memory: metadata, status and popularity for filtering,
decoration and the fallback answer.

Loaded whole at start, then refreshed by polling `items.updated_at`, so status
changes (out of stock, retired) made by any replica reach every replica within
the poll interval; this replica's own UpsertItems apply at once.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

import psycopg
from psycopg_pool import AsyncConnectionPool

from core.errors import RecsysError
from core.log_limit import Outage
from storage.items import items_changed_since
from storage.records import ItemRecord

log = logging.getLogger(__name__)


class Catalog:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self.items: dict[str, ItemRecord] = {}
        self.popular: list[tuple[str, float]] = []  # all-time interaction counts, most first
        self._since: datetime | None = None
        self.version = 0  # bumped by every change applied: what derived views (new arrivals) key on

    def get(self, item_id: str) -> ItemRecord | None:
        return self.items.get(item_id)

    def is_active(self, item_id: str) -> bool:
        it = self.items.get(item_id)
        return it is not None and it.status == "active"

    def apply(self, items: list[ItemRecord]) -> None:
        if items:
            self.version += 1
        for it in items:
            self.items[it.item_id] = it
            if it.updated_at is not None and (self._since is None or it.updated_at > self._since):
                self._since = it.updated_at

    async def refresh(self) -> int:
        async with self.pool.connection() as conn:
            changed = await items_changed_since(conn, self._since)
        self.apply(changed)
        return len(changed)

    async def refresh_popular(self) -> None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT item_id, count(*) AS n FROM interactions GROUP BY item_id ORDER BY n DESC LIMIT 2000"
            )
            self.popular = [(r["item_id"], float(r["n"])) for r in await cur.fetchall()]

    async def watch(self, interval_s: float = 2.0, popular_every: int = 30) -> None:
        tick = 0
        outage = Outage(log, "catalogue refresh (serving the last snapshot)", (RecsysError, psycopg.OperationalError))
        while True:
            await asyncio.sleep(interval_s)
            tick += 1
            try:
                await self.refresh()
                if tick % popular_every == 0:
                    await self.refresh_popular()
            except Exception as exc:  # serve the last snapshot
                outage.failed(exc)
            else:
                outage.ok()
