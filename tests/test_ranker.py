"""The learned ranker: its features on a hand-made case, where its labels come from, training on
a tiny synthetic data set, the export / load round trip, and Rank over gRPC in the running stack."""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from core.artifacts import load_current
from core.config import Settings
from core.ranker_features import COL, FEATURES, RankerSignals, SignalConfig, _Csr
from protos import internal_pb2 as ipb
from protos import internal_pb2_grpc as ipb_grpc
from ranking import ranker as served
from ranking.trees import Trees
from retrieval.retriever import Retriever
from retrieval.service import RetrievalServicer
from tests.test_training import synthetic
from training.dataset import Dataset
from training.export import export
from training.ranker import (
    RankerConfig,
    attributes_of,
    histories,
    label_split,
    make_examples,
    request_attributes,
    timed_histories,
    train_ranker,
)
from training.ranker_candidates import RetrievalCandidates
from training.ranker_signals import build_signals
from training.train import TrainConfig, train

TINY_TT = TrainConfig(epochs=2, batch_size=64, dim=16, hidden=32)
TINY_RANKER = RankerConfig(candidates=20, num_trees=20, min_data_in_leaf=5)

# ------------------------------------------------------------------------- features


def _hand_signals() -> RankerSignals:
    """Items a, b, c, d with every signal written out by hand."""
    ease = np.array([[0.0, 0.1, 0.2, 0.3],
                     [0.4, 0.0, 0.5, 0.6],
                     [0.7, 0.8, 0.0, 0.9],
                     [1.0, 1.1, 1.2, 0.0]], dtype=np.float32)
    cov = sp.csr_matrix(np.array([[0, 0.5, 0, 0], [0.5, 0, 0.2, 0], [0, 0.2, 0, 0], [0, 0, 0, 0]], np.float32))
    content = sp.csr_matrix(np.array([[1, 0], [0.6, 0.8], [0, 1], [0, 0]], np.float32))
    categories = sp.csr_matrix(np.array([[1, 0], [1, 1], [0, 1], [0, 0]], np.float32))  # a: x; b: x, y; c: y
    return RankerSignals(
        item_ids=["a", "b", "c", "d"],
        popularity=np.log1p(np.array([3, 2, 1, 0], np.float32)),
        recent_popularity=np.log1p(np.array([1, 0, 0, 0], np.float32)),
        rating=np.array([4.0, 3.0, 2.5, np.nan], np.float32),
        year=np.array([1990, 2000, np.nan, 2010], np.float32),
        log_price=np.full(4, np.nan, np.float32),
        categories=categories, content=content, covisitation=cov, ease=ease,
        config=SignalConfig(half_life=1.0, session_half_life_s=60.0),  # history weights 1, 0.5 -> 2/3, 1/3
    )


