"""Bulk loads with COPY: a dataset's users, items and interactions into PostgreSQL."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from typing import Any

import pandas as pd
import psycopg
from tqdm import tqdm

_CHUNK = 10_000


def _json(value: Any) -> str:
    return json.dumps(value if isinstance(value, dict) else {}, default=str)


def _price(value: Any) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def _user_rows(df: pd.DataFrame) -> Iterator[tuple]:
    for r in df.itertuples(index=False):
        yield (str(r.user_id), _json(getattr(r, "demographics", {})), _json(getattr(r, "preferences", {})))


def _item_rows(df: pd.DataFrame) -> Iterator[tuple]:
    for r in df.itertuples(index=False):
        yield (
            str(r.item_id), r.title or "", getattr(r, "description", "") or "", list(r.categories or []),
            getattr(r, "brand", "") or "", _price(getattr(r, "price", None)),
            _json(getattr(r, "attributes", {})), getattr(r, "status", "active") or "active",
        )


def _interaction_rows(df: pd.DataFrame) -> Iterator[tuple]:
    for r in df.itertuples(index=False):
        yield (str(r.user_id), str(r.item_id), r.type, float(r.value), r.ts.to_pydatetime())


def _copy(conn: psycopg.Connection, sql: str, rows: Iterable[tuple], total: int, label: str) -> None:
    with conn.cursor() as cur, cur.copy(sql) as copy:
        for row in tqdm(rows, total=total, desc=label, unit="rows", miniters=_CHUNK, leave=False):
            copy.write_row(row)


def load_frames(
    database_url: str, users: pd.DataFrame, items: pd.DataFrame, interactions: pd.DataFrame,
    replace: bool = False,
) -> dict[str, int]:
    """Load users, items and interactions in one transaction; replace=True empties the tables first.

    Without replace, rows whose ids already exist make the load fail (nothing is written).
    """
    with psycopg.connect(database_url) as conn:
        if replace:
            conn.execute(
                "TRUNCATE interactions, exposures, precomputed_recommendations, items, users RESTART IDENTITY"
            )
        _copy(conn, "COPY users (user_id, demographics, preferences) FROM STDIN", _user_rows(users),
              len(users), "users")
        _copy(conn, "COPY items (item_id, title, description, categories, brand, price, attributes, status) "
              "FROM STDIN", _item_rows(items), len(items), "items")
        _copy(conn, "COPY interactions (user_id, item_id, type, value, ts) FROM STDIN",
              _interaction_rows(interactions), len(interactions), "interactions")
        # Users' last activity follows from the log just loaded.
        conn.execute(
            "UPDATE users u SET last_active_at = m.ts FROM "
            "(SELECT user_id, max(ts) AS ts FROM interactions GROUP BY user_id) m WHERE u.user_id = m.user_id"
        )
        conn.execute("ANALYZE users; ANALYZE items; ANALYZE interactions")
    return {"users": len(users), "items": len(items), "interactions": len(interactions)}


def is_empty(database_url: str) -> bool:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT NOT EXISTS (SELECT 1 FROM items) AND NOT EXISTS (SELECT 1 FROM users)").fetchone()
    return bool(row and row[0])
