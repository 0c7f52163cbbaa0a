"""`make bench`: what a Recommend costs, as a ratio to the cheapest gRPC call this machine serves.

    .venv/bin/python -m loadtest.bench [--calls 1000] [--in-flight 1,8,32] [--processes 1,2]
                                       [--deployments separate,colocated] [--rounds 4] [--auth]
                                       [--code OTHER_CHECKOUT] [--addr HOST:PORT]

Needs the data and a trained model (`make demo` or `recsys train`). It starts:

- an empty-call server (loadtest/empty_server.py: a Recommend that answers 100 ids and does
  nothing else), the yardstick;
- a stack of each deployment (separate services; co-located: retrieval and ranking in the
  orchestrator's process), with one and with two orchestrator processes, on ports of its own,
  against the demo's PostgreSQL, Redis and model;

and drives each with one grpc.aio client process (its calls over 4 connections, as several callers'
would be) at 1, 8 and 32 calls in flight:

- miss: a random user and a never-seen surface per call (the cache key is
  user+surface+variant+k+filters), so every call runs the whole pipeline;
- hit: one user+surface answered once to fill the cache, then repeated.

By default every stack is up at once and they are measured in turn, in 4 short rounds (at each
level: misses, hits, the empty call; --rounds): the host's speed drifts by the minute here, and
interleaving makes it drift for all of them alike. --rounds 0 measures one stack after another.

For each row: req/s, p50, p99, the servers' CPU per call (the stack's processes, PostgreSQL and
Redis, from /proc: loadtest/cpu.py), the client's, and req/s as a ratio to the empty call at 8 in
flight. Prints the table; writes it with the machine's description and load to
reports/bench-latest.{json,md} and between the markers in docs/benchmarks.md. --auth: API keys on,
every call with a key whose rate limit is checked and never reached. --code: each stack also from
another checkout's code, beside ours (a before/after). --addr: that running Recommender instead of
stacks of its own (its servers' CPU is then unknown).
Each call writes an exposure row (and a miss a cache entry, expiring with the cache TTL), as real
traffic does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import grpc

from core import tls
from core.config import ROOT, Settings
from loadtest import writes
from loadtest.cpu import CpuMeter, with_children
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
CHANNELS = 4  # connections the client spreads its calls over, as many callers would: with several
# orchestrator processes (RECSYS_ORCHESTRATOR_PROCESSES) each connection is served by one of them
REFERENCE_IN_FLIGHT = 8  # the ratio's denominator: the empty call's req/s at this many in flight
FRESHNESS_PROBES = 50  # under the batch-1 LogInteractions load (loadtest/writes.py)
MARK_START, MARK_END = "<!-- make bench: start -->", "<!-- make bench: end -->"
DOC = ROOT / "docs" / "benchmarks.md"

RequestFor = Callable[[int], pb.RecommendRequest]
EMPTY_REQUEST = pb.RecommendRequest(user_id=HIT_USER, k=10, context=pb.Context(surface="empty"))


@dataclass
class Run:
    """One scenario's raw outcome."""

    scenario: str
    concurrency: int
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)  # status code name -> count
    degraded: int = 0
    wall_s: float = 0.0
    server_cpu_s: dict[str, float] = field(default_factory=dict)  # per process group
    client_cpu_s: float = 0.0


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
    deployment: str = ""  # "" for the empty call and a stack given by --addr
    server_cpu_ms: float | None = None  # per call, every group summed; None: not measured
    client_cpu_ms: float = 0.0
    cpu_ms_by_group: dict[str, float] = field(default_factory=dict)
    vs_empty: float | None = None  # req/s as a ratio to the empty call at REFERENCE_IN_FLIGHT


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an ascending list; 0.0 for an empty one."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil without floats drifting
    return sorted_values[min(len(sorted_values), int(rank)) - 1]


