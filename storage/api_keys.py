"""The api_keys table: keys of the public API with their scope (docs/security.md).

A key is `rk_` + 32 random bytes (url-safe base64), shown once when it is created; the table holds
its SHA-256 only. A fast unsalted hash is enough here, unlike for passwords: with 256 random bits
there is no dictionary to try and no brute force that finishes, and a lookup per key per second
stays cheap.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from psycopg import AsyncConnection, Connection

SCOPES = ("read", "write", "admin")  # each one allows what the one before it does, and more
PREFIX = "rk_"
_COLUMNS = "id, name, scope, created_at, last_used_at, revoked_at"


@dataclass(frozen=True)
class ApiKey:
    id: int
    name: str
    scope: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(conn: Connection, scope: str, name: str = "") -> tuple[ApiKey, str]:
    """A new key of that scope: its record, and the key itself (not stored: the caller shows it once)."""
    if scope not in SCOPES:
        raise ValueError(f"scope {scope!r}: use one of {', '.join(SCOPES)}")
    key = new_key()
    row = conn.execute(
        f"INSERT INTO api_keys (name, scope, key_hash) VALUES (%s, %s, %s) RETURNING {_COLUMNS}",
        (name, scope, hash_key(key)),
    ).fetchone()
    assert row is not None
    return ApiKey(**row), key


def list_keys(conn: Connection) -> list[ApiKey]:
    return [ApiKey(**row) for row in conn.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY id")]


def revoke_key(conn: Connection, key_id: int) -> ApiKey | None:
    """Revoke a key (revoking it again keeps the first time); None when there is no such key."""
    row = conn.execute(
        f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = %s RETURNING {_COLUMNS}",
        (key_id,),
    ).fetchone()
    return ApiKey(**row) if row else None


async def find_key(conn: AsyncConnection, key: str) -> ApiKey | None:
    """The key's record (a revoked one too: the caller says so), marking a live key used now."""
    cur = await conn.execute(
        f"""UPDATE api_keys SET last_used_at = CASE WHEN revoked_at IS NULL THEN now() ELSE last_used_at END
            WHERE key_hash = %s RETURNING {_COLUMNS}""",
        (hash_key(key),),
    )
    row = await cur.fetchone()
    return ApiKey(**row) if row else None
