"""Candidate generation over one served version: validate the request's sources, run them,
merge. The retrieval service (retrieval/retriever.py) runs it behind its gRPC servicer,
and training runs it to build the ranker's candidates (training/ranker_candidates.py),
so the ranker learns on what retrieval sends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from core import candidates
from core.candidates import Candidate
from core.errors import InvalidArgument, Unavailable
from core.segments import segment_tokens
from core.served import Served
from core.sources import ANONYMOUS_MIX, HISTORY_MIX, MAX_K, NAMES, SEGMENT_MIX, MixEntry, SourceError, check
from core.trending import Trending, TrendingConfig

SOURCES = NAMES  # the registry's (core/sources.py)


@dataclass(frozen=True)
class SourceSpec:
    name: str
    k: int
    window: str = ""  # trending: "1h", "24h", "7d"; "" = all time
    category: str = ""  # trending: only this category
    segment: str = ""  # trending, segment_popular: this segment ("age:25-34") instead of the user's


def default_mix(k: int, recent: list[str], attributes: dict[str, str]) -> list[SourceSpec]:
    """The sources when a request names none (core/sources.py): personalised with history, by segment without."""
    mix: tuple[MixEntry, ...] = HISTORY_MIX if recent else SEGMENT_MIX if segment_tokens(attributes) else ANONYMOUS_MIX
    return [SourceSpec(e.name, e.k(k), window=e.window) for e in mix]


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
        return _RUNNERS[spec.name](_Ask(self, s, spec, recent, attributes, anchors, query, exclude, item_id))


@dataclass(frozen=True)
class _Ask:
    """One source's part of a request, as its runner reads it."""

    retrieval: Retrieval
    served: Served
    spec: SourceSpec
    recent: list[str]
    attributes: dict[str, str]
    anchors: list[str]
    query: np.ndarray | None
    exclude: set[str]
    item_id: str


def _segment_popular(a: _Ask) -> list[Candidate]:
    segs = [a.spec.segment] if a.spec.segment else segment_tokens(a.attributes)
    return candidates.segment_popular(a.served, segs, a.spec.k, a.exclude)


# One runner per source of the registry (core/sources.py); a new source adds its line here.
_RUNNERS: dict[str, Callable[[_Ask], list[Candidate]]] = {
    "two_tower": lambda a: candidates.two_tower(a.served, a.query, a.recent, a.spec.k, a.exclude),
    "popular": lambda a: candidates.popular(a.served, a.spec.k, a.exclude),
    "similar_items": lambda a: candidates.similar_items(a.served, a.item_id, a.spec.k, a.exclude),
    "also_bought": lambda a: candidates.also_bought(a.served, a.anchors, a.spec.k, a.exclude,
                                                    fill_similar=bool(a.item_id)),
    "content": lambda a: candidates.content(a.served, a.anchors, a.spec.k, a.exclude),
    "trending": lambda a: candidates.trending(a.retrieval.trending, a.served, a.spec.window, a.spec.category,
                                              a.spec.segment, a.spec.k, a.exclude),
    "segment_popular": _segment_popular,
}
assert set(_RUNNERS) == set(NAMES), "every registered source needs a runner"


def _checked(i: int, spec: SourceSpec, item_id: str) -> SourceSpec:
    """The spec validated by the registry's rules, its segment in canonical form; errors name the field."""
    try:
        segment = check(spec.name, spec.k, spec.window, spec.category, spec.segment, has_item=bool(item_id))
    except SourceError as exc:
        field = "item_id" if exc.key == "item_id" else f"sources[{i}].{exc.key}"
        raise InvalidArgument(field, exc.rule) from None
    return SourceSpec(spec.name, spec.k, spec.window, spec.category, segment) if segment != spec.segment else spec
