"""Feature store against the real PostgreSQL and Redis: tables, apply, materialize, online reads."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from core.config import Settings
from feature_store.repo_config import offline_store_config, redis_connection_string
from feature_store.schema import ITEM_TABLE, USER_TABLE, item_defaults, user_defaults
from feature_store.store import OnlineFeatures, apply, materialize
from feature_store.tables import build_feature_tables

pytestmark = pytest.mark.integration

USERS = ["u1", "u2", "u3", "u4"]
ITEMS = {"i1": ["Drama", "Comedy"], "i2": ["Action"], "i3": [], "i4": ["Horror"]}
# (user, item, type, value, ts). The newest interaction is 1998-01-10, so the 7-day
# "recent" window holds ts > 1998-01-03.
INTERACTIONS = [
    ("u1", "i1", "view", 1, "1998-01-01"),
    ("u1", "i1", "click", 1, "1998-01-02"),
    ("u1", "i2", "rating", 4, "1998-01-03"),
    ("u1", "i2", "like", 1, "1998-01-04"),
    ("u1", "i3", "rating", 2, "1998-01-05"),
    ("u1", "i1", "purchase", 1, "1998-01-10"),
    ("u2", "i2", "rating", 5, "1997-12-01"),
    ("u2", "i3", "view", 1, "1998-01-08"),
]
N_BULK = 60  # u4 touches this many items, more than the recent list keeps


@dataclass
class Env:
    settings: Settings
    online: OnlineFeatures
    materialized: int


def _seed(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.cursor().executemany("INSERT INTO users (user_id) VALUES (%s)", [(u,) for u in USERS])
        conn.cursor().executemany("INSERT INTO items (item_id, categories) VALUES (%s, %s)", list(ITEMS.items()))
        conn.execute("INSERT INTO items (item_id) SELECT 'x' || n FROM generate_series(0, %s) n", (N_BULK - 1,))
        conn.cursor().executemany(
            "INSERT INTO interactions (user_id, item_id, type, value, ts) VALUES (%s, %s, %s, %s, %s)",
            INTERACTIONS,
        )
        conn.execute(
            "INSERT INTO interactions (user_id, item_id, type, ts) "
            "SELECT 'u4', 'x' || n, 'view', timestamptz '1997-06-01' + n * interval '1 minute' "
            "FROM generate_series(0, %s) n",
            (N_BULK - 1,),
        )


@pytest.fixture(scope="module")
def env(database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        var_dir=Path(tmp_path_factory.mktemp("feature_store_var")),
        feast_project=f"test_{uuid.uuid4().hex[:10]}",  # own registry and Redis keys per run
    )
    _seed(database_url)
    build_feature_tables(database_url)
    apply(settings)
    materialized = materialize(settings)
    online = OnlineFeatures(settings)
    yield Env(settings, online, materialized)
    online.close()


def test_tables_have_a_row_per_user_and_item_and_rebuild_idempotently(env: Env) -> None:
    n_items = len(ITEMS) + N_BULK
    expected = {USER_TABLE: len(USERS), ITEM_TABLE: n_items}
    assert build_feature_tables(env.settings.database_url) == expected
    assert build_feature_tables(env.settings.database_url) == expected
    assert env.materialized == len(USERS) + n_items


def test_user_features_count_interactions_and_order_recent_items(env: Env) -> None:
    features = env.online.user_features("u1")
    assert features["recent_item_ids"] == ["i1", "i3", "i2"]  # distinct, by latest touch
    assert features["n_interactions"] == 6
    assert (features["count_view"], features["count_click"], features["count_purchase"]) == (1, 1, 1)
    assert (features["count_rating"], features["count_like"], features["count_add_to_cart"]) == (2, 1, 0)
    assert features["avg_rating"] == pytest.approx(3.0)


def test_recent_items_keep_the_newest_fifty(env: Env) -> None:
    recent = env.online.user_features("u4")["recent_item_ids"]
    assert recent == [f"x{n}" for n in range(N_BULK - 1, N_BULK - 51, -1)]


def test_users_without_data_get_defaults(env: Env) -> None:
    assert env.online.user_features("u3") == user_defaults()  # known, no interactions
    assert env.online.user_features("nobody") == user_defaults()  # never seen


def test_item_features(env: Env) -> None:
    items = env.online.all_item_features(["i1", "i2", "i3", "i4", "x0", "missing"])
    assert items["i1"] == {
        "popularity": 3,
        "recent_popularity": 1,
        "avg_rating": 0.0,
        "n_ratings": 0,
        "categories": ["Drama", "Comedy"],
    }
    assert (items["i2"]["popularity"], items["i2"]["recent_popularity"]) == (3, 1)
    assert (items["i2"]["avg_rating"], items["i2"]["n_ratings"]) == (pytest.approx(4.5), 2)
    assert items["i3"]["categories"] == []
    assert (items["i3"]["popularity"], items["i3"]["recent_popularity"]) == (2, 2)
    assert items["i4"] == {**item_defaults(), "categories": ["Horror"]}
    assert items["x0"]["popularity"] == 1 and items["x0"]["recent_popularity"] == 0
    assert items["missing"] == item_defaults()


def test_bulk_item_read_spans_chunks(env: Env) -> None:
    ids = [f"x{n}" for n in range(N_BULK)] * 10  # more than one chunk of ids
    items = env.online.all_item_features(ids)
    assert len(items) == N_BULK and all(f["popularity"] == 1 for f in items.values())


def test_second_materialize_updates_features_and_version(env: Env) -> None:
    before = env.online.version()
    assert before is not None
    with psycopg.connect(env.settings.database_url) as conn:
        conn.execute("INSERT INTO users (user_id) VALUES ('u5')")
        conn.execute("INSERT INTO items (item_id) VALUES ('i5')")
        conn.execute(
            "INSERT INTO interactions (user_id, item_id, type, ts) VALUES ('u5', 'i5', 'add_to_cart', '1998-01-09')"
        )
    materialize(env.settings)
    assert env.online.version() not in (None, before)
    user = env.online.user_features("u5")
    assert (user["recent_item_ids"], user["count_add_to_cart"]) == (["i5"], 1)
    assert env.online.all_item_features(["i5"])["i5"]["popularity"] == 1


def test_connection_settings_from_urls() -> None:
    assert offline_store_config("postgresql://alice:pw@db.example:5433/recs") == {
        "type": "postgres",
        "host": "db.example",
        "port": 5433,
        "database": "recs",
        "user": "alice",
        "password": "pw",
        "sslmode": "disable",
    }
    config = offline_store_config("host=127.0.0.1 dbname=x user=postgres sslmode=require")
    assert (config["host"], config["database"], config["sslmode"]) == ("127.0.0.1", "x", "require")
    assert redis_connection_string("redis://127.0.0.1:6379/10") == "127.0.0.1:6379,db=10"
    tls = redis_connection_string("rediss://:s3cret@cache:6380")
    assert tls == "cache:6380,db=0,password=s3cret,ssl=true"
    with pytest.raises(ValueError, match="redis_url"):
        redis_connection_string("")
