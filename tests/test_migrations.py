from storage.db import connect, migrate


def test_migrations_are_applied_once(database_url: str) -> None:
    # The fixture already migrated: a second run applies nothing and the tables exist.
    assert migrate(database_url) == []
    with connect(database_url) as conn:
        names = {r["tablename"] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
    assert {"users", "items", "interactions", "precomputed_recommendations", "exposures"} <= names
