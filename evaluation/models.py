"""The project's own models in the harness: the two-tower alone, and the pipeline as served.

Both train with training/train.py on the training split, publish artifacts with
training/export.py into a temporary folder, and score through what serving loads
from that folder, so the evaluated model is the exported one.

The served pipeline is published as `recsys train` publishes it (the two-tower, the
learned ranker and the other sources' artifacts: training/pipeline.py's parts) and runs
the serving code in process: what the Retrieval and Ranking servicers call
(retrieval.retriever.Retriever.retrieve, ranking.rank.Ranking.rank, the ranker loaded from
the version folder as the service loads it) with the orchestrator's request (its history
window and times, candidate count and seen-exclusion), without sockets. Feature values
come from the training split (evaluation/features.py).
"""

from __future__ import annotations

import tempfile
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from core import artifacts
from evaluation import features
from evaluation.protocol import Family
from orchestrator.recommend import HISTORY_LIMIT, RECENT_FOR_MODEL
from protos import internal_pb2 as ipb
from ranking.item_features import ItemFeatureCache
from ranking.rank import Ranking
from ranking.ranker import RankerSlot
from ranking.scorer import WeightedScorer
from retrieval.retriever import Retriever
from training.dataset import Dataset
from training.export import export
from training.pipeline import publish
from training.ranker import RankerConfig, timed_histories
from training.train import TrainConfig, TrainedModel, train

# orchestrator/recommend.py asks retrieval for min(1000, max(4 * k, 200)) candidates: 200 for k <= 50
SERVED_CANDIDATES = 200


