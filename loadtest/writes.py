"""`make bench`'s write rows: LogInteractions at 1 and 100 interactions per call, and freshness under
that load (from LogInteractions acknowledged to a Recommend answer that reflects it).

The traffic is its own: users named `bench-<run>-...` (created by LogInteractions, as a shop's new
users are), clicks on random catalogue items, each with an event id; removed again when the rows are
done (interactions, exposures, precomputed answers, users), so the next `recsys train` never sees them.
What stays behind: the Redis stream's entries and the Feast online rows the worker pushed for those
users, both keyed by user ids nobody else has.

Freshness: while the batch-1 load runs a second time (the first gives throughput, latency and CPU
without the probes' own calls), probes one after another, each a fresh bench user: Recommend
(the answer is cached), LogInteractions of a purchase of its first item, then the same Recommend again
until the item is gone (the seen filter); the time from the acknowledgement to that answer.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass

import grpc

from core.config import Settings
from loadtest.cpu import CpuMeter
from protos import recsys_pb2 as pb
from protos import recsys_pb2_grpc as pb_grpc
from storage.db import connect

N_ITEMS = 1682  # MovieLens-100K
USERS_PER_RUN = 500  # bench users the load spreads over
BATCHES = (1, 100)
PROBE_GIVE_UP_S = 5.0
TIMEOUT_S = 5.0
PREFIX = "bench-"


@dataclass
class WriteRow:
    deployment: str
    batch: int  # interactions per call
    concurrency: int
    calls: int
    calls_per_s: float
    entries_per_s: float
    p50_ms: float
    p99_ms: float
    rejected: int  # entries not accepted (none expected)
    errors: int  # calls that failed
    server_cpu_ms_per_entry: float | None
    cpu_ms_by_group: dict[str, float]
    freshness_p50_ms: float | None = None  # batch 1 only: acknowledged -> visible in Recommend
    freshness_p99_ms: float | None = None
    freshness_probes: int = 0
    freshness_missed: int = 0  # probes whose item was still recommended after PROBE_GIVE_UP_S


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, -(-len(ordered) * q // 100) - 1))] if ordered else 0.0


def _batch(tag: str, rng: random.Random, n: int, call: int) -> pb.LogInteractionsRequest:
    return pb.LogInteractionsRequest(interactions=[
        pb.Interaction(user_id=f"{PREFIX}{tag}-{rng.randrange(USERS_PER_RUN)}", item_id=str(rng.randint(1, N_ITEMS)),
                       type=pb.CLICK, event_id=f"{tag}-{call}-{j}") for j in range(n)])


async def _probe(stub: pb_grpc.RecommenderStub, user: str, key: tuple) -> float | None:
    """ms from the purchase's acknowledgement to the first answer without the item; None: never within the limit."""
    request = pb.RecommendRequest(user_id=user, k=10, context=pb.Context(surface="bench-fresh"))
    top = (await stub.Recommend(request, timeout=TIMEOUT_S, metadata=key)).items[0].item_id
    await stub.LogInteractions(pb.LogInteractionsRequest(interactions=[
        pb.Interaction(user_id=user, item_id=top, type=pb.PURCHASE, event_id=f"{user}-buy")]),
        timeout=TIMEOUT_S, metadata=key)
    acked = time.perf_counter()
    while time.perf_counter() - acked < PROBE_GIVE_UP_S:
        answer = await stub.Recommend(request, timeout=TIMEOUT_S, metadata=key)
        if all(i.item_id != top for i in answer.items):
            return (time.perf_counter() - acked) * 1000
        await asyncio.sleep(0.002)
    return None


async def _load(stubs: list[pb_grpc.RecommenderStub], batch: int, calls: int, concurrency: int, key: tuple,
                ) -> tuple[list[float], int, int]:
    """(latencies ms, entries rejected, calls failed) of `calls` LogInteractions of `batch` entries each."""
    tag = uuid.uuid4().hex[:8]
    rng = random.Random(batch)
    latencies: list[float] = []
    rejected = errors = 0
    next_call = iter(range(calls))

    async def worker(stub: pb_grpc.RecommenderStub) -> None:
        nonlocal rejected, errors
        for i in next_call:
            request = _batch(tag, rng, batch, i)
            start = time.perf_counter()
            try:
                resp = await stub.LogInteractions(request, timeout=TIMEOUT_S, metadata=key)
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            latencies.append((time.perf_counter() - start) * 1000)
            rejected += resp.rejected

    await asyncio.gather(*(worker(stubs[j % len(stubs)]) for j in range(concurrency)))
    return latencies, rejected, errors