def summarize(run: Run, deployment: str = "") -> Row:
    lat = sorted(run.latencies_ms)
    calls = len(lat) + sum(run.errors.values())
    by_group = {g: round(1000 * t / calls, 3) for g, t in run.server_cpu_s.items()} if calls else {}
    return Row(
        scenario=run.scenario, calls=calls, concurrency=run.concurrency,
        p50_ms=round(percentile(lat, 50), 3), p95_ms=round(percentile(lat, 95), 3),
        p99_ms=round(percentile(lat, 99), 3), max_ms=round(lat[-1] if lat else 0.0, 3),
        req_per_s=round(len(lat) / run.wall_s, 1) if run.wall_s > 0 else 0.0,
        errors=sum(run.errors.values()), degraded=run.degraded, deployment=deployment,
        server_cpu_ms=round(sum(by_group.values()), 3) if by_group else None,
        client_cpu_ms=round(1000 * run.client_cpu_s / calls, 3) if calls else 0.0, cpu_ms_by_group=by_group,
    )


def with_ratios(rows: list[Row]) -> list[Row]:
    """Each row's req/s over the empty call's at REFERENCE_IN_FLIGHT (its nearest level when not run),
    measured with the same stack (deployment label); rows without one of their own use the first."""
    refs: dict[str, float] = {}
    for label in dict.fromkeys(r.deployment for r in rows):
        empty = [r for r in rows if r.scenario == "empty" and r.req_per_s > 0 and r.deployment == label]
        if empty:
            refs[label] = min(empty, key=lambda r: abs(r.concurrency - REFERENCE_IN_FLIGHT)).req_per_s
    if not refs:
        return rows
    first = next(iter(refs.values()))
    return [replace(r, vs_empty=round(r.req_per_s / refs.get(r.deployment, first), 4)) for r in rows]


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
    stubs: list[pb_grpc.RecommenderStub], scenario: str, request_for: RequestFor, calls: int, concurrency: int,
    meter: CpuMeter | None = None,
) -> Run:
    """`calls` Recommend calls from `concurrency` workers over the stubs' channels (worker j on stub
    j mod len(stubs)); call i gets request_for(i)."""
    run = Run(scenario, concurrency)
    next_index = iter(range(calls))

    async def worker(stub: pb_grpc.RecommenderStub) -> None:
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

    if meter is not None:
        meter.start()
    client = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(worker(stubs[j % len(stubs)]) for j in range(concurrency)))
    run.wall_s = time.perf_counter() - started
    run.client_cpu_s = time.process_time() - client
    if meter is not None:
        run.server_cpu_s = meter.stop()
    return run