def train_config(seed: int, **overrides: Any) -> TrainConfig:
    """TrainConfig for the harness: every training interaction is trained on (the harness holds out)."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"unknown TrainConfig fields: {', '.join(sorted(unknown))}")
    return replace(TrainConfig(), **overrides, holdout=False, seed=seed)


_TRAINED: list[tuple[Dataset, tuple[str, ...], str, int, TrainedModel]] = []
_TRAINED_SIZE = 4  # the tuning fit and 3 seeds: the served pipeline reuses the two-tower family's training


def train_cached(data: Dataset, catalog: list[str], overrides: dict[str, Any], seed: int) -> tuple[TrainedModel, bool]:
    """The two-tower trained on `data` with these settings; (model, whether it came from the cache)."""
    key = (tuple(catalog), repr(sorted(overrides.items())), seed)
    for d, *k, model in _TRAINED:
        if d is data and tuple(k) == key:
            return model, True
    model = train(data, train_config(seed, **overrides), progress=False)
    _TRAINED.append((data, *key, model))  # holding `data` keeps the identity check sound
    del _TRAINED[:-_TRAINED_SIZE]
    return model, False


class _Published:
    """Train, export to a temporary artifacts folder, load it back as serving does."""

    def __init__(self, overrides: dict[str, Any]) -> None:
        self.overrides = overrides
        self.params: dict[str, object] = dict(overrides)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.reused_seconds = 0.0

    def _publish(self, data: Dataset, catalog: list[str], seed: int, served: bool = False) -> Path:
        """Export the two-tower trained on `data`; served=True adds what `recsys train` adds (the learned
        ranker, trained with the same two-tower settings, and the other sources' artifacts)."""
        trained, cached = train_cached(data, catalog, self.overrides, seed)
        # the harness adds this to the fit time it measures: training costs the same when another family paid it
        self.reused_seconds = float(trained.metrics.get("train_seconds", 0.0)) if cached else 0.0
        if self._tmp is not None:
            self._tmp.cleanup()
        self._tmp = tempfile.TemporaryDirectory(prefix="recsys-eval-")
        self.catalog_col = {item_id: c for c, item_id in enumerate(catalog)}
        self.n_items = len(catalog)
        timed = timed_histories(data.interactions)  # storage.interactions.user_and_history's order
        self.history = {u: items[:HISTORY_LIMIT] for u, (items, _) in timed.items()}
        self.times = {u: times[:RECENT_FOR_MODEL].tolist() for u, (_, times) in timed.items()}
        self.attributes = features.user_attributes(data)
        if served:
            return publish(trained, data, Path(self._tmp.name), train_config(seed, **self.overrides),
                           ranker_config=RankerConfig(seed=seed))
        return export(trained, data, Path(self._tmp.name))


class TwoTowerModel(_Published):
    """The two-tower alone: user-tower vector . every item vector (exact, full catalogue)."""

    name = "two-tower"

    def fit(self, train: Dataset, catalog: list[str], seed: int) -> None:
        self.arts = artifacts.load_version(self._publish(train, catalog, seed))
        cols = np.array([self.catalog_col.get(i, -1) for i in self.arts.item_ids])
        self.rows, self.cols = np.flatnonzero(cols >= 0), cols[cols >= 0]

    def score(self, user_ids: list[str]) -> np.ndarray:
        out = np.full((len(user_ids), self.n_items), -np.inf, dtype=np.float32)
        for r, user_id in enumerate(user_ids):
            query = self.arts.user_encoder.encode(self.history.get(user_id, [])[:RECENT_FOR_MODEL],
                                                  self.attributes.get(user_id, {}))
            if query is None:  # nothing known about the user: no opinion, every item alike
                out[r, self.cols] = 0.0
            else:
                out[r, self.cols] = self.arts.item_embeddings[self.rows] @ query
        return out


class ServedPipeline(_Published):
    """Retrieval then ranking, as the orchestrator calls them; only candidates get a (rank-order) score."""

    name = "served-pipeline"

    def __init__(self, overrides: dict[str, Any], n_candidates: int = SERVED_CANDIDATES) -> None:
        super().__init__(overrides)
        self.n_candidates = n_candidates
        self.params = {**self.params, "candidates": n_candidates}

    def fit(self, train: Dataset, catalog: list[str], seed: int) -> None:
        version_dir = self._publish(train, catalog, seed, served=True)
        retriever = Retriever(version_dir.parent)
        retriever.load()
        items = ItemFeatureCache(online=None, database_url="")  # type: ignore[arg-type]  # filled below, not refreshed
        items.features = features.item_features(train)
        items.max_popularity = max((int(f["popularity"]) for f in items.features.values()), default=1)
        learned = RankerSlot(artifacts_dir=version_dir.parent)  # the ranking service's loader
        learned.refresh()
        self.params["ranker"] = learned.ranker.model_version.split("-")[0] if learned.ranker else "weighted"
        online = features.OfflineUserFeatures(features.user_features(train))
        self.retriever = retriever
        self.ranking = Ranking(online, items, WeightedScorer(), learned)

    def score(self, user_ids: list[str]) -> np.ndarray:
        out = np.full((len(user_ids), self.n_items), -np.inf, dtype=np.float32)
        for r, user_id in enumerate(user_ids):
            history = self.history.get(user_id, [])
            user = ipb.UserContext(user_id=user_id, recent_item_ids=history[:RECENT_FOR_MODEL],
                                  recent_timestamps=self.times.get(user_id, []),
                                  attributes=self.attributes.get(user_id, {}))
            # what RetrievalServicer.Retrieve asks: the default mix (no sources named), seen items excluded
            found = self.retriever.retrieve(list(user.recent_item_ids), dict(user.attributes), [], set(history),
                                            self.n_candidates)
            if not found:
                continue
            candidates = ipb.CandidateList(item_ids=[c.item_id for c in found], scores=[c.score for c in found],
                                          sources=[c.source for c in found],
                                          anchor_item_ids=[c.anchor_item_id for c in found])
            ranked = self.ranking.rank(ipb.RankRequest(request_id=f"eval-{r}", user=user, candidates=candidates,
                                                      model_version=self.retriever.version))
            item_ids = candidates.item_ids
            for position, index in enumerate(ranked.order):
                col = self.catalog_col.get(item_ids[index])
                if col is not None:
                    out[r, col] = float(len(ranked.order) - position)  # the served order, as a score
        return out


def _two_tower_candidates() -> list[TwoTowerModel]:
    return [TwoTowerModel({})]


def _served_candidates() -> list[ServedPipeline]:
    return [ServedPipeline({})]


FAMILIES = [
    Family("two-tower", _two_tower_candidates, stochastic=True,
           description="the two-tower model alone (training/train.py), exported and scored over the full catalogue"),
    Family("served-pipeline", _served_candidates, stochastic=True,
           description=f"what `recsys train` publishes, served: retrieval's default source mix ({SERVED_CANDIDATES} "
                       "candidates) then the learned ranker, the serving code run in process"),
]
