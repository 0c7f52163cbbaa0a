"""The interactions table: the durable log of what users did."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from psycopg import AsyncConnection
from psycopg.rows import tuple_row

from storage.records import InteractionRecord, UserRecord


class Stored(NamedTuple):
    interaction_id: int
    duplicate: bool  # its (user_id, event_id) was stored before: this row was not stored again
    ts: float = 0.0  # unix seconds as stored (0.0 for a duplicate: the row stored before has its own)


async def insert_interactions(conn: AsyncConnection, rows: list[InteractionRecord]) -> list[Stored]:
    """Insert in one transaction (callers validated users and items); the stored ids in order. A row
    whose (user_id, event_id) is already there is not stored again: its first id comes back."""
    ids: list[int | None] = []
    times: list[float] = []
    async with conn.transaction():
        async with conn.cursor() as cur:
            # executemany in pipeline mode: one round trip for the batch, ids back in order.
            await cur.executemany(
                """INSERT INTO interactions (user_id, item_id, type, value, request_id, ts, event_id)
                   VALUES (%s, %s, %s, %s, %s, COALESCE(%s, now()), %s)
                   ON CONFLICT (user_id, event_id) WHERE event_id IS NOT NULL DO NOTHING
                   RETURNING interaction_id, extract(epoch FROM ts)::float8 AS ts_s""",
                [(r.user_id, r.item_id, r.type, r.value, r.request_id, r.ts, r.event_id) for r in rows],
                returning=True,
            )
            while True:
                row = await cur.fetchone()  # None: the row was there already
                ids.append(row["interaction_id"] if row else None)
                times.append(row["ts_s"] if row else 0.0)
                if not cur.nextset():
                    break
        missing = [r for r, i in zip(rows, ids, strict=True) if i is None]
        earlier = await _event_ids(conn, missing) if missing else {}
    return [Stored(i, False, t) if i is not None else Stored(earlier[(r.user_id, r.event_id or "")], True)
            for r, i, t in zip(rows, ids, times, strict=True)]


async def _event_ids(conn: AsyncConnection, rows: list[InteractionRecord]) -> dict[tuple[str, str], int]:
    cur = await conn.execute(
        """SELECT i.user_id, i.event_id, i.interaction_id FROM interactions i
           JOIN unnest(%s::text[], %s::text[]) AS k(user_id, event_id)
             ON i.user_id = k.user_id AND i.event_id = k.event_id""",
        ([r.user_id for r in rows], [r.event_id for r in rows]),
    )
    return {(r["user_id"], r["event_id"]): r["interaction_id"] for r in await cur.fetchall()}


async def user_history(conn: AsyncConnection, user_id: str, limit: int = 1000) -> list[str]:
    """The distinct items a user interacted with, most recent first."""
    cur = await conn.execute(
        """SELECT item_id FROM interactions WHERE user_id = %s
           GROUP BY item_id ORDER BY max(ts) DESC, item_id LIMIT %s""",
        (user_id, limit),
    )
    return [r["item_id"] for r in await cur.fetchall()]


class HistoryEntry(NamedTuple):
    item_id: str
    types: frozenset[str]  # the interaction types seen with the item (one shared set per combination)
    ts: float  # unix seconds of the latest interaction with it


_USER_AND_HISTORY = """
SELECT u.user_id, u.demographics, u.preferences, u.created_at, u.last_active_at, h.ids, h.types, h.ts
FROM (SELECT 1) AS one
LEFT JOIN users u ON u.user_id = %(user)s
CROSS JOIN LATERAL (
    SELECT array_agg(item_id ORDER BY t DESC, item_id) AS ids, array_agg(types ORDER BY t DESC, item_id) AS types,
           array_agg(extract(epoch FROM t)::float8 ORDER BY t DESC, item_id) AS ts
    FROM (SELECT item_id, string_agg(DISTINCT type, ',') AS types, max(ts) AS t
          FROM interactions WHERE user_id = %(user)s
          GROUP BY item_id ORDER BY max(ts) DESC, item_id LIMIT %(limit)s) AS x
) AS h"""


async def user_and_history(
    conn: AsyncConnection, user_id: str, limit: int = 1000,
) -> tuple[UserRecord | None, list[HistoryEntry]]:
    """The user's row (None when there is none) and the distinct items they interacted with, most recent
    first, each with the interaction types seen and the time of the latest one (the ranker's session
    features). One statement: a miss reads its user in one round trip, three arrays, not a row per item."""
    cur = conn.cursor(row_factory=tuple_row)
    await cur.execute(_USER_AND_HISTORY, {"user": user_id, "limit": limit})
    row = await cur.fetchone()
    assert row is not None  # one row, always
    uid, demographics, preferences, created_at, last_active_at, ids, types, ts = row
    user = None if uid is None else UserRecord(uid, demographics, preferences, created_at, last_active_at)
    if not ids:
        return user, []
    return user, [HistoryEntry(i, interned_types(t.split(",")), s) for i, t, s in zip(ids, types, ts, strict=True)]


_TYPE_SETS: dict[frozenset[str], frozenset[str]] = {}


def interned_types(types: Iterable[str]) -> frozenset[str]:
    """One frozenset per combination of types ({"click", "rating"}): histories held in memory share them."""
    key = frozenset(types)
    return _TYPE_SETS.setdefault(key, key)