def test_features_on_a_hand_made_case() -> None:
    sig = _hand_signals()
    vectors = np.array([[1, 0], [0, 1], [0.6, 0.8], [1, 0]], np.float32)
    has_vector = np.array([True, True, True, False])  # d has no item-tower vector
    history = sig.rows(["a", "b"])  # a is the most recent
    cand = sig.rows(["c", "d", "new-item"])
    assert cand.tolist() == [2, 3, -1]
    gaps = np.array([0.0, 60.0])  # b was a minute before a: session weights 1, 0.5
    x = sig.features(history, cand, np.array([0.5, 0.2, np.nan], np.float32), vectors, has_vector, gaps)
    assert x.shape == (3, len(FEATURES)) and x.dtype == np.float32

    def f(name: str) -> list[float]:
        return x[:, COL[name]].tolist()

    nan = math.nan
    w = [2 / 3, 1 / 3]
    pop = np.log1p([3, 2, 1, 0])
    hist_pop = w[0] * pop[0] + w[1] * pop[1]
    expected = {
        "two_tower": [0.5, 0.2, nan], "tt_rank": [0.0, 1.0, nan], "tt_gap": [0.0, -0.3, nan],
        "ease": [0.2 + 0.5, 0.3 + 0.6, nan], "ease_recent": [0.2 + 0.5 * 0.5, 0.3 + 0.5 * 0.6, nan],
        "ease_rank": [1.0, 0.0, nan],  # d's recency-weighted EASE is the higher of the two
        "covisitation": [w[1] * 0.2, 0.0, nan],
        "sim_last": [0.6, nan, nan], "sim_max5": [0.8, nan, nan], "sim_mean": [0.7, nan, nan],
        "content": [w[1] * 0.8, 0.0, nan],  # profile = 2/3 a + 1/3 b = (0.8667, 0.2667)
        "category_share": [w[1], nan, nan], "category_max": [w[1], nan, nan],  # share: x 1, y 1/3; d: none
        "popularity": [pop[2], pop[3], nan], "recent_popularity": [0.0, 0.0, nan], "rating": [2.5, nan, nan],
        "year": [nan, 2010, nan], "year_gap": [nan, 15.0, nan], "price_gap": [nan, nan, nan],
        "popularity_gap": [pop[2] - hist_pop, pop[3] - hist_pop, nan],
        "history_len": [2, 2, 2], "history_popularity": [hist_pop, hist_pop, hist_pop],
        "ease_session": [0.2 + 0.5 * 0.5, 0.3 + 0.5 * 0.6, nan], "covisitation_session": [0.5 * 0.2, 0.0, nan],
        "session_len": [1.5, 1.5, 1.5],
    }
    assert set(expected) == set(FEATURES)
    for name, values in expected.items():
        assert np.allclose(f(name), values, atol=1e-5, equal_nan=True), (name, f(name), values)

    # no history: the user's features say so, history-based ones are missing
    empty = sig.features(np.zeros(0, np.int64), cand, np.array([0.5, 0.2, np.nan], np.float32), vectors, has_vector)
    assert empty[:, COL["history_len"]].tolist() == [0, 0, 0]
    assert np.isnan(empty[:, COL["ease"]]).all() and np.isnan(empty[:, COL["content"]]).all()
    # no times: the session features are missing, the rest is unchanged
    untimed = sig.features(history, cand, np.array([0.5, 0.2, np.nan], np.float32), vectors, has_vector)
    session = [COL["ease_session"], COL["covisitation_session"], COL["session_len"]]
    assert np.isnan(untimed[:, session]).all()
    rest = [i for i in range(len(FEATURES)) if i not in session]
    assert np.allclose(untimed[:, rest], x[:, rest], equal_nan=True)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 12), st.integers(1, 40))
def test_rows_to_sums_what_the_dense_matrix_gives(seed: int, n_rows: int, n_columns: int) -> None:
    """Co-visitation with the history: each candidate column's weighted sum over the history's rows, columns
    repeated or not, against the dense product."""
    rng = np.random.default_rng(seed)
    m = sp.random(30, 30, density=0.2, format="csr", random_state=seed % 1000, dtype=np.float32)
    csr = _Csr(m)
    rows = rng.choice(30, min(n_rows, 30), replace=False)
    columns = rng.integers(0, 30, n_columns)  # repeats likely
    weights = rng.random(len(rows)).astype(np.float32)
    want = weights @ m.toarray()[rows][:, columns]
    apply = csr.rows_to(rows, columns)
    assert np.allclose(apply(weights), want, atol=1e-5)
    assert np.allclose(apply(weights * 2), 2 * want, atol=1e-5)
    assert (csr._slots() == -1).all()  # the scratch is left clean


def test_signals_save_and_load_round_trip(tmp_path: Path) -> None:
    sig = build_signals(synthetic(n_users=10, n_items=12, per_user=6))
    sig.save(tmp_path)
    back = RankerSignals.load(tmp_path)
    assert back.item_ids == sig.item_ids and back.config == sig.config
    for name in ("popularity", "recent_popularity", "rating", "year", "log_price", "ease"):
        assert np.array_equal(getattr(back, name), getattr(sig, name), equal_nan=True), name
    for name in ("categories", "content", "covisitation"):
        assert (getattr(back, name) != getattr(sig, name)).nnz == 0, name


# --------------------------------------------------------------------------- labels


