"""Live changes from PostgreSQL, the durable record: item changes and new interactions.

The retrieval service polls (every `interval_s`) instead of being told: it needs no
one to call it, any number of replicas see every change, a restarted replica catches
up by itself, and items written by any path (UpsertItems, `recsys data load`, SQL)
count. Two indexed queries per poll: items by `updated_at` (re-reading an overlap,
since a transaction's `updated_at` is its start time, not its commit time) and
interactions by id (likewise with a look-back, deduplicated). An idle database answers
both with no rows: the overlap reaches back only to rows a previous poll could have missed
(committed after it read), and the look-back skips the ids already seen.

Queries run in a worker thread; their results are applied by the caller on the event
loop's thread, between requests.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import psycopg
from psycopg.rows import dict_row

from core.covisitation import interaction_weights
from core.segments import segment_tokens
from core.trending import LONGEST_S, Event
from storage.records import ItemRecord

log = logging.getLogger(__name__)

ITEM_OVERLAP = timedelta(seconds=10)
ID_LOOKBACK = 1000  # interactions may commit out of id order; re-read this many ids back
BATCH = 20_000

_ITEM_COLUMNS = "item_id, title, description, categories, brand, price, attributes, status, created_at, updated_at"
_EVENTS = (
    "SELECT i.interaction_id, i.item_id, i.type, i.value, extract(epoch FROM i.ts)::float8 AS ts, u.demographics "
    "FROM interactions i JOIN users u ON u.user_id = i.user_id "
)


@dataclass
class Snapshot:
    items: list[ItemRecord]
    watermark: datetime | None  # the newest updated_at seen


class LiveSource:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._conn: psycopg.Connection | None = None
        self.items_since: datetime | None = None
        self._rewind: datetime | None = None
        self._polled_at: datetime | None = None  # the database's clock when the last item poll began
        self.last_id = 0
        self._primed_max = 0
        self._recent_ids: set[int] = set()
        self.primed = False  # the first interactions read (the last window and all-time counts) is done

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.database_url, autocommit=True, row_factory=dict_row)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def reset(self) -> None:
        """After an error: the next call reconnects."""
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    # ------------------------------------------------------------------ items

    def scan_items(self) -> Snapshot:
        """Every item, on a connection of its own (a version load in another thread uses it)."""
        with psycopg.connect(self.database_url, row_factory=dict_row) as conn:
            items = [ItemRecord(**r) for r in conn.execute(f"SELECT {_ITEM_COLUMNS} FROM items")]
        return Snapshot(items, max((it.updated_at for it in items if it.updated_at), default=None))

    def rewind(self, watermark: datetime | None) -> None:
        """A new version was built from a scan up to `watermark`: re-read changes since then for it."""
        self._rewind = watermark

    def changed_items(self) -> list[ItemRecord]:
        since = self.items_since
        rewound = self._rewind is not None
        if self._rewind is not None and (since is None or self._rewind < since):
            since = self._rewind
        self._rewind = None
        conn = self._connection()
        polled_at = conn.execute("SELECT now() AS now").fetchone()["now"]
        if since is None:
            rows = conn.execute(f"SELECT {_ITEM_COLUMNS} FROM items").fetchall()
        else:
            # A row committed within ITEM_OVERLAP of its updated_at. The previous poll saw every row up to
            # its own start minus the overlap; only rows after that can have been missed.
            bound = since - ITEM_OVERLAP
            if self._polled_at is not None and not rewound:
                bound = max(bound, min(since, self._polled_at - ITEM_OVERLAP))
            rows = conn.execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE updated_at > %s", (bound,)).fetchall()
        self._polled_at = polled_at
        items = [ItemRecord(**r) for r in rows]
        newest = max((it.updated_at for it in items if it.updated_at), default=None)
        if newest is not None and (self.items_since is None or newest > self.items_since):
            self.items_since = newest
        return items

    # ------------------------------------------------------------------ interactions

    def prime(self) -> tuple[list[Event], list[tuple[str, float]]]:
        """The events of the longest trending window before the newest interaction (whatever the
        clock, a superset of what it needs) and all-time counts per item."""
        conn = self._connection()
        top = conn.execute("SELECT max(interaction_id) AS id, extract(epoch FROM max(ts))::float8 AS ts "
                           "FROM interactions").fetchone()
        self.last_id = self._primed_max = int(top["id"] or 0)
        rows = conn.execute(_EVENTS + "WHERE i.ts > to_timestamp(%s) AND i.interaction_id <= %s",
                            (float(top["ts"] or 0.0) - LONGEST_S, self.last_id)).fetchall()
        counts = conn.execute("SELECT item_id, count(*)::float8 AS n FROM interactions "
                              "WHERE interaction_id <= %s GROUP BY item_id", (self.last_id,)).fetchall()
        self.primed = True
        return self._events(rows), [(r["item_id"], r["n"]) for r in counts]

    def new_interactions(self) -> list[Event]:
        floor = max(0, self.last_id - ID_LOOKBACK, self._primed_max)  # ids up to the primed one: counted by prime()
        # the look-back's ids already counted are skipped by the server: an idle table answers no rows
        rows = self._connection().execute(
            _EVENTS + "WHERE i.interaction_id > %s AND i.interaction_id <> ALL(%s) ORDER BY i.interaction_id LIMIT %s",
            (floor, sorted(self._recent_ids), BATCH),
        ).fetchall()
        for r in rows:
            self._recent_ids.add(r["interaction_id"])
        if rows:
            self.last_id = max(self.last_id, max(r["interaction_id"] for r in rows))
        low = self.last_id - ID_LOOKBACK
        self._recent_ids = {i for i in self._recent_ids if i > low}
        return self._events(rows)

    @staticmethod
    def _events(rows: list[dict]) -> list[Event]:
        if not rows:
            return []
        weights = interaction_weights(np.array([r["type"] for r in rows], dtype=object),
                                      np.array([r["value"] for r in rows], dtype=np.float64))
        return [Event(int(r["interaction_id"]), r["item_id"], float(w), float(r["ts"]),
                      tuple(segment_tokens(r["demographics"] or {})))
                for r, w in zip(rows, weights.tolist(), strict=True)]
