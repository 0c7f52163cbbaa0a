"""The users table."""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from storage.records import UserRecord

_COLUMNS = "user_id, demographics, preferences, created_at, last_active_at"


async def get_user(conn: AsyncConnection, user_id: str) -> UserRecord | None:
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM users WHERE user_id = %s", (user_id,))
    row = await cur.fetchone()
    return UserRecord(**row) if row else None


USER_FIELDS = ("demographics", "preferences")


async def upsert_user(conn: AsyncConnection, user: UserRecord, fields: tuple[str, ...] = USER_FIELDS) -> UserRecord:
    """Insert or update a user; an existing one gets only `fields` written (a partial update)."""
    unknown = set(fields) - set(USER_FIELDS)
    if unknown or not fields:
        raise ValueError(f"fields: {sorted(unknown) or 'none'}; the user fields are {', '.join(USER_FIELDS)}")
    written = ", ".join(f"{f} = EXCLUDED.{f}" for f in USER_FIELDS if f in fields)
    cur = await conn.execute(
        f"""INSERT INTO users (user_id, demographics, preferences) VALUES (%s, %s, %s)
            ON CONFLICT (user_id) DO UPDATE SET {written}
            RETURNING {_COLUMNS}""",
        (user.user_id, Jsonb(user.demographics), Jsonb(user.preferences)),
    )
    row = await cur.fetchone()
    assert row is not None
    return UserRecord(**row)


async def ensure_users(conn: AsyncConnection, user_ids: list[str]) -> None:
    """Create users that do not exist yet (interactions from new, anonymous users) and mark activity."""
    await conn.execute(
        """INSERT INTO users (user_id, last_active_at) SELECT u, now() FROM unnest(%s::text[]) AS u
           ON CONFLICT (user_id) DO UPDATE SET last_active_at = now()""",
        (sorted(set(user_ids)),),
    )


async def list_users(conn: AsyncConnection, after: str, limit: int) -> list[UserRecord]:
    """Up to `limit` users with user_id after `after` ("" = from the start), in user_id order."""
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM users WHERE user_id > %s ORDER BY user_id LIMIT %s",
                             (after, limit))
    return [UserRecord(**r) for r in await cur.fetchall()]
