"""The learned ranker as served: LightGBM trees over core/ranker_features.py.

One object per model version, loaded from the version folder training exported
(ranker.lgb, ranker.json, ranker_signals.*, with the version's user tower and item
vectors). The ranking service and the offline evaluation both call `Ranker.rank`, so
what is evaluated is what is served. Everything a call needs is in memory: the user
tower runs once, the features are numpy over in-process arrays, the trees run compiled
(ranking/trees.py) on one thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from core import artifacts
from core.ranker_features import COL, RankerSignals
from core.user_encoder import UserEncoder
from ranking.trees import Trees

log = logging.getLogger(__name__)

# Score parts sent back with each candidate: the model's score and the inputs that move it most.
PART_FEATURES = ("two_tower", "ease", "covisitation", "content", "popularity")


@dataclass
class Ranked:
    scores: np.ndarray  # float64 [n]: the ranker's score of each candidate, in input order
    part_names: list[str]
    parts: np.ndarray  # float64 [n, len(part_names)]


class Ranker:
    def __init__(self, version: str, booster: lgb.Booster, signals: RankerSignals, user_encoder: UserEncoder,
                 item_ids: list[str], item_embeddings: np.ndarray, max_history: int) -> None:
        self.version = version
        self.model_version = f"ranker-{version}"
        self.trees = Trees(booster)  # compiled (ranking/trees.py)
        self.signals = signals
        self.user_encoder = user_encoder
        self.max_history = max_history
        # item-tower vectors by signal row; items the version left out of the index (retired) have none
        self.vectors = np.zeros((signals.n_items, item_embeddings.shape[1]), dtype=np.float32)
        self.has_vector = np.zeros(signals.n_items, dtype=bool)
        rows = signals.rows(item_ids)
        ok = rows >= 0
        self.vectors[rows[ok]] = item_embeddings[ok]
        self.has_vector[rows[ok]] = True
        self.part_names = ["ranker", *PART_FEATURES]
        self._part_cols = [COL[n] for n in PART_FEATURES]

    def rank(
        self, user_id: str, recent_item_ids: Sequence[str], item_ids: Sequence[str],
        retrieval_scores: Sequence[float] | None = None, sources: Sequence[str] | None = None,
        attributes: dict[str, Any] | None = None, recent_timestamps: Sequence[float] | None = None,
    ) -> Ranked:
        """Score candidates for a user from their recent items (most recent first) and attributes.

        user_id is not a feature (any user is their recent items); it is here for logging and
        future per-user features. recent_timestamps (unix seconds, parallel to recent_item_ids)
        feed the session features when given. An item the ranker does not know (added after
        training) keeps its two-tower retrieval score when it came from the two-tower source; its
        other features are missing, which the trees handle.
        """
        del user_id
        # distinct, as training saw histories (a request's list may repeat what Feast's adds)
        positions = _distinct(recent_item_ids, max(self.max_history, self.user_encoder.history_len))
        recent = [recent_item_ids[p] for p in positions]
        positions = positions[: self.max_history]
        rows = self.signals.rows(recent[: self.max_history])
        history = rows[rows >= 0]
        gaps = None
        if recent_timestamps is not None and len(recent_timestamps) == len(recent_item_ids) and len(history):
            times = np.asarray(recent_timestamps, dtype=np.float64)[positions][rows >= 0]
            gaps = times.max() - times
        cand = self.signals.rows(list(item_ids))
        known = cand >= 0
        c = np.where(known, cand, 0)
        query = self.user_encoder.encode(recent, dict(attributes or {}))
        tt = np.full(len(cand), np.nan, dtype=np.float32)
        if query is not None:
            with_vec = known & self.has_vector[c]
            tt[with_vec] = self.vectors[c[with_vec]] @ query
            if retrieval_scores is not None and sources is not None and not with_vec.all():
                rs = np.asarray(retrieval_scores, dtype=np.float32)
                from_tower = ~with_vec & (np.asarray(sources, dtype=object) == "two_tower")
                tt[from_tower] = rs[from_tower]
        x = self.signals.features(history, cand, tt, self.vectors, self.has_vector, gaps)
        scores = self.trees.predict(x)
        parts = np.empty((len(cand), len(self.part_names)), dtype=np.float64)
        parts[:, 0] = scores
        parts[:, 1:] = np.nan_to_num(x[:, self._part_cols], nan=0.0)
        return Ranked(scores=np.asarray(scores, dtype=np.float64), part_names=self.part_names, parts=parts)


def _distinct(ids: Sequence[str], limit: int) -> list[int]:
    """Positions of the first `limit` distinct ids, order kept."""
    out: list[int] = []
    seen: set[str] = set()
    for p, i in enumerate(ids):
        if i not in seen:
            seen.add(i)
            out.append(p)
            if len(out) == limit:
                break
    return out


def load(version_dir: Path) -> Ranker | None:
    """The version's ranker; None when the version was exported without one (the weighted scorer serves)."""
    version_dir = Path(version_dir)
    meta = artifacts.read_ranker_meta(version_dir)  # checks the version's format and the ranker's features
    if meta is None:
        return None
    vectors = artifacts.load_item_vectors(version_dir)
    booster = lgb.Booster(model_file=str(version_dir / artifacts.RANKER_MODEL_FILE))
    return Ranker(
        version=vectors.version, booster=booster, signals=RankerSignals.load(version_dir),
        user_encoder=vectors.user_encoder, item_ids=vectors.item_ids, item_embeddings=vectors.item_embeddings,
        max_history=int(meta["max_history"]),
    )


