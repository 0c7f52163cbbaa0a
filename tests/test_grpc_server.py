"""The serving processes' shared startup: what loading made is frozen, the collector runs again, and a
hot swap still frees the old version."""

from __future__ import annotations

import gc
import shutil
import weakref
from pathlib import Path

import pytest

from core.config import Settings
from core.grpc_server import freeze_loaded_objects


def test_loaded_objects_are_frozen_and_collection_is_enabled_again() -> None:
    loaded = [{"item": i} for i in range(1000)]  # stands for what a service loads
    gc.disable()  # as `recsys serve` does while the service loads
    try:
        freeze_loaded_objects()
        assert gc.isenabled(), "collection must run again once serving (cyclic garbage would pile up)"
        assert gc.get_freeze_count() >= len(loaded)
        assert not any(d is loaded[0] for d in gc.get_objects())  # frozen objects are out of the collector's view
    finally:
        gc.unfreeze()
        gc.enable()


@pytest.mark.integration
def test_a_hot_swap_frees_the_old_version_although_startup_objects_are_frozen(
    stack: Settings, tmp_path: Path
) -> None:
    """Frozen objects are never walked by the collector: an old version kept alive by a reference cycle
    would never be freed (at 10M items, 3 GB per swap). Reference counting must free it. (Ranking holds the
    previous version's ranker on purpose, for requests retrieval answered with it: it goes one swap later.)"""
    from ranking.ranker import RankerSlot
    from retrieval.retriever import Retriever

    version = (stack.artifacts_dir / "CURRENT").read_text().strip()
    for name in (version, f"{version}-next", f"{version}-third"):
        shutil.copytree(stack.artifacts_dir / version, tmp_path / name)
    (tmp_path / "CURRENT").write_text(version)
    retriever, slot = Retriever(tmp_path), RankerSlot(artifacts_dir=tmp_path)
    assert retriever.load() and slot.refresh() and slot.ranker is not None
    try:
        freeze_loaded_objects()
        served, index, ranker = weakref.ref(retriever.served), weakref.ref(retriever.served.index), weakref.ref(
            slot.ranker)
        (tmp_path / "CURRENT").write_text(f"{version}-next")
        assert retriever.load() and slot.refresh()
        assert served() is None and index() is None
        assert ranker() is not None and slot.for_version(version) is ranker()  # the previous version's, kept
        (tmp_path / "CURRENT").write_text(f"{version}-third")
        assert slot.refresh() and ranker() is None
    finally:
        gc.unfreeze()


SLOW_SERVER = """
import asyncio, sys
import grpc
from core.grpc_server import serve
from protos import internal_pb2 as ipb, internal_pb2_grpc as ipb_grpc

class Slow(ipb_grpc.RankingServicer):
    async def Rank(self, request, context):
        open(sys.argv[2], "a").close()  # the test sends SIGTERM once calls are in flight
        await asyncio.sleep(0.3)
        return ipb.RankResponse(model_version="done")

asyncio.run(serve(sys.argv[1], ["Ranking"], lambda s: ipb_grpc.add_RankingServicer_to_server(Slow(), s)))
"""


def test_sigterm_drains_calls_in_flight_and_refuses_new_ones_with_unavailable(tmp_path: Path) -> None:
    """A graceful stop under load: every call either finishes or is refused with UNAVAILABLE (which a
    client retries); none is CANCELLED (gRPC's own stop cancels the calls it queued, ~60% of them)."""
    import asyncio
    import collections
    import signal
    import subprocess
    import sys
    import time

    import grpc

    from core.config import ROOT
    from protos import internal_pb2 as ipb
    from protos import internal_pb2_grpc as ipb_grpc
    from recsys.processes import is_serving
    from tests.conftest import free_port

    addr = f"127.0.0.1:{free_port()}"
    started = tmp_path / "started"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SERVER, addr, str(started)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60  # a loaded machine takes seconds to import grpc and the protos
        while not is_serving(addr, 0.2):
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.05)
        codes: collections.Counter[str] = collections.Counter()

        async def load() -> None:
            async with grpc.aio.insecure_channel(addr) as channel:
                stub = ipb_grpc.RankingStub(channel)

                async def one() -> None:
                    try:
                        await stub.Rank(ipb.RankRequest(), timeout=5)
                        codes["OK"] += 1
                    except grpc.aio.AioRpcError as exc:
                        codes[exc.code().name] += 1

                calls = [asyncio.create_task(one()) for _ in range(30)]
                while not started.exists():  # the first ones sleeping in the handler, the rest queued
                    assert time.monotonic() < deadline, "no call reached the handler"
                    await asyncio.sleep(0.01)
                proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.05)
                calls += [asyncio.create_task(one()) for _ in range(10)]  # during the drain
                await asyncio.gather(*calls)

        asyncio.run(load())
        assert proc.wait(10) == 0
        assert codes["OK"] > 0 and codes["UNAVAILABLE"] > 0, codes
        assert set(codes) == {"OK", "UNAVAILABLE"}, codes
    finally:
        if proc.poll() is None:
            proc.kill()


def test_reflection_can_be_switched_off(tmp_path: Path) -> None:
    """RECSYS_REFLECTION=off: grpcurl-style listing is refused; health still answers."""
    import subprocess
    import sys
    import time

    import grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    from core.config import ROOT
    from recsys.processes import is_serving
    from tests.conftest import free_port

    def listed(reflect: bool) -> list[str] | None:
        addr = f"127.0.0.1:{free_port()}"
        code = ("import asyncio, sys; from core.grpc_server import serve; "
                f"asyncio.run(serve(sys.argv[1], ['Ranking'], lambda s: None, reflect={reflect}))")
        proc = subprocess.Popen([sys.executable, "-c", code, addr], cwd=ROOT)
        try:
            deadline = time.monotonic() + 60
            while not is_serving(addr, 0.2):
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            with grpc.insecure_channel(addr) as channel:
                stub = reflection_pb2_grpc.ServerReflectionStub(channel)
                try:
                    replies = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
                        list_services="")]), timeout=5))
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNIMPLEMENTED
                    return None
            return [s.name for s in replies[0].list_services_response.service]
        finally:
            proc.terminate()
            proc.wait(10)

    assert "recsys.v1.Ranking" in (listed(True) or [])
    assert listed(False) is None
