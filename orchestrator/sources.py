"""Candidate sources of the Recommend pipeline: which Retrieve calls a request makes, and how
their answers merge.

A surface lists its sources (config `[[surface.<name>.sources]]`, or an experiment variant's
`sources`); each is one Retrieve call naming one retrieval source, run concurrently with the
others under its own timeout. A gate decides per request whether a source runs at all:

    always             every request (popular as filler)
    history            the user has interacted with at least one item (two_tower, also_bought, content)
    profile            history or demographics (trending)
    warm               at least `cold_start_interactions` items
    cold               fewer than `cold_start_interactions` items
    cold_demographics  cold, with demographics that place the user in a segment (segment_popular)
    cold_preferences   cold, with onboarding `preferred_categories` (one call per category)

Merging is the retrieval service's rule (retrieval.candidates.merge: sources interleave by
rank, an item placed where it ranks best, the first source winning ties), with weights: a source
of weight w places w candidates for every one of a weight-1 source. Fill sources are called
after the others, only when those came up short of fill_target, and top them up.
retrieval.candidates imports torch and faiss, which the orchestrator must not load, hence
the logic is restated here over plain values.

Pure logic: the pipeline (orchestrator/recommend.py) makes the calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from core.interleave import interleave
from protos import recsys_pb2 as pb

# retrieval/retriever.py SOURCES less similar_items, which needs an anchor item that Recommend does not have
RETRIEVAL_SOURCES = ("two_tower", "popular", "also_bought", "content", "trending", "segment_popular")
WINDOWS = ("1h", "24h", "7d")
MAX_K = 1000
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

    @property
    def retrieval_source(self) -> str:
        return self.source or self.name


# For a user with history these are the retrieval service's default mix (retrieval.retriever.default_mix: the
# same sources, k's, order and equal-weight interleave), which the learned ranker is trained on and the offline
# evaluation serves (tests/test_orchestration_pipeline.py checks the two agree): change them together.
DEFAULT_SOURCES: tuple[CandidateSource, ...] = (
    CandidateSource("two_tower", 200, gate="history"),
    CandidateSource("also_bought", 50, gate="history"),
    CandidateSource("content", 20, gate="history"),
    CandidateSource("segment_popular", 200, gate="cold_demographics"),
    CandidateSource("preferred_categories", 100, source="trending", window="7d", gate="cold_preferences",
                    preferred_categories=True),
    CandidateSource("trending", 10, gate="profile", window="7d", optional=True),
    CandidateSource("popular", 200, gate="always", optional=True, fill=True),
)


def parse_sources(raw: Any, where: str) -> tuple[CandidateSource, ...]:
    """Sources from the config file (a list of tables); errors name the entry and the key."""
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
        out.append(_checked(CandidateSource(**entry), at))
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: source names must be unique, got {names}")
    return tuple(out)


def _checked(s: CandidateSource, at: str) -> CandidateSource:
    if not s.name:
        raise ValueError(f"{at}.name: must not be empty")
    if s.retrieval_source not in RETRIEVAL_SOURCES:
        raise ValueError(f"{at}.source: unknown retrieval source {s.retrieval_source!r}; "
                         f"known: {', '.join(RETRIEVAL_SOURCES)} (name it in `source` if `name` is a label)")
    if not 1 <= s.k <= MAX_K:
        raise ValueError(f"{at}.k: must be between 1 and {MAX_K}, got {s.k}")
    if not (math.isfinite(s.weight) and s.weight > 0):
        raise ValueError(f"{at}.weight: must be a positive number, got {s.weight}")
    if s.gate not in GATES:
        raise ValueError(f"{at}.gate: unknown gate {s.gate!r}; known: {', '.join(GATES)}")
    if not (math.isfinite(s.timeout_ms) and s.timeout_ms >= 0):
        raise ValueError(f"{at}.timeout_ms: must be 0 (the default) or a positive number, got {s.timeout_ms}")
    trending_only = {"window": s.window, "category": s.category, "preferred_categories": s.preferred_categories}
    for key, value in trending_only.items():
        if value and s.retrieval_source != "trending":
            raise ValueError(f"{at}.{key}: only the trending source takes it")
    if s.window and s.window not in WINDOWS:
        raise ValueError(f"{at}.window: must be one of {', '.join(WINDOWS)} or empty, got {s.window!r}")
    if s.category and s.preferred_categories:
        raise ValueError(f"{at}.category: not with preferred_categories (the user's categories are used)")
    if s.segment and s.retrieval_source not in ("trending", "segment_popular"):
        raise ValueError(f"{at}.segment: only the trending and segment_popular sources take it")
    return s


# ---------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Call:
    """One Retrieve call of a request."""

    spec: CandidateSource
    k: int
    category: str = ""
    picked: bool = False  # the category is one the user picked at onboarding

    @property
    def stage(self) -> str:
        return f"source:{self.spec.name}:{self.category}" if self.picked else f"source:{self.spec.name}"

    def source_request(self) -> pb.SourceRequest:
        s = self.spec
        return pb.SourceRequest(name=s.retrieval_source, k=self.k, window=s.window,
                                category=self.category, segment=s.segment)


def plan(specs: tuple[CandidateSource, ...], query: UserQuery, want: int) -> tuple[list[Call], list[tuple[str, str]]]:
    """The calls this request makes, and (stage, why not) for each source its gate keeps off."""
    scale = max(1.0, want / BASE_BUDGET)
    calls: list[Call] = []
    gated: list[tuple[str, str]] = []
    for s in specs:
        closed = GATES[s.gate](query)
        if closed is not None:
            gated.append((f"source:{s.name}", closed))
            continue
        k = min(MAX_K, math.ceil(s.k * scale))
        if s.preferred_categories:
            calls += [Call(s, k, c, picked=True) for c in query.preferred_categories]
        else:
            calls.append(Call(s, k, s.category))
    return calls, gated


# ---------------------------------------------------------------------------- merging


@dataclass
class Group:
    """One call's candidates, best first."""

    call: Call
    item_ids: list[str]
    scores: list[float]
    sources: list[str]
    anchors: list[str]
    model_version: str = ""