@dataclass(frozen=True)
class Loaded:
    """A loaded model version and its ranker (None: the version has none, the weighted scorer serves)."""

    version: str
    ranker: Ranker | None


class RankerSlot:
    """The learned rankers the service holds: the current version's and the previous one's.

    Retrieval and ranking each poll CURRENT, so for a moment after a publish a request may
    name the version retrieval answered with while ranking has already moved on (or not yet):
    `for_version` gives that version's ranker while the slot still holds it, else the current one.

    With an artifacts folder it follows `CURRENT` the way retrieval does: a new version's
    ranker is loaded off the request path and swapped in with the one it replaces as one
    reference assignment, so a request sees one version; a version that fails to load is
    logged and the old ones kept.
    """

    def __init__(self, ranker: Ranker | None = None, artifacts_dir: Path | None = None) -> None:
        self.artifacts_dir = Path(artifacts_dir) if artifacts_dir is not None else None
        first = Loaded(ranker.version, ranker) if ranker is not None else None
        self._held: tuple[Loaded | None, Loaded | None] = (first, None)  # (current, previous), swapped whole
        self.version = ranker.version if ranker is not None else ""  # the version last tried, loaded or not

    @property
    def ranker(self) -> Ranker | None:
        """The current version's ranker."""
        current = self._held[0]
        return current.ranker if current is not None else None

    @property
    def versions(self) -> list[str]:
        """The versions held, current first."""
        return [h.version for h in self._held if h is not None]

    def for_version(self, version: str) -> Ranker | None:
        """The ranker of `version` when the slot holds it (current or previous), else the current one."""
        current, previous = self._held
        if version and previous is not None and previous.version == version and (
                current is None or current.version != version):
            return previous.ranker
        return current.ranker if current is not None else None

    def put(self, version: str, ranker: Ranker | None) -> None:
        """Make `version` current; the version it replaces becomes the previous one."""
        current = self._held[0]
        self._held = (Loaded(version, ranker), current)
        self.version = version

    def refresh(self) -> bool:
        """Load the CURRENT version's ranker if the version changed; True when swapped."""
        if self.artifacts_dir is None:
            return False
        version = artifacts.current_version(self.artifacts_dir)
        if not version or version == self.version:
            return False
        try:
            ranker = load(self.artifacts_dir / version)
        except Exception:  # keep the rankers we have; try again only when another version is published
            self.version = version
            log.exception("could not load the ranker of version %s; still ranking with %s", version,
                          self.ranker.model_version if self.ranker else "the weighted scorer")
            return False
        self.put(version, ranker)
        if ranker is None:
            log.info("version %s has no learned ranker: the weighted scorer serves", version)
        else:
            log.info("ranking with the learned ranker of version %s (%d trees, %s)", version, ranker.trees.num_trees(),
                     ranker.trees.engine)
        return True

    async def watch(self, interval_s: float = 2.0) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await asyncio.to_thread(self.refresh)
            except Exception:  # e.g. CURRENT unreadable for a moment; the next poll tries again
                log.exception("ranker refresh failed")
