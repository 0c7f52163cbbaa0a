"""evaluation/: metrics on hand-made rankings, the splits, no test leakage, the bootstrap,
the baselines, the served pipeline in process, the feature mirror against PostgreSQL, the reports."""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest
import scipy.sparse as sp

from evaluation import features, harness, metrics, registry, report
from evaluation.baselines import FAMILIES as BASELINES
from evaluation.baselines.matrix import UserItems
from evaluation.bootstrap import compare, paired_bootstrap
from evaluation.cli import main as cli_main
from evaluation.models import ServedPipeline
from evaluation.protocol import Family, Recommender
from feature_store.tables import build_feature_tables
from storage.bulk import load_frames
from storage.interactions import user_history
from tests.conftest import fresh_database
from training import movielens
from training.dataset import Dataset
from training.splits import global_time_split, make_splits, per_user_split

ROOT = Path(__file__).resolve().parent.parent

# ------------------------------------------------------------------------- data


def synthetic(n_users: int = 40, n_items: int = 30, seed: int = 0) -> Dataset:
    """Users who favour one of three genres (item i is genre i % 3), 8-13 interactions each, in sessions."""
    rng = np.random.default_rng(seed)
    genres = ["action", "comedy", "drama"]
    items = pd.DataFrame({
        "item_id": [f"i{i}" for i in range(n_items)],
        "title": [f"Film {i} {genres[i % 3]} story" for i in range(n_items)],
        "description": [f"a {genres[i % 3]} film" for i in range(n_items)],
        "categories": [[genres[i % 3].title()] for i in range(n_items)],
        "brand": "", "price": math.nan,
        "attributes": [{"year": 1990 + i} for i in range(n_items)],
        "status": "active",
    })
    users = pd.DataFrame({
        "user_id": [f"u{u}" for u in range(n_users)],
        "demographics": [{"age": 18 + u % 50, "gender": "MF"[u % 2], "occupation": f"job{u % 4}"}
                         for u in range(n_users)],
        "preferences": [{} for _ in range(n_users)],
    })
    rows = []
    t0 = pd.Timestamp("2024-01-01", tz="UTC")
    for u in range(n_users):
        liked = [i for i in range(n_items) if i % 3 == u % 3]
        others = [i for i in range(n_items) if i % 3 != u % 3]
        # three items of other genres first, then the user's genre: the latest items show the taste
        picks = list(rng.choice(others, 3, replace=False)) + list(rng.permutation(liked)[: rng.integers(5, 11)])
        start = t0 + pd.Timedelta(hours=int(rng.integers(0, 24 * 5)))
        for k, i in enumerate(picks):
            ts = start + pd.Timedelta(hours=6 * (k // 2))  # pairs share a second: ties in time
            kind = "rating" if k % 3 else "click"
            rows.append((f"u{u}", f"i{i}", kind, float(1 + k % 5) if kind == "rating" else 1.0, ts))
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "type", "value", "ts"])
    return Dataset(users=users, items=items, interactions=interactions)


def pairs(frame: pd.DataFrame) -> set[tuple[str, str, int]]:
    return set(zip(frame["user_id"], frame["item_id"], frame["ts"].astype("int64"), strict=True))


# ---------------------------------------------------------------------- metrics


def _metrics_of(scores: list[float], relevant: list[int], exclude: list[int] = (), ks=(1, 2, 3)):  # type: ignore[assignment]
    n = len(scores)
    s = np.array([scores], dtype=np.float32)
    ex = np.zeros((1, n), dtype=bool)
    ex[0, list(exclude)] = True
    top = metrics.top_k(s, ex, max(ks), metrics.tie_order(n))
    rel = sp.csr_matrix((np.ones(len(relevant), dtype=bool), ([0] * len(relevant), relevant)), shape=(1, n))
    return top, {k: float(v[0]) for k, v in metrics.user_metrics(top, rel, ks).items()}


