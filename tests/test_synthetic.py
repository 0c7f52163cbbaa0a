"""training/synthetic.py: the generated shop loads as the data format says, is deterministic, looks like a shop."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.conftest import fresh_database
from training.dataset import Dataset, load_files, load_postgres
from training.synthetic import generate, item_vectors, load_into_postgres, user_histories, user_vectors

SIZE = {"n_users": 400, "n_items": 300, "n_interactions": 20_000}
END = datetime(2025, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    assert generate(out, **SIZE, seed=7, progress=False, end=END) == {
        "users": 400, "items": 300, "interactions": 20_000}
    return out


@pytest.fixture(scope="module")
def shop(folder: Path) -> Dataset:
    return load_files(folder)


def test_files_load_in_the_data_format(shop: Dataset) -> None:
    assert (len(shop.users), len(shop.items), len(shop.interactions)) == (400, 300, 20_000)
    assert shop.users["user_id"].is_unique and shop.items["item_id"].is_unique
    assert set(shop.interactions["user_id"]) <= set(shop.users["user_id"])
    assert set(shop.interactions["type"]) == {"view", "click", "add_to_cart", "purchase"}
    item = shop.items.iloc[0]
    assert len(item["categories"]) == 2 and item["title"] and item["brand"] and item["price"] > 0
    assert set(item["attributes"]) == {"color", "rating"}
    assert set(shop.users.iloc[0]["demographics"]) == {"age", "gender", "location"}
    assert set(shop.items["status"]) == {"active", "out_of_stock", "retired"}


def test_the_same_seed_gives_the_same_files_and_csv_the_same_rows(folder: Path, shop: Dataset,
                                                                    tmp_path: Path) -> None:
    generate(tmp_path / "again", **SIZE, seed=7, progress=False, end=END)
    for name in ("users", "items", "interactions"):
        assert pq.read_table(folder / f"{name}.parquet").equals(pq.read_table(tmp_path / "again" / f"{name}.parquet"))
    generate(tmp_path / "other", **SIZE, seed=8, progress=False, end=END)
    assert not pq.read_table(folder / "interactions.parquet").equals(
        pq.read_table(tmp_path / "other" / "interactions.parquet"))
    generate(tmp_path / "csv", **SIZE, seed=7, fmt="csv", progress=False, end=END)
    as_csv = load_files(tmp_path / "csv")
    for name in ("users", "items", "interactions"):
        pd.testing.assert_frame_equal(getattr(as_csv, name), getattr(shop, name))


def test_sessions_follow_a_shopping_funnel_in_time(shop: Dataset) -> None:
    inter = shop.interactions
    counts = inter["type"].value_counts()
    assert counts["view"] > counts["click"] > counts["add_to_cart"] > counts["purchase"] > 0
    # every purchase follows an add_to_cart of the same item by the same user, which follows a view
    steps = inter.sort_values("ts", kind="stable")
    first = {t: steps[steps["type"] == t].groupby(["user_id", "item_id"])["ts"].min()
             for t in ("view", "add_to_cart", "purchase")}
    bought = first["purchase"].index
    assert (first["add_to_cart"].reindex(bought) <= first["purchase"]).all()
    assert (first["view"].reindex(bought) <= first["add_to_cart"].reindex(bought)).all()
    # nothing unavailable is bought
    status = dict(zip(shop.items["item_id"], shop.items["status"], strict=True))
    assert {status[i] for i in inter.loc[inter["type"] == "purchase", "item_id"]} == {"active"}
    assert inter["ts"].min() >= END - timedelta(days=90) and inter["ts"].max() < END


def test_popularity_and_activity_are_skewed(shop: Dataset) -> None:
    per_item = shop.interactions["item_id"].value_counts()
    assert per_item.head(30).sum() > 0.4 * len(shop.interactions)  # the top 10% of items: a large share
    per_user = shop.interactions["user_id"].value_counts()
    assert per_user.iloc[0] > 5 * per_user.median()
    # a session's views mostly stay in one category: consecutive views of a user share it more than chance
    leaf = dict(zip(shop.items["item_id"], shop.items["categories"].map(lambda cs: cs[1]), strict=True))
    views = shop.interactions[shop.interactions["type"] == "view"].sort_values(["user_id", "ts"], kind="stable")
    cats = views["item_id"].map(leaf).to_numpy()
    same_user = views["user_id"].to_numpy()[1:] == views["user_id"].to_numpy()[:-1]
    together = np.mean(cats[1:][same_user] == cats[:-1][same_user])
    shares = pd.Series(cats).value_counts(normalize=True)
    assert together > 2 * float((shares**2).sum())


@pytest.fixture(scope="module")
def own_database() -> Iterator[str]:
    with fresh_database() as url:  # load_into_postgres(replace=True) must not empty other modules' rows
        yield url


def test_postgres_gets_the_same_rows_as_the_files(own_database: str, shop: Dataset) -> None:
    counts = load_into_postgres(own_database, **SIZE, seed=7, replace=True, progress=False, end=END)
    assert counts == {"users": 400, "items": 300, "interactions": 20_000}
    loaded = load_postgres(own_database)
    for name, key in (("users", ["user_id"]), ("items", ["item_id"]),
                      ("interactions", ["user_id", "ts", "item_id", "type"])):
        got = getattr(loaded, name).sort_values(key, kind="stable").reset_index(drop=True)
        want = getattr(shop, name).sort_values(key, kind="stable").reset_index(drop=True)
        pd.testing.assert_frame_equal(got, want)
    with pytest.raises(Exception, match="duplicate key"):  # without replace, existing ids fail the whole load
        load_into_postgres(own_database, **SIZE, seed=7, progress=False, end=END)


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_items must be at least 1"):
        generate(tmp_path, n_users=1, n_items=0, n_interactions=1, progress=False)
    with pytest.raises(ValueError, match="fmt must be 'parquet' or 'csv'"):
        generate(tmp_path, n_users=1, n_items=1, n_interactions=1, fmt="json", progress=False)
    with pytest.raises(ValueError, match="timezone-aware"):
        generate(tmp_path, n_users=1, n_items=1, n_interactions=1, end=datetime(2025, 1, 1), progress=False)


def test_vectors_are_unit_clustered_and_deterministic() -> None:
    items, labels = item_vectors(5000, dim=16, seed=1)
    assert items.shape == (5000, 16) and items.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(items, axis=1), 1.0, rtol=1e-5)
    again, _ = item_vectors(5000, dim=16, seed=1)
    np.testing.assert_array_equal(items, again)
    big = np.bincount(labels).argmax()
    members = items[labels == big]
    others = items[labels != big][:1000]
    center = members.mean(axis=0)
    assert (members @ center).mean() > (others @ center).mean() + 0.05
    histories = user_histories(labels, 50, seed=2)
    queries = user_vectors(items, histories, seed=3)
    np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1.0, rtol=1e-5)
    assert all(1 <= len(h) <= 20 for h in histories)
    # a user vector points at its own history more than at random items, without being one of them
    own = np.array([float((items[h] @ q).mean()) for h, q in zip(histories, queries, strict=True)])
    assert own.mean() > float((items[:500] @ queries.T).mean()) + 0.1
    assert (items @ queries.T).max() < 0.999
