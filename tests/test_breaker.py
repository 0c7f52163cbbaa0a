"""Circuit breakers (core/breaker.py, orchestrator/dependencies.py): in process, a real grpc.aio
server standing in for ranking (frozen, then answering again), no other servers; about 2 s."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from core.breaker import Breaker, CircuitOpen
from orchestrator.dependencies import grpc_down, guarded_channel
from protos import internal_pb2 as ipb
from protos import internal_pb2_grpc as ipb_grpc
from tests.conftest import free_port


class Down(Exception):
    pass


def test_opens_after_failures_in_a_row_and_ignores_other_errors() -> None:
    async def main() -> None:
        up = asyncio.Event()

        async def probe() -> None:
            if not up.is_set():
                raise Down("still down")

        b = Breaker("dep", probe, lambda e: isinstance(e, Down), threshold=3, probe_every_s=0.01)
        for exc in (Down(), Down(), ValueError("an answer that says no"), Down()):
            b.failure(exc)
        assert not b.is_open and b.failures == 1  # the ValueError is an answer: the run starts again
        for _ in range(3):
            b.failure(Down("refused"))
        assert b.is_open and b.trips == 1
        with pytest.raises(CircuitOpen, match="dep unavailable .*refused"):
            b.check()
        await asyncio.sleep(0.05)
        assert b.is_open  # the probe fails: stays open
        up.set()
        await asyncio.sleep(0.05)
        assert not b.is_open
        b.check()

    asyncio.run(main())


def test_guard_counts_failures_inside_it() -> None:
    async def main() -> None:
        b = Breaker("dep", asyncio.sleep, lambda e: isinstance(e, Down), threshold=2, probe_every_s=10)
        for _ in range(2):
            with pytest.raises(Down):
                async with b.guard():
                    raise Down
        with pytest.raises(CircuitOpen):
            async with b.guard():
                raise AssertionError("not called while open")
        b.stop()

    asyncio.run(main())


class FreezableRanking(ipb_grpc.RankingServicer):
    def __init__(self) -> None:
        self.frozen = True
        self.calls = 0

    async def Rank(self, request: ipb.RankRequest, context: grpc.aio.ServicerContext) -> ipb.RankResponse:
        self.calls += 1
        while self.frozen:
            await asyncio.sleep(0.01)
        return ipb.RankResponse(model_version="v1")


def test_frozen_service_costs_no_wait_once_detected_and_recovers_by_probe() -> None:
    async def main() -> None:
        addr = f"127.0.0.1:{free_port()}"
        server = grpc.aio.server()
        servicer = FreezableRanking()
        ipb_grpc.add_RankingServicer_to_server(servicer, server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        server.add_insecure_port(addr)
        await server.start()
        await health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        channel, breaker = guarded_channel("ranking", addr, [])
        stub = ipb_grpc.RankingStub(channel)
        try:
            for _ in range(breaker.threshold):  # frozen: each call waits out its deadline
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.Rank(ipb.RankRequest(), timeout=0.1)
                assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert breaker.is_open
            calls = servicer.calls
            start = time.perf_counter()
            with pytest.raises(CircuitOpen, match="ranking unavailable"):
                await stub.Rank(ipb.RankRequest(), timeout=0.1)
            assert time.perf_counter() - start < 0.02  # refused at once
            assert servicer.calls == calls  # and never sent

            servicer.frozen = False  # serving again: the health probe (not a request) closes it
            await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
            back = time.perf_counter()
            while breaker.is_open:
                assert time.perf_counter() - back < 2.0, "breaker still open 2 s after recovery"
                await asyncio.sleep(0.01)
            assert (await stub.Rank(ipb.RankRequest(), timeout=1.0)).model_version == "v1"
            assert not grpc_down(ValueError())
        finally:
            breaker.stop()
            await channel.close()
            await server.stop(None)

    asyncio.run(main())


def test_an_outage_is_logged_once_then_its_recovery(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from core.log_limit import Outage

    outage = Outage(logging.getLogger("loop"), "catalogue refresh", (ConnectionError,))
    with caplog.at_level(logging.WARNING, logger="loop"):
        for _ in range(100):
            outage.failed(ConnectionError("connection refused\nmore detail"))
        outage.ok()
        outage.ok()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and not any(r.exc_info for r in caplog.records)  # a dependency away: no traceback
    assert "catalogue refresh failed (ConnectionError: connection refused)" in lines[0]
    assert "works again" in lines[1] and "100 failed tries" in lines[1]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="loop"):
        try:
            raise KeyError("a bug")
        except KeyError as exc:
            outage.failed(exc)
    assert caplog.records[0].exc_info  # not a dependency: the traceback, once
