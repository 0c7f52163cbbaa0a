"""Run a protocol over model families: tune on validation, score test, compare with the bootstrap.

For each family: fit every candidate on the inner training split (seed = the first
seed), score the validation users, keep the candidate with the best NDCG@10. Fit that
one on the whole training split (once per seed for stochastic families) and score
the test users. Test data is touched only by that last step.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from threadpoolctl import threadpool_limits

from evaluation import metrics as M
from evaluation.bootstrap import PairedDiff, compare
from evaluation.protocol import Family, Recommender, params_of
from training.dataset import Dataset
from training.splits import COLD_USERS, ProtocolSplits, Split, make_splits

log = logging.getLogger(__name__)

SELECT_BY = "ndcg@10"
COMPARE_METRICS = ("ndcg@10", "recall@20")


@dataclass(frozen=True)
class HarnessConfig:
    protocol: str = "per-user"
    seeds: tuple[int, ...] = (0, 1, 2)  # stochastic families run once per seed; the first seed also tunes
    ks: tuple[int, ...] = M.KS
    reference: str = "ease-recency"  # every other model is compared with it by the paired bootstrap
    batch_users: int = 512
    tie_seed: int = 0
    bootstrap_resamples: int = 2000


@dataclass
class Target:
    """The users evaluated on one split and what counts as a hit for each."""

    user_ids: list[str]
    relevant: sp.csr_matrix  # bool [U, n_items]: held-out items that are not training items
    exclude: sp.csr_matrix  # bool [U, n_items]: training items, never ranked
    skipped_cold: int  # users with held-out items but no training interaction (cannot be personalized)
    skipped_nothing_new: int  # users whose held-out items are all training items


@dataclass
class Trial:
    params: dict[str, object]
    validation: float  # SELECT_BY on validation
    fit_s: float


@dataclass
class ModelResult:
    name: str
    description: str
    stochastic: bool
    params: dict[str, object]
    trials: list[Trial]
    mean: dict[str, float]  # metric -> mean over seeds (coverage@10 included)
    std: dict[str, float]  # metric -> std over seeds (0 for deterministic models)
    seeds: list[int]
    fit_s: float  # mean seconds to fit on the whole training split
    per_user: dict[str, np.ndarray] = field(repr=False)  # metric -> [U] mean over seeds, in Target order


@dataclass
class Evaluation:
    config: HarnessConfig
    splits: dict[str, object]
    users: dict[str, int]
    results: list[ModelResult]
    comparisons: list[PairedDiff]
    seconds: float
    load_average: tuple[float, float]  # 1-minute load average at start and end: timings depend on it


def build_target(split: Split, catalog: list[str], cold: bool = False) -> Target:
    """cold: evaluate users with no training interaction too (the cold-users protocol); otherwise they are
    skipped, since nothing personal is known of them."""
    col = pd.Index(catalog)

    def pairs(frame: pd.DataFrame) -> pd.DataFrame:
        c = col.get_indexer(frame["item_id"])
        return pd.DataFrame({"user_id": frame["user_id"].to_numpy()[c >= 0], "col": c[c >= 0]}).drop_duplicates()

    train, held = pairs(split.train), pairs(split.test)
    new = held.merge(train, on=["user_id", "col"], how="left", indicator=True)
    new = new[new["_merge"] == "left_only"][["user_id", "col"]]
    known = set(train["user_id"])
    held_users = set(held["user_id"])
    if not cold:
        new = new[new["user_id"].isin(known)]
    users = sorted(set(new["user_id"]))
    row = {u: i for i, u in enumerate(users)}

    def matrix(frame: pd.DataFrame) -> sp.csr_matrix:
        frame = frame[frame["user_id"].isin(row)]
        r = frame["user_id"].map(row).to_numpy()
        return sp.csr_matrix((np.ones(len(frame), dtype=bool), (r, frame["col"].to_numpy())),
                             shape=(len(users), len(catalog)))

    return Target(
        user_ids=users, relevant=matrix(new), exclude=matrix(train),
        skipped_cold=0 if cold else len(held_users - known),
        skipped_nothing_new=len((held_users if cold else held_users & known) - set(users)),
    )


def evaluate_model(
    model: Recommender, target: Target, catalog: list[str], config: HarnessConfig,
) -> tuple[dict[str, np.ndarray], float]:
    """Per-user metrics and coverage@10 of a fitted model on `target`."""
    ties = M.tie_order(len(catalog), config.tie_seed)
    kmax = max(*config.ks, M.COVERAGE_K)
    tops = []
    for start in range(0, len(target.user_ids), config.batch_users):
        users = target.user_ids[start : start + config.batch_users]
        scores = np.asarray(model.score(users))
        if scores.shape != (len(users), len(catalog)):
            raise ValueError(f"{model.name}.score returned shape {scores.shape}, "
                             f"expected ({len(users)}, {len(catalog)})")
        tops.append(M.top_k(scores, target.exclude[start : start + len(users)], kmax, ties))
    top = np.concatenate(tops) if tops else np.zeros((0, kmax), dtype=np.int64)
    return M.user_metrics(top, target.relevant, config.ks), M.coverage(top, len(catalog))


def run(
    dataset: Dataset, families: Sequence[Family], config: HarnessConfig | None = None,
    splits: ProtocolSplits | None = None,
) -> Evaluation:
    config = config or HarnessConfig()
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    splits = splits or make_splits(dataset, config.protocol)
    catalog = list(dataset.items["item_id"])
    tune_train, final_train = splits.train_dataset("tune"), splits.train_dataset("final")
    cold = splits.protocol == COLD_USERS
    validation, test = build_target(splits.tune, catalog, cold), build_target(splits.final, catalog, cold)
    for stage, target in (("validation", validation), ("test", test)):
        if not target.user_ids:
            raise ValueError(f"no user to evaluate on {stage}: none has both training and new held-out items "
                             f"under the {splits.protocol} protocol; the data set is too small or too short")
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    results = []
    try:
        with threadpool_limits(1):  # BLAS / OpenMP: one thread, the machine is shared
            for family in families:
                results.append(_run_family(family, tune_train, final_train, validation, test, catalog, config))
    finally:
        torch.set_num_threads(torch_threads)
    return Evaluation(
        config=config,
        splits=splits.describe(),
        users={"validation": len(validation.user_ids), "test": len(test.user_ids),
               "test_skipped_cold": test.skipped_cold, "test_skipped_nothing_new": test.skipped_nothing_new},
        results=results,
        comparisons=compare_all(results, config),
        seconds=round(time.perf_counter() - t0, 1),
        load_average=(round(load0, 2), round(os.getloadavg()[0], 2)),
    )


def _run_family(
    family: Family, tune_train: Dataset, final_train: Dataset, validation: Target, test: Target,
    catalog: list[str], config: HarnessConfig,
) -> ModelResult:
    candidates = family.candidates()
    if not candidates:
        raise ValueError(f"family {family.name!r} has no candidates")
    trials, best, best_value = [], candidates[0], -np.inf
    for model in candidates:
        t = time.perf_counter()
        model.fit(tune_train, catalog, config.seeds[0])
        fit_s = time.perf_counter() - t + _reused(model)
        value = float(evaluate_model(model, validation, catalog, config)[0][SELECT_BY].mean())
        trials.append(Trial(params_of(model), value, round(fit_s, 2)))
        log.info("%s %s: validation %s %.4f (fit %.1fs)", family.name, params_of(model), SELECT_BY, value, fit_s)
        if value > best_value:
            best, best_value = model, value
    seeds = list(config.seeds) if family.stochastic else [config.seeds[0]]
    runs, fit_times = [], []
    for seed in seeds:
        t = time.perf_counter()
        best.fit(final_train, catalog, seed)
        fit_times.append(time.perf_counter() - t + _reused(best))
        runs.append(evaluate_model(best, test, catalog, config))
        log.info("%s seed %d: test %s %.4f", family.name, seed, SELECT_BY, runs[-1][0][SELECT_BY].mean())
    names = list(runs[0][0])
    per_seed = {m: np.array([r[0][m].mean() for r in runs]) for m in names}
    per_seed["coverage@10"] = np.array([r[1] for r in runs])
    return ModelResult(
        name=family.name, description=family.description, stochastic=family.stochastic,
        params=params_of(best), trials=trials,
        mean={m: float(v.mean()) for m, v in per_seed.items()},
        std={m: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for m, v in per_seed.items()},
        seeds=seeds, fit_s=round(float(np.mean(fit_times)), 2),
        per_user={m: np.mean([r[0][m] for r in runs], axis=0) for m in names},
    )


def _reused(model: Recommender) -> float:
    """Seconds of fitting work the last fit took from a cache (see protocol.py)."""
    return float(getattr(model, "reused_seconds", 0.0) or 0.0)


def compare_all(results: list[ModelResult], config: HarnessConfig) -> list[PairedDiff]:
    """Each model against the reference model (when it ran), on COMPARE_METRICS."""
    ref = next((r for r in results if r.name == config.reference), None)
    if ref is None:
        return []
    return [
        compare(r.name, r.per_user[m], ref.name, ref.per_user[m], m, n_resamples=config.bootstrap_resamples)
        for r in results if r is not ref for m in COMPARE_METRICS
    ]
