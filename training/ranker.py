"""The learned ranker: gradient-boosted trees (LightGBM, lambdarank) that re-rank a user's
candidates with the features of training/ranker_features.py.

Labels come from the training period only, never from anything later: each user's last
`label_fraction` of interactions by time (the evaluation protocol's per-user split,
one level down) are the positives; every candidate model (two-tower, EASE,
co-visitation, popularity) is fit on the earlier part alone. So the features of an
example are what serving computes for a user's future: scores of models that have not
seen what they are asked to predict. The served signals are then rebuilt from all the
data, and the served two-tower is the one trained on all of it.

Candidates per user are what retrieval sends (the two-tower's top `candidates`) plus
a few from EASE and popularity, so the trees also learn what to make of items the
two-tower ranks low.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from training.dataset import Dataset
from training.evaluation.splits import per_user_split
from training.ranker_features import FEATURES, RankerSignals, SignalConfig, build_signals
from training.train import TrainConfig, TrainedModel, train

log = logging.getLogger(__name__)


@dataclass
class RankerConfig:
    label_fraction: float = 0.2  # each user's last share of interactions: the positives
    candidates: int = 200  # two-tower candidates per user: what the orchestrator asks retrieval for
    extra_candidates: int = 30  # more from EASE (or co-visitation) and popularity each, not yet among them
    max_history: int = 50  # recent items the features read: what the orchestrator sends (RECENT_FOR_MODEL)
    max_users: int = 30_000  # users with labels sampled for examples (features cost ~1 ms per user)
    negative_share: float = 0.3  # share of each user's non-label candidates kept as examples (speed)
    num_trees: int = 100  # with these settings more trees overfit the few thousand positives (validation)
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_data_in_leaf: int = 100
    feature_fraction: float = 0.8
    valid_share: float = 0.1  # users kept out of the trees, to report how much the ranker adds
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
    last = interactions.groupby(["user_id", "item_id"], sort=False)["ts"].max().reset_index()
    last = last.sort_values(["user_id", "ts", "item_id"], ascending=[True, False, True], kind="stable")
    return {u: list(g) for u, g in last.groupby("user_id", sort=False)["item_id"]}


def attributes_of(dataset: Dataset) -> dict[str, dict[str, Any]]:
    return dict(zip(dataset.users["user_id"], dataset.users["demographics"], strict=True))


def train_ranker(
    dataset: Dataset, two_tower: TrainConfig, config: RankerConfig | None = None, progress: bool = False,
) -> TrainedRanker:
    """Fit the candidate models on each user's earlier interactions, the trees on the later ones."""
    cfg = config or RankerConfig()
    t0 = time.perf_counter()
    early, labels = label_split(dataset, cfg.label_fraction)
    tt = train(early, replace(two_tower, holdout=False), progress=progress)
    signals = build_signals(early, cfg.signals)
    t_models = time.perf_counter() - t0

    rng = np.random.default_rng(cfg.seed)
    users = sorted(labels)
    if len(users) > cfg.max_users:
        users = sorted(rng.choice(users, size=cfg.max_users, replace=False).tolist())
    n_valid = int(len(users) * cfg.valid_share) if len(users) >= 20 else 0
    shuffled = rng.permutation(users).tolist()
    valid_users, fit_users = sorted(shuffled[:n_valid]), sorted(shuffled[n_valid:])

    hist = histories(early.interactions)
    attrs = attributes_of(dataset)
    fit = make_examples(fit_users, hist, labels, attrs, tt, signals, cfg, rng)
    # held-out users keep every candidate: their NDCG is measured on the lists serving would rank
    valid = make_examples(valid_users, hist, labels, attrs, tt, signals, replace(cfg, negative_share=1.0), rng) \
        if valid_users else None
    t_examples = time.perf_counter() - t0 - t_models

    booster = fit_trees(fit, valid, cfg)
    metrics: dict[str, Any] = {
        "label_fraction": cfg.label_fraction,
        "examples": int(len(fit.labels)), "positives": int(fit.labels.sum()), "users": len(fit_users),
        "trees": booster.best_iteration or booster.current_iteration(),
        "candidate_recall": round(float(fit.labels.sum() / max(1, fit.n_relevant.sum())), 4),
    }
    if valid is not None and len(valid.labels):
        order_tt = -valid.features[:, FEATURES.index("two_tower")]
        metrics["valid_users"] = len(valid_users)
        metrics["valid_ndcg@10"] = {
            "ranker": round(group_ndcg(-booster.predict(valid.features, num_threads=1), valid), 4),
            "two_tower": round(group_ndcg(order_tt, valid), 4),
        }
    full_signals = build_signals(dataset, cfg.signals)
    metrics["seconds"] = {"candidate_models": round(t_models, 1), "examples": round(t_examples, 1),
                          "total": round(time.perf_counter() - t0, 1)}
    log.info("ranker trained: %s", metrics)
    return TrainedRanker(booster=booster, signals=full_signals, config=cfg, metrics=metrics)


