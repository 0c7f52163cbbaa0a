"""A small candidate-pipeline library: one candidate record, seven component kinds, one runner.

    Pipeline(name, query_hydrators, sources, hydrators, filters, scorers, selectors, side_effects)

Every component has a `name`, an `enable(query)` gate that returns why it is off (None = on),
an optional `timeout_s` and a fail-open policy: `fail_open` (a failure is recorded and the
request goes on without that component) and `optional` (such a failure does not mark the
answer degraded). `Pipeline.run` records, for every component, candidates in and out,
latency and outcome (ok, off, failed, timeout, not_needed) into the request's trace and
into one stats sink, which the serving counters export.

    kind            gets                  returns                          fails open as
    QueryHydrator   the query             (fills query fields)             cold start
    Source          the query             candidates, best first           the others' candidates
    Hydrator        query, candidates     (fills candidate fields)         candidates as they are
    Filter          query, candidates     (kept, removed)                  nothing removed
    Scorer          query, candidates     candidates in a new order        the previous order
    Selector        query, ranked, Slots  (places candidates in Slots)     (selectors do not fail)
    SideEffect      query, response       nothing; runs after the answer   logged

Sources run concurrently. A source marked `fill` runs after the others, only when they
found fewer than the query's fill target; a source marked `fallback` runs only when every
other source failed or none was enabled. Candidates of all sources merge by the interleave
rule (core.interleave): sources alternate by weight / (1 + rank), an item placed where
it ranks best and credited to the first source (in pipeline order) that found it.

Pure Python over the query and its candidates: tests build pipelines from fake components.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from core import tracing
from core.errors import InvalidArgument, NotFound
from core.interleave import interleave

log = logging.getLogger(__name__)

Remaining = Callable[[], float | None]
DEADLINE_MARGIN_S = 0.02  # time to filter, select, decorate and send after the last downstream call


@dataclass(slots=True)
class Candidate:
    """One item on its way through a pipeline."""

    item_id: str
    source: str  # the source that found it (reason, quota, trace)
    score: float = 0.0  # the current score: the source's, then the scorers'
    retrieval_score: float = 0.0  # the source's own score (what the ranker reads)
    anchor: str = ""  # the item that led to it ("because you watched ..."), "" if none
    scope: str = ""  # the category it was asked for ("" if none)
    picked: bool = False  # that category is one the user picked at onboarding
    group: str = ""  # the merge group: a source's own list (a source may return one per category)
    parts: Any = None  # what the score is made of: the ranker's parts, `as_dict()` (orchestrator/scorers/ranker.py)
    item: Any = None  # the catalogue record (storage.records.ItemRecord), set by a hydrator


class Query(Protocol):
    """What a pipeline's components read and fill. The RPCs' queries (orchestrator/query.py)
    carry the request, the surface's settings, the hydrated user and the trace."""

    request_id: str
    k: int
    trace: Trace

    def remaining(self) -> float | None: ...


# ---------------------------------------------------------------------------- components


@dataclass(frozen=True)
class Setting:
    """A surface setting a component declares (config key, default, parser): a new filter or selector
    brings its own settings, validated with the rest when the config file loads."""

    name: str
    default: Any
    parse: Callable[[Any, str], Any]  # (value from the file, where) -> the value, or raises ValueError