def test_labels_are_each_users_latest_interactions_and_the_models_never_see_them() -> None:
    ds = synthetic(n_users=30, n_items=24, per_user=10)
    # an item nobody touches except as their very last interaction
    items = pd.concat([ds.items, ds.items.iloc[[0]].assign(item_id="late")], ignore_index=True)
    inter = ds.interactions.copy()
    inter.loc[inter.groupby("user_id")["ts"].idxmax(), "item_id"] = "late"
    ds = Dataset(users=ds.users, items=items, interactions=inter)

    early, labels = label_split(ds, 0.2)
    assert len(early.interactions) == 30 * 8  # round(0.2 * 10) = 2 labels per user
    for user_id, group in ds.interactions.groupby("user_id"):
        mine = early.interactions[early.interactions["user_id"] == user_id]
        later = group.sort_values("ts").iloc[len(mine):]
        assert set(later["item_id"]) == labels[user_id]  # the latest two are the labels
        assert mine["ts"].max() < later["ts"].min()
        assert "late" in labels[user_id]
    assert "late" not in set(early.interactions["item_id"])
    # what the ranker's candidate models are built from knows nothing of the labels
    signals = build_signals(early)
    assert signals.popularity[signals.row["late"]] == 0.0
    assert signals.covisitation[signals.row["late"]].nnz == 0
    assert signals.ease is not None and not signals.ease[signals.row["late"]].any()


def test_training_candidates_are_what_the_retrieval_service_sends() -> None:
    ds = synthetic(n_users=30, n_items=40, per_user=12)
    early, labels = label_split(ds, 0.2)
    tt = train(early, TINY_TT, progress=False)
    hist = timed_histories(early.interactions)
    user = "u3"
    recent, _ = hist[user]
    attrs = request_attributes(attributes_of(ds)[user])
    with RetrievalCandidates(early, tt, k=15) as retrieve:
        got = retrieve(recent, attrs, set(recent))
        # the retrieval service's own code, over gRPC's message types, on the same published version
        service = Retriever(Path(retrieve._tmp.name))  # the service's loader over the same folder
        service.load()
        servicer = RetrievalServicer(service)
        resp = asyncio.run(servicer.Retrieve(ipb.RetrieveRequest(
            user=ipb.UserContext(user_id=user, recent_item_ids=recent, attributes=attrs), k=15,
            exclude_item_ids=recent), None))  # type: ignore[arg-type]
        sources = set(resp.candidates.sources)
        examples = make_examples([user], hist, labels, attributes_of(ds), tt, build_signals(early), retrieve,
                                 replace(TINY_RANKER, negative_share=1.0))
    assert got == list(resp.candidates.item_ids) and len(got) == 15
    assert not set(got) & set(recent)  # seen items are excluded, as the orchestrator asks
    assert len(sources) > 1, sources  # the default mix: more than the two-tower
    assert examples.groups.tolist() == [15]  # one example per retrieved candidate
    assert examples.labels.sum() == len(labels[user] & set(got))


# ------------------------------------------------------------------ train, export, serve


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Dataset, Path]:
    ds = synthetic(n_users=80, n_items=40, per_user=15)
    trained = train(ds, TINY_TT, progress=False)
    ranker = train_ranker(ds, TINY_TT, TINY_RANKER)
    folder = tmp_path_factory.mktemp("artifacts")
    return ds, export(trained, ds, folder, ranker=ranker)


