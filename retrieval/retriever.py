"""The retrieval logic behind the Retrieval service: validate, run the sources, merge.

The current model version is held in one attribute and replaced whole when a new
version is published, so a request always sees one consistent version.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from recsys.errors import InvalidArgument, Unavailable
from retrieval import candidates
from retrieval.candidates import Candidate
from training.artifacts import ModelArtifacts, load_current

log = logging.getLogger(__name__)

SOURCES = ("two_tower", "popular", "similar_items")
MAX_K = 1000


@dataclass(frozen=True)
class SourceSpec:
    name: str
    k: int


class Retriever:
    def __init__(self, artifacts_dir: Path) -> None:
        self.artifacts_dir = artifacts_dir
        self.arts: ModelArtifacts | None = None

    def load(self) -> bool:
        """Load the CURRENT version if it differs from the one served; True when swapped."""
        current = (self.artifacts_dir / "CURRENT")
        if not current.exists():
            return False
        version = current.read_text().strip()
        if self.arts is not None and self.arts.version == version:
            return False
        arts = load_current(self.artifacts_dir)
        self.arts = arts  # one reference swap: in-flight requests keep the version they started with
        log.info("retrieval serving model version %s (%d items)", arts.version, len(arts.item_ids))
        return True

    async def watch(self, interval_s: float = 2.0) -> None:
        """Poll for a new published version and swap it in."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await asyncio.to_thread(self.load)
            except Exception:  # a half-written or broken version must not stop serving the current one
                log.exception("could not load new artifacts; still serving %s", self.version)

    @property
    def version(self) -> str:
        return self.arts.version if self.arts else ""

    def retrieve(
        self, recent_item_ids: list[str], attributes: dict[str, str], sources: list[SourceSpec],
        exclude: set[str], k: int, item_id: str = "",
    ) -> list[Candidate]:
        arts = self.arts
        if arts is None:
            raise Unavailable("no model artifacts loaded yet: run `recsys train`")
        if not 1 <= k <= MAX_K:
            raise InvalidArgument("k", f"must be between 1 and {MAX_K}, got {k}")
        for i, s in enumerate(sources):
            if s.name not in SOURCES:
                raise InvalidArgument(f"sources[{i}].name", f"unknown source {s.name!r}; known: {', '.join(SOURCES)}")
            if not 1 <= s.k <= MAX_K:
                raise InvalidArgument(f"sources[{i}].k", f"must be between 1 and {MAX_K}, got {s.k}")
            if s.name == "similar_items" and not item_id:
                raise InvalidArgument("item_id", "must name the anchor item for the similar_items source")
        specs = sources or [SourceSpec("two_tower", k)]
        groups = [self._run(arts, s, recent_item_ids, attributes, exclude, item_id) for s in specs]
        merged = candidates.merge(groups, k)
        if len(merged) < k:  # too little history or a small catalogue: fill with popular items
            taken = exclude | {c.item_id for c in merged}
            merged += candidates.popular(arts, k - len(merged), taken)
        return merged

    @staticmethod
    def _run(
        arts: ModelArtifacts, spec: SourceSpec, recent: list[str], attributes: dict[str, str],
        exclude: set[str], item_id: str,
    ) -> list[Candidate]:
        if spec.name == "two_tower":
            return candidates.two_tower(arts, recent, attributes, spec.k, exclude)
        if spec.name == "similar_items":
            return candidates.similar_items(arts, item_id, spec.k, exclude)
        return candidates.popular(arts, spec.k, exclude)
