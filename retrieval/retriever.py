"""The retrieval service's state behind its servicer: the served version, swapped when a new one
is published, and the live changes applied to it; the request logic is core.retrieve.Retrieval.

The served version is held in one attribute and replaced whole when a new version is
published, so a request always sees one consistent version. Live changes (new items,
status, interactions for trending) are polled from PostgreSQL (retrieval.live) and
applied on the event loop's thread, between requests.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import psycopg

from core.artifacts import current_version, load_current
from core.log_limit import Outage
from core.retrieve import Retrieval, SourceSpec, default_mix
from core.served import Served
from core.trending import TrendingConfig
from retrieval.live import LiveSource
from storage.records import ItemRecord

log = logging.getLogger(__name__)

__all__ = ["Retriever", "SourceSpec", "default_mix"]


class Retriever(Retrieval):
    def __init__(self, artifacts_dir: Path, database_url: str = "", trending: TrendingConfig | None = None) -> None:
        super().__init__(None, trending)
        self.artifacts_dir = Path(artifacts_dir)
        self.live = LiveSource(database_url) if database_url else None
        self._scanned: list[ItemRecord] = []  # the first version's item scan, for trending's categories

    # ------------------------------------------------------------------ versions

    def load(self) -> bool:
        """Load the CURRENT version if it differs from the one served; True when swapped.

        Runs off the event loop (a thread): the new version gets every item change from a fresh
        scan of the items table before it replaces the old one, so nothing added live goes missing."""
        version = current_version(self.artifacts_dir)
        if not version or (self.served is not None and self.served.version == version):
            return False
        arts = load_current(self.artifacts_dir)
        served = Served(arts, self.artifacts_dir / arts.version)
        snapshot = None
        if self.live is not None:
            try:
                snapshot = self.live.scan_items()
                served.apply(snapshot.items)
            except Exception as exc:  # PostgreSQL away: serve the version as built; the poller catches up
                log.warning("could not read items for version %s: %s", arts.version, exc)
        first = self.served is None
        self.served = served  # one reference swap: in-flight requests keep the version they started with
        if snapshot is not None and self.live is not None:
            if first:  # the poller starts from this scan; its items' categories go to trending on its thread
                self.live.items_since = snapshot.watermark
                self._scanned = snapshot.items
            else:  # changes applied to the old version while this one was built must reach it too
                self.live.rewind(snapshot.watermark)
        log.info("retrieval serving model version %s (%d items; sources: %s)", served.version, len(served.item_ids),
                 ", ".join(self.available(served)))
        return True

    async def watch(self, interval_s: float = 2.0) -> None:
        """Poll for a new published version and swap it in."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await asyncio.to_thread(self.load)
            except Exception:  # a half-written or broken version must not stop serving the current one
                log.exception("could not load new artifacts; still serving %s", self.version)

    # ------------------------------------------------------------------ live changes

    async def follow(self, interval_s: float = 1.0) -> None:
        """Poll PostgreSQL for item changes and new interactions, for as long as the service runs."""
        if self.live is None:
            return
        outage = Outage(log, "live sync from PostgreSQL (serving what we have)", (psycopg.OperationalError,))
        while True:
            try:
                await self.sync_once()
            except Exception as exc:  # keep serving what we have; reconnect next time
                outage.failed(exc)
                self.live.reset()
            else:
                outage.ok()
            await asyncio.sleep(interval_s)

    async def sync_once(self) -> None:
        live = self.live
        assert live is not None
        if not live.primed:
            events, counts = await asyncio.to_thread(live.prime)
            self.trending.add_all_time(counts)
            self.trending.add(events, all_time=False)
        if self._scanned:
            scanned, self._scanned = self._scanned, []
            for it in scanned:
                self.trending.set_categories(it.item_id, it.categories)
        items = await asyncio.to_thread(live.changed_items)
        self.apply_items(items)
        events = await asyncio.to_thread(live.new_interactions)
        if events:
            self.trending.add(events)

    def apply_items(self, items: list[ItemRecord]) -> None:
        for it in items:
            self.trending.set_categories(it.item_id, it.categories)
        served = self.served
        if served is not None and items:
            served.apply(items)