def label_split(dataset: Dataset, fraction: float) -> tuple[Dataset, dict[str, set[str]]]:
    """(the data the candidate models fit on, each user's label items): every user's last `fraction`
    of interactions by time are labels (the evaluation protocol's per-user split); the rest is the data."""
    split = per_user_split(dataset.interactions, fraction)
    early = Dataset(users=dataset.users, items=dataset.items, interactions=split.train)
    return early, {u: set(g) for u, g in split.test.groupby("user_id")["item_id"]}


def make_examples(
    users: list[str], hist: dict[str, list[str]], labels: dict[str, set[str]], attrs: dict[str, dict[str, Any]],
    tt: TrainedModel, signals: RankerSignals, cfg: RankerConfig, rng: np.random.Generator | None = None,
) -> Examples:
    """Candidates, features and labels of each user; serving's feature code on the early models."""
    rng = rng or np.random.default_rng(cfg.seed)
    vectors = tt.item_vectors()
    if tt.vocab.item_ids != signals.item_ids:
        raise ValueError("two-tower and ranker signals disagree on the item order")
    has_vector = np.ones(len(vectors), dtype=bool)
    popular = np.argsort(-signals.popularity, kind="stable")
    feats, labs, groups, n_rel = [], [], [], []
    for start in range(0, len(users), 1024):
        chunk = users[start : start + 1024]
        recent = [hist.get(u, []) for u in chunk]
        uvec = tt.user_vectors(recent, [attrs.get(u, {}) for u in chunk])
        scores = uvec @ vectors.T  # [U, n]
        for r, u in enumerate(chunk):
            seen = signals.rows(hist.get(u, []))
            seen = seen[seen >= 0]
            cand = _candidates(scores[r], seen, signals, popular, cfg)
            history = seen[: cfg.max_history]
            x = signals.features(history, cand, scores[r, cand], vectors, has_vector)
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


def _candidates(
    scores: np.ndarray, seen: np.ndarray, signals: RankerSignals, popular: np.ndarray, cfg: RankerConfig,
) -> np.ndarray:
    """The two-tower's top candidates (seen items excluded), then extras from EASE and popularity."""
    s = scores.astype(np.float64, copy=True)
    s[seen] = -np.inf
    n = min(cfg.candidates, int(np.isfinite(s).sum()))
    top = np.argpartition(-s, n - 1)[:n] if n else np.zeros(0, dtype=np.int64)
    taken = np.zeros(len(s), dtype=bool)
    taken[top] = True
    taken[seen] = True
    extras = []
    if cfg.extra_candidates and len(seen):
        history = seen[: cfg.max_history]
        if signals.ease is not None:
            item_item = signals.ease[history].sum(axis=0)
        else:
            item_item = np.asarray(signals.covisitation[history].sum(axis=0)).ravel()
        extras.append(_top_free(item_item, taken, cfg.extra_candidates))
    if cfg.extra_candidates:
        extras.append(_top_free_ordered(popular, taken, cfg.extra_candidates))
    return np.concatenate([top, *extras]).astype(np.int64)


def _top_free(score: np.ndarray, taken: np.ndarray, k: int) -> np.ndarray:
    s = np.where(taken, -np.inf, score)
    k = min(k, int(np.isfinite(s).sum()))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    out = np.argpartition(-s, k - 1)[:k]
    taken[out] = True
    return out


def _top_free_ordered(order: np.ndarray, taken: np.ndarray, k: int) -> np.ndarray:
    out = order[~taken[order]][:k]
    taken[out] = True
    return out


def fit_trees(fit: Examples, valid: Examples | None, cfg: RankerConfig) -> lgb.Booster:
    params = {
        "objective": "lambdarank", "metric": "ndcg", "eval_at": [10], "learning_rate": cfg.learning_rate,
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