def string_set(value: Any, where: str) -> frozenset[str]:
    """A Setting parser: a list of non-empty strings."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{where}: must be a list of non-empty strings, got {value!r}")
    return frozenset(value)


class Component:
    """Base of every component: a name, a gate, a timeout and a fail-open policy."""

    kind = "component"
    name = "component"
    settings: tuple[Setting, ...] = ()  # surface settings it reads (query.params.setting(name))
    timeout_s: float | None = None  # None: no timeout of its own (the caller's deadline still caps it)
    fail_open = True  # an error is recorded and the request goes on without this component
    timer = True  # the pipeline holds it to its budget; False: its own downstream deadline does (no timer task)
    optional = False  # its failure does not mark the answer degraded

    def enable(self, query: Any) -> str | None:
        """None to run on this query, or why not (recorded in the trace)."""
        return None

    @property
    def stage(self) -> str:
        return f"{self.kind}:{self.name}"


class QueryHydrator(Component):
    kind = "query_hydrator"

    async def hydrate(self, query: Any) -> None:
        raise NotImplementedError


class Source(Component):
    kind = "source"
    weight = 1.0  # share of the interleave
    fill = False  # runs after the others, only to make up a shortfall
    fallback = False  # runs only when no other source answered; the first fallback with candidates wins
    instead = ""  # a fallback's answer in words: "popular items" (the degraded reason)
    append = False  # its candidates join after the merge, beyond the candidate limit (promoted, pinned)
    quota = 0.0  # share of the k slots reserved for this source's candidates (selectors.quota)

    def prepare(self, query: Any) -> None:
        """Called for every enabled source before any of them runs: lets sources share one downstream call."""

    async def fetch(self, query: Any) -> list[Candidate]:
        raise NotImplementedError

    @property
    def stage(self) -> str:
        return f"source:{self.name}"


class Hydrator(Component):
    kind = "hydrator"

    async def hydrate(self, query: Any, candidates: list[Candidate]) -> None:
        raise NotImplementedError


class Filter(Component):
    kind = "filter"

    def keep(self, query: Any) -> Callable[[Candidate], bool]:
        """A predicate for this query (True = keep); `filter` applies it."""
        raise NotImplementedError

    def filter(self, query: Any, candidates: list[Candidate]) -> tuple[list[Candidate], list[Candidate]]:
        keep = self.keep(query)
        kept: list[Candidate] = []
        removed: list[Candidate] = []
        for c in candidates:
            (kept if keep(c) else removed).append(c)
        return kept, removed


class Scorer(Component):
    kind = "scorer"

    async def score(self, query: Any, candidates: list[Candidate]) -> list[Candidate]:
        """The same candidates (a scorer never drops one), rescored and in their new order."""
        raise NotImplementedError


@dataclass
class Slots:
    """The k positions of an answer as selectors fill them: fixed positions (pins) and the rest,
    which are shown in score order."""

    k: int
    fixed: dict[int, Candidate] = field(default_factory=dict)
    chosen: list[Candidate] = field(default_factory=list)

    @property
    def free(self) -> int:
        return self.k - len(self.fixed) - len(self.chosen)

    def taken(self) -> set[str]:
        return {c.item_id for c in self.chosen} | {c.item_id for c in self.fixed.values()}

    def layout(self) -> list[Candidate]:
        """Fixed positions where they were put; the chosen, best score first, around them."""
        rest = iter(sorted(self.chosen, key=lambda c: -c.score))
        out: list[Candidate] = []
        for pos in range(self.k):
            nxt = self.fixed.get(pos) or next(rest, None)
            if nxt is None:
                break
            out.append(nxt)
        return out


class Selector(Component):
    kind = "selector"
    fail_open = False  # a selector is pure logic: an error in one is a bug, not a dependency's fault

    def select(self, query: Any, ranked: list[Candidate], slots: Slots) -> None:
        """Place candidates of `ranked` (best first, not yet placed) into `slots`."""
        raise NotImplementedError


class SideEffect(Component):
    kind = "side_effect"

    async def run(self, query: Any, response: Any) -> None:
        raise NotImplementedError


# ---------------------------------------------------------------------------- trace and stats


@dataclass(slots=True)
class StageRecord:
    """One component's run on one request."""

    stage: str
    outcome: str = "ok"  # ok, off, failed, timeout, not_needed
    candidates_in: int = 0
    candidates_out: int = 0
    start_ms: float = 0.0
    latency_ms: float = 0.0
    note: str = ""
    error: str = ""  # what went wrong, in a few words (a gRPC status name, an exception type)
    removed: dict[str, int] = field(default_factory=dict)
    removed_ids: dict[str, list[str]] = field(default_factory=dict)


class StatsSink(Protocol):
    def stage(self, pipeline: str, record: StageRecord) -> None: ...