def test_ranker_trains_and_ranks_a_users_genre_first(published: tuple[Dataset, Path]) -> None:
    ds, version_dir = published
    manifest = json.loads((version_dir / "manifest.json").read_text())
    m = manifest["ranker"]["metrics"]
    assert manifest["ranker"]["features"] == list(FEATURES)
    assert m["examples"] > 0 and 0 < m["positives"] < m["examples"] and m["trees"] == TINY_RANKER.num_trees
    assert {"ranker.lgb", "ranker.json", "ranker_signals.npz", "ranker_signals.json"} <= set(manifest["files"])

    ranker = served.load(version_dir)
    assert ranker is not None and ranker.version == manifest["version"]
    # user u0 likes genre 0 (items i0, i4, ...): those must top a list of every other item
    recent = histories(ds.interactions)["u0"]
    candidates = [f"i{i}" for i in range(1, 39) if f"i{i}" not in recent]
    out = ranker.rank("u0", recent, candidates, [0.0] * len(candidates), ["popular"] * len(candidates),
                      {"age": "20", "gender": "M"})
    assert out.scores.shape == (len(candidates),) and np.isfinite(out.scores).all()
    assert out.part_names[0] == "ranker" and out.parts.shape == (len(candidates), len(out.part_names))
    assert np.array_equal(out.parts[:, 0], out.scores)
    genre = [c for c in candidates if int(c[1:]) % 4 == 0]  # the few u0 has not had yet
    assert 0 < len(genre) < len(candidates) // 4
    top = [candidates[i] for i in np.argsort(-out.scores)[: len(genre)]]
    assert set(top) == set(genre), top


def test_export_load_round_trip_scores_like_the_trained_trees(published: tuple[Dataset, Path]) -> None:
    ds, version_dir = published
    ranker = served.load(version_dir)
    assert ranker is not None
    arts = load_current(version_dir.parent)
    recent = ["i1", "i5", "i9"]
    candidates = ["i2", "i6", "i3", "never-seen"]
    attrs = {"age": "30"}
    out = ranker.rank("u1", recent, candidates, [0.1, 0.2, 0.3, 0.9], ["two_tower"] * 4, attrs)

    # the same numbers by hand from the exported pieces: the user tower, item vectors, signals, trees
    query = arts.user_encoder.encode(recent, attrs)
    assert query is not None
    sig = ranker.signals
    rows = sig.rows(candidates)
    tt = np.array([arts.item_embeddings[arts.item_index[c]] @ query for c in candidates[:3]] + [0.9], np.float32)
    x = sig.features(sig.rows(recent), rows, tt, ranker.vectors, ranker.has_vector)
    assert np.allclose(out.scores, ranker.trees.booster.predict(x, num_threads=1))
    # with the recent items' times (a repeat and an unknown item in the list keep them aligned)
    timed = ranker.rank("u1", [*recent[:2], "nope", recent[0], recent[2]], candidates, [0.1, 0.2, 0.3, 0.9],
                        ["two_tower"] * 4, attrs, recent_timestamps=[1000.0, 940.0, 900.0, 800.0, 700.0])
    x = sig.features(sig.rows(recent), rows, tt, ranker.vectors, ranker.has_vector, np.array([0.0, 60.0, 300.0]))
    assert np.allclose(timed.scores, ranker.trees.booster.predict(x, num_threads=1))
    assert out.parts[3, out.part_names.index("two_tower")] == pytest.approx(0.9)  # unknown item: its retrieval score

    # a version exported without a ranker has none; the slot then leaves ranking to the weighted scorer
    plain = export(train(ds, TINY_TT, progress=False), ds, version_dir.parent)
    assert served.load(plain) is None
    slot = served.RankerSlot(artifacts_dir=version_dir.parent)
    assert slot.refresh() and slot.ranker is None and slot.version == plain.name
    (version_dir.parent / "CURRENT").write_text(version_dir.name + "\n")
    assert slot.refresh() and slot.ranker is not None and slot.ranker.version == version_dir.name
    assert not slot.refresh()  # unchanged


def test_compiled_trees_score_as_lightgbm_does(published: tuple[Dataset, Path]) -> None:
    _, version_dir = published
    ranker = served.load(version_dir)
    assert ranker is not None
    trees = ranker.trees
    assert trees.engine == "lleaves"
    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, len(FEATURES))) * 3
    x[rng.random(x.shape) < 0.3] = np.nan  # missing features take the trees' default branches
    assert np.allclose(trees.predict(x), trees.booster.predict(x, num_threads=1), rtol=0, atol=1e-9)
    assert np.allclose(trees.predict(x.astype(np.float32)), trees.booster.predict(x.astype(np.float32)),
                       rtol=0, atol=1e-9)  # what the features give (float32)
    uncompiled = Trees(trees.booster, compile_trees=False)
    assert uncompiled.engine == "lightgbm"
    assert np.array_equal(uncompiled.predict(x), trees.booster.predict(x, num_threads=1))


