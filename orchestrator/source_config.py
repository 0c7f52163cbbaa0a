"""Candidate sources as a surface configures them: names, gates, validation and the default list.

A surface lists its sources (config `[[surface.<name>.sources]]`, or an experiment variant's
`sources`); each names a retrieval source (one Retrieve call, or a share of the request's one
shared call) or a source of the orchestrator's own (orchestrator/registry.py: new_arrivals),
run concurrently with the others under its own timeout. A gate decides per request whether a
source runs at all:

    always             every request (popular as filler)
    history            the user has interacted with at least one item (two_tower, also_bought, content)
    profile            history or demographics (trending)
    warm               at least `cold_start_interactions` items
    cold               fewer than `cold_start_interactions` items
    cold_demographics  cold, with demographics that place the user in a segment (segment_popular)
    cold_preferences   cold, with onboarding `preferred_categories` (one call per category)

Merging is the pipeline's (orchestrator/pipeline.merge, the retrieval service's interleave
rule) with weights: a source of weight w places w candidates for every one of a weight-1
source. Fill sources are called after the others, only when those came up short of the fill
target, and top them up. A source with a quota has that share of the k slots reserved for
its candidates (orchestrator/selectors/quota.py), so a new source gets visible room.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, fields
from typing import Any

from core.sources import HISTORY_MIX, KINDS, MAX_K, USER_SOURCES, SourceError, check

# Source k's are for a request of up to 50 items, which asks for 200 candidates; bigger ones scale them.
BASE_BUDGET = 200
# Source k's are for a request of up to 50 items, which asks for 200 candidates; bigger ones scale them.
BASE_BUDGET = 200


@dataclass(frozen=True)
class UserQuery:
    """What the gates look at: known before any source runs (query hydration)."""

    history: int  # distinct items the user interacted with
    has_demographics: bool  # the demographics place the user in at least one segment
    preferred_categories: tuple[str, ...] = ()
    cold_below: int = 5  # fewer interactions than this: cold start

    @property
    def cold(self) -> bool:
        return self.history < self.cold_below


def _cold(q: UserQuery) -> str | None:
    return None if q.cold else f"not a cold start ({q.history} interactions)"


# A gate returns None to let the source run, or why it does not.
GATES: dict[str, Callable[[UserQuery], str | None]] = {
    "always": lambda q: None,
    "history": lambda q: None if q.history else "no history",
    "profile": lambda q: None if q.history or q.has_demographics else "no history or demographics",
    "warm": lambda q: None if not q.cold else f"cold start ({q.history} of {q.cold_below} interactions)",
    "cold": _cold,
    "cold_demographics": lambda q: _cold(q) or (None if q.has_demographics else "no demographics"),
    "cold_preferences": lambda q: _cold(q) or (None if q.preferred_categories else "no preferred categories"),
}


@dataclass(frozen=True)
class CandidateSource:
    name: str  # unique on the surface; the trace's "source:<name>"
    k: int  # candidates asked for (per 200 wanted; per category with preferred_categories)
    source: str = ""  # the retrieval source; "" = name
    weight: float = 1.0  # share of the interleave (retrieval order, and what the ranker is given)
    gate: str = "always"
    timeout_ms: float = 0.0  # 0 = RECSYS_RETRIEVAL_TIMEOUT_S; always capped by the caller's deadline
    window: str = ""  # trending: "1h", "24h", "7d"; "" = all time
    category: str = ""  # trending: only this category
    segment: str = ""  # trending, segment_popular: this segment instead of the user's
    preferred_categories: bool = False  # trending: one call per category the user picked
    optional: bool = False  # its failure does not mark the answer degraded
    fill: bool = False  # called after the others, only to make up a shortfall
    quota: float = 0.0  # share of the k slots reserved for its candidates (0 = none; at most 1)

    @property
    def retrieval_source(self) -> str:
        return self.source or self.name


# For a user with history these are the retrieval service's default mix (core/sources.py HISTORY_MIX: the same
# sources, k's, order and equal-weight interleave), which the learned ranker is trained on and the offline
# evaluation serves; the mix is defined once there. Trending also runs for a user with demographics only.
_MIX = {e.name: CandidateSource(e.name, e.k(BASE_BUDGET), window=e.window, gate="history") for e in HISTORY_MIX}
DEFAULT_SOURCES: tuple[CandidateSource, ...] = (
    _MIX["two_tower"],
    _MIX["also_bought"],
    _MIX["content"],
    CandidateSource("segment_popular", 200, gate="cold_demographics"),
    CandidateSource("preferred_categories", 100, source="trending", window="7d", gate="cold_preferences",
                    preferred_categories=True),
    CandidateSource(_MIX["trending"].name, _MIX["trending"].k, window=_MIX["trending"].window, gate="profile",
                    optional=True),
    CandidateSource("popular", 200, gate="always", optional=True, fill=True),
)
assert [s.name for s in DEFAULT_SOURCES if s.gate in ("history", "profile")] == [e.name for e in HISTORY_MIX]


def parse_sources(raw: Any, where: str, local: Collection[str] = ()) -> tuple[CandidateSource, ...]:
    """Sources from the config file (a list of tables); errors name the entry and the key.
    local: the names of the orchestrator's own sources (orchestrator/registry.py)."""
    if isinstance(raw, tuple) and raw and all(isinstance(s, CandidateSource) for s in raw):
        return raw  # parsed when the file loaded (an experiment variant's params)
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{where}: must be a non-empty list of source tables")
    known = {f.name: f for f in fields(CandidateSource)}
    out: list[CandidateSource] = []
    for i, entry in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{at}: must be a table, got {entry!r}")
        unknown = set(entry) - set(known)
        if unknown:
            raise ValueError(f"{at}: unknown keys {sorted(unknown)}; known: {', '.join(known)}")
        for key in ("name", "k"):
            if key not in entry:
                raise ValueError(f"{at}.{key}: is required")
        for key, value in entry.items():
            want = known[key].type
            ok = {"str": isinstance(value, str), "int": isinstance(value, int) and not isinstance(value, bool),
                  "float": isinstance(value, int | float) and not isinstance(value, bool),
                  "bool": isinstance(value, bool)}[want]
            if not ok:
                kind = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false"}[want]
                raise ValueError(f"{at}.{key}: must be {kind}, got {value!r}")
        out.append(_checked(CandidateSource(**entry), at, local))
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: source names must be unique, got {names}")
    return tuple(out)