class Trace:
    """The records of one request, in the order the components started; degraded reasons."""

    def __init__(self, keep_removed_ids: int = 0) -> None:
        self.stages: list[StageRecord] = []
        self.degraded: list[str] = []
        self.degraded_by: list[str] = []  # the stage behind each reason (metrics count answers by it)
        self.keep_removed_ids = keep_removed_ids  # removed ids listed per filter (debug), 0 = counts only
        self._t0 = time.perf_counter()

    def start(self, stage: str, candidates_in: int = 0) -> StageRecord:
        record = StageRecord(stage, candidates_in=candidates_in, start_ms=(time.perf_counter() - self._t0) * 1000)
        self.stages.append(record)
        return record

    def finish(self, record: StageRecord) -> None:
        record.latency_ms = (time.perf_counter() - self._t0) * 1000 - record.start_ms

    def note(self, stage: str, outcome: str, note: str) -> StageRecord:
        """A component that did not run (gated off, not needed)."""
        record = self.start(stage)
        record.outcome, record.note = outcome, note
        return record

    def degrade(self, record: StageRecord, reason: str) -> None:
        record.note = reason
        self.degraded.append(reason)
        self.degraded_by.append(record.stage)


def budget(component: Component, query: Any) -> float | None:
    """A component's timeout: its own, capped by what the caller's deadline leaves."""
    left = query.remaining()
    if left is not None:
        left = max(left - DEADLINE_MARGIN_S, 0.0)
    if component.timeout_s is None:
        return left
    return component.timeout_s if left is None else min(component.timeout_s, left)


def describe(exc: BaseException) -> str:
    """A failure in a few words: a gRPC status name, else the exception's type."""
    code = getattr(exc, "code", None)
    if callable(code):
        try:
            return str(code().name)
        except Exception:  # noqa: BLE001 - any object with a code()
            pass
    return type(exc).__name__


# ---------------------------------------------------------------------------- the runner