async def _freshness(stubs: list[pb_grpc.RecommenderStub], batch: int, calls: int, concurrency: int, key: tuple,
                     probes: int) -> tuple[list[float], int]:
    """(ms per probe that saw its purchase, probes that never did) while the same load runs again."""
    tag = uuid.uuid4().hex[:8]
    fresh: list[float] = []
    missed = 0

    async def prober() -> None:
        nonlocal missed
        for j in range(probes):
            took = await _probe(stubs[-1], f"{PREFIX}{tag}-fresh-{j}", key)
            if took is None:
                missed += 1
            else:
                fresh.append(took)

    await asyncio.gather(_load(stubs, batch, calls, concurrency, key), prober())
    return fresh, missed


async def measure(stubs: list[pb_grpc.RecommenderStub], deployment: str, batch: int, calls: int, concurrency: int,
                  meter: CpuMeter, key: tuple, probes: int = 0) -> WriteRow:
    """The load alone (throughput, latency, CPU); then, with probes, the same load again with the probes
    beside it (freshness: their own Recommend calls stay out of the CPU figures)."""
    meter.start()
    started = time.perf_counter()
    latencies, rejected, errors = await _load(stubs, batch, calls, concurrency, key)
    wall = time.perf_counter() - started
    cpu = meter.stop()
    fresh, missed = await _freshness(stubs, batch, calls, concurrency, key, probes) if probes else ([], 0)
    entries = len(latencies) * batch
    by_group = {g: round(1000 * t / entries, 4) for g, t in cpu.items()} if entries else {}
    return WriteRow(
        deployment=deployment, batch=batch, concurrency=concurrency, calls=calls,
        calls_per_s=round(len(latencies) / wall, 1), entries_per_s=round(entries / wall, 1),
        p50_ms=round(_pct(latencies, 50), 3), p99_ms=round(_pct(latencies, 99), 3), rejected=rejected, errors=errors,
        server_cpu_ms_per_entry=round(sum(by_group.values()), 4) if by_group else None, cpu_ms_by_group=by_group,
        freshness_p50_ms=round(_pct(fresh, 50), 1) if fresh else None,
        freshness_p99_ms=round(_pct(fresh, 99), 1) if fresh else None,
        freshness_probes=probes, freshness_missed=missed,
    )


def clean_up(settings: Settings) -> int:
    """Remove every bench user and what they left in PostgreSQL; the number of users removed."""
    like = PREFIX.replace("-", "\\-") + "%"
    with connect(settings.database_url) as conn:
        for table in ("interactions", "exposures", "precomputed_recommendations"):
            conn.execute(f"DELETE FROM {table} WHERE user_id LIKE %s", (like,))  # noqa: S608 - fixed names
        removed = conn.execute("DELETE FROM users WHERE user_id LIKE %s", (like,)).rowcount
        conn.commit()
    return removed


COLUMNS = ("deployment", "interactions/call", "in flight", "calls", "calls/s", "interactions/s", "p50 ms", "p99 ms",
           "server CPU ms/interaction", "freshness p50 ms", "freshness p99 ms", "rejected", "errors")


def cells(row: WriteRow) -> list[str]:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    fresh_note = f" ({row.freshness_missed} of {row.freshness_probes} never)" if row.freshness_missed else ""
    return [row.deployment, str(row.batch), str(row.concurrency), str(row.calls), f"{row.calls_per_s:.0f}",
            f"{row.entries_per_s:.0f}", f"{row.p50_ms:.2f}", f"{row.p99_ms:.2f}",
            "-" if row.server_cpu_ms_per_entry is None else f"{row.server_cpu_ms_per_entry:.3f}",
            ms(row.freshness_p50_ms), ms(row.freshness_p99_ms) + fresh_note, str(row.rejected), str(row.errors)]
