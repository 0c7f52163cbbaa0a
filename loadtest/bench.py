"""`make bench`: Recommend latency and throughput against the running stack.

    .venv/bin/python -m loadtest.bench [--calls 2000] [--concurrency 8] [--addr HOST:PORT]

Four scenarios from one grpc.aio client process:

- miss, sequential: one call at a time (latency, not throughput); every call uses a
  surface never seen before, and the cache key is user+surface+variant+k+filters,
  so every call runs the whole pipeline (retrieval, ranking, filters).
- hit, sequential: one user+surface answered once to fill the cache, then repeated.
- miss / hit with --concurrency calls in flight: throughput (req/s).

Prints a table and writes it with the machine's description to
reports/bench-latest.json and reports/bench-latest.md. Each call also writes an
exposure row (and a miss a cache entry, expiring with the cache TTL), as real traffic does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc

from core import tls
from core.config import ROOT, Settings
from loadtest.stack import require_serving
from protos import recsys_pb2 as pb
from protos import recsys_pb2_grpc as pb_grpc
from recsys.client import credentials

N_USERS = 943  # MovieLens-100K
HIT_USER = "1"
TIMEOUT_S = 5.0
KEY = credentials()  # RECSYS_API_KEY as call metadata, for a stack with API keys on (docs/security.md);
# give that key no rate limit (`recsys keys limit ID --rate 0`) or the benchmark measures the limit
WARMUP_CALLS = 20  # connection setup and first-call costs stay out of the numbers

RequestFor = Callable[[int], pb.RecommendRequest]


@dataclass
class Run:
    """One scenario's raw outcome."""

    scenario: str
    concurrency: int
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)  # status code name -> count
    degraded: int = 0
    wall_s: float = 0.0


@dataclass
class Row:
    """One line of the report."""

    scenario: str
    calls: int
    concurrency: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    req_per_s: float
    errors: int
    degraded: int


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an ascending list; 0.0 for an empty one."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil without floats drifting
    return sorted_values[min(len(sorted_values), int(rank)) - 1]


def summarize(run: Run) -> Row:
    lat = sorted(run.latencies_ms)
    return Row(
        scenario=run.scenario, calls=len(lat) + sum(run.errors.values()), concurrency=run.concurrency,
        p50_ms=round(percentile(lat, 50), 3), p95_ms=round(percentile(lat, 95), 3),
        p99_ms=round(percentile(lat, 99), 3), max_ms=round(lat[-1] if lat else 0.0, 3),
        req_per_s=round(len(lat) / run.wall_s, 1) if run.wall_s > 0 else 0.0,
        errors=sum(run.errors.values()), degraded=run.degraded,
    )


# ---------------------------------------------------------------------------- requests


def miss_requests(tag: str, k: int, seed: int = 0) -> RequestFor:
    """A random user and a never-seen surface per call: a new cache field, so always a miss."""
    rng = random.Random(seed)
    return lambda i: pb.RecommendRequest(
        user_id=str(rng.randint(1, N_USERS)), k=k, context=pb.Context(surface=f"bench-{tag}-{i}"),
    )


def hit_requests(surface: str, k: int) -> RequestFor:
    return lambda _i: pb.RecommendRequest(user_id=HIT_USER, k=k, context=pb.Context(surface=surface))


# ---------------------------------------------------------------------------- measuring


async def measure(
    stub: pb_grpc.RecommenderStub, scenario: str, request_for: RequestFor, calls: int, concurrency: int
) -> Run:
    """`calls` Recommend calls from `concurrency` workers sharing one channel; call i gets request_for(i)."""
    run = Run(scenario, concurrency)
    next_index = iter(range(calls))

    async def worker() -> None:
        for i in next_index:  # a shared iterator: each index is taken once across workers
            request = request_for(i)
            start = time.perf_counter()
            try:
                response = await stub.Recommend(request, timeout=TIMEOUT_S, metadata=KEY)
            except grpc.aio.AioRpcError as exc:
                run.errors[exc.code().name] = run.errors.get(exc.code().name, 0) + 1
                continue
            run.latencies_ms.append((time.perf_counter() - start) * 1000)
            run.degraded += response.degraded

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    run.wall_s = time.perf_counter() - started
    return run


async def warm_cache(stub: pb_grpc.RecommenderStub, request: pb.RecommendRequest) -> bool:
    """Answer `request` once so its response is cached; True when a debug call then reports a cache hit.

    The cache is written after the response is sent (and only for non-degraded answers),
    so poll briefly; debug calls read the cache but never return from it, so they can check.
    """
    await stub.Recommend(request, timeout=TIMEOUT_S, metadata=KEY)
    probe = pb.RecommendRequest()
    probe.CopyFrom(request)
    probe.debug = True
    for _ in range(20):
        if (await stub.Recommend(probe, timeout=TIMEOUT_S, metadata=KEY)).debug.cache_hit:
            return True
        await asyncio.sleep(0.05)
    return False


