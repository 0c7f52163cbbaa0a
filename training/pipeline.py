"""Train, then publish: the one call the CLI makes."""

from __future__ import annotations

from pathlib import Path

from training import content, covisitation, segments
from training.artifacts import export
from training.dataset import Dataset
from training.ranker import RankerConfig, train_ranker
from training.train import TrainConfig, train


def train_and_export(
    dataset: Dataset, artifacts_dir: Path, config: TrainConfig | None = None, ranker: bool = True,
    ranker_config: RankerConfig | None = None, progress: bool = True,
) -> Path:
    """Train the two-tower model (and the learned ranker on top of it) on `dataset` and publish
    them as the CURRENT version; returns its folder."""
    config = config or TrainConfig()
    trained = train(dataset, config, progress=progress)
    learned = train_ranker(dataset, config, ranker_config, progress=progress) if ranker else None
    # The retrieval service's other sources: "also bought", content similarity, segment popularity.
    extras = [covisitation.build(dataset), content.build(dataset), segments.build(dataset)]
    return export(trained, dataset, artifacts_dir, ranker=learned, extras=extras)
