"""Bulk loads with COPY: a dataset's users, items and interactions into PostgreSQL."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from typing import Any

import pandas as pd
import psycopg
from tqdm import tqdm

from storage.items import ITEM_FIELDS
from storage.users import USER_FIELDS

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
        for row in tqdm(rows, total=total, desc=label, unit="rows", miniters=_CHUNK, leave=False, disable=None):
            copy.write_row(row)


MODES = ("insert", "upsert", "replace")

_USER_COLUMNS = ", ".join(("user_id", *USER_FIELDS))
_ITEM_COLUMNS = ", ".join(("item_id", *ITEM_FIELDS))
_INTERACTION_COLUMNS = "user_id, item_id, type, value, ts"


def load_frames(
    database_url: str, users: pd.DataFrame, items: pd.DataFrame, interactions: pd.DataFrame,
    replace: bool = False, mode: str = "insert",
) -> dict[str, int]:
    """Load users, items and interactions in one transaction; the rows each table took.

    mode "insert": only new ids (an id already there fails the whole load, nothing written);
    "replace" (or replace=True): the tables emptied first, history, exposures and precomputed answers
    with them; "upsert": new users and items added, changed ones updated (an item's updated_at moves, so
    running services see it), interactions added unless the same (user, item, type, time) is there:
    history and A/B data are kept, and loading the same files twice changes nothing.
    """
    mode = "replace" if replace else mode
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    with psycopg.connect(database_url) as conn:
        if mode == "replace":
            conn.execute(
                "TRUNCATE interactions, exposures, precomputed_recommendations, items, users RESTART IDENTITY"
            )
        if mode == "upsert":
            counts = _upsert(conn, users, items, interactions)
        else:
            _copy(conn, f"COPY users ({_USER_COLUMNS}) FROM STDIN", _user_rows(users), len(users), "users")
            _copy(conn, f"COPY items ({_ITEM_COLUMNS}) FROM STDIN", _item_rows(items), len(items), "items")
            _copy(conn, f"COPY interactions ({_INTERACTION_COLUMNS}) FROM STDIN",
                  _interaction_rows(interactions), len(interactions), "interactions")
            counts = {"users": len(users), "items": len(items), "interactions": len(interactions)}
        # Users' last activity follows from the log just loaded.
        conn.execute(
            "UPDATE users u SET last_active_at = m.ts FROM "
            "(SELECT user_id, max(ts) AS ts FROM interactions GROUP BY user_id) m WHERE u.user_id = m.user_id"
            " AND u.last_active_at IS DISTINCT FROM m.ts"
        )
        conn.execute("ANALYZE users; ANALYZE items; ANALYZE interactions")
    return counts


def _upsert(conn: psycopg.Connection, users: pd.DataFrame, items: pd.DataFrame,
            interactions: pd.DataFrame) -> dict[str, int]:
    """COPY into temporary tables, then merge: what was new, what changed, what was there already."""
    for table in ("users", "items", "interactions"):
        conn.execute(f"CREATE TEMP TABLE load_{table} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP")
    _copy(conn, f"COPY load_users ({_USER_COLUMNS}) FROM STDIN", _user_rows(users), len(users), "users")
    _copy(conn, f"COPY load_items ({_ITEM_COLUMNS}) FROM STDIN", _item_rows(items), len(items), "items")
    _copy(conn, f"COPY load_interactions ({_INTERACTION_COLUMNS}) FROM STDIN", _interaction_rows(interactions),
          len(interactions), "interactions")
    counts: dict[str, int] = {}
    merged = conn.execute(
        f"""INSERT INTO users ({_USER_COLUMNS}) SELECT DISTINCT ON (user_id) {_USER_COLUMNS} FROM load_users
            ON CONFLICT (user_id) DO UPDATE SET {_changed("users", USER_FIELDS)}
            RETURNING (xmax = 0) AS created""").fetchall()
    counts["users_new"] = sum(1 for (created,) in merged if created)
    counts["users_updated"] = len(merged) - counts["users_new"]
    merged = conn.execute(
        f"""INSERT INTO items ({_ITEM_COLUMNS}) SELECT DISTINCT ON (item_id) {_ITEM_COLUMNS} FROM load_items
            ON CONFLICT (item_id) DO UPDATE SET {_changed("items", ITEM_FIELDS, ", updated_at = now()")}
            RETURNING (xmax = 0) AS created""").fetchall()
    counts["items_new"] = sum(1 for (created,) in merged if created)
    counts["items_updated"] = len(merged) - counts["items_new"]
    added = conn.execute(
        f"""INSERT INTO interactions ({_INTERACTION_COLUMNS})
            SELECT DISTINCT {_INTERACTION_COLUMNS} FROM load_interactions t
            WHERE NOT EXISTS (SELECT 1 FROM interactions i WHERE i.user_id = t.user_id AND i.ts = t.ts
                              AND i.item_id = t.item_id AND i.type = t.type)""")
    counts["interactions_new"] = added.rowcount
    counts["interactions_present"] = len(interactions) - added.rowcount  # there already (or twice in the files)
    return counts


def _changed(table: str, fields: tuple[str, ...], also: str = "") -> str:
    """An ON CONFLICT update of `fields` (and `also`) for the rows whose fields differ: unchanged rows are not
    rewritten (nor counted as updated)."""
    return (", ".join(f"{f} = EXCLUDED.{f}" for f in fields) + also
            + f" WHERE ({', '.join(f'{table}.{f}' for f in fields)})"
            + f" IS DISTINCT FROM ({', '.join(f'EXCLUDED.{f}' for f in fields)})")


def is_empty(database_url: str) -> bool:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT NOT EXISTS (SELECT 1 FROM items) AND NOT EXISTS (SELECT 1 FROM users)").fetchone()
    return bool(row and row[0])
