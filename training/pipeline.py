"""Train, then publish: the one call the CLI makes."""

from __future__ import annotations

from pathlib import Path

from training.artifacts import export
from training.dataset import Dataset
from training.train import TrainConfig, train


def train_and_export(dataset: Dataset, artifacts_dir: Path, config: TrainConfig | None = None) -> Path:
    """Train the two-tower model on `dataset` and publish it as the CURRENT version; returns its folder."""
    trained = train(dataset, config or TrainConfig())
    return export(trained, dataset, artifacts_dir)