@dataclass
class Pipeline:
    name: str
    query_hydrators: Sequence[QueryHydrator] = ()
    sources: Sequence[Source] = ()
    hydrators: Sequence[Hydrator] = ()
    filters: Sequence[Filter] = ()
    scorers: Sequence[Scorer] = ()
    selectors: Sequence[Selector] = ()
    side_effects: Sequence[SideEffect] = ()
    stats: StatsSink | None = None

    async def run(self, query: Any) -> list[Candidate]:
        """The query's selected candidates, in the order shown."""
        for h in self.query_hydrators:
            await self._guarded(h, query, 0, lambda h=h: h.hydrate(query))
        candidates = await self.retrieve(query)
        for hy in self.hydrators:
            await self._guarded(hy, query, len(candidates), lambda hy=hy: hy.hydrate(query, candidates),
                                out=lambda _: len(candidates))
        for f in self.filters:
            candidates = self._filter(f, query, candidates)
        for s in self.scorers:
            before = candidates
            scored = await self._guarded(s, query, len(candidates), lambda s=s, c=before: s.score(query, c), out=len)
            candidates = before if scored is None else scored
        return self._select(query, candidates)

    def after(self, query: Any, response: Any) -> list[Awaitable[None]]:
        """The side effects of an answer, to run once it is sent."""
        return [self._side_effect(e, query, response) for e in self.side_effects]

    # -- stages

    async def retrieve(self, query: Any) -> list[Candidate]:
        """Every enabled source concurrently, then fill sources if short; when no source answered, the
        fallback sources in order until one has candidates. Merged."""
        main = [s for s in self.sources if not s.fill and not s.fallback]  # (business items included)
        fill = [s for s in self.sources if s.fill and not s.fallback]
        fallback = [s for s in self.sources if s.fallback]
        groups = await self._fetch(main, query)
        target = getattr(query, "fill_target", query.k)
        found = len({c.item_id for s, cands in groups if not s.append for c in cands})
        if fill and found < target:
            groups += await self._fetch(fill, query)
        else:
            for s in fill:
                self._record(query.trace.note(s.stage, "not_needed", f"the other sources found {found} candidates"))
        answered = any(cands for s, cands in groups if not s.append)
        for s in fallback:
            if answered:
                self._record(query.trace.note(s.stage, "not_needed", "the sources answered"))
                continue
            more = await self._fetch([s], query)
            if more and more[0][1]:
                groups, answered = [*more, *((s, c) for s, c in groups if s.append)], True
                errors = [r.error for r in query.trace.stages if r.error and r.stage.startswith("source:")]
                if errors:  # the sources failed (not merely gated off or empty): the answer is a fallback
                    query.trace.degraded.insert(0, f"every source failed ({errors[0]}): {s.instead or s.name} instead")
                    query.trace.degraded_by.insert(0, "sources")
        return merge(groups, getattr(query, "want", 10 * query.k), target if fill else None)

    async def _fetch(
        self, sources: Sequence[Source], query: Any,
    ) -> list[tuple[Source, list[Candidate]]]:
        """(source, candidates) of the enabled sources that answered."""
        enabled: list[Source] = []
        for s in sources:
            off = s.enable(query)
            if off is None:
                enabled.append(s)
            else:
                self._record(query.trace.note(s.stage, "off", f"gated off: {off}"))
        for s in enabled:
            s.prepare(query)
        # Sources with a timer run as tasks, concurrently; those without one (sharing one downstream call)
        # are awaited in turn in one more: the first waits for the call, the rest have their answer then.
        # Their records all start now, so each one's latency is the shared call's as it saw it.
        timed = [s for s in enabled if s.timer]
        untimed = [s for s in enabled if not s.timer]
        records = [query.trace.start(s.stage) for s in untimed]

        async def in_turn() -> list[Any]:
            return [await self._guarded(s, query, 0, lambda s=s: s.fetch(query), out=len, record=r)
                    for s, r in zip(untimed, records, strict=True)]

        jobs = [self._guarded(s, query, 0, lambda s=s: s.fetch(query), out=len) for s in timed]
        if untimed:
            jobs.append(in_turn())
        done = [await jobs[0]] if len(jobs) == 1 else await asyncio.gather(*jobs)
        answers = dict(zip(map(id, [*timed, *untimed]), [*done[: len(timed)], *(done[-1] if untimed else [])],
                           strict=True))
        # in the pipeline's order, whichever ran first: the merge credits an item to the first source listed
        return [(s, answers[id(s)]) for s in enabled if answers[id(s)] is not None]

    def _filter(self, f: Filter, query: Any, candidates: list[Candidate]) -> list[Candidate]:
        off = f.enable(query)
        if off is not None:
            return candidates
        record = query.trace.start(f.stage, len(candidates))
        try:
            kept, removed = f.filter(query, candidates)
        except Exception as exc:
            if not f.fail_open:
                raise
            log.warning("filter %s failed: %r", f.name, exc)
            record.outcome = "failed"
            self._fail(f, query, record, f"filter {f.name} failed ({describe(exc)}): not applied")
            kept, removed = candidates, []
        record.candidates_out = len(kept)
        if removed:
            record.removed[f.name] = len(removed)
            if query.trace.keep_removed_ids:
                record.removed_ids[f.name] = [c.item_id for c in removed[: query.trace.keep_removed_ids]]
        query.trace.finish(record)
        self._record(record)
        return kept

    def _select(self, query: Any, ranked: list[Candidate]) -> list[Candidate]:
        slots = Slots(query.k)
        for sel in self.selectors:
            off = sel.enable(query)
            if off is not None:
                continue
            record = query.trace.start(sel.stage, len(ranked))
            before = len(slots.fixed) + len(slots.chosen)
            taken = slots.taken()
            sel.select(query, [c for c in ranked if c.item_id not in taken], slots)
            record.candidates_out = len(slots.fixed) + len(slots.chosen) - before
            query.trace.finish(record)
            self._record(record)
        return slots.layout()

    async def _side_effect(self, e: SideEffect, query: Any, response: Any) -> None:
        off = e.enable(query)
        if off is not None:
            return
        record = StageRecord(e.stage)  # after the answer: in the stats, not in the answer's trace
        start = time.perf_counter()
        try:
            await e.run(query, response)
        except Exception as exc:  # noqa: BLE001 - a side effect never fails the request
            record.outcome, record.note = "failed", describe(exc)
            log.warning("side effect %s failed: %s", e.name, describe(exc))
        record.latency_ms = (time.perf_counter() - start) * 1000
        self._record(record)

    # -- shared

    async def _guarded(
        self, c: Component, query: Any, n_in: int, call: Callable[[], Awaitable[Any]],
        out: Callable[[Any], int] | None = None, record: StageRecord | None = None,
    ) -> Any:
        """Run one component under its gate, timeout and fail-open policy; None when it did not answer.
        `record`: its trace record, started earlier (sources whose shared call started with the first)."""
        if record is None:
            off = c.enable(query)
            if off is not None:
                self._record(query.trace.note(c.stage, "off", f"gated off: {off}"))
                return None
            record = query.trace.start(c.stage, n_in)
        # a component that may not fail open is pure logic: no timer
        timeout = budget(c, query) if c.fail_open and c.timer else None
        try:
            if timeout is None:
                result = await call()
            elif timeout <= 0:  # nothing left of its budget: not started
                raise TimeoutError
            else:
                # the event loop's timer holds the component to its budget exactly (and cancels it); a
                # timeout scope, not wait_for's task per call
                async with asyncio.timeout(timeout):
                    result = await call()
            if out is not None:
                record.candidates_out = out(result)
            return result
        except TimeoutError as exc:
            if not c.fail_open:
                raise
            record.outcome, record.error = "timeout", "DEADLINE_EXCEEDED"
            ms = f"{timeout * 1000:.3g} ms" if timeout is not None else "its budget"
            self._fail(c, query, record, f"{c.stage} timed out (after {ms}): skipped", exc)
            return None
        except Exception as exc:
            if not c.fail_open or isinstance(exc, InvalidArgument | NotFound):  # the caller's mistake
                raise
            record.outcome, record.error = "failed", describe(exc)
            self._fail(c, query, record, f"{c.stage} failed ({record.error}): skipped", exc)
            return None
        finally:
            query.trace.finish(record)
            self._record(record)

    def _fail(self, c: Component, query: Any, record: StageRecord, reason: str,
              exc: BaseException | None = None) -> None:
        custom = getattr(c, "failure_note", None)
        if custom is not None and exc is not None:
            reason = custom(exc) or reason
        if c.optional:
            record.note = reason
        else:
            query.trace.degrade(record, reason)

    def _record(self, record: StageRecord) -> None:
        if self.stats is not None:
            self.stats.stage(self.name, record)
        if tracing.enabled:
            tracing.component_span(record.stage, record.latency_ms, {
                "recsys.pipeline": self.name, "recsys.outcome": record.outcome,
                "recsys.candidates_in": record.candidates_in, "recsys.candidates_out": record.candidates_out})


