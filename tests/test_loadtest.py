"""The load test and benchmark harnesses against a stand-in Recommender server.

They are clients, so what is tested is that they drive the API correctly and report
what they saw; the stand-in answers like the orchestrator would (cache hits after a
first answer, per-interaction results). No timing is asserted.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from loadtest import bench, run
from loadtest.cpu import CpuMeter
from protos import recsys_pb2 as pb
from protos import recsys_pb2_grpc as pb_grpc


class StandIn(pb_grpc.RecommenderServicer):
    """Answers Recommend and LogInteractions; caches per user+surface like the orchestrator."""

    def __init__(self) -> None:
        self.cached: set[tuple[str, str]] = set()
        self.recommends = 0
        self.logged = 0

    def Recommend(self, request: pb.RecommendRequest, context: grpc.ServicerContext) -> pb.RecommendResponse:  # noqa: N802
        if not request.user_id:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "user_id is required")
        self.recommends += 1
        key = (request.user_id, request.context.surface)
        response = pb.RecommendResponse(
            request_id="r", model_version="v-test",
            items=[pb.ScoredItem(item_id=str(i), score=1.0 / i) for i in range(1, request.k + 1)],
        )
        if request.debug:
            response.debug.cache_hit = key in self.cached
        else:
            self.cached.add(key)
        return response

    def LogInteractions(  # noqa: N802
        self, request: pb.LogInteractionsRequest, context: grpc.ServicerContext
    ) -> pb.LogInteractionsResponse:
        self.logged += len(request.interactions)
        ok = [i.user_id and i.item_id and i.type != pb.INTERACTION_TYPE_UNSPECIFIED for i in request.interactions]
        return pb.LogInteractionsResponse(
            accepted=sum(ok), rejected=len(ok) - sum(ok),
            results=[pb.InteractionResult(index=n, accepted=bool(a)) for n, a in enumerate(ok)],
        )


@pytest.fixture
def stand_in() -> Iterator[tuple[str, StandIn]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    servicer = StandIn()
    pb_grpc.add_RecommenderServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", servicer
    server.stop(None)


def _free_addr() -> str:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")  # bound but never started: nothing answers there
    server.stop(None)
    return f"127.0.0.1:{port}"


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert bench.percentile(values, 50) == 50.0
    assert bench.percentile(values, 99) == 99.0
    assert bench.percentile(values, 100) == 100.0
    assert bench.percentile([7.0], 95) == 7.0
    assert bench.percentile([], 50) == 0.0


def test_run_time_spans() -> None:
    assert run.run_time_seconds("30s") == 30
    assert run.run_time_seconds("1m30s") == 90
    assert run.run_time_seconds("45") == 45
    with pytest.raises(ValueError):
        run.run_time_seconds("soon")


def test_miss_requests_never_repeat_a_cache_key() -> None:
    make = bench.miss_requests("t", k=10)
    keys = {(r.user_id, r.context.surface, r.k) for r in map(make, range(500))}
    assert len(keys) == 500


def test_bench_measures_every_scenario_and_writes_reports(stand_in: tuple[str, StandIn], tmp_path: Path) -> None:
    addr, servicer = stand_in
    rows, notes = asyncio.run(bench.bench(addr, calls=40, levels=[1, 4], k=5, meter=CpuMeter({"me": [os.getpid()]},
                                                                                               databases=False)))

    assert [(r.scenario, r.concurrency) for r in rows] == [("miss", 1), ("miss", 4), ("hit", 1), ("hit", 4)]
    assert all(r.calls == 40 and r.errors == 0 and r.p50_ms <= r.p95_ms <= r.p99_ms <= r.max_ms for r in rows)
    assert notes["cache_hit_verified"] is True and notes["model_version"] == "v-test"
    assert servicer.recommends >= 4 * 40 + bench.WARMUP_CALLS
    # the stand-in serves in this process: its CPU is what the meter saw, per call
    assert all(r.server_cpu_ms is not None and r.server_cpu_ms > 0 and set(r.cpu_ms_by_group) == {"me"}
               for r in rows)

    empty = bench.Row("empty", 40, 8, 1, 1, 1, 1, req_per_s=1000.0, errors=0, degraded=0)
    rows = bench.with_ratios([empty, *rows])
    assert rows[0].vs_empty == 1.0 and rows[1].vs_empty == round(rows[1].req_per_s / 1000.0, 4)

    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nbefore\n")
    report = {"timestamp": "t", "target": addr, "settings": {}, "machine": bench.machine(), "notes": notes,
              "results": [bench.asdict(r) for r in rows]}
    for _ in range(2):  # a second run replaces the first one's table
        json_path, md_path = bench.write_reports(report, tmp_path, doc)
    assert json.loads(json_path.read_text())["machine"]["nproc"] >= 1
    assert "| - | hit | 4 | 40 |" in md_path.read_text()
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nbefore\n") and text.count(bench.MARK_START) == 1
    assert "| - | empty | 8 | 40 | 1000 |" in text


def test_bench_and_loadtest_refuse_without_a_stack(capsys: pytest.CaptureFixture[str]) -> None:
    addr = _free_addr()
    for main in (bench.main, run.main):
        with pytest.raises(SystemExit) as exited:
            main(["--addr", addr])
        assert exited.value.code == 2
        assert "start the stack first: make demo (or make serve)" in capsys.readouterr().err


def test_locust_run_sends_both_tasks(stand_in: tuple[str, StandIn], tmp_path: Path) -> None:
    addr, servicer = stand_in
    prefix = tmp_path / "lt"
    rc = run.main(["--addr", addr, "--users", "4", "--spawn-rate", "4", "--run-time", "4s", "--csv", str(prefix)])

    assert rc == 0
    with open(f"{prefix}_stats.csv") as f:
        stats = {row["Name"]: row for row in csv.DictReader(f)}
    recommend = stats["/recsys.v1.Recommender/Recommend"]
    assert recommend["Type"] == "grpc" and int(recommend["Request Count"]) > 0
    assert int(recommend["Failure Count"]) == 0
    log = stats["/recsys.v1.Recommender/LogInteractions"]
    assert int(log["Request Count"]) > 0 and int(log["Failure Count"]) == 0
    assert servicer.recommends > 0 and servicer.logged > 0


def test_chaos_names_an_unknown_fault_in_one_line(capsys) -> None:  # noqa: ANN001
    from loadtest import chaos

    assert chaos.main(["--only", "postgres,disk"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["--only: unknown fault 'disk'; use some of " + ", ".join(chaos.FAULTS)]


def test_chaos_table_shows_failures_by_code() -> None:
    from loadtest.chaos import Phase, row, table

    p = Phase("postgres", calls=3, degraded=1, latencies_ms=[1.0, 2.0, 250.0], back_at=0.0, first_full_s=0.5)
    p.failed["DEADLINE_EXCEEDED"] += 1
    text = table([row(p)])
    assert "| postgres | 3 | 1 {'DEADLINE_EXCEEDED': 1} | 1 | 250.0 | 0.5 | n/a |" in text
