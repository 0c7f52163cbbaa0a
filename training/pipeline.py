"""Train, then publish: the one call the CLI makes."""

from __future__ import annotations

from pathlib import Path

from training.dataset import Dataset
from training.export import export
from training.ranker import RankerConfig, train_ranker
from training.sources import source_artifacts
from training.train import TrainConfig, TrainedModel, train


def train_and_export(
    dataset: Dataset, artifacts_dir: Path, config: TrainConfig | None = None, ranker: bool = True,
    ranker_config: RankerConfig | None = None, progress: bool = True,
) -> Path:
    """Train the two-tower model (and the learned ranker on top of it) on `dataset` and publish
    them as the CURRENT version; returns its folder."""
    config = config or TrainConfig()
    trained = train(dataset, config, progress=progress)
    return publish(trained, dataset, artifacts_dir, config, ranker, ranker_config, progress)


def publish(
    trained: TrainedModel, dataset: Dataset, artifacts_dir: Path, config: TrainConfig, ranker: bool = True,
    ranker_config: RankerConfig | None = None, progress: bool = False,
) -> Path:
    """Publish a trained two-tower with what serving needs beside it: the learned ranker (trained
    here with the two-tower's settings `config`) and the other sources' artifacts. The offline
    evaluation publishes the served pipeline through this too."""
    sources = source_artifacts(dataset)
    learned = train_ranker(dataset, config, ranker_config, progress=progress, sources=sources) if ranker else None
    return export(trained, dataset, artifacts_dir, ranker=learned, extras=sources)

