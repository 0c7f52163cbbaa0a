"""PostgreSQL connections and schema migrations (psycopg 3)."""

from __future__ import annotations

from importlib import resources

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool

MIGRATIONS_PACKAGE = "storage.migrations"


def connect(database_url: str, autocommit: bool = False) -> psycopg.Connection:
    return psycopg.connect(database_url, autocommit=autocommit, row_factory=dict_row)


def pool(database_url: str, min_size: int = 1, max_size: int = 8) -> ConnectionPool:
    p = ConnectionPool(
        database_url, min_size=min_size, max_size=max_size, open=False, kwargs={"row_factory": dict_row}
    )
    p.open(wait=True, timeout=30)
    return p


async def async_pool(database_url: str, min_size: int = 2, max_size: int = 8) -> AsyncConnectionPool:
    p = AsyncConnectionPool(
        database_url, min_size=min_size, max_size=max_size, open=False, kwargs={"row_factory": dict_row}
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
