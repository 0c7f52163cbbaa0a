"""training/: data loading, the loss, a tiny training run, and the artifacts round trip."""

from __future__ import annotations

import math
import re
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from core.artifacts import USER_TOWER_FILE, load_current, load_version
from core.user_encoder import UserEncoder
from core.vocab import Vocab, demographic_token
from storage.db import connect
from training import movielens
from training.dataset import DataError, Dataset, load_files, load_postgres, save_files
from training.examples import build_examples
from training.export import export
from training.train import TrainConfig, sampled_softmax_loss, train

# ------------------------------------------------------------------------- fixtures


def synthetic(n_users: int = 60, n_items: int = 40, per_user: int = 15, seed: int = 0) -> Dataset:
    """Users who each favour one of four genres; item i belongs to genre i % 4."""
    rng = np.random.default_rng(seed)
    genres = ["action", "comedy", "drama", "horror"]
    items = pd.DataFrame({
        "item_id": [f"i{i}" for i in range(n_items)],
        "title": [f"Item {i}" for i in range(n_items)],
        "description": "",
        "categories": [[genres[i % 4]] for i in range(n_items)],
        "brand": "",
        "price": [float(i) if i % 3 else math.nan for i in range(n_items)],
        "attributes": [{"year": 2000 + i} for i in range(n_items)],
        "status": ["retired" if i == n_items - 1 else "active" for i in range(n_items)],
    })
    users = pd.DataFrame({
        "user_id": [f"u{u}" for u in range(n_users)],
        "demographics": [{"age": 20 + u % 40, "gender": "MF"[u % 2], "occupation": f"job{u % 5}"}
                         for u in range(n_users)],
        "preferences": [{} for _ in range(n_users)],
    })
    rows = []
    t0 = pd.Timestamp("2024-01-01", tz="UTC")
    for u in range(n_users):
        liked = [i for i in range(n_items) if i % 4 == u % 4]
        for k, i in enumerate(rng.choice(liked, size=per_user)):
            rows.append((f"u{u}", f"i{i}", "click", 1.0, t0 + pd.Timedelta(minutes=u * 100 + k)))
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "type", "value", "ts"])
    return Dataset(users=users, items=items, interactions=interactions)


# ------------------------------------------------------------------------ MovieLens


def test_movielens_load_parses_the_atomic_files(tmp_path: Path) -> None:
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1\t10\t4\t881250949\n1\t20\t3\t881250950\n2\t10\t5\t891717742\n"
    )
    (folder / "ml-100k.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "10\tToy Story\t1995\tAnimation Children's Comedy\n"
        "20\tThe Day the Earth Stood Still\t\tSci-Fi\n"
    )
    (folder / "ml-100k.user").write_text(
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        "1\t24\tM\ttechnician\t85711\n2\t53\tF\tother\t01234\n"
    )
    ds = movielens.load(tmp_path)  # the data dir works as well as the ml-100k folder
    items = ds.items.set_index("item_id")
    assert items.loc["10", "title"] == "Toy Story"
    assert items.loc["10", "categories"] == ["Animation", "Children's", "Comedy"]
    assert items.loc["10", "attributes"] == {"year": 1995}
    assert items.loc["10", "description"] == "Toy Story (1995), Animation, Children's, Comedy"
    assert items.loc["20", "title"] == "The Day the Earth Stood Still"
    assert items.loc["20", "attributes"] == {}
    assert (ds.items["status"] == "active").all() and ds.items["price"].isna().all()
    assert ds.users.set_index("user_id").loc["2", "demographics"] == {
        "age": 53, "gender": "F", "occupation": "other", "zip_code": "01234"}
    inter = ds.interactions
    assert list(inter["type"].unique()) == ["rating"] and list(inter["value"]) == [4.0, 3.0, 5.0]
    assert str(inter["ts"].dtype) == "datetime64[ns, UTC]"
    assert inter["ts"].iloc[0] == pd.Timestamp(881250949, unit="s", tz="UTC")


# ----------------------------------------------------------------------- file format


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_load_files_round_trip(tmp_path: Path, fmt: str) -> None:
    ds = synthetic(n_users=5, n_items=8, per_user=3)
    ds.users.at[0, "demographics"] = {"age": 24, "zip_code": "01234"}  # leading zero stays text
    save_files(ds, tmp_path, fmt=fmt)
    back = load_files(tmp_path)
    pd.testing.assert_frame_equal(back.interactions, ds.interactions)
    pd.testing.assert_frame_equal(back.items, ds.items)
    assert list(back.users["demographics"]) == list(ds.users["demographics"])


