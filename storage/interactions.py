"""The interactions table: the durable log of what users did."""

from __future__ import annotations

from typing import NamedTuple

from psycopg import AsyncConnection

from storage.records import InteractionRecord


async def insert_interactions(conn: AsyncConnection, rows: list[InteractionRecord]) -> list[int]:
    """Insert in one transaction (callers validated users and items); returns the new ids in order."""
    ids: list[int] = []
    async with conn.transaction():
        async with conn.cursor() as cur:
            # executemany in pipeline mode: one round trip for the batch, ids back in order.
            await cur.executemany(
                """INSERT INTO interactions (user_id, item_id, type, value, request_id, ts)
                   VALUES (%s, %s, %s, %s, %s, COALESCE(%s, now())) RETURNING interaction_id""",
                [(r.user_id, r.item_id, r.type, r.value, r.request_id, r.ts) for r in rows],
                returning=True,
            )
            while True:
                row = await cur.fetchone()
                assert row is not None
                ids.append(row["interaction_id"])
                if not cur.nextset():
                    break
    return ids


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
    types: set[str]  # the interaction types seen with the item
    ts: float  # unix seconds of the latest interaction with it


async def user_history_with_types(conn: AsyncConnection, user_id: str, limit: int = 1000) -> list[HistoryEntry]:
    """The distinct items a user interacted with, most recent first, each with the interaction types
    seen and the time of the latest one (the ranker's session features)."""
    cur = await conn.execute(
        """SELECT item_id, array_agg(DISTINCT type) AS types, extract(epoch FROM max(ts))::float8 AS ts
           FROM interactions WHERE user_id = %s
           GROUP BY item_id ORDER BY max(ts) DESC, item_id LIMIT %s""",
        (user_id, limit),
    )
    return [HistoryEntry(r["item_id"], set(r["types"]), r["ts"]) for r in await cur.fetchall()]