async def bench(addr: str, calls: int, concurrency: int, k: int,
                settings: Settings | None = None) -> tuple[list[Row], dict[str, object]]:
    tag = uuid.uuid4().hex[:8]  # fresh surfaces per run, so a re-run misses too
    notes: dict[str, object] = {}
    async with tls.aio_channel(addr, settings or Settings.from_env()) as channel:
        stub = pb_grpc.RecommenderStub(channel)
        await measure(stub, "warmup", miss_requests(f"{tag}w", k), WARMUP_CALLS, 1)
        hit = pb.RecommendRequest(user_id=HIT_USER, k=k, context=pb.Context(surface=f"bench-{tag}-hit"))
        notes["cache_hit_verified"] = await warm_cache(stub, hit)
        notes["model_version"] = (await stub.Recommend(hit, timeout=TIMEOUT_S, metadata=KEY)).model_version
        runs = [
            await measure(stub, "miss, sequential", miss_requests(f"{tag}s", k, 1), calls, 1),
            await measure(stub, "hit, sequential", hit_requests(hit.context.surface, k), calls, 1),
            await measure(stub, "miss, concurrent", miss_requests(f"{tag}c", k, 2), calls, concurrency),
            await measure(stub, "hit, concurrent", hit_requests(hit.context.surface, k), calls, concurrency),
        ]
    errors = {run.scenario: run.errors for run in runs if run.errors}
    if errors:
        notes["errors"] = errors
    return [summarize(run) for run in runs], notes


# ---------------------------------------------------------------------------- reporting


def machine() -> dict[str, object]:
    """What the numbers were measured on: they mean little without it."""
    info: dict[str, object] = {
        "nproc": len(os.sched_getaffinity(0)), "platform": platform.platform(),
        "python": platform.python_version(), "grpcio": grpc.__version__,
    }
    cpuinfo = _read("/proc/cpuinfo")
    info["cpu"] = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                        if line.startswith("model name")), platform.processor() or "unknown")
    meminfo = _read("/proc/meminfo")
    total_kb = next((int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal:")), 0)
    info["ram_gib"] = round(total_kb / 2**20, 1)
    return info


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


COLUMNS = ("scenario", "calls", "in flight", "p50 ms", "p95 ms", "p99 ms", "max ms", "req/s", "errors", "degraded")


def _cells(row: Row) -> list[str]:
    return [row.scenario, str(row.calls), str(row.concurrency), f"{row.p50_ms:.2f}", f"{row.p95_ms:.2f}",
            f"{row.p99_ms:.2f}", f"{row.max_ms:.2f}", f"{row.req_per_s:.0f}", str(row.errors), str(row.degraded)]


def text_table(rows: list[Row]) -> str:
    cells = [list(COLUMNS), *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    fmt = [f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths)]
    return "\n".join("  ".join(f.format(c) for f, c in zip(fmt, line, strict=True)) for line in cells)


def markdown(report: dict) -> str:
    rows = [Row(**r) for r in report["results"]]
    m = report["machine"]
    lines = [
        "# Recommend benchmark", "",
        f"{report['timestamp']} against `{report['target']}`, model `{report['notes'].get('model_version', '-')}`; "
        f"one grpc.aio client process on the same machine as the stack.", "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['ram_gib']} GiB RAM, {m['platform']}, "
        f"Python {m['python']}, grpcio {m['grpcio']}. "
        f"1-minute load average before/after: {_load(report['notes'])}.", "",
        "| " + " | ".join(COLUMNS) + " |",
        "| " + " | ".join(["---"] + ["---:"] * (len(COLUMNS) - 1)) + " |",
        *("| " + " | ".join(_cells(r)) + " |" for r in rows), "",
        "miss: a never-seen surface per call (a new cache key), random MovieLens users; "
        "hit: one user+surface repeated after a warming call "
        f"(cache hit verified: {report['notes'].get('cache_hit_verified')}). "
        "Latency is client-side wall time per call; req/s = successful calls / wall time.", "",
    ]
    return "\n".join(lines)


def _load(notes: dict) -> str:
    load = notes.get("load_avg_1m") or {}
    return f"{load.get('before', '-')} / {load.get('after', '-')}"


def write_reports(report: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "bench-latest.json", out_dir / "bench-latest.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text(markdown(report))
    return json_path, md_path


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=int(os.environ.get("RECSYS_BENCH_CALLS", "2000")),
                   help="calls per scenario")
    p.add_argument("--concurrency", type=int, default=int(os.environ.get("RECSYS_BENCH_CONCURRENCY", "8")),
                   help="calls in flight in the concurrent scenarios")
    p.add_argument("--k", type=int, default=10, help="items per recommendation")
    p.add_argument("--addr", default=Settings.from_env().orchestrator_addr, help="the Recommender's host:port")
    p.add_argument("--out-dir", type=Path, default=ROOT / "reports", help="where bench-latest.{json,md} go")
    args = p.parse_args(argv)
    if args.calls < 1 or args.concurrency < 1:
        p.error("--calls and --concurrency must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    require_serving(args.addr, Settings.from_env())
    print(f"benchmarking Recommend at {args.addr}: {args.calls} calls per scenario, "
          f"{args.concurrency} in flight when concurrent ...", file=sys.stderr, flush=True)
    load_before = os.getloadavg()[0]  # other work on the machine skews the numbers: record it
    rows, notes = asyncio.run(bench(args.addr, args.calls, args.concurrency, args.k))
    notes["load_avg_1m"] = {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}
    report = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"), "target": args.addr,
        "settings": {"calls": args.calls, "concurrency": args.concurrency, "k": args.k},
        "machine": machine(), "notes": notes, "results": [asdict(r) for r in rows],
    }
    print(text_table(rows))
    if not notes["cache_hit_verified"]:
        print("note: the warmed request was not served from the cache (degraded answers are not cached); "
              "the hit rows measure misses", file=sys.stderr)
    json_path, md_path = write_reports(report, args.out_dir)
    print(f"wrote {json_path.relative_to(ROOT) if json_path.is_relative_to(ROOT) else json_path} and {md_path.name}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