def test_load_files_reads_flat_csv_columns_and_unix_seconds(tmp_path: Path) -> None:
    (tmp_path / "items.csv").write_text("item_id,title,categories,price,attr_year\na,A,x|y,9.5,1995\nb,B,,,\n")
    (tmp_path / "interactions.csv").write_text("user_id,item_id,type,value,ts\nu,a,purchase,,1700000000\n")
    ds = load_files(tmp_path)
    assert ds.items["categories"].tolist() == [["x", "y"], []]
    assert ds.items["attributes"].tolist() == [{"year": 1995}, {}]
    assert ds.items["price"].iloc[0] == 9.5 and math.isnan(ds.items["price"].iloc[1])
    assert ds.interactions["value"].iloc[0] == 1.0
    assert ds.interactions["ts"].iloc[0] == pd.Timestamp(1_700_000_000, unit="s", tz="UTC")
    assert len(ds.users) == 0  # users.csv is optional


def test_load_files_names_the_missing_column(tmp_path: Path) -> None:
    (tmp_path / "items.csv").write_text("item_id\na\n")
    (tmp_path / "interactions.csv").write_text("user_id,ts\nu,2024-01-01T00:00:00Z\n")
    with pytest.raises(DataError, match=r"interactions\.csv: missing required column 'item_id'"):
        load_files(tmp_path)


def test_load_files_names_the_bad_line(tmp_path: Path) -> None:
    (tmp_path / "items.csv").write_text("item_id\na\n")
    (tmp_path / "interactions.csv").write_text(
        "user_id,item_id,type,ts\nu,a,click,2024-01-01T00:00:00Z\nu,a,stare,2024-01-02T00:00:00Z\n")
    with pytest.raises(DataError, match=r"interactions\.csv: column 'type': must be one of .*; line 3"):
        load_files(tmp_path)
    (tmp_path / "interactions.csv").write_text("user_id,item_id,ts\nu,zz,2024-01-01T00:00:00Z\n")
    with pytest.raises(DataError, match=r"missing from items\.csv \(e\.g\. 'zz'\)"):
        load_files(tmp_path)


# -------------------------------------------------------------------------- postgres


def test_load_postgres_reads_the_tables(database_url: str) -> None:
    p = f"tt-{uuid.uuid4().hex[:8]}-"  # the database is shared by the session's tests
    with connect(database_url) as conn:
        conn.execute("INSERT INTO users (user_id, demographics) VALUES (%s, %s)", (p + "u", '{"age": 31}'))
        conn.execute(
            "INSERT INTO items (item_id, title, categories, price, attributes, status) VALUES "
            "(%s, 'One', ARRAY['a','b'], 9.5, '{\"year\": 1999}', 'active'), (%s, 'Two', '{}', NULL, '{}', 'retired')",
            (p + "1", p + "2"))
        conn.execute(
            "INSERT INTO interactions (user_id, item_id, type, value, ts) VALUES "
            "(%s, %s, 'purchase', 2, '2024-05-01T12:00:00.123456Z'), (%s, %s, 'view', 1, '2024-05-02T00:00:00Z')",
            (p + "u", p + "1", p + "u", p + "2"))
    ds = load_postgres(database_url)
    users = ds.users.set_index("user_id")
    assert users.loc[p + "u", "demographics"] == {"age": 31}
    items = ds.items.set_index("item_id")
    assert items.loc[p + "1", "categories"] == ["a", "b"] and items.loc[p + "1", "price"] == 9.5
    assert items.loc[p + "1", "attributes"] == {"year": 1999}
    assert items.loc[p + "2", "status"] == "retired" and math.isnan(items.loc[p + "2", "price"])
    mine = ds.interactions[ds.interactions["user_id"] == p + "u"]
    assert mine["type"].tolist() == ["purchase", "view"] and mine["value"].tolist() == [2.0, 1.0]
    assert mine["ts"].iloc[0] == pd.Timestamp("2024-05-01T12:00:00.123456Z")


# ------------------------------------------------------------------- examples, loss


def test_examples_hold_out_the_last_item_and_look_back_in_order() -> None:
    ds = synthetic(n_users=2, n_items=8, per_user=4)
    vocab = Vocab.build(ds.items, ds.users, ("age",))
    ex = build_examples(ds, vocab, holdout=True)
    assert len(ex.holdout) == 2 and len(ex.train) == 6
    last = ex.holdout[:1]
    user_items = ex.items[ex.start[last]: last + 1]
    assert ex.history(last, 5)[0].tolist() == [*user_items[:-1].flip(0).tolist(), 0, 0]
    rows, seen = ex.prior(last)
    assert sorted(seen.tolist()) == sorted(user_items[:-1].tolist()) and set(rows.tolist()) == {0}


def test_demographic_tokens_bucket_ages_from_any_type() -> None:
    assert demographic_token("age", 24) == demographic_token("age", "24") == demographic_token("age", "18.5")
    assert demographic_token("age", 24) != demographic_token("age", 40)
    assert demographic_token("gender", " M ") == "m" and demographic_token("gender", "") is None


