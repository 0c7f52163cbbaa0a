"""Serving counters (cache hits and misses, degraded answers) and the pipelines' per-component
stats (runs by outcome, candidates in and out, latency), kept in process and added to a Redis
hash every few seconds, so every replica's numbers sum in one place (`recsys stats`) without
a Redis round trip per request. This is the pipelines' one stats sink (orchestrator/pipeline.py
StatsSink). The same counts go to Prometheus (the module's metrics; /metrics, core/metrics.py)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram
from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.log_limit import Outage
from core.metrics import LATENCY_BUCKETS
from orchestrator.pipeline import StageRecord

log = logging.getLogger(__name__)

KEY = "recsys:stats"
IDLE = ("off", "not_needed")  # outcomes of a component that did not run

# The same numbers for Prometheus (core/metrics.py), per process.
COMPONENT_SECONDS = Histogram(
    "recsys_component_seconds", "pipeline components' runs: latency in seconds, by pipeline, stage and outcome "
    "(ok, off, failed, timeout, not_needed)", ["pipeline", "stage", "outcome"], buckets=LATENCY_BUCKETS)
COMPONENT_CANDIDATES = PromCounter(
    "recsys_component_candidates", "candidates into and out of each pipeline component",
    ["pipeline", "stage", "direction"])
EVENTS = PromCounter("recsys_orchestrator_events", "cache_hit, cache_miss, degraded, exposures_dropped, ...", ["event"])
DEGRADED = PromCounter("recsys_degraded_answers", "answers marked degraded, by RPC and the stage that degraded them "
                       "(cache:lookup, scorer:ranker, source:..., query_hydrator:user, sources = every source failed)",
                       ["rpc", "stage"])


class Stats:
    def __init__(self, redis: Redis, interval_s: float = 5.0) -> None:
        self.redis = redis
        self.interval_s = interval_s
        self.pending: Counter[str] = Counter()
        self.pending_ms: Counter[str] = Counter()  # summed latencies, flushed as floats
        self.totals: Counter[str] = Counter()  # this process since start (what an exporter reads)
        self.outage = Outage(log, "stats flush to Redis (counts kept for the next try)", (RedisError,))
        self._children: dict[tuple, PromCounter | Histogram] = {}
        self._names: dict[tuple[str, str, str], tuple] = {}

    def count(self, name: str, n: int = 1) -> None:
        self.pending[name] += n
        self.totals[name] += n
        self._child(EVENTS, name).inc(n)

    def degraded(self, rpc: str, stages: list[str]) -> None:
        """An answer marked degraded, and the stages that degraded it."""
        self.count("degraded")
        for stage in dict.fromkeys(stages):  # Prometheus has them in DEGRADED, not in EVENTS again
            name = f"degraded:{rpc}:{stage}"
            self.pending[name] += 1
            self.totals[name] += 1
            self._child(DEGRADED, rpc, stage).inc()

    def _child(self, metric: PromCounter | Histogram, *labels: str) -> PromCounter | Histogram:
        """metric.labels(*labels), looked up once per label set (labels() takes a lock per call)."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def stage(self, pipeline: str, record: StageRecord) -> None:
        """One component's run: `stage:<pipeline>:<component>:<outcome>` counts, candidates in and
        out and latency sums per component. A component that did not run (off, not needed) is counted,
        without a latency (it has none) or candidates."""
        names = self._names.get((pipeline, record.stage, record.outcome))
        if names is None:
            names = self._names[(pipeline, record.stage, record.outcome)] = self._stage_names(
                pipeline, record.stage, record.outcome)
        outcome, n_in, n_out, ms, seconds, cand_in, cand_out = names
        self.pending[outcome] += 1
        self.totals[outcome] += 1
        if record.outcome in IDLE:
            return
        if record.candidates_in:
            self.pending[n_in] += record.candidates_in
            self.totals[n_in] += record.candidates_in
            cand_in.inc(record.candidates_in)
        if record.candidates_out:
            self.pending[n_out] += record.candidates_out
            self.totals[n_out] += record.candidates_out
            cand_out.inc(record.candidates_out)
        self.pending_ms[ms] += record.latency_ms
        self.totals[ms] += record.latency_ms
        seconds.observe(record.latency_ms / 1000)

    def _stage_names(self, pipeline: str, stage: str, outcome: str) -> tuple:
        """A stage's counter names and Prometheus children, made once per (pipeline, stage, outcome)."""
        key = f"stage:{pipeline}:{stage}"
        return (f"{key}:{outcome}", f"{key}:in", f"{key}:out", f"{key}:ms",
                self._child(COMPONENT_SECONDS, pipeline, stage, outcome),
                self._child(COMPONENT_CANDIDATES, pipeline, stage, "in"),
                self._child(COMPONENT_CANDIDATES, pipeline, stage, "out"))

    def snapshot(self) -> dict[str, float]:
        return dict(self.totals)

    async def flush(self) -> None:
        delta, self.pending = self.pending, Counter()
        delta_ms, self.pending_ms = self.pending_ms, Counter()
        if not delta and not delta_ms:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for name, n in delta.items():
                    pipe.hincrby(KEY, name, n)
                for name, ms in delta_ms.items():
                    pipe.hincrbyfloat(KEY, name, round(ms, 3))
                await pipe.execute()
        except Exception as exc:  # keep the counts for the next try
            self.pending.update(delta)
            self.pending_ms.update(delta_ms)
            self.outage.failed(exc)
        else:
            self.outage.ok()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.flush()


def hit_rate(counts: dict[str, int]) -> float | None:
    hits, misses = counts.get("cache_hit", 0), counts.get("cache_miss", 0)
    return hits / (hits + misses) if hits + misses else None


OUTCOMES = ("ok", "off", "failed", "timeout", "not_needed")


def stage_table(counts: dict[str, float]) -> str:
    """Per pipeline component: runs by outcome, mean candidates in/out and mean latency of its runs."""
    rows: dict[str, dict[str, float]] = {}
    for name, value in counts.items():
        if name.startswith("stage:"):
            key, _, what = name.removeprefix("stage:").rpartition(":")
            rows.setdefault(key, {})[what] = value
    if not rows:
        return ""
    head = f"{'pipeline:component':<44} " + " ".join(f"{o:>10}" for o in OUTCOMES) + f" {'in':>7} {'out':>7} {'ms':>8}"
    lines = [head]
    for key in sorted(rows):
        r = rows[key]
        runs = sum(r.get(o, 0) for o in OUTCOMES if o not in ("off", "not_needed")) or 1
        lines.append(f"{key:<44} " + " ".join(f"{int(r.get(o, 0)):>10}" for o in OUTCOMES)
                     + f" {r.get('in', 0) / runs:>7.0f} {r.get('out', 0) / runs:>7.0f} {r.get('ms', 0) / runs:>8.2f}")
    return "\n".join(lines)
