"""The items table."""

from __future__ import annotations

from datetime import datetime

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from storage.records import ItemRecord

_COLUMNS = "item_id, title, description, categories, brand, price, attributes, status, created_at, updated_at"


async def get_item(conn: AsyncConnection, item_id: str) -> ItemRecord | None:
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM items WHERE item_id = %s", (item_id,))
    row = await cur.fetchone()
    return ItemRecord(**row) if row else None


async def existing_item_ids(conn: AsyncConnection, item_ids: list[str]) -> set[str]:
    cur = await conn.execute("SELECT item_id FROM items WHERE item_id = ANY(%s)", (list(set(item_ids)),))
    return {r["item_id"] for r in await cur.fetchall()}


ITEM_FIELDS = ("title", "description", "categories", "brand", "price", "attributes", "status")


async def upsert_items(conn: AsyncConnection, items: list[ItemRecord],
                       fields: tuple[str, ...] = ITEM_FIELDS) -> tuple[int, int]:
    """Insert or update items in one transaction; returns (upserted, created). An existing item gets only
    `fields` written (a partial update); a new one every field of its record."""
    unknown = set(fields) - set(ITEM_FIELDS)
    if unknown or not fields:
        raise ValueError(f"fields: {sorted(unknown) or 'none'}; the item fields are {', '.join(ITEM_FIELDS)}")
    written = ", ".join(f"{f} = EXCLUDED.{f}" for f in ITEM_FIELDS if f in fields)
    created = 0
    async with conn.transaction():
        for it in items:
            cur = await conn.execute(
                f"""INSERT INTO items (item_id, title, description, categories, brand, price, attributes, status)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (item_id) DO UPDATE SET {written}, updated_at = now()
                   RETURNING (xmax = 0) AS inserted""",
                (it.item_id, it.title, it.description, it.categories, it.brand, it.price,
                 Jsonb(it.attributes), it.status),
            )
            row = await cur.fetchone()
            created += bool(row and row["inserted"])
    return len(items), created


async def items_changed_since(conn: AsyncConnection, since: datetime | None) -> list[ItemRecord]:
    """All items (since=None) or those updated after `since`: the services' in-memory catalogue refresh."""
    if since is None:
        cur = await conn.execute(f"SELECT {_COLUMNS} FROM items")
    else:
        cur = await conn.execute(f"SELECT {_COLUMNS} FROM items WHERE updated_at > %s", (since,))
    return [ItemRecord(**r) for r in await cur.fetchall()]


async def list_items(conn: AsyncConnection, after: str, limit: int, status: str | None = None) -> list[ItemRecord]:
    """Up to `limit` items with item_id after `after` ("" = from the start), in item_id order."""
    where = "item_id > %s" + (" AND status = %s" if status else "")
    args: tuple = (after, status, limit) if status else (after, limit)
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM items WHERE {where} ORDER BY item_id LIMIT %s", args)
    return [ItemRecord(**r) for r in await cur.fetchall()]