def test_sampled_softmax_loss_applies_logq_and_masks_duplicates() -> None:
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]])
    item_ids = torch.tensor([5, 7, 5])  # rows 0 and 2 share a positive: not each other's negative
    log_q = torch.log(torch.tensor([0.5, 0.25, 0.5]))
    t = 0.5
    logits = users @ items.T / t - log_q
    expected = []
    for i, allowed in enumerate([[0, 1], [0, 1, 2], [1, 2]]):
        row = logits[i, allowed]
        expected.append(-(logits[i, i] - torch.logsumexp(row, 0)))
    got = sampled_softmax_loss(users, items, item_ids, log_q, t)
    assert torch.allclose(got, torch.stack(expected).mean())
    # the correction matters: a uniform q gives a different loss
    assert not torch.allclose(got, sampled_softmax_loss(users, items, item_ids, torch.zeros(3), t))


# ------------------------------------------------------------- train, export, serve


def test_train_export_and_serve_round_trip(tmp_path: Path) -> None:
    ds = synthetic()
    trained = train(ds, TrainConfig(epochs=1, batch_size=64, dim=16, hidden=32), progress=False)
    assert set(trained.metrics["two_tower"]) == {"recall@20", "ndcg@10"} and "popularity" in trained.metrics

    version_dir = export(trained, ds, tmp_path)
    assert re.fullmatch(r"\d{8}T\d{6}Z(-\d+)?", version_dir.name)
    assert (tmp_path / "CURRENT").read_text().strip() == version_dir.name
    arts = load_current(tmp_path)
    n_indexed = len(ds.items) - 1  # the retired item is left out of the index
    assert arts.version == version_dir.name and len(arts.item_ids) == n_indexed
    assert arts.item_embeddings.shape == (n_indexed, 16) and arts.item_embeddings.dtype == np.float32
    assert np.allclose(np.linalg.norm(arts.item_embeddings, axis=1), 1.0, atol=1e-5)
    assert arts.manifest["index"]["type"] == "Flat" and arts.manifest["index"]["metric"] in ("ip", "inner_product")
    assert arts.item_index[arts.item_ids[3]] == 3
    assert "i39" not in arts.item_index and all(i != "i39" for i, _ in arts.popular)
    assert [s for _, s in arts.popular] == sorted((s for _, s in arts.popular), reverse=True)

    enc = arts.user_encoder
    q = enc.encode(["i0", "i4", "nope"], {"age": "24", "gender": "M"})
    assert q is not None and q.shape == (16,) and q.dtype == np.float32
    # the numpy forward pass serving uses is the torch tower's
    for recent, attrs in [(["i0", "i4", "nope"], {"age": "24", "gender": "M"}), ([], {"gender": "F"}),
                          ([f"i{i}" for i in range(39, -1, -1)], {})]:
        assert np.allclose(enc.encode(recent, attrs), enc.encode_torch(recent, attrs), atol=1e-5)
    assert abs(float(np.linalg.norm(q)) - 1.0) < 1e-5
    scores, rows = arts.index.search(q[None], 5)
    assert ((rows >= 0) & (rows < n_indexed)).all()
    assert np.allclose(scores[0], arts.item_embeddings[rows[0]] @ q, atol=1e-5)
    other = enc.encode(["i1", "i5"], {"age": "24", "gender": "M"})
    assert other is not None and not np.allclose(q, other)
    # an encoder loaded again from the same file (ranking's, beside retrieval's) finds the vector made before
    again = UserEncoder.load(version_dir / USER_TOWER_FILE)
    assert again.encode(["i0", "i4", "nope"], {"age": "24", "gender": "M"}) is q
    assert not q.flags.writeable
    assert enc.encode([], {"gender": "F"}) is not None  # attributes alone are enough
    assert enc.encode(["unknown"], {"planet": "mars", "gender": "?"}) is None

    # the item tower: a known id gives back its indexed vector; a new item gets one from its content,
    # nearer to the items of its genre than to the rest (item i is genre i % 4; "horror" = 3)
    row = arts.item_index["i3"]
    known = arts.item_encoder.encode(["horror"], "Item 3", {"year": 2003}, item_id="i3")
    assert np.allclose(known, arts.item_embeddings[row], atol=1e-5)
    new = arts.item_encoder.encode(["horror"], "A new film", {"year": 2010}, item_id="never-seen")
    assert new.shape == (16,) and new.dtype == np.float32 and abs(float(np.linalg.norm(new)) - 1.0) < 1e-5
    genre = np.array([int(i[1:]) % 4 for i in arts.item_ids])
    by_genre = [float((arts.item_embeddings[genre == g] @ new).mean()) for g in range(4)]
    assert int(np.argmax(by_genre)) == 3, by_genre
    assert not np.allclose(new, arts.item_encoder.encode(["comedy"], "A new film", {"year": 2010}))

    # a second export publishes a new version; the first stays loadable
    second = export(trained, ds, tmp_path)
    assert second != version_dir and load_current(tmp_path).version == second.name
    assert load_version(version_dir).version == version_dir.name
