"""Candidate sources over one version of the model artifacts.

Each source takes the user context and returns scored candidates; the retriever
merges them. Sources are plain functions so tests and the offline evaluation call
them without a server.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from training.artifacts import ModelArtifacts


@dataclass(frozen=True)
class Candidate:
    item_id: str
    score: float
    source: str
    anchor_item_id: str = ""  # the user's item this one is closest to ("because you watched X")


def two_tower(
    arts: ModelArtifacts, recent_item_ids: list[str], attributes: dict[str, str], k: int,
    exclude: Collection[str],
) -> list[Candidate]:
    """Nearest items to the user-tower embedding of the user's recent items and demographics."""
    query = arts.user_encoder.encode(recent_item_ids, attributes)
    if query is None:
        return []
    n = min(len(arts.item_ids), k + len(exclude))
    scores, rows = arts.index.search(query.reshape(1, -1).astype(np.float32), n)
    found = _keep(arts, rows[0], scores[0], exclude, k)
    if not found:
        return []
    anchors = _anchors(arts, [r for r, _ in found], recent_item_ids)
    return [
        Candidate(arts.item_ids[r], s, "two_tower", anchor)
        for (r, s), anchor in zip(found, anchors, strict=True)
    ]


def _keep(
    arts: ModelArtifacts, rows: np.ndarray, scores: np.ndarray, exclude: Collection[str], k: int
) -> list[tuple[int, float]]:
    """The first k (row, score) pairs of a FAISS result that are real rows and not excluded."""
    ids = arts.item_ids
    out: list[tuple[int, float]] = []
    for r, s in zip(rows.tolist(), scores.tolist(), strict=True):
        if r >= 0 and ids[r] not in exclude:
            out.append((r, s))
            if len(out) == k:
                break
    return out


def _anchors(arts: ModelArtifacts, rows: list[int], recent_item_ids: list[str]) -> list[str]:
    """For each candidate row, the recent item most similar to it (by item embedding)."""
    recent = [(i, arts.item_index[i]) for i in recent_item_ids[:50] if i in arts.item_index]
    if not recent:
        return [""] * len(rows)
    sims = arts.item_embeddings[rows] @ arts.item_embeddings[[r for _, r in recent]].T
    return [recent[j][0] for j in sims.argmax(axis=1)]


def similar_items(arts: ModelArtifacts, item_id: str, k: int, exclude: Collection[str]) -> list[Candidate]:
    """Nearest items to one item's embedding (an item page's "similar items")."""
    row = arts.item_index.get(item_id)
    if row is None:
        return []
    skip = set(exclude) | {item_id}
    n = min(len(arts.item_ids), k + len(skip))
    scores, rows = arts.index.search(arts.item_embeddings[row : row + 1], n)
    found = _keep(arts, rows[0], scores[0], skip, k)
    return [Candidate(arts.item_ids[r], s, "similar_items", item_id) for r, s in found]


def popular(arts: ModelArtifacts, k: int, exclude: Collection[str]) -> list[Candidate]:
    """Most popular items of the training data: the cold-start answer."""
    out: list[Candidate] = []
    for item_id, score in arts.popular:
        if item_id in exclude:
            continue
        out.append(Candidate(item_id, float(score), "popular"))
        if len(out) == k:
            break
    return out


def merge(groups: list[list[Candidate]], k: int) -> list[Candidate]:
    """Interleave sources round-robin by rank, dropping duplicates (the first to reach an item keeps it)."""
    seen: set[str] = set()
    out: list[Candidate] = []
    for rank in range(max((len(g) for g in groups), default=0)):
        for g in groups:
            if rank < len(g) and g[rank].item_id not in seen:
                seen.add(g[rank].item_id)
                out.append(g[rank])
                if len(out) == k:
                    return out
    return out
