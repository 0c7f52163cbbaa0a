"""OpenTelemetry over real processes: an orchestrator, retrieval and ranking of the test's own (the
session stack's database, Redis and model) with OTEL_TRACES_EXPORTER=console, so each writes its
spans to its log; one Recommend gives one trace with spans from all three and the request id."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from core.config import Settings
from protos import recsys_pb2 as pb
from protos import recsys_pb2_grpc as pb_grpc
from recsys import processes
from tests.conftest import free_port, metrics_addrs

pytestmark = pytest.mark.integration
TRACED = ("retrieval", "ranking", "orchestrator")


def spans(settings: Settings, name: str) -> list[dict]:
    """The spans a service wrote to its log (one JSON object per line)."""
    out = []
    for line in processes.log_file(settings, name).read_text().splitlines():
        if line.startswith('{"name"'):
            out.append(json.loads(line))
    return out


def test_one_recommend_is_one_trace_across_the_three_services(
    stack: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    own = replace(stack, var_dir=tmp_path / "var", orchestrator_addr=f"127.0.0.1:{free_port()}",
                  retrieval_addr=f"127.0.0.1:{free_port()}", ranking_addr=f"127.0.0.1:{free_port()}",
                  **metrics_addrs())
    (own.var_dir / "feast").mkdir(parents=True)  # the stack's Feast registry; pid files and logs of our own
    shutil.copy(stack.var_dir / "feast" / "registry.db", own.var_dir / "feast" / "registry.db")
    for name in TRACED:
        processes.start(own, name)
    try:
        with grpc.insecure_channel(own.orchestrator_addr) as channel:
            resp = pb_grpc.RecommenderStub(channel).Recommend(pb.RecommendRequest(
                user_id="3", k=5, context=pb.Context(surface=f"t-{uuid.uuid4().hex[:6]}")), timeout=10)
        assert not resp.degraded
        deadline = time.monotonic() + 10
        while True:  # a server span is written when it ends, just after the answer
            rpc = [s for s in spans(own, "orchestrator") if s["name"].endswith("/Recommend")
                   and s["attributes"].get("recsys.request_id") == resp.request_id]
            if rpc or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert rpc, "no Recommend span carrying the request id"
        trace_id = rpc[0]["context"]["trace_id"]
        in_trace = {name: [s["name"] for s in spans(own, name) if s["context"]["trace_id"] == trace_id]
                    for name in TRACED}
        assert any(n.endswith("/Retrieve") for n in in_trace["retrieval"]), in_trace
        assert any(n.endswith("/Rank") for n in in_trace["ranking"]), in_trace
        assert {"query_hydrator:user", "scorer:ranker"} <= set(in_trace["orchestrator"]), in_trace
    finally:
        for name in reversed(TRACED):
            processes.stop(own, name)
