"""The co-located deployment (RECSYS_DEPLOYMENT=colocated): the orchestrator's process serves retrieval
and ranking itself, through stubs over their servicers (core/in_process.py).

In process: a servicer's error reaches the orchestrator as the AioRpcError a remote call raises, so
the pipeline degrades the same way. Over real servers: a co-located orchestrator on the stack's data
answers as the separate services do, and is not ready without a model.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from core.config import Settings
from core.errors import InvalidArgument
from core.grpc_server import LIVENESS, handles_errors
from core.in_process import InProcessStub
from protos import internal_pb2 as ipb
from protos import recsys_pb2 as pb
from protos import recsys_pb2_grpc as pb_grpc
from recsys import processes
from tests.conftest import free_port, metrics_addrs, own_var_dir
from tests.pipeline_fakes import Box, GivenUser, no_deadline


class Failing:
    """A ranking servicer whose Rank fails as `error` says, behind the real error mapping."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    @handles_errors
    async def Rank(self, request: ipb.RankRequest, context: grpc.aio.ServicerContext) -> ipb.RankResponse:  # noqa: N802
        raise self.error


@pytest.mark.parametrize(("error", "code", "details"), [
    (InvalidArgument("candidates", "must hold 1 to 2000 candidates, got 0"), grpc.StatusCode.INVALID_ARGUMENT,
     "candidates: must hold 1 to 2000 candidates, got 0"),
    (RuntimeError("a bug"), grpc.StatusCode.INTERNAL, "internal error (RuntimeError)"),
])
def test_an_in_process_error_is_the_status_a_remote_call_raises(error: Exception, code: grpc.StatusCode,
                                                                  details: str) -> None:
    stub = InProcessStub(Failing(error), ["Rank"])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        asyncio.run(stub.Rank(ipb.RankRequest(), timeout=0.5))
    assert err.value.code() == code and err.value.details() == details


def test_a_failing_in_process_ranker_degrades_as_a_remote_one() -> None:
    box = Box(lists={"two_tower": [str(i) for i in range(1, 31)]},
              user=GivenUser(history={"u": [("50", "view")]}))
    box.rec.deps.ranking = InProcessStub(Failing(RuntimeError("a bug")), ["Rank"])
    resp = asyncio.run(box.rec.recommend(pb.RecommendRequest(user_id="u", k=5), no_deadline()))
    assert resp.degraded and resp.degraded_reasons == ["ranking failed (INTERNAL): retrieval order"]
    assert [i.item_id for i in resp.items] == ["1", "2", "3", "4", "5"]


pytestmark_integration = pytest.mark.integration


def _colocated(stack: Settings, tmp_path: Path, **changes: object) -> Settings:
    return replace(stack, deployment="colocated", orchestrator_addr=f"127.0.0.1:{free_port()}",
                   var_dir=own_var_dir(stack, tmp_path / "var"), **metrics_addrs(), **changes)


@pytestmark_integration
def test_a_colocated_orchestrator_answers_as_the_separate_services_do(
    stack: Settings, api: pb_grpc.RecommenderStub, tmp_path: Path,
) -> None:
    own = _colocated(stack, tmp_path)
    assert processes.services(own) == ("orchestrator", "worker")
    processes.start(own, "orchestrator")
    try:
        with grpc.insecure_channel(own.orchestrator_addr) as channel:
            colocated = pb_grpc.RecommenderStub(channel)
            for user_id in ("1", "196"):
                surface = f"co-{uuid.uuid4().hex[:8]}"  # a miss on both
                request = pb.RecommendRequest(user_id=user_id, k=10, debug=True, context=pb.Context(surface=surface))
                there, here = api.Recommend(request, timeout=10), colocated.Recommend(request, timeout=10)
                assert not here.degraded and here.model_version == there.model_version
                assert [i.item_id for i in here.items] == [i.item_id for i in there.items]
                assert here.items[0].score_parts and here.items[0].score == pytest.approx(there.items[0].score)
                ran = {s.stage for s in here.debug.stages if s.outcome == "ok"}
                assert {"scorer:ranker", "source:two_tower"} <= ran
    finally:
        processes.stop(own, "orchestrator")


@pytestmark_integration
def test_a_colocated_orchestrator_without_a_model_is_alive_but_not_ready(stack: Settings, tmp_path: Path) -> None:
    (tmp_path / "no-artifacts").mkdir()
    own = _colocated(stack, tmp_path, artifacts_dir=tmp_path / "no-artifacts")
    processes.start(own, "orchestrator")
    try:
        assert processes.is_serving(own.orchestrator_addr, 2.0, LIVENESS)
        assert not processes.is_serving(own.orchestrator_addr, 2.0)
    finally:
        processes.stop(own, "orchestrator")
