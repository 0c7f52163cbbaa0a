"""Candidate generation over one served version: validate the request's sources, run them,
merge. The retrieval service (retrieval/retriever.py) runs it behind its gRPC servicer,
and training runs it to build the ranker's candidates (training/ranker_candidates.py),
so the ranker learns on what retrieval sends.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core import candidates
from core.candidates import Candidate
from core.errors import InvalidArgument, Unavailable
from core.segments import parse_segment, segment_tokens
from core.served import Served
from core.trending import WINDOWS, Trending, TrendingConfig

SOURCES = ("two_tower", "popular", "similar_items", "also_bought", "content", "trending", "segment_popular")
ITEM_ANCHORED = ("similar_items", "also_bought", "content")  # need RetrieveRequest.item_id or recent items
MAX_K = 1000


@dataclass(frozen=True)
class SourceSpec:
    name: str
    k: int
    window: str = ""  # trending: "1h", "24h", "7d"; "" = all time
    category: str = ""  # trending: only this category
    segment: str = ""  # trending, segment_popular: this segment ("age:25-34") instead of the user's


def default_mix(k: int, recent: list[str], attributes: dict[str, str]) -> list[SourceSpec]:
    """The sources when a request names none: personalised with history, by segment without."""
    if recent:
        return [SourceSpec("two_tower", k), SourceSpec("also_bought", max(1, k // 4)),
                SourceSpec("content", max(1, k // 10)), SourceSpec("trending", max(1, k // 20), window="7d")]
    if segment_tokens(attributes):
        return [SourceSpec("segment_popular", k), SourceSpec("two_tower", max(1, k // 4)),
                SourceSpec("trending", max(1, k // 10), window="7d")]
    return [SourceSpec("popular", k)]


class Retrieval:
    """The sources over a served version (None until one is loaded) and trending's in-memory state.

    `served` is replaced whole when a new version is loaded, so a request sees one version."""

    def __init__(self, served: Served | None = None, trending: TrendingConfig | Trending | None = None) -> None:
        self.served = served
        self.trending = trending if isinstance(trending, Trending) else Trending(trending)

    @property
    def version(self) -> str:
        return self.served.version if self.served else ""

    @staticmethod
    def available(served: Served) -> list[str]:
        missing = {"also_bought": served.covisitation, "content": served.content, "segment_popular": served.segments}
        return [s for s in SOURCES if missing.get(s, True) is not None]

    def retrieve(
        self, recent_item_ids: list[str], attributes: dict[str, str], sources: list[SourceSpec],
        exclude: set[str], k: int, item_id: str = "",
    ) -> list[Candidate]:
        """Candidates of the named sources (or the default mix), merged, at most k."""
        return self._retrieve(recent_item_ids, attributes, sources, exclude, k, item_id)  # type: ignore[return-value]

    def retrieve_groups(
        self, recent_item_ids: list[str], attributes: dict[str, str], sources: list[SourceSpec],
        exclude: set[str], k: int, item_id: str = "",
    ) -> list[list[Candidate]]:
        """Each named source's own candidates, in the order named: no merge, no fill (k is only checked)."""
        if not sources:
            raise InvalidArgument("sources", "separate_sources needs at least one named source")
        return self._retrieve(recent_item_ids, attributes, sources, exclude, k, item_id, separate=True)  # type: ignore[return-value]

    def _retrieve(
        self, recent_item_ids: list[str], attributes: dict[str, str], sources: list[SourceSpec],
        exclude: set[str], k: int, item_id: str = "", separate: bool = False,
    ) -> list[Candidate] | list[list[Candidate]]:
        s = self.served
        if s is None:
            raise Unavailable("no model artifacts loaded yet: run `recsys train`")
        if not 1 <= k <= MAX_K:
            raise InvalidArgument("k", f"must be between 1 and {MAX_K}, got {k}")
        specs = [_checked(i, spec, item_id) for i, spec in enumerate(sources)]
        named = bool(specs)
        if not named:
            specs = default_mix(k, recent_item_ids, attributes)
        anchors = [item_id] if item_id else recent_item_ids
        query = None
        if any(spec.name == "two_tower" for spec in specs) or (not named and recent_item_ids):
            query = candidates.user_query(s, recent_item_ids, attributes)
        groups = [self._run(s, spec, recent_item_ids, attributes, anchors, query, exclude, item_id) for spec in specs]
        if separate:
            return groups
        merged = candidates.merge(groups, k)
        if len(merged) < k:  # too little history or a small catalogue: fill with popular items
            taken = exclude | {c.item_id for c in merged}
            merged += candidates.popular(s, k - len(merged), taken)
        if not named:
            # The default mix scores every candidate by its primary source, whichever source found it, so that
            # ranking compares like with like: the user vector with a history, the segments' popularity without.
            if recent_item_ids and query is not None:
                merged = candidates.rescore(s, query, merged)
            elif specs[0].name == "segment_popular":
                # a newcomer: ranking keeps this order, so it is the segments' (items outside them last, in turn)
                rescored = candidates.rescore_by_segments(s, segment_tokens(attributes), merged)
                merged = sorted(rescored, key=lambda c: -c.score)
        return merged

    def _run(
        self, s: Served, spec: SourceSpec, recent: list[str], attributes: dict[str, str], anchors: list[str],
        query: np.ndarray | None, exclude: set[str], item_id: str,
    ) -> list[Candidate]:
        name, k = spec.name, spec.k
        if name == "two_tower":
            return candidates.two_tower(s, query, recent, k, exclude)
        if name == "similar_items":
            return candidates.similar_items(s, item_id, k, exclude)
        if name == "also_bought":
            return candidates.also_bought(s, anchors, k, exclude, fill_similar=bool(item_id))
        if name == "content":
            return candidates.content(s, anchors, k, exclude)
        if name == "trending":
            return candidates.trending(self.trending, s, spec.window, spec.category, spec.segment, k, exclude)
        if name == "segment_popular":
            segs = [spec.segment] if spec.segment else segment_tokens(attributes)
            return candidates.segment_popular(s, segs, k, exclude)
        return candidates.popular(s, k, exclude)


def _checked(i: int, spec: SourceSpec, item_id: str) -> SourceSpec:
    """The spec validated, its segment in canonical form; errors name the field."""
    field = f"sources[{i}]"
    if spec.name not in SOURCES:
        raise InvalidArgument(f"{field}.name", f"unknown source {spec.name!r}; known: {', '.join(SOURCES)}")
    if not 1 <= spec.k <= MAX_K:
        raise InvalidArgument(f"{field}.k", f"must be between 1 and {MAX_K}, got {spec.k}")
    if spec.name == "similar_items" and not item_id:
        raise InvalidArgument("item_id", "must name the anchor item for the similar_items source")
    if spec.window and spec.name != "trending":
        raise InvalidArgument(f"{field}.window", "only the trending source takes a window")
    if spec.window and spec.window not in WINDOWS:
        raise InvalidArgument(f"{field}.window", f"must be one of {', '.join(WINDOWS)} or empty, got {spec.window!r}")
    if spec.category and spec.name != "trending":
        raise InvalidArgument(f"{field}.category", "only the trending source takes a category")
    if spec.segment:
        if spec.name not in ("trending", "segment_popular"):
            raise InvalidArgument(f"{field}.segment", "only the trending and segment_popular sources take a segment")
        try:
            return SourceSpec(spec.name, spec.k, spec.window, spec.category, parse_segment(spec.segment))
        except ValueError as exc:
            raise InvalidArgument(f"{field}.segment", str(exc)) from None
    return spec

