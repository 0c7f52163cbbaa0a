"""Every service's /metrics over real HTTP against the running stack: Prometheus text format, calls
per RPC and code; the orchestrator's per-component histograms and degraded-by-stage counter move when
Recommend runs with ranking stopped."""

from __future__ import annotations

import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.config import Settings
from protos import recsys_pb2 as pb
from protos import recsys_pb2_grpc as pb_grpc
from recsys import processes
from tests.faults import eventually

pytestmark = pytest.mark.integration


def scrape(addr: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, from http://addr/metrics."""
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_every_service_exports_its_calls_and_what_it_serves(stack: Settings, api: pb_grpc.RecommenderStub) -> None:
    api.Recommend(pb.RecommendRequest(user_id="1", k=5, context=pb.Context(surface=f"m-{uuid.uuid4().hex[:6]}")),
                  timeout=10)
    orchestrator = scrape(stack.orchestrator_metrics_addr)
    assert value(orchestrator, "recsys_rpc_seconds_count", method="Recommend", code="OK") >= 1
    assert value(orchestrator, "recsys_dependency_up", dependency="PostgreSQL") == 1
    assert value(orchestrator, "recsys_orchestrator_events_total", event="cache_miss") >= 1
    assert any(name == "recsys_model_version_info" and dict(labels)["version"] for name, labels in orchestrator)
    for addr, method, info in ((stack.retrieval_metrics_addr, "Retrieve", "recsys_model_version_info"),
                               (stack.ranking_metrics_addr, "Rank", "recsys_ranker_version_info")):
        samples = scrape(addr)
        assert value(samples, "recsys_rpc_seconds_count", method=method, code="OK") >= 1
        assert any(name == info for name, _ in samples)
    worker = scrape(stack.worker_metrics_addr)
    assert value(worker, "recsys_worker_healthy") == 1


def test_component_histograms_and_degraded_answers_move_with_ranking_stopped(
    stack: Settings, api: pb_grpc.RecommenderStub,
) -> None:
    ranker = {"pipeline": "recommend", "stage": "scorer:ranker"}
    before = scrape(stack.orchestrator_metrics_addr)
    assert processes.stop(stack, "ranking")
    try:
        for i in range(5):
            resp = api.Recommend(pb.RecommendRequest(user_id=str(20 + i), k=5, context=pb.Context(
                surface=f"m-{uuid.uuid4().hex[:6]}")), timeout=10)
            assert resp.degraded
    finally:
        processes.start(stack, "ranking")
    after = scrape(stack.orchestrator_metrics_addr)
    eventually(lambda: not api.Recommend(pb.RecommendRequest(user_id="20", k=5, context=pb.Context(
        surface=f"m-{uuid.uuid4().hex[:6]}")), timeout=10).degraded)  # the breaker's probe lets ranking back
    failed = value(after, "recsys_component_seconds_count", **ranker, outcome="failed") - value(
        before, "recsys_component_seconds_count", **ranker, outcome="failed")
    assert failed == 5
    degraded = value(after, "recsys_degraded_answers_total", rpc="recommend", stage="scorer:ranker") - value(
        before, "recsys_degraded_answers_total", rpc="recommend", stage="scorer:ranker")
    assert degraded == 5
    source = {"pipeline": "recommend", "stage": "source:two_tower", "outcome": "ok"}
    assert value(after, "recsys_component_seconds_count", **source) > value(
        before, "recsys_component_seconds_count", **source)
    assert value(after, "recsys_component_candidates_total", pipeline="recommend", stage="scorer:ranker",
                 direction="in") > 0


def test_recsys_status_shows_every_service_ready_with_its_rate(stack: Settings, api: pb_grpc.RecommenderStub) -> None:
    from recsys.status import status

    for _ in range(3):
        api.Recommend(pb.RecommendRequest(user_id="1", k=5), timeout=10)
    lines = status(stack, window_s=0.5).splitlines()
    assert lines[0].split()[:3] == ["service", "health", "model"]
    by_service = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(by_service) == {"retrieval", "ranking", "orchestrator", "worker"}
    assert all(cols[1] == "ready" for cols in by_service.values()), lines
    assert by_service["orchestrator"][2] == by_service["retrieval"][2]  # one model version across the stack


def test_quantile_reads_a_cumulative_histogram() -> None:
    from recsys.status import delta, quantile

    cumulative = {0.001: 50.0, 0.01: 98.0, 0.1: 100.0, float("inf"): 100.0}
    assert quantile(cumulative, 0.5) == 0.001 and quantile(cumulative, 0.99) == 0.1
    assert quantile({0.1: 0.0, float("inf"): 0.0}, 0.99) is None
    assert delta(cumulative, {0.001: 50.0, 0.01: 50.0, 0.1: 50.0, float("inf"): 50.0})[0.01] == 48.0