def test_known_ranking_has_known_recall_ndcg_and_hitrate() -> None:
    # ranking 0 > 1 > 2 > 3 > 4; relevant items 1 and 3
    top, m = _metrics_of([0.9, 0.8, 0.7, 0.6, 0.5], relevant=[1, 3])
    assert top.tolist() == [[0, 1, 2]]
    assert m["recall@1"] == 0.0 and m["hitrate@1"] == 0.0 and m["ndcg@1"] == 0.0
    assert m["recall@2"] == 0.5 and m["hitrate@2"] == 1.0
    # one hit at rank 1 of an ideal list with hits at ranks 0 and 1
    assert m["ndcg@2"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert m["ndcg@3"] == pytest.approx(m["ndcg@2"])


def test_excluded_items_are_skipped_and_the_ranking_closes_up() -> None:
    top, m = _metrics_of([0.9, 0.8, 0.7, 0.6, 0.5], relevant=[1, 3], exclude=[0, 2])
    assert top.tolist() == [[1, 3, 4]]  # items 0 and 2 are the user's training items
    assert m["recall@2"] == 1.0 and m["ndcg@2"] == pytest.approx(1.0)
    top, m = _metrics_of([0.9, 0.8, 0.7, 0.6, 0.5], relevant=[4], exclude=[0, 2])
    assert m["ndcg@3"] == pytest.approx(1 / math.log2(4)) and m["recall@3"] == 1.0


def test_unranked_items_leave_empty_slots_and_nan_is_an_error() -> None:
    top, m = _metrics_of([1.0, -np.inf, 0.5, -np.inf], relevant=[1], exclude=[2])
    assert top.tolist() == [[0, -1, -1]]
    assert m["recall@3"] == 0.0
    with pytest.raises(ValueError, match="NaN"):
        _metrics_of([1.0, math.nan, 0.5], relevant=[0])


def test_ties_follow_the_fixed_random_order_not_item_ids() -> None:
    n = 50
    ties = metrics.tie_order(n)
    top = metrics.top_k(np.zeros((1, n)), np.zeros((1, n), dtype=bool), 10, ties)
    assert top[0].tolist() == ties[:10].tolist()
    assert top[0].tolist() != list(range(10))
    # a better score still wins over the tie order
    s = np.zeros((1, n))
    s[0, ties[-1]] = 1.0
    assert metrics.top_k(s, np.zeros((1, n), dtype=bool), 1, ties)[0, 0] == ties[-1]


def test_coverage_counts_distinct_items_in_the_top_10() -> None:
    top = np.array([list(range(10)), list(range(5, 15))])
    assert metrics.coverage(top, 100) == pytest.approx(0.15)


# ------------------------------------------------------------------------- splits


def test_per_user_split_takes_each_users_last_fifth_by_time() -> None:
    data = synthetic()
    split = per_user_split(data.interactions)
    assert len(split.train) + len(split.test) == len(data.interactions)
    assert pairs(split.train) | pairs(split.test) == pairs(data.interactions)
    n = data.interactions.groupby("user_id").size()
    held = split.test.groupby("user_id").size()
    for user, count in n.items():
        assert held.get(user, 0) == max(1, math.floor(0.2 * count + 0.5))
        assert split.train.loc[split.train["user_id"] == user, "ts"].max() <= \
            split.test.loc[split.test["user_id"] == user, "ts"].min()


def test_one_interaction_stays_in_train() -> None:
    inter = synthetic().interactions.groupby("user_id").head(1)
    split = per_user_split(inter)
    assert len(split.test) == 0 and len(split.train) == len(inter)


def test_global_time_split_has_one_cutoff() -> None:
    data = synthetic()
    split = global_time_split(data.interactions)
    assert split.cutoff is not None
    assert (split.train["ts"] < split.cutoff).all() and (split.test["ts"] >= split.cutoff).all()
    n = len(data.interactions)
    assert math.floor(0.2 * n + 0.5) <= len(split.test) < 0.25 * n  # more only where the cut-off second is shared


@pytest.mark.parametrize("protocol", ["per-user", "global-time", "cold-users"])
def test_validation_is_carved_from_train_only(protocol: str) -> None:
    data = synthetic()
    s = make_splits(data, protocol)
    assert pairs(s.tune.train) | pairs(s.tune.test) == pairs(s.final.train)
    assert not (pairs(s.tune.train) | pairs(s.tune.test)) & pairs(s.final.test)
    assert pairs(s.train_dataset("tune").interactions) == pairs(s.tune.train)
    assert s.describe()["final"]["held_out"] == len(s.final.test)  # type: ignore[index]


def test_cold_users_hold_out_every_interaction_of_a_fifth_of_the_users() -> None:
    data = synthetic(n_users=40)
    s = make_splits(data, "cold-users")
    test_users, val_users = set(s.final.test["user_id"]), set(s.tune.test["user_id"])
    assert len(test_users) == 8 and len(val_users) == round(0.2 * 32)  # 20% of 40, then of the other 32
    assert not test_users & set(s.final.train["user_id"]) and not val_users & set(s.tune.train["user_id"])
    assert not val_users & test_users
    by_user = data.interactions.groupby("user_id").size()
    assert len(s.final.test) == by_user[sorted(test_users)].sum()  # all of their interactions
    assert set(make_splits(data, "cold-users").final.test["user_id"]) == test_users  # seeded: the same users
    # the harness evaluates exactly those newcomers (other protocols skip users without training data)
    ev = harness.run(data, [Family("spy", lambda: [Spy()])], harness.HarnessConfig(protocol="cold-users", seeds=(0,)),
                     splits=s)
    assert ev.users["test"] == 8 and ev.users["test_skipped_cold"] == 0


def test_segment_popular_gives_a_newcomer_what_their_segment_likes() -> None:
    """Women favour f-items, men m-items, everyone the blockbuster: a newcomer gets their segment's favourites
    (above the blockbuster, which everyone likes alike), someone without demographics the blockbuster."""
    from evaluation.baselines.segments import SegmentPopular

    users = pd.DataFrame({"user_id": [f"u{u}" for u in range(40)] + ["new-f", "new-m", "anon"],
                          "demographics": [{"gender": "FM"[u % 2]} for u in range(40)]
                          + [{"gender": "F"}, {"gender": "M"}, {}],
                          "preferences": [{} for _ in range(43)]})
    items = pd.DataFrame({"item_id": ["blockbuster", "f1", "f2", "m1", "m2", "rare"], "title": "", "description": "",
                          "categories": [[] for _ in range(6)], "brand": "", "price": math.nan,
                          "attributes": [{} for _ in range(6)], "status": "active"})
    t = pd.Timestamp("2024-01-01", tz="UTC")
    rows = [(f"u{u}", item, "click", 1.0, t) for u in range(40)
            for item in ["blockbuster", *(["f1", "f2"] if u % 2 == 0 else ["m1", "m2"])]]
    data = Dataset(users=users, items=items, interactions=pd.DataFrame(rows, columns=["user_id", "item_id", "type",
                                                                                        "value", "ts"]))
    model = SegmentPopular()
    catalog = list(items["item_id"])
    model.fit(data, catalog, seed=0)
    scores = model.score(["new-f", "new-m", "anon"])
    top = [[catalog[j] for j in np.argsort(-row, kind="stable")[:3]] for row in scores]
    assert set(top[0][:2]) == {"f1", "f2"} and set(top[1][:2]) == {"m1", "m2"}
    assert top[2][0] == "blockbuster" and scores[2][catalog.index("rare")] == 0


def test_movielens_split_sizes_are_those_the_report_states() -> None:
    data = movielens.load(movielens.fetch(ROOT / "data"))
    s = make_splits(data, "per-user")
    d = s.describe()
    assert d["final"] == {"train": 80000, "held_out": 20000, "held_out_users": 943}
    assert d["tune"] == {"train": 64005, "held_out": 15995, "held_out_users": 943}
    per_user = s.final.test.groupby("user_id").size() / data.interactions.groupby("user_id").size()
    assert per_user.between(0.17, 0.23).all()  # every user has >= 20 ratings: rounding moves it little


# ------------------------------------------------------------------ no leakage


class Spy:
    """Most popular, recording what each fit saw and which users each score call asked for."""

    name = "spy"

    def __init__(self) -> None:
        self.fits: list[pd.DataFrame] = []
        self.scored: list[str] = []

    def fit(self, train: Dataset, catalog: list[str], seed: int) -> None:
        self.fits.append(train.interactions.copy())
        self.catalog = catalog
        counts = train.interactions["item_id"].value_counts()
        self.counts = np.array([counts.get(i, 0) for i in catalog], dtype=np.float32)

    def score(self, user_ids: list[str]) -> np.ndarray:
        self.scored += user_ids
        return np.tile(self.counts, (len(user_ids), 1))


@pytest.mark.parametrize("protocol", ["per-user", "global-time", "cold-users"])
def test_test_items_never_reach_training_or_tuning(protocol: str) -> None:
    data = synthetic()
    splits = make_splits(data, protocol)
    spies = [Spy(), Spy()]
    assert all(isinstance(s, Recommender) for s in spies)
    ev = harness.run(data, [Family("spy", lambda: spies)], harness.HarnessConfig(protocol=protocol, seeds=(0,)),
                     splits=splits)
    tuning = [f for s in spies for f in s.fits[:1]]
    final = [f for s in spies for f in s.fits[1:]]
    assert len(tuning) == 2 and len(final) == 1  # every candidate tuned, the chosen one refitted once
    for seen in tuning:
        assert pairs(seen) == pairs(splits.tune.train)
        assert not pairs(seen) & (pairs(splits.tune.test) | pairs(splits.final.test))
    assert pairs(final[0]) == pairs(splits.final.train)
    assert not pairs(final[0]) & pairs(splits.final.test)
    assert ev.users["test"] > 0 and ev.results[0].mean["ndcg@10"] >= 0


def test_the_candidate_best_on_validation_is_chosen() -> None:
    class Fixed(Spy):
        def __init__(self, good: bool) -> None:
            super().__init__()
            self.good = good
            self.params = {"good": good}

        def score(self, user_ids: list[str]) -> np.ndarray:
            return self.counts[None, :].repeat(len(user_ids), 0) * (1 if self.good else -1)

    data = synthetic()
    ev = harness.run(data, [Family("fixed", lambda: [Fixed(False), Fixed(True)])],
                     harness.HarnessConfig(seeds=(0,)))
    r = ev.results[0]
    assert r.params == {"good": True}
    assert r.trials[1].validation > r.trials[0].validation


# ---------------------------------------------------------------------- bootstrap


def test_bootstrap_interval_contains_the_true_difference() -> None:
    rng = np.random.default_rng(1)
    n, true_diff = 3000, 0.03
    b = rng.uniform(0, 1, n)
    a = b + true_diff + rng.normal(0, 0.2, n)  # the noise has mean 0: the true mean difference is 0.03
    diff, low, high, share = paired_bootstrap(a, b, seed=2)
    assert low < true_diff < high
    assert low > 0 and share < 0.025
    assert high - low < 0.03  # paired: the spread of b cancels out
    same = compare("x", b + rng.normal(0, 0.2, n), "y", b, "ndcg@10")
    assert same.low < 0 < same.high and not same.significant


def test_bootstrap_rejects_unpaired_inputs() -> None:
    with pytest.raises(ValueError):
        paired_bootstrap(np.zeros(3), np.zeros(4))


# ----------------------------------------------------------------------- baselines


def test_every_baseline_scores_the_full_catalogue_and_finds_the_genre() -> None:
    data = synthetic()
    catalog = list(data.items["item_id"])
    users = ["u0", "u1", "u2", "nobody"]
    for family in BASELINES:
        model = family.candidates()[0]
        model.fit(data, catalog, seed=0)
        scores = model.score(users)
        assert scores.shape == (4, len(catalog)) and scores.dtype == np.float32, family.name
        assert np.isfinite(scores).all(), family.name
        if family.name not in ("most-popular", "segment-popular"):  # personalized by history: the user's genre
            for u in range(3):
                top = np.argsort(-scores[u])[:5]
                assert Counter(i % 3 for i in top).most_common(1)[0][0] == u % 3, family.name


def test_recency_weights_halve_per_half_life() -> None:
    data = synthetic()
    ui = UserItems.build(data, list(data.items["item_id"]))
    w = ui.recency_weights(["u0"], half_life_s=30.0).toarray()[0]
    inter = data.interactions[data.interactions["user_id"] == "u0"]
    age = (inter["ts"].max() - inter.groupby("item_id")["ts"].max()).dt.total_seconds()
    for item_id, a in age.items():
        assert w[catalog_index(data, item_id)] == pytest.approx(0.5 ** (a / 30.0), rel=1e-5)


def catalog_index(data: Dataset, item_id: str) -> int:
    return list(data.items["item_id"]).index(item_id)


# ------------------------------------------------------------- the served pipeline


def test_served_pipeline_scores_only_ranked_candidates_and_never_train_items() -> None:
    data = synthetic()
    catalog = list(data.items["item_id"])
    model = ServedPipeline({"epochs": 1, "dim": 16, "hidden": 32}, n_candidates=8)
    model.fit(data, catalog, seed=0)
    users = ["u0", "u5"]
    scores = model.score(users)
    for row, user in zip(scores, users, strict=True):
        finite = np.flatnonzero(np.isfinite(row))
        assert len(finite) == 8
        seen = set(data.interactions.loc[data.interactions["user_id"] == user, "item_id"])
        assert not seen & {catalog[c] for c in finite}
        assert sorted(row[finite].tolist()) == list(range(1, 9))  # the served order as ranks


# -------------------------------------------------- feature mirror vs PostgreSQL


def test_offline_features_match_the_feature_tables_and_history_in_postgres() -> None:
    data = synthetic(n_users=12, n_items=15, seed=3)
    with fresh_database() as url:
        load_frames(url, data.users, data.items, data.interactions)
        build_feature_tables(url)
        with psycopg.connect(url, row_factory=psycopg.rows.dict_row) as conn:
            items = {r["item_id"]: r for r in conn.execute("SELECT * FROM feature_item_stats")}
            users = {r["user_id"]: r for r in conn.execute("SELECT * FROM feature_user_stats")}

        async def histories() -> dict[str, list[str]]:
            async with await psycopg.AsyncConnection.connect(url, row_factory=psycopg.rows.dict_row) as conn:
                return {u: await user_history(conn, u) for u in data.users["user_id"]}

        sql_history = asyncio.run(histories())
    assert len(items) == len(data.items) and len(users) == len(data.users)
    mine_items, mine_users = features.item_features(data), features.user_features(data)
    for item_id, row in items.items():
        f = mine_items[item_id]
        for name in ("popularity", "recent_popularity", "n_ratings", "categories"):
            assert f[name] == row[name], (item_id, name)
        assert f["avg_rating"] == pytest.approx(row["avg_rating"])
    for user_id, row in users.items():
        f = mine_users[user_id]
        for name in f:
            assert f[name] == pytest.approx(row[name]) if name == "avg_rating" else f[name] == row[name], name
    assert features.user_histories(data) == {u: h for u, h in sql_history.items() if h}


# ------------------------------------------------------------------------ reports


def test_reports_state_the_protocol_and_the_command(tmp_path: Path) -> None:
    data = synthetic()
    families = [f for f in BASELINES if f.name in ("most-popular", "ease", "ease-recency")]
    ev = harness.run(data, families, harness.HarnessConfig(seeds=(0,), bootstrap_resamples=200))
    assert [c.model for c in ev.comparisons] == ["most-popular", "most-popular", "ease", "ease"]
    paths = report.write(ev, tmp_path, "recsys evaluate --protocol per-user")
    doc = json.loads(paths["json"].read_text())
    assert doc["command"] == "recsys evaluate --protocol per-user"
    assert doc["protocol"]["final"]["held_out"] == ev.splits["final"]["held_out"]  # type: ignore[index]
    assert [m["name"] for m in doc["models"]] == ["most-popular", "ease", "ease-recency"]
    md = paths["md"].read_text()
    assert "recsys evaluate --protocol per-user" in md and "last 20%" in md and "| ease-recency |" in md
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ease-recency" in report.table(ev)


def test_cli_rejects_unknown_models_and_protocols(tmp_path: Path) -> None:
    assert cli_main("per-user", ["nope"], tmp_path) == 2
    assert cli_main("leave-one-out", None, tmp_path) == 2
    assert set(registry.FAMILIES) >= {"most-popular", "user-knn", "item-knn", "als", "ease", "ease-recency",
                                      "content-tfidf", "two-tower", "served-pipeline"}
