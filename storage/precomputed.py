"""Precomputed recommendations: the batch job's answers, served when retrieval is down."""

from __future__ import annotations

from psycopg import AsyncConnection, Connection


async def get_precomputed(conn: AsyncConnection, user_id: str, surface: str) -> list[tuple[str, float]] | None:
    cur = await conn.execute(
        "SELECT item_ids, scores FROM precomputed_recommendations WHERE user_id = %s AND surface = %s",
        (user_id, surface),
    )
    row = await cur.fetchone()
    return list(zip(row["item_ids"], row["scores"], strict=True)) if row else None


def save_precomputed(
    conn: Connection, rows: list[tuple[str, str, list[str], list[float], str]]
) -> None:
    """Upsert (user_id, surface, item_ids, scores, model_version) rows."""
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO precomputed_recommendations (user_id, surface, item_ids, scores, model_version)
               VALUES (%s, %s, %s, %s, %s)
               ON CONFLICT (user_id, surface) DO UPDATE SET item_ids = EXCLUDED.item_ids,
                 scores = EXCLUDED.scores, model_version = EXCLUDED.model_version, computed_at = now()""",
            rows,
        )
