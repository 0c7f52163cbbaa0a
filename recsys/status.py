"""`recsys status`: the running stack on one screen, read from each service's health check and its
/metrics (core/metrics.py), scraped twice a second apart so rates are current, not lifetime."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from core.config import Settings
from core.grpc_server import LIVENESS

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
RPCS = {"orchestrator": "Recommend", "retrieval": "Retrieve", "ranking": "Rank"}


def scrape(addr: str, timeout_s: float = 2.0) -> Samples | None:
    """(sample name, sorted labels) -> value; None when nothing answers at addr."""
    if not addr:
        return None
    try:
        with urllib.request.urlopen(f"http://{addr}/metrics", timeout=timeout_s) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name` over the samples whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def buckets(samples: Samples, name: str, **labels: str) -> dict[float, float]:
    """upper bound -> cumulative count of a histogram, summed over the other labels."""
    want = set(labels.items())
    out: dict[float, float] = {}
    for (n, ls), v in samples.items():
        if n == f"{name}_bucket" and want <= set(ls):
            le = float(dict(ls)["le"])
            out[le] = out.get(le, 0.0) + v
    return out


def quantile(cumulative: dict[float, float], q: float) -> float | None:
    """The q-quantile of a cumulative histogram as the upper bound of its bucket (None: no observations)."""
    if not cumulative:
        return None
    ordered = sorted(cumulative.items())
    n = ordered[-1][1]
    if n <= 0:
        return None
    for le, count in ordered:
        if count >= q * n:
            return le
    return ordered[-1][0]


def delta(after: dict[float, float], before: dict[float, float]) -> dict[float, float]:
    return {le: v - before.get(le, 0.0) for le, v in after.items()}


@dataclass
class Row:
    service: str
    ready: str
    version: str = "-"
    rate: str = "-"
    p99_ms: str = "-"
    degraded: str = "-"
    extra: str = ""


def row(service: str, ready: str, before: Samples | None, after: Samples | None, window_s: float) -> Row:
    r = Row(service, ready)
    if after is None:
        r.extra = "no metrics endpoint"
        return r
    r.version = next((dict(ls).get("version", "") for (n, ls) in after if n == "recsys_model_version_info"), "") or "-"
    method = RPCS.get(service)
    if method is not None:
        calls = total(after, "recsys_rpc_seconds_count", method=method) - total(
            before or {}, "recsys_rpc_seconds_count", method=method)
        r.rate = f"{calls / window_s:.1f}/s"
        hist = buckets(after, "recsys_rpc_seconds", method=method)
        recent = delta(hist, buckets(before or {}, "recsys_rpc_seconds", method=method)) if calls else hist
        p99 = quantile(recent, 0.99)
        r.p99_ms = "-" if p99 is None else f"<={p99 * 1000:g}"
    if service == "orchestrator":
        answers = total(after, "recsys_rpc_seconds_count", method="Recommend")
        degraded = total(after, "recsys_degraded_answers_total", rpc="recommend")
        r.degraded = f"{degraded / answers:.1%}" if answers else "-"
        down = [dict(ls)["dependency"] for (n, ls), v in after.items() if n == "recsys_dependency_up" and v == 0]
        r.extra = f"down: {', '.join(down)}" if down else ""
    if service == "worker":
        lag = quantile(buckets(after, "recsys_worker_lag_seconds"), 0.99)
        r.extra = f"lag p99 <={lag:g} s, pending {total(after, 'recsys_worker_pending'):.0f}" if lag is not None else ""
    return r


def table(rows: Iterable[Row]) -> str:
    head = ("service", "health", "model version", "req/s", "p99 ms", "degraded", "")
    lines = [head, *((r.service, r.ready, r.version, r.rate, r.p99_ms, r.degraded, r.extra) for r in rows)]
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def status(settings: Settings, window_s: float = 1.0) -> str:
    from recsys import processes

    addrs = {"orchestrator": settings.orchestrator_metrics_addr, "retrieval": settings.retrieval_metrics_addr,
             "ranking": settings.ranking_metrics_addr, "worker": settings.worker_metrics_addr}
    before = {name: scrape(addr) for name, addr in addrs.items()}
    time.sleep(window_s)
    rows = []
    for name in processes.services(settings):  # co-located: retrieval and ranking are the orchestrator's
        grpc_addr = processes.address(settings, name)
        if processes.is_serving(grpc_addr, 1.0, settings=settings):
            ready = "ready"
        elif processes.is_serving(grpc_addr, 1.0, LIVENESS, settings):
            ready = "NOT READY"
        else:
            ready = "down"
        rows.append(row(name, ready, before[name], scrape(addrs[name]), window_s))
    return table(rows)