def _checked(s: CandidateSource, at: str, local: Collection[str] = ()) -> CandidateSource:
    if not s.name:
        raise ValueError(f"{at}.name: must not be empty")
    source = s.retrieval_source
    if source not in USER_SOURCES and source not in local:
        known = ", ".join([*USER_SOURCES, *local])
        why = " (it needs an anchor item: SimilarItems)" if source in KINDS else ""
        raise ValueError(f"{at}.source: unknown source {source!r}{why}; "
                         f"known: {known} (name it in `source` if `name` is a label)")
    if not (math.isfinite(s.quota) and 0 <= s.quota <= 1):
        raise ValueError(f"{at}.quota: must be a share of the slots from 0 to 1, got {s.quota}")
    if not (math.isfinite(s.weight) and s.weight > 0):
        raise ValueError(f"{at}.weight: must be a positive number, got {s.weight}")
    if s.gate not in GATES:
        raise ValueError(f"{at}.gate: unknown gate {s.gate!r}; known: {', '.join(GATES)}")
    if not (math.isfinite(s.timeout_ms) and s.timeout_ms >= 0):
        raise ValueError(f"{at}.timeout_ms: must be 0 (the default) or a positive number, got {s.timeout_ms}")
    if s.preferred_categories and source != "trending":
        raise ValueError(f"{at}.preferred_categories: only the trending source takes it")
    if s.category and s.preferred_categories:
        raise ValueError(f"{at}.category: not with preferred_categories (the user's categories are used)")
    if source in local:  # the orchestrator's own source: what the registry's rules say about k
        if not 1 <= s.k <= MAX_K:
            raise ValueError(f"{at}.k: must be between 1 and {MAX_K}, got {s.k}")
        return s
    try:  # a retrieval source: the registry's rules (core/sources.py), as the retrieval service applies them
        check(source, s.k, s.window, s.category, s.segment, has_item=False)
    except SourceError as exc:
        raise ValueError(f"{at}.{exc.key}: {exc.rule}") from None
    return s
