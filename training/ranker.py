"""The learned ranker: gradient-boosted trees (LightGBM, a listwise ranking objective) that
re-rank a user's candidates with the features of core/ranker_features.py.

Labels come from the training period only, never from anything later: each user's last
`label_fraction` of interactions by time (the evaluation protocol's per-user split,
one level down) are the positives; every candidate model (two-tower, EASE,
co-visitation, popularity) is fit on the earlier part alone. So the features of an
example are what serving computes for a user's future: scores of models that have not
seen what they are asked to predict. The served signals are then rebuilt from all the
data, and the served two-tower is the one trained on all of it.

Candidates per user are what the retrieval service sends for them: its own code runs on
the early models (training/ranker_candidates.py), so the trees learn on the mix of
two-tower, "also bought", content and trending candidates they rank when served.
Training costs one more two-tower fit (on ~80% of the data) and a few seconds of
candidates, features and trees.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from core.ranker_features import FEATURES, RankerSignals, SignalConfig
from training.dataset import Dataset
from training.ranker_candidates import RetrievalCandidates
from training.ranker_signals import build_signals
from training.sources import SourceArtifacts, source_artifacts
from training.splits import per_user_split
from training.train import TrainConfig, TrainedModel, train

log = logging.getLogger(__name__)

# (recent item ids, attributes, items to exclude) -> candidate item ids: what retrieval sends
Retrieve = Callable[[list[str], dict[str, str], set[str]], list[str]]


@dataclass
class RankerConfig:
    label_fraction: float = 0.2  # each user's last share of interactions: the positives
    candidates: int = 200  # candidates per user: what the orchestrator asks retrieval for
    max_history: int = 50  # recent items the features read: what the orchestrator sends (RECENT_FOR_MODEL)
    use_times: bool = True  # session features from the recent items' times (the orchestrator sends them)
    max_users: int = 30_000  # users with labels sampled for examples (features cost ~1 ms per user)
    negative_share: float = 0.3  # share of each user's non-label candidates kept as examples (speed)
    objective: str = "rank_xendcg"  # LightGBM: rank_xendcg (as good as lambdarank here, 3x faster), lambdarank
    num_trees: int = 100  # with these settings more trees overfit the few thousand positives (validation)
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_data_in_leaf: int = 100
    feature_fraction: float = 0.8
    label_windows: int = 1  # label periods, each before the last: W two-tower fits, W times the examples
    valid_share: float = 0.0  # users kept out of the trees, to report how much the ranker adds (costs examples)
    early_stopping: int = 0  # stop when the held-out users' NDCG@10 has not improved in this many trees; 0 = off
    seed: int = 0
    signals: SignalConfig = field(default_factory=SignalConfig)


@dataclass
class TrainedRanker:
    booster: lgb.Booster
    signals: RankerSignals  # built on all the data: what serving reads
    config: RankerConfig
    metrics: dict[str, Any]


@dataclass
class Examples:
    features: np.ndarray  # float32 [rows, len(FEATURES)]
    labels: np.ndarray  # int32 [rows]
    groups: np.ndarray  # int [users]: rows per user, in order
    n_relevant: np.ndarray  # int [users]: each user's label items, found among the candidates or not


def histories(interactions: pd.DataFrame) -> dict[str, list[str]]:
    """Each user's distinct items, most recent first, ties by item id: serving's order
    (storage.interactions.user_history)."""
    return {u: items for u, (items, _) in timed_histories(interactions).items()}


def timed_histories(interactions: pd.DataFrame) -> dict[str, tuple[list[str], np.ndarray]]:
    """histories() with each item's latest interaction time, unix seconds (float64)."""
    last = interactions.groupby(["user_id", "item_id"], sort=False)["ts"].max().reset_index()
    last = last.sort_values(["user_id", "ts", "item_id"], ascending=[True, False, True], kind="stable")
    seconds = last["ts"].astype("int64").to_numpy() / 1e9
    users, items = last["user_id"].to_numpy(), last["item_id"].to_numpy()
    if not len(users):
        return {}
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    return {users[a]: (items[a:b].tolist(), seconds[a:b]) for a, b in zip(starts, ends, strict=True)}


def attributes_of(dataset: Dataset) -> dict[str, dict[str, Any]]:
    return dict(zip(dataset.users["user_id"], dataset.users["demographics"], strict=True))


