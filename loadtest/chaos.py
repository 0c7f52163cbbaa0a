"""`make chaos`: each dependency of the running demo stack killed in turn under a bounded load.

    .venv/bin/python -m loadtest.chaos [--fault-s 5] [--rate 40] [--log-rate 10] [--only postgres,ranking]

With the `make demo` stack running (its embedded PostgreSQL and Redis), one grpc.aio client
sends Recommend at --rate per second (300 ms deadline; half of them fresh surfaces, so the
whole pipeline runs) and LogInteractions at --log-rate per second (one entry each, with an
event_id; an entry answered UNAVAILABLE is retried with the same event_id, as a client should).
Faults, one after the other, each held --fault-s seconds:

    postgres        the embedded PostgreSQL stopped (fast shutdown), then started
    redis-empty     the embedded Redis killed, its files deleted, started empty
    ranking         the ranking service stopped (SIGTERM), then started
    retrieval       the retrieval service stopped, then started
    worker          the real-time worker stopped, then started
    ranking-frozen  the ranking process stopped with SIGSTOP, then SIGCONT

Per fault it prints: Recommend calls, failed (by status code), degraded, p99 ms, the time from
the dependency serving again to the first full (not degraded) answer and to every user's online
features matching PostgreSQL (Feast, as the worker keeps them), and interactions acknowledged
and lost (acknowledged but not in PostgreSQL at the end, or stored twice), and
writes the table to reports/chaos-latest.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import grpc
import psycopg

from core import tls
from core.config import ROOT, Settings
from feature_store.store import OnlineFeatures
from loadtest.bench import machine, percentile
from loadtest.stack import require_serving
from protos import recsys_pb2 as pb
from protos import recsys_pb2_grpc as pb_grpc
from recsys import embedded, processes
from recsys.client import credentials

DEADLINE_S = 0.3
N_USERS, N_ITEMS = 943, 1682  # MovieLens-100K
FAULTS = ("postgres", "redis-empty", "ranking", "retrieval", "worker", "ranking-frozen")
BACK_TIMEOUT_S = 30.0  # waiting for a full answer after recovery
KEY = credentials()  # RECSYS_API_KEY (a write key) when the stack has API keys on; unlimited: `keys limit ID --rate 0`


@dataclass
class Phase:
    fault: str
    calls: int = 0
    failed: Counter = field(default_factory=Counter)
    degraded: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    back_at: float | None = None  # monotonic: the dependency serves again
    first_full_s: float | None = None  # from back_at to the first full answer to a call sent after it
    acknowledged: int = 0
    unavailable: int = 0  # LogInteractions answered UNAVAILABLE (retried later with the same event_id)
    consistent_s: float | None = None  # from back_at until every user's online features match PostgreSQL
    lagging: list[str] = field(default_factory=list)  # the users still behind at the last check


@dataclass
class Load:
    stub: pb_grpc.RecommenderStub
    phase: Phase
    acked: dict[str, tuple[str, str]] = field(default_factory=dict)  # event_id -> (user, interaction id)
    retry: list[pb.Interaction] = field(default_factory=list)
    running: bool = True
    settings: Settings | None = None
    online: OnlineFeatures | None = None

    def lagging(self) -> list[str]:
        """Every user whose online features differ from PostgreSQL's now, apart from those with an
        interaction logged in the 2 s before the comparison ended (in flight to the worker, whose
        normal latency is ~30 ms; the load keeps logging while the comparison runs)."""
        assert self.settings is not None and self.online is not None
        try:
            with psycopg.connect(self.settings.database_url, connect_timeout=2, autocommit=True) as conn:
                users = [r[0] for r in conn.execute("SELECT user_id FROM users")]
                behind = self.online.lagging(conn, users)
                recent = {r[0] for r in conn.execute(
                    "SELECT DISTINCT user_id FROM interactions WHERE created_at > now() - interval '2 s'")}
                return [u for u in behind if u not in recent]
        except Exception as exc:  # noqa: BLE001 - a server still coming back: not consistent yet
            return [f"({type(exc).__name__})"]

    async def recommend(self, i: int) -> None:
        phase, sent = self.phase, time.monotonic()
        surface = f"chaos-{uuid.uuid4().hex[:8]}" if i % 2 else "home"
        req = pb.RecommendRequest(user_id=str(random.randint(1, N_USERS)), k=10, context=pb.Context(surface=surface))
        try:
            resp = await self.stub.Recommend(req, timeout=DEADLINE_S, metadata=KEY)
        except grpc.aio.AioRpcError as exc:
            phase.calls += 1
            phase.failed[exc.code().name] += 1
            return
        done = time.monotonic()
        phase.calls += 1
        phase.latencies_ms.append((done - sent) * 1000)
        if resp.degraded:
            phase.degraded += 1
        elif phase.back_at is not None and sent >= phase.back_at and phase.first_full_s is None:
            phase.first_full_s = done - phase.back_at

    async def log(self) -> None:
        phase = self.phase
        entry = self.retry.pop(0) if self.retry else pb.Interaction(
            user_id=str(random.randint(1, N_USERS)), item_id=str(random.randint(1, N_ITEMS)), type=pb.CLICK,
            event_id=f"chaos-{uuid.uuid4().hex}")
        try:
            resp = await self.stub.LogInteractions(pb.LogInteractionsRequest(interactions=[entry]), timeout=2.0,
                                                    metadata=KEY)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                phase.unavailable += 1
            else:
                phase.failed[f"log {exc.code().name}"] += 1
            self.retry.append(entry)  # not acknowledged: the client tries again, same event_id
            return
        result = resp.results[0]
        if result.accepted:
            if not result.duplicate:
                phase.acknowledged += 1
            self.acked[entry.event_id] = (entry.user_id, result.interaction_id)

    async def paced(self, rate: float, call: callable) -> None:  # type: ignore[valid-type]
        tasks: set[asyncio.Task] = set()
        i = 0
        start = time.monotonic()
        while self.running:
            i += 1
            task = asyncio.create_task(call(i) if call == self.recommend else call())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        if tasks:
            await asyncio.gather(*tasks)


# ------------------------------------------------------------------------------------ faults


def _pid(settings: Settings, name: str) -> int:
    return int(processes.pid_file(settings, name).read_text().strip())


def inject(settings: Settings, fault: str) -> None:
    var = settings.var_dir
    if fault == "postgres":
        embedded.stop_postgres(var)
    elif fault == "redis-empty":
        embedded.stop_redis(var, kill=True)
        embedded.remove_redis_data(var)
    elif fault in ("ranking", "retrieval", "worker"):
        processes.stop(settings, fault)
    elif fault == "ranking-frozen":
        os.kill(_pid(settings, "ranking"), signal.SIGSTOP)


def recover(settings: Settings, fault: str) -> None:
    """Returns once the dependency serves again."""
    var = settings.var_dir
    if fault == "postgres":
        embedded.start_postgres(var)
    elif fault == "redis-empty":
        embedded.start_redis(var)
    elif fault in ("ranking", "retrieval", "worker"):
        processes.start(settings, fault)
    elif fault == "ranking-frozen":
        os.kill(_pid(settings, "ranking"), signal.SIGCONT)


async def run_fault(load: Load, settings: Settings, fault: str, fault_s: float) -> Phase:
    load.phase = phase = Phase(fault)
    await asyncio.sleep(1.0)  # a healthy second first
    await asyncio.to_thread(inject, settings, fault)
    await asyncio.sleep(fault_s)
    await asyncio.to_thread(recover, settings, fault)
    phase.back_at = time.monotonic()
    while phase.first_full_s is None and time.monotonic() - phase.back_at < BACK_TIMEOUT_S:
        await asyncio.sleep(0.05)
    while time.monotonic() - phase.back_at < BACK_TIMEOUT_S:
        behind = await asyncio.to_thread(load.lagging)
        if not behind:
            phase.consistent_s = time.monotonic() - phase.back_at
            break
        phase.lagging = behind
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)
    return phase


def lost(settings: Settings, acked: dict[str, tuple[str, str]]) -> tuple[int, int]:
    """(acknowledged interactions missing from PostgreSQL, event ids stored more than once)."""
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT event_id, count(*) FROM interactions WHERE event_id = ANY(%s) GROUP BY event_id",
            (list(acked),)).fetchall()
    stored = dict(rows)
    return sum(1 for e in acked if e not in stored), sum(1 for n in stored.values() if n > 1)


# ------------------------------------------------------------------------------------ report


def row(p: Phase) -> dict[str, object]:
    lat = sorted(p.latencies_ms)
    return {
        "fault": p.fault, "calls": p.calls, "failed": sum(p.failed.values()),
        "failed_by_code": dict(p.failed), "degraded": p.degraded, "p99_ms": round(percentile(lat, 99), 1),
        "first_full_answer_s": None if p.first_full_s is None else round(p.first_full_s, 2),
        "acknowledged": p.acknowledged, "log_unavailable": p.unavailable,
        "features_consistent_s": None if p.consistent_s is None else round(p.consistent_s, 2),
        "lagging_users": [] if p.consistent_s is not None else p.lagging[:20],
    }


def table(rows: list[dict[str, object]]) -> str:
    head = ("fault", "calls", "failed", "degraded", "p99 ms", "first full answer s", "features consistent s",
            "acknowledged", "log UNAVAILABLE")
    keys = ("fault", "calls", "failed", "degraded", "p99_ms", "first_full_answer_s", "features_consistent_s",
            "acknowledged", "log_unavailable")
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for r in rows:
        failed = f"{r['failed']} {r['failed_by_code']}" if r["failed"] else "0"
        cells = [str(r[k]) if k != "failed" else failed for k in keys]
        lines.append("| " + " | ".join("n/a" if c == "None" else c for c in cells) + " |")
    return "\n".join(lines)


async def chaos(settings: Settings, faults: list[str], fault_s: float, rate: float, log_rate: float) -> dict:
    async with tls.aio_channel(settings.orchestrator_addr, settings) as channel:
        load = Load(pb_grpc.RecommenderStub(channel), Phase("warm-up"), settings=settings,
                    online=OnlineFeatures(settings))
        loops = [asyncio.create_task(load.paced(rate, load.recommend)),
                 asyncio.create_task(load.paced(log_rate, load.log))]
        phases = []
        for fault in faults:
            print(f"  {fault} ...", flush=True)
            phases.append(await run_fault(load, settings, fault, fault_s))
        load.phase = Phase("drain")
        deadline = time.monotonic() + 10
        while load.retry and time.monotonic() < deadline:  # the retried entries land
            await asyncio.sleep(0.1)
        load.running = False
        await asyncio.gather(*loops)
    missing, doubled = lost(settings, load.acked)
    return {"rows": [row(p) for p in phases], "acknowledged_total": len(load.acked), "lost": missing,
            "stored_twice": doubled, "unacknowledged_at_end": len(load.retry)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fault-s", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=40.0, help="Recommend calls per second")
    ap.add_argument("--log-rate", type=float, default=10.0, help="LogInteractions calls per second")
    ap.add_argument("--only", default=",".join(FAULTS), help="faults to inject, comma-separated")
    args = ap.parse_args(argv)
    faults = [f.strip() for f in args.only.split(",") if f.strip()]
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        print(f"--only: unknown fault {unknown[0]!r}; use some of {', '.join(FAULTS)}", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    require_serving(settings.orchestrator_addr, settings)
    if settings.database_url or settings.redis_url:
        print("make chaos stops the demo's embedded PostgreSQL and Redis: unset DATABASE_URL / REDIS_URL",
              file=sys.stderr)
        return 2
    settings = embedded.ensure_servers(settings)  # the running embedded servers' URLs
    print(f"chaos against {settings.orchestrator_addr}: {args.rate:g} Recommend/s ({DEADLINE_S * 1000:.0f} ms "
          f"deadline), {args.log_rate:g} LogInteractions/s, each fault held {args.fault_s:g} s")
    load_before = os.getloadavg()[0]
    result = asyncio.run(chaos(settings, faults, args.fault_s, args.rate, args.log_rate))
    result.update(when=datetime.now(UTC).isoformat(timespec="seconds"), machine=machine(),
                  load_before=load_before, fault_s=args.fault_s, rate=args.rate, log_rate=args.log_rate)
    text = table(result["rows"])
    print(text)
    print(f"interactions acknowledged {result['acknowledged_total']}, lost {result['lost']}, stored twice "
          f"{result['stored_twice']}, still unacknowledged at the end {result['unacknowledged_at_end']}")
    reports = ROOT / "reports"
    reports.mkdir(exist_ok=True)
    (reports / "chaos-latest.json").write_text(json.dumps(result, indent=2, default=str))
    (reports / "chaos-latest.md").write_text(f"# make chaos\n\n{result['when']}, load before {load_before:.2f}\n\n"
                                             f"{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