def merge(
    groups: list[tuple[Source, list[Candidate]]], want: int, fill_to: int | None = None,
) -> list[Candidate]:
    """At most `want` candidates without duplicates: the non-fill groups interleaved by weight / (1 + rank),
    each item placed where it ranks best and credited to the first group (in pipeline order) that found it;
    then the fill groups in order, up to `fill_to` (default `want`; when no other source answered, the fill
    sources are the answer and fill up to `want`); then the `append` sources' candidates not yet there.
    A source's candidates form one group per `group` key (a source asked once per category interleaves
    each category's list as a source of its own)."""
    split: list[tuple[Source, list[Candidate]]] = []
    for s, cands in groups:
        if s.append:
            continue
        keys: dict[str, list[Candidate]] = {}
        for c in cands:
            keys.setdefault(c.group, []).append(c)
        split += [(s, lst) for lst in keys.values()]
    main = [(s, c) for s, c in split if not s.fill]
    if fill_to is None or not main:
        fill_to = want
    first: dict[str, Candidate] = {}
    for _, cands in main:
        for c in cands:
            first.setdefault(c.item_id, c)
    out = [first[item_id] for item_id, _, _ in
           interleave([[c.item_id for c in cands] for _, cands in main], want, [s.weight for s, _ in main])]
    taken = {c.item_id for c in out}
    for s, cands in split:
        if not s.fill:
            continue
        for c in cands:
            if len(out) >= fill_to:
                break
            if c.item_id not in taken:
                taken.add(c.item_id)
                out.append(c)
    for s, cands in groups:
        if s.append:
            for c in cands:
                if c.item_id not in taken:
                    taken.add(c.item_id)
                    out.append(c)
    for p, c in enumerate(out):  # the sources' own scores do not compare across sources: position decides
        c.score = 1 / (1 + p)
    return out