def test_ranker_rejects_a_feature_set_it_was_not_trained_on(published: tuple[Dataset, Path], tmp_path: Path) -> None:
    _, version_dir = published
    meta = json.loads((version_dir / "ranker.json").read_text())
    copy = tmp_path / version_dir.name
    copy.mkdir()
    for p in version_dir.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    (copy / "ranker.json").write_text(json.dumps({**meta, "features": meta["features"][:-1]}))
    with pytest.raises(ValueError, match="retrain"):
        served.load(copy)


# ---------------------------------------------------------------------------- stack


@pytest.mark.integration
def test_rank_over_grpc_serves_the_learned_ranker(stack: Settings) -> None:
    version = (stack.artifacts_dir / "CURRENT").read_text().strip()
    ranker = served.load(stack.artifacts_dir / version)
    assert ranker is not None, "the stack's version was trained without a ranker"
    items = [f"{i}" for i in range(100, 300)]
    user = ipb.UserContext(user_id="", recent_item_ids=["50", "181", "1"], attributes={"age": "30", "gender": "F"})
    request = ipb.RankRequest(request_id="t", user=user, candidates=ipb.CandidateList(
        item_ids=items, scores=[0.0] * len(items), sources=["popular"] * len(items), anchor_item_ids=[""] * len(items)))
    with grpc.insecure_channel(stack.ranking_addr) as channel:
        resp = ipb_grpc.RankingStub(channel).Rank(request, timeout=10)
    assert resp.model_version == f"ranker-{version}"
    assert sorted(resp.order) == list(range(len(items)))
    assert list(resp.scores) == sorted(resp.scores, reverse=True)
    assert resp.score_part_names[0] == "ranker"
    assert len(resp.score_parts) == len(items) * len(resp.score_part_names)
    # the same order as the ranker in process (no user id: no Feast history joins the request's)
    local = ranker.rank("", list(user.recent_item_ids), items, [0.0] * len(items), ["popular"] * len(items),
                        dict(user.attributes))
    assert list(resp.order) == np.argsort(-local.scores, kind="stable").tolist()



@pytest.mark.integration
def test_a_newcomer_keeps_the_segment_order_retrieval_sends(stack: Settings) -> None:
    """No history (none in the request, none in Feast): ranking keeps the caller's order, which for a
    newcomer is the segments' popularity; the learned ranker ranked newcomers worse (docs/quality.md)."""
    newcomer = ipb.UserContext(user_id="nobody-yet", attributes={"age": "30", "gender": "F"})
    with grpc.insecure_channel(stack.retrieval_addr) as channel:
        found = ipb_grpc.RetrievalStub(channel).Retrieve(ipb.RetrieveRequest(user=newcomer, k=100), timeout=10)
    scores = list(found.candidates.scores)
    assert scores == sorted(scores, reverse=True) and scores[0] > 0  # the segments' order, best first
    assert found.candidates.sources[0] == "segment_popular"
    with grpc.insecure_channel(stack.ranking_addr) as channel:
        resp = ipb_grpc.RankingStub(channel).Rank(ipb.RankRequest(user=newcomer, candidates=found.candidates),
                                                  timeout=10)
    assert list(resp.order) == list(range(len(scores))) and resp.model_version == "retrieval-order"
    # scores keep that order whatever the sources' scales (selection sorts by them); the sources' scores are a part
    assert list(resp.scores) == sorted(set(resp.scores), reverse=True) and list(resp.score_parts) == scores
    # with one recent item the learned ranker ranks again
    known = ipb.UserContext(user_id="", recent_item_ids=["50"], attributes={"age": "30", "gender": "F"})
    with grpc.insecure_channel(stack.ranking_addr) as channel:
        again = ipb_grpc.RankingStub(channel).Rank(ipb.RankRequest(user=known, candidates=found.candidates), timeout=10)
    assert again.model_version.startswith("ranker-")
