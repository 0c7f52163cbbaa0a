"""The api_keys table: keys of the public API with their scope and rate limits (docs/security.md).

A key is `rk_` + 32 random bytes (url-safe base64), shown once when it is created; the table holds
its SHA-256 only. A fast unsalted hash is enough here, unlike for passwords: with 256 random bits
there is no dictionary to try and no brute force that finishes, and a lookup per key per second
stays cheap.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from psycopg import AsyncConnection, Connection, sql

SCOPES = ("read", "write", "admin")  # each one allows what the one before it does, and more
PREFIX = "rk_"
# A key's own rate limits (NULL: its scope's default) and the least each may be; 0 is unlimited for a rate.
LIMIT_MIN = {"rate_per_s": 0, "burst": 1, "interactions_per_s": 0}
LIMIT_MAX = 1_000_000  # per second: the limiter counts in microseconds (migration 0005 checks it too)
_COLUMNS = "id, name, scope, created_at, last_used_at, revoked_at, " + ", ".join(LIMIT_MIN)
Limits = Mapping[str, float | None]  # limit column -> value (None: the scope's default)


@dataclass(frozen=True)
class ApiKey:
    id: int
    name: str
    scope: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    rate_per_s: float | None = None  # None: the scope's default (orchestrator/rate_limits.py)
    burst: int | None = None
    interactions_per_s: float | None = None


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_limits(limits: Limits) -> None:
    """ValueError naming the limit that is not one, or out of its range."""
    for column, value in limits.items():
        if column not in LIMIT_MIN:
            raise ValueError(f"{column}: not a rate limit; use {', '.join(LIMIT_MIN)}")
        if value is None:
            continue
        if column == "burst" and value != int(value):
            raise ValueError(f"burst: must be a whole number of calls, got {value}")
        if not LIMIT_MIN[column] <= value <= LIMIT_MAX:
            raise ValueError(f"{column}: must be between {LIMIT_MIN[column]} and {LIMIT_MAX}, got {value}")


def create_key(conn: Connection, scope: str, name: str = "", limits: Limits | None = None) -> tuple[ApiKey, str]:
    """A new key of that scope: its record, and the key itself (not stored: the caller shows it once).
    limits: its own rate limits (columns of LIMIT_MIN); those not given are the scope's defaults."""
    if scope not in SCOPES:
        raise ValueError(f"scope {scope!r}: use one of {', '.join(SCOPES)}")
    limits = dict(limits or {})
    check_limits(limits)
    key = new_key()
    columns = sql.SQL(", ").join(map(sql.Identifier, ["name", "scope", "key_hash", *limits]))
    row = conn.execute(
        sql.SQL("INSERT INTO api_keys ({}) VALUES ({}) RETURNING {}").format(
            columns, sql.SQL(", ").join(sql.Placeholder() * (3 + len(limits))), sql.SQL(_COLUMNS)),
        (name, scope, hash_key(key), *limits.values()),
    ).fetchone()
    assert row is not None
    return ApiKey(**row), key


def set_limits(conn: Connection, key_id: int, limits: Limits) -> ApiKey | None:
    """Change the limits given (None: back to the scope's default), keep the others; None when there is no
    such key. Orchestrators apply the change within about a second (their key cache)."""
    check_limits(limits)
    if not limits:
        raise ValueError("no limit to change: give rate_per_s, burst or interactions_per_s")
    assignments = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in limits)
    row = conn.execute(
        sql.SQL("UPDATE api_keys SET {} WHERE id = %s RETURNING {}").format(assignments, sql.SQL(_COLUMNS)),
        (*limits.values(), key_id),
    ).fetchone()
    return ApiKey(**row) if row else None


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
