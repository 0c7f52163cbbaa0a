"""The retrieval service's sources other than the two-tower, built from a dataset."""

from __future__ import annotations

from typing import NamedTuple

from core import content, covisitation, segments
from training.dataset import Dataset


class SourceArtifacts(NamedTuple):
    """Each with save(folder): iterate it for artifacts.export's `extras`. The ranker's signals read the
    co-visitation and TF-IDF ones too (core.ranker_features.build_signals), so they are built once."""

    covisitation: covisitation.Covisitation
    content: content.ContentIndex
    segments: segments.SegmentPopularity


def source_artifacts(dataset: Dataset) -> SourceArtifacts:
    """"Also bought" (co-visitation), content similarity (TF-IDF) and segment popularity."""
    return SourceArtifacts(covisitation.build(dataset), content.build(dataset), segments.build(dataset))