def request_attributes(demographics: dict[str, Any]) -> dict[str, str]:
    """Demographics as the orchestrator sends them (UserContext.attributes): strings, empty ones left out."""
    return {key: str(v) for key, v in demographics.items() if v is not None and v != ""}


def train_ranker(
    dataset: Dataset, two_tower: TrainConfig, config: RankerConfig | None = None, progress: bool = False,
    sources: SourceArtifacts | None = None,
) -> TrainedRanker:
    """Fit the candidate models on each user's earlier interactions, the trees on the later ones.

    With label_windows W > 1 this is repeated W times, each window's labels taken from just
    before the previous window's: more examples for the trees, one more two-tower fit each.
    """
    cfg = config or RankerConfig()
    t0 = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    attrs = attributes_of(dataset)
    users = sorted(dataset.interactions["user_id"].unique())
    if len(users) > cfg.max_users:
        users = sorted(rng.choice(users, size=cfg.max_users, replace=False).tolist())
    n_valid = int(len(users) * cfg.valid_share) if len(users) >= 20 else 0
    valid_users = set(rng.permutation(users)[:n_valid].tolist())

    fits: list[Examples] = []
    valid: Examples | None = None
    windows: list[dict[str, Any]] = []
    data = dataset
    for w in range(cfg.label_windows):
        t = time.perf_counter()
        early, labels = label_split(data, cfg.label_fraction)
        if not labels:
            break
        tt = train(early, replace(two_tower, holdout=False, seed=two_tower.seed + w), progress=progress)
        early_sources = source_artifacts(early)
        signals = build_signals(early, cfg.signals, early_sources)
        hist = timed_histories(early.interactions)
        mine = [u for u in users if u in labels]
        with RetrievalCandidates(early, tt, cfg.candidates, early_sources) as retrieve:
            fit = make_examples([u for u in mine if u not in valid_users], hist, labels, attrs, tt, signals,
                                retrieve, cfg, rng)
            if w == 0 and valid_users:  # held-out users keep every candidate: the lists serving would rank
                valid = make_examples([u for u in mine if u in valid_users], hist, labels, attrs, tt, signals,
                                      retrieve, replace(cfg, negative_share=1.0), rng)
        fits.append(fit)
        windows.append({"examples": int(len(fit.labels)), "positives": int(fit.labels.sum()),
                        "candidate_recall": round(float(fit.labels.sum() / max(1, fit.n_relevant.sum())), 4),
                        "seconds": round(time.perf_counter() - t, 1)})
        data = early
    if not fits:
        raise ValueError("no user has enough interactions to label ranker examples")
    fit = Examples(*(np.concatenate([getattr(f, name) for f in fits]) for name in Examples.__dataclass_fields__))

    t = time.perf_counter()
    booster = fit_trees(fit, valid, cfg)
    metrics: dict[str, Any] = {
        "label_fraction": cfg.label_fraction, "windows": windows,
        "examples": int(len(fit.labels)), "positives": int(fit.labels.sum()),
        "trees": booster.best_iteration or booster.current_iteration(),
    }
    if valid is not None and len(valid.labels):
        order_tt = -valid.features[:, FEATURES.index("two_tower")]
        metrics["valid_users"] = len(valid.groups)
        metrics["valid_ndcg@10"] = {
            "ranker": round(group_ndcg(-booster.predict(valid.features, num_threads=1), valid), 4),
            "two_tower": round(group_ndcg(order_tt, valid), 4),
        }
    full_signals = build_signals(dataset, cfg.signals, sources)
    metrics["seconds"] = {"trees": round(time.perf_counter() - t, 1), "total": round(time.perf_counter() - t0, 1)}
    log.info("ranker trained: %s", metrics)
    return TrainedRanker(booster=booster, signals=full_signals, config=cfg, metrics=metrics)


def label_split(dataset: Dataset, fraction: float) -> tuple[Dataset, dict[str, set[str]]]:
    """(the data the candidate models fit on, each user's label items): every user's last `fraction`
    of interactions by time are labels (the evaluation protocol's per-user split); the rest is the data."""
    split = per_user_split(dataset.interactions, fraction)
    early = Dataset(users=dataset.users, items=dataset.items, interactions=split.train)
    return early, {u: set(g) for u, g in split.test.groupby("user_id")["item_id"]}