@asynccontextmanager
async def channels(addr: str, settings: Settings, n: int = CHANNELS) -> AsyncIterator[list[pb_grpc.RecommenderStub]]:
    """n stubs on n channels of their own connections (grpc shares one per target unless told not to)."""
    opened = [tls.aio_channel(addr, settings, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(n)]
    try:
        yield [pb_grpc.RecommenderStub(c) for c in opened]
    finally:
        for c in opened:
            await c.close()


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


async def bench(addr: str, calls: int, levels: list[int], k: int, settings: Settings | None = None,
                meter: CpuMeter | None = None, deployment: str = "") -> tuple[list[Row], dict[str, object]]:
    """Misses, then hits, at each number of calls in flight against the Recommender at addr."""
    tag = uuid.uuid4().hex[:8]  # fresh surfaces per run, so a re-run misses too
    notes: dict[str, object] = {}
    async with channels(addr, settings or Settings.from_env()) as stubs:
        stub = stubs[0]
        await measure(stubs, "warmup", miss_requests(f"{tag}w", k), WARMUP_CALLS, len(stubs))
        hit = pb.RecommendRequest(user_id=HIT_USER, k=k, context=pb.Context(surface=f"bench-{tag}-hit"))
        notes["cache_hit_verified"] = await warm_cache(stub, hit)
        notes["model_version"] = (await stub.Recommend(hit, timeout=TIMEOUT_S, metadata=KEY)).model_version
        runs = [await measure(stubs, "miss", miss_requests(f"{tag}m{n}", k, n), calls, n, meter) for n in levels]
        runs += [await measure(stubs, "hit", hit_requests(hit.context.surface, k), calls, n, meter) for n in levels]
    errors = {f"{run.scenario}@{run.concurrency}": run.errors for run in runs if run.errors}
    if errors:
        notes["errors"] = errors
    return [summarize(run, deployment) for run in runs], notes


async def bench_empty(addr: str, calls: int, levels: list[int], meter: CpuMeter) -> list[Row]:
    async with channels(addr, Settings()) as stubs:
        await measure(stubs, "warmup", lambda _i: EMPTY_REQUEST, WARMUP_CALLS, len(stubs))
        return [summarize(await measure(stubs, "empty", lambda _i: EMPTY_REQUEST, calls, n, meter)) for n in levels]


# ---------------------------------------------------------------------------- the servers


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def empty_server() -> Iterator[tuple[str, int]]:
    """(address, pid) of a loadtest/empty_server.py process, stopped on exit."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "loadtest.empty_server", str(port)], cwd=ROOT,
                            stdin=subprocess.DEVNULL)
    try:
        addr = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while not _answers(addr):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the empty-call server did not start")
            time.sleep(0.1)
        yield addr, proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


def _answers(addr: str) -> bool:
    try:
        with grpc.insecure_channel(addr) as channel:
            grpc.channel_ready_future(channel).result(timeout=0.5)
        return True
    except grpc.FutureTimeoutError:
        return False


@contextmanager
def own_stack(settings: Settings, deployment: str, processes: int = 1, label: str = "",
              ) -> Iterator[tuple[Settings, dict[str, list[int]]]]:
    """A stack of `deployment` with `processes` orchestrator processes on ports of its own (the demo's may
    be running), over the same PostgreSQL, Redis and model; its settings and pids per service. Stopped on exit."""
    from recsys import processes as procs

    # a directory of its own per stack (its pid files): two stacks up at once must not share one
    name = re.sub(r"[^a-z0-9]+", "-", (label or f"{deployment} x{processes}").lower()).strip("-")
    var_dir = procs.side_var_dir(settings, settings.var_dir / "bench" / name)
    ports = {f"{svc}{kind}": f"127.0.0.1:{free_port()}"
             for svc in procs.SERVICES for kind in ("_addr", "_metrics_addr")}
    own = replace(settings, deployment=deployment, orchestrator_processes=processes, var_dir=var_dir, **ports)
    own = procs.start_all(own)
    try:
        deadline = time.monotonic() + 120  # ready once all its processes serve (core/process_group.py)
        while not procs.is_serving(own.orchestrator_addr, 1.0, settings=own):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {name} stack did not become ready; see {procs.log_file(own, 'orchestrator')}")
            time.sleep(0.2)
        pids = {svc: with_children(int(procs.pid_file(own, svc).read_text())) for svc in procs.services(own)}
        yield own, pids
    finally:
        for svc in reversed(procs.services(own)):
            procs.stop(own, svc)


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


COLUMNS = ("deployment", "scenario", "in flight", "calls", "req/s", "p50 ms", "p99 ms", "server CPU ms/call",
           "client CPU ms/call", "vs empty", "errors", "degraded")


def _cells(row: Row) -> list[str]:
    return [row.deployment or "-", row.scenario, str(row.concurrency), str(row.calls), f"{row.req_per_s:.0f}",
            f"{row.p50_ms:.2f}", f"{row.p99_ms:.2f}",
            "-" if row.server_cpu_ms is None else f"{row.server_cpu_ms:.2f}", f"{row.client_cpu_ms:.2f}",
            "-" if row.vs_empty is None else f"{row.vs_empty:.3f}", str(row.errors), str(row.degraded)]


def text_table(rows: list[Row]) -> str:
    cells = [list(COLUMNS), *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    fmt = [f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths)]
    return "\n".join("  ".join(f.format(c) for f, c in zip(fmt, line, strict=True)) for line in cells)


def markdown(report: dict) -> str:
    rows = [Row(**r) for r in report["results"]]
    m = report["machine"]
    groups = sorted({g for r in rows for g in r.cpu_ms_by_group if r.scenario != "empty"})
    lines = [
        f"{report['timestamp']}, model `{report['notes'].get('model_version', '-')}`; "
        f"one grpc.aio client process on the same machine as the servers; "
        + (f"every stack up at once, measured in turn in {report['notes']['rounds']} rounds."
           if report['notes'].get('rounds') else "one stack after another."), "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['ram_gib']} GiB RAM, {m['platform']}, "
        f"Python {m['python']}, grpcio {m['grpcio']}. "
        f"1-minute load average before/after: {_load(report['notes'])}.", "",
        "| " + " | ".join(COLUMNS) + " |",
        "| " + " | ".join(["---", "---"] + ["---:"] * (len(COLUMNS) - 2)) + " |",
        *("| " + " | ".join(_cells(r)) + " |" for r in rows), "",
    ]
    if groups:
        lines += ["Server CPU per call by process (ms):", "",
                  "| deployment | scenario | in flight | " + " | ".join(groups) + " |",
                  "| --- | --- | ---: | " + " | ".join(["---:"] * len(groups)) + " |",
                  *(f"| {r.deployment or '-'} | {r.scenario} | {r.concurrency} | "
                    + " | ".join(f"{r.cpu_ms_by_group.get(g, 0.0):.2f}" for g in groups) + " |"
                    for r in rows if r.scenario != "empty" and r.cpu_ms_by_group), ""]
    held = {label: h for label, h in report["notes"].get("hot_histories", {}).items() if h.get("hits", 0)
            + h.get("misses", 0)}
    if held:
        lines += ["Users' histories answered from memory (orchestrator/histories.py; the first orchestrator process's "
                  "count) over the Recommend rows: " + "; ".join(
                      f"{label}: {h['hits'] / (h['hits'] + h['misses']):.0%} of {h['hits'] + h['misses']:.0f} reads"
                      for label, h in held.items()) + ".", ""]
    written = [writes.WriteRow(**w) for w in report["notes"].get("writes", [])]
    if written:
        lines += ["LogInteractions (loadtest/writes.py: bench users' clicks on random items, removed afterwards; "
                  f"freshness: {FRESHNESS_PROBES} probes under the one-per-call load, from the acknowledgement "
                  "to the first Recommend answer without the purchased item):", "",
                  "| " + " | ".join(writes.COLUMNS) + " |",
                  "| " + " | ".join(["---"] + ["---:"] * (len(writes.COLUMNS) - 1)) + " |",
                  *("| " + " | ".join(writes.cells(w)) + " |" for w in written), ""]
    lines += [
        "empty: loadtest/empty_server.py, a Recommend answering 100 ids with no work; "
        "miss: a never-seen surface per call (a new cache key), random MovieLens users; "
        "hit: one user+surface repeated after a warming call "
        f"(cache hit verified: {report['notes'].get('cache_hit_verified')}). "
        "Latency is client-side wall time per call; req/s = successful calls / wall time; "
        "server CPU = the services' processes, PostgreSQL and Redis, from /proc; "
        f"vs empty = req/s / the empty call's req/s at {REFERENCE_IN_FLIGHT} in flight.", "",
    ]
    return "\n".join(lines)


def _load(notes: dict) -> str:
    load = notes.get("load_avg_1m") or {}
    return f"{load.get('before', '-')} / {load.get('after', '-')}"


def write_reports(report: dict, out_dir: Path, doc: Path | None = None) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "bench-latest.json", out_dir / "bench-latest.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    md_path.write_text("# Recommend benchmark\n\n" + table)
    if doc is not None:
        update_doc(doc, table)
    return json_path, md_path


def update_doc(doc: Path, table: str) -> None:
    """Replace what lies between the markers in doc (appended with them when absent)."""
    text = doc.read_text() if doc.exists() else ""
    block = f"{MARK_START}\n{table}\n{MARK_END}"
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        text = head + block + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.write_text(text)


def _levels(value: str) -> list[int]:
    levels = [int(v) for v in value.split(",") if v.strip()]
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive numbers, e.g. 1,8,32")
    return levels


def _deployments(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names or any(n not in ("separate", "colocated") for n in names):
        raise argparse.ArgumentTypeError("separate, colocated or both, comma-separated")
    return names


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=int(os.environ.get("RECSYS_BENCH_CALLS", "1000")),
                   help="calls per scenario")
    p.add_argument("--in-flight", type=_levels, default=[1, 8, 32], help="calls in flight, e.g. 1,8,32")
    p.add_argument("--deployments", type=_deployments, default=["separate", "colocated"],
                   help="the stacks to start and measure")
    p.add_argument("--processes", type=_levels, default=[1, 2],
                   help="orchestrator processes per stack (RECSYS_ORCHESTRATOR_PROCESSES), e.g. 1,2")
    p.add_argument("--k", type=int, default=10, help="items per recommendation")
    p.add_argument("--addr", default="", help="measure the Recommender running here instead of starting stacks")
    p.add_argument("--out-dir", type=Path, default=ROOT / "reports", help="where bench-latest.{json,md} go")
    p.add_argument("--no-doc", action="store_true", help="leave docs/benchmarks.md as it is")
    p.add_argument("--auth", action="store_true",
                   help="stacks with API keys on: calls carry a read key whose rate limit is checked on every "
                        "call (in Redis) but never reached, so the rows include authentication and the limiter")
    p.add_argument("--rounds", type=int, default=4,
                   help="every stack up at once, measured in turn in this many short rounds (a host whose speed "
                        "drifts by the minute drifts for all alike); 0: one stack after another, each whole")
    p.add_argument("--code", type=Path, default=None,
                   help="also start each stack from this checkout's code, in turn with ours (a before/after of "
                        "two commits by one harness on one machine); implies --no-doc")
    args = p.parse_args(argv)
    if args.calls < 1:
        p.error("--calls must be at least 1")
    return args


def _stack_settings() -> Settings:
    """The demo's settings (embedded servers started when no URLs are set), or exit 2 saying what is missing."""
    from core.artifacts import current_version

    settings = Settings.from_env()
    if not settings.database_url or not settings.redis_url:
        from recsys.embedded import ensure_servers

        settings = ensure_servers(settings)
    if not current_version(settings.artifacts_dir):
        print(f"no trained model in {settings.artifacts_dir}: run `make demo` (or `recsys train`) first",
              file=sys.stderr)
        raise SystemExit(2)
    return settings


def interleaved(settings: Settings, variants: list[tuple[str, Path, str, int]], calls: int, rounds: int,
                levels: list[int], k: int, empty_addr: str, empty_meter: CpuMeter,
                ) -> tuple[list[Row], dict[str, object]]:
    """Every variant's stack (label, code, deployment, processes) up at once, measured in turn in short
    rounds (at each level: misses, hits, then the empty call, stack after stack): a host whose speed drifts
    by the minute drifts for all of them alike. One row per stack, scenario and level, rounds summed."""
    from recsys import processes as procs

    ours, per_round = procs.ROOT, max(1, calls // rounds)
    runs: dict[tuple[str, str, int], list[Run]] = {}
    verified: list[bool] = []
    with contextlib.ExitStack() as stacks:
        started = []
        for label, code, deployment, n in variants:
            procs.ROOT = code
            started.append((label, *stacks.enter_context(own_stack(settings, deployment, n, label))))
        procs.ROOT = ours

        async def one_round(r: int) -> None:
            for level in levels:
                for i, (label, own, pids) in enumerate(started):
                    async with channels(own.orchestrator_addr, own) as stubs:
                        hits = hit_requests(f"bench-hit-{i}", k)
                        if r == 0 and level == levels[0]:
                            await measure(stubs, "warmup", miss_requests(uuid.uuid4().hex[:6], k), WARMUP_CALLS, 4)
                            verified.append(await warm_cache(stubs[0], hits(0)))
                        for scenario, make in (("miss", miss_requests(uuid.uuid4().hex[:8], k, r)), ("hit", hits)):
                            runs.setdefault((label, scenario, level), []).append(
                                await measure(stubs, scenario, make, per_round, level, CpuMeter(pids)))
                async with channels(empty_addr, Settings()) as stubs:
                    runs.setdefault(("", "empty", level), []).append(
                        await measure(stubs, "empty", lambda _i: EMPTY_REQUEST, per_round, level, empty_meter))

        for r in range(rounds):
            asyncio.run(one_round(r))
        held = {label: hot_histories(own) for label, own, _ in started}  # before the writes' users join
        written = [asyncio.run(write_rows(label, own, pids, calls)) for label, own, pids in started]
    order = {"empty": 0, "miss": 1, "hit": 2}
    rows = [summarize(_summed(parts), label) for (label, _s, _l), parts in
            sorted(runs.items(), key=lambda kv: (kv[0][0] != "", kv[0][0], order[kv[0][1]], kv[0][2]))]
    return rows, {"cache_hit_verified": bool(verified) and all(verified), "rounds": rounds,
                  "writes": [asdict(w) for ws in written for w in ws], "hot_histories": held}


def hot_histories(own: Settings) -> dict[str, float]:
    """The stack's recsys_hot_histories gauge (orchestrator/histories.py; its first process's, with several):
    how many of the misses' user reads the held histories answered."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{own.orchestrator_metrics_addr}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    found = dict(re.findall(r'^recsys_hot_histories\{stat="(\w+)"\} ([0-9.e+]+)$', text, re.M))
    return {k: float(v) for k, v in found.items()}


async def write_rows(label: str, own: Settings, pids: dict[str, list[int]], calls: int) -> list[writes.WriteRow]:
    """LogInteractions at each batch size (REFERENCE_IN_FLIGHT in flight), freshness probed under the batch-1
    load (loadtest/writes.py); after the Recommend rows, whose users' histories they would change."""
    async with channels(own.orchestrator_addr, own) as stubs:
        return [await writes.measure(stubs, label, batch, calls if batch == 1 else max(20, calls // 5),
                                     REFERENCE_IN_FLIGHT, CpuMeter(pids), KEY,
                                     probes=FRESHNESS_PROBES if batch == 1 else 0)
                for batch in writes.BATCHES]


def _summed(parts: list[Run]) -> Run:
    total = Run(parts[0].scenario, parts[0].concurrency)
    for part in parts:
        total.latencies_ms += part.latencies_ms
        total.degraded += part.degraded
        total.wall_s += part.wall_s
        total.client_cpu_s += part.client_cpu_s
        for name, n in part.errors.items():
            total.errors[name] = total.errors.get(name, 0) + n
        for group, t in part.server_cpu_s.items():
            total.server_cpu_s[group] = total.server_cpu_s.get(group, 0.0) + t
    return total


def _use_key(settings: Settings) -> None:
    """Every call carries a new read key with a limit far above what one client sends."""
    global KEY
    from storage.api_keys import create_key
    from storage.db import connect

    with connect(settings.database_url) as conn:
        _, key = create_key(conn, "read", "make bench", {"rate_per_s": 1e6, "burst": 1_000_000})
        conn.commit()
    KEY = (("authorization", f"Bearer {key}"),)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from recsys import processes

    ours = processes.ROOT
    if args.code is not None:
        args.no_doc = True
    settings = Settings.from_env() if args.addr else _stack_settings()
    if args.addr:
        require_serving(args.addr, settings)
    load_before = os.getloadavg()[0]  # other work on the machine skews the numbers: record it
    print(f"benchmarking: {args.calls} calls per scenario at {args.in_flight} in flight; "
          f"1-minute load average {load_before:.2f}", file=sys.stderr, flush=True)
    rows: list[Row] = []
    notes: dict[str, object] = {}
    if args.auth and not args.addr:
        settings = replace(settings, auth="on")
        _use_key(settings)
    # with --code, its stack beside ours for each variant (a host's speed drifts: measure them together)
    codes = [(args.code.resolve(), "before: "), (ours, "")] if args.code is not None else [(ours, "")]
    variants = [(prefix + (d if n == 1 else f"{d} x{n}") + (" +auth" if args.auth else ""), code, d, n)
                for d in args.deployments for n in args.processes for code, prefix in codes]
    try:
        with empty_server() as (empty_addr, empty_pid):
            empty_meter = CpuMeter({"empty server": [empty_pid]}, databases=False)
            if args.addr:
                rows += asyncio.run(bench_empty(empty_addr, args.calls, args.in_flight, empty_meter))
                found, notes = asyncio.run(bench(args.addr, args.calls, args.in_flight, args.k, settings))
                rows += found
            elif args.rounds:
                found, seen = interleaved(settings, variants, args.calls, args.rounds, args.in_flight, args.k,
                                          empty_addr, empty_meter)
                rows += found
                notes.update(seen)
            for label, code, deployment, n in [] if args.addr or args.rounds else variants:
                print(f"starting a {label} stack ...", file=sys.stderr, flush=True)
                processes.ROOT = code  # `python -m recsys.cli` runs the code of its working directory
                with own_stack(settings, deployment, n, label) as (own, pids):
                    # the yardstick right before the stack's own rows: the ratio holds however the host drifts
                    rows += [replace(r, deployment=label)
                             for r in asyncio.run(bench_empty(empty_addr, args.calls, args.in_flight, empty_meter))]
                    found, seen = asyncio.run(bench(own.orchestrator_addr, args.calls, args.in_flight, args.k, own,
                                                    CpuMeter(pids), label))
                    notes.setdefault("writes", []).extend(
                        asdict(w) for w in asyncio.run(write_rows(label, own, pids, args.calls)))
                processes.ROOT = ours
                rows += found
                notes.setdefault("cache_hit_verified", seen["cache_hit_verified"])
                notes["cache_hit_verified"] = bool(notes["cache_hit_verified"]) and bool(seen["cache_hit_verified"])
                notes["model_version"] = seen.get("model_version")
                if "errors" in seen:
                    notes[f"errors ({label})"] = seen["errors"]
    finally:
        if not args.addr:  # the write rows' users: never left for training to read
            print(f"removed {writes.clean_up(settings)} bench users and their rows", file=sys.stderr)
    rows = with_ratios(rows)
    if not args.addr:
        from core.artifacts import current_version

        notes.setdefault("model_version", current_version(settings.artifacts_dir))
    notes["load_avg_1m"] = {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}
    report = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"), "target": args.addr or "own stacks",
        "settings": {"calls": args.calls, "in_flight": args.in_flight, "k": args.k},
        "machine": machine(), "notes": notes, "results": [asdict(r) for r in rows],
    }
    print(text_table(rows))
    for w in notes.get("writes", []):
        print("  ".join(f"{c}={v}" for c, v in zip(writes.COLUMNS, writes.cells(writes.WriteRow(**w)), strict=True)))
    if not notes.get("cache_hit_verified"):
        print("note: the warmed request was not served from the cache (degraded answers are not cached); "
              "the hit rows measure misses", file=sys.stderr)
    json_path, md_path = write_reports(report, args.out_dir, None if args.no_doc else DOC)
    print(f"wrote {json_path} and {md_path.name}" + ("" if args.no_doc else f" and {DOC.relative_to(ROOT)}"),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
