"""PostgreSQL connections and schema migrations (psycopg 3)."""

from __future__ import annotations

from importlib import resources

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool
from psycopg_pool.base import AttemptWithBackoff

MIGRATIONS_PACKAGE = "storage.migrations"
CONNECT_TIMEOUT_S = 2  # libpq's minimum: a frozen server costs a reconnect attempt 2 s, not forever

# psycopg_pool retries a lost connection after 1 s, doubling each time with no ceiling short of its
# reconnect_timeout, and offers no setting for it: after a 20 s outage the pool came back about 12 s
# after the server did. A flat quarter second brings it back within one probe interval of the server;
# an attempt against a server that is down is one refused TCP connect.
AttemptWithBackoff.INITIAL_DELAY = 0.25
AttemptWithBackoff.DELAY_BACKOFF = 1.0


def pool_kwargs() -> dict:
    """The connection arguments every pool of ours uses."""
    return {"row_factory": dict_row, "connect_timeout": CONNECT_TIMEOUT_S}


def connect(database_url: str, autocommit: bool = False) -> psycopg.Connection:
    return psycopg.connect(database_url, autocommit=autocommit, row_factory=dict_row)


def pool(database_url: str, min_size: int = 1, max_size: int = 8) -> ConnectionPool:
    p = ConnectionPool(
        database_url, min_size=min_size, max_size=max_size, open=False, kwargs=pool_kwargs()
    )
    p.open(wait=True, timeout=30)
    return p


async def async_pool(
    database_url: str, min_size: int = 2, max_size: int = 8, checkout_timeout_s: float = 30.0,
    cls: type[AsyncConnectionPool] = AsyncConnectionPool,
) -> AsyncConnectionPool:
    p = cls(
        database_url, min_size=min_size, max_size=max_size, open=False, timeout=checkout_timeout_s,
        # autocommit: a read is one round trip, not the read and the COMMIT the pool sends when a checkout
        # ends in a transaction; writes that must be atomic open theirs (`conn.transaction()`)
        kwargs={**pool_kwargs(), "autocommit": True},
    )
    await p.open(wait=True, timeout=30)
    return p


def _migration_files() -> list[tuple[str, str]]:
    files = resources.files(MIGRATIONS_PACKAGE)
    out = [(f.name, f.read_text()) for f in files.iterdir() if f.name.endswith(".sql")]
    return sorted(out)


def migrate(database_url: str) -> list[str]:
    """Apply pending migrations in name order; returns the names applied.

    An advisory lock serializes concurrent migrators (several services starting at once).
    """
    applied: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(727274)")
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r[0] for r in conn.execute("SELECT name FROM schema_migrations").fetchall()}
            for name, sql in _migration_files():
                if name in done:
                    continue
                with conn.transaction():
                    conn.execute(sql)
                    conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
                applied.append(name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(727274)")
    return applied