def make_examples(
    users: list[str], hist: dict[str, tuple[list[str], np.ndarray]], labels: dict[str, set[str]],
    attrs: dict[str, dict[str, Any]], tt: TrainedModel, signals: RankerSignals, retrieve: Retrieve,
    cfg: RankerConfig, rng: np.random.Generator | None = None,
) -> Examples:
    """Candidates (from `retrieve`), features and labels of each user; serving's feature code on the
    early models."""
    rng = rng or np.random.default_rng(cfg.seed)
    vectors = tt.item_vectors()
    if tt.vocab.item_ids != signals.item_ids:
        raise ValueError("two-tower and ranker signals disagree on the item order")
    has_vector = np.ones(len(vectors), dtype=bool)
    feats, labs, groups, n_rel = [], [], [], []
    nothing: tuple[list[str], np.ndarray] = ([], np.zeros(0))
    for start in range(0, len(users), 1024):
        chunk = users[start : start + 1024]
        recent = [hist.get(u, nothing)[0] for u in chunk]
        uvec = tt.user_vectors(recent, [attrs.get(u, {}) for u in chunk])
        scores = uvec @ vectors.T  # [U, n]
        for r, u in enumerate(chunk):
            items, times = hist.get(u, nothing)
            seen = signals.rows(items)
            times = times[seen >= 0][: cfg.max_history]
            found = retrieve(recent[r][: cfg.max_history], request_attributes(attrs.get(u, {})), set(items))
            cand = signals.rows(found)
            cand = cand[cand >= 0]
            seen = seen[seen >= 0]
            history = seen[: cfg.max_history]
            gaps = times.max() - times if cfg.use_times and len(times) else None
            x = signals.features(history, cand, scores[r, cand], vectors, has_vector, gaps)
            positive = labels[u]
            y = np.fromiter((signals.item_ids[c] in positive for c in cand), dtype=np.int32, count=len(cand))
            if cfg.negative_share < 1.0:
                keep = (y > 0) | (rng.random(len(y)) < cfg.negative_share)
                x, y = x[keep], y[keep]
            feats.append(x)
            labs.append(y)
            groups.append(len(y))
            n_rel.append(len(positive - {signals.item_ids[i] for i in seen}))
    if not feats:
        return Examples(np.zeros((0, len(FEATURES)), np.float32), np.zeros(0, np.int32), np.zeros(0, int),
                        np.zeros(0, int))
    return Examples(np.concatenate(feats), np.concatenate(labs), np.array(groups), np.array(n_rel))


def fit_trees(fit: Examples, valid: Examples | None, cfg: RankerConfig) -> lgb.Booster:
    params = {
        "objective": cfg.objective, "metric": "ndcg", "eval_at": [10], "learning_rate": cfg.learning_rate,
        "num_leaves": cfg.num_leaves, "min_data_in_leaf": cfg.min_data_in_leaf,
        "feature_fraction": cfg.feature_fraction, "bagging_seed": cfg.seed, "feature_fraction_seed": cfg.seed,
        "seed": cfg.seed, "num_threads": 1, "deterministic": True, "force_row_wise": True, "verbosity": -1,
    }
    train_set = lgb.Dataset(fit.features, fit.labels, group=fit.groups, feature_name=list(FEATURES),
                            free_raw_data=False)
    callbacks = []
    valid_sets = []
    if cfg.early_stopping and valid is not None and len(valid.labels) and valid.labels.any():
        valid_sets = [lgb.Dataset(valid.features, valid.labels, group=valid.groups, reference=train_set)]
        callbacks.append(lgb.early_stopping(cfg.early_stopping, verbose=False))
    # with early stopping, predict() and save_model() use the best iteration
    return lgb.train(params, train_set, num_boost_round=cfg.num_trees, valid_sets=valid_sets, callbacks=callbacks)


def group_ndcg(order_key: np.ndarray, ex: Examples, k: int = 10) -> float:
    """Mean NDCG@k over users of the candidates sorted by order_key ascending; the ideal counts every
    label item of the user, found among the candidates or not (as the evaluation protocol does)."""
    out, start = [], 0
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    for size, rel in zip(ex.groups.tolist(), ex.n_relevant.tolist(), strict=True):
        if rel == 0:
            start += size
            continue
        labels = ex.labels[start : start + size]
        top = np.argsort(order_key[start : start + size], kind="stable")[:k]
        dcg = float((labels[top] * discount[: len(top)]).sum())
        out.append(dcg / float(discount[: min(rel, k)].sum()))
        start += size
    return float(np.mean(out)) if out else 0.0
