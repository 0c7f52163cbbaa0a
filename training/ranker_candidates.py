"""The ranker's training candidates: what the retrieval service would send, from its own code.

The early models (the two-tower and the other sources' artifacts, fitted on the period
before the labels) are published to a temporary folder, loaded as the retrieval service
loads a version (core.artifacts, core.served), and asked through core.retrieve.Retrieval,
the candidate generation the retrieval service runs. Each user's candidates are then its
answer to the request the orchestrator makes (the default source mix, the user's recent
items, seen items excluded), so the trees learn on the lists they rank when served, not
on a look-alike.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import TracebackType

from core.artifacts import load_version
from core.retrieve import Retrieval
from core.served import Served
from training.dataset import Dataset
from training.export import export
from training.sources import SourceArtifacts, source_artifacts
from training.train import TrainedModel


class RetrievalCandidates:
    """retrieve(recent item ids, attributes, items to exclude) -> candidate item ids, best first."""

    def __init__(self, dataset: Dataset, model: TrainedModel, k: int, sources: SourceArtifacts | None = None) -> None:
        self.k = k
        self._tmp = tempfile.TemporaryDirectory(prefix="recsys-ranker-")
        version_dir = export(model, dataset, Path(self._tmp.name), extras=sources or source_artifacts(dataset))
        arts = load_version(version_dir)
        self.retrieval = Retrieval(Served(arts, version_dir))  # no database: the version as built, no live items

    def __call__(self, recent: list[str], attributes: dict[str, str], exclude: set[str]) -> list[str]:
        return [c.item_id for c in self.retrieval.retrieve(recent, attributes, [], exclude, self.k)]

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> RetrievalCandidates:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