def own_candidates(call: Call, found: pb.CandidateList, in_category: Callable[[str, str], bool]) -> Group:
    """What the source itself found. The retrieval service fills a short answer with popular items;
    here the popular source does that job, so the fill (source "popular", or outside the asked
    category) is dropped. The trending source's own all-time fallback is labelled "popular" too."""
    name = call.spec.retrieval_source
    own = {name, "popular"} if name == "trending" else {name}
    keep = [i for i, src in enumerate(found.sources) if src in own
            and (not call.category or in_category(found.item_ids[i], call.category))]
    ids, scores, srcs, anchors = found.item_ids, found.scores, found.sources, found.anchor_item_ids
    return Group(call, [ids[i] for i in keep], [scores[i] for i in keep], [srcs[i] for i in keep],
                 [anchors[i] for i in keep])


@dataclass
class Merged:
    """Candidates in retrieval order, columnar. scores are the sources' own (what the ranker reads:
    it keeps a two-tower score for items it has no vector for); scope is the category an item was
    asked for ("" if none), picked whether the user chose that category."""

    item_ids: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    anchors: list[str] = field(default_factory=list)
    scopes: list[str] = field(default_factory=list)
    picked: list[bool] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.item_ids)

    def _add(self, g: Group, r: int) -> None:
        self.item_ids.append(g.item_ids[r])
        self.scores.append(g.scores[r])
        self.sources.append(g.sources[r])
        self.anchors.append(g.anchors[r])
        self.scopes.append(g.call.category)
        self.picked.append(g.call.picked)

    def to_pb(self) -> pb.CandidateList:
        return pb.CandidateList(item_ids=self.item_ids, scores=self.scores, sources=self.sources,
                                anchor_item_ids=self.anchors)


def fill_target(want: int, k: int) -> int:
    """How far fill sources top up the others' candidates: enough for k items after filters, no more.
    More would only crowd out the chosen sources (a cold user's picked categories) with popular items
    that ranking, knowing little of the user, prefers."""
    return min(want, 2 * k + 20)


def merge(groups: list[Group], want: int, fill_to: int | None = None) -> Merged:
    """At most `want` candidates without duplicates: the non-fill groups interleaved by weight / (1 + rank)
    (equal weights: round-robin by rank, in config order), each item placed where it ranks best and
    credited (source, score, anchor) to the first source in config order that found it, so an item
    that two_tower or also_bought found keeps that explanation when trending finds it too. Then the
    fill groups, in order, up to `fill_to` (default `want`); when no other source ran, the fill
    sources are the answer and fill up to `want`."""
    if fill_to is None or all(g.call.spec.fill for g in groups):
        fill_to = want
    main = [g for g in groups if not g.call.spec.fill]
    first: dict[str, tuple[int, int]] = {}  # item -> (group, rank) of the first source in config order to find it
    for gi, g in enumerate(main):
        for r, item_id in enumerate(g.item_ids):
            first.setdefault(item_id, (gi, r))
    out = Merged()
    for item_id, _, _ in interleave([g.item_ids for g in main], want, [g.call.spec.weight for g in main]):
        gi, r = first[item_id]
        out._add(main[gi], r)
    taken = set(out.item_ids)
    for g in groups:
        if not g.call.spec.fill:
            continue
        for r, item_id in enumerate(g.item_ids):
            if len(out) >= fill_to:
                return out
            if item_id not in taken:
                taken.add(item_id)
                out._add(g, r)
    return out
