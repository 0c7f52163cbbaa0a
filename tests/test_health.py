"""Health that means something, over real gRPC: readiness ("" and the service names) is NOT_SERVING while
a service has no model loaded, liveness SERVING all along; `processes.start` says so in one line."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from core.config import Settings
from core.grpc_server import LIVENESS
from recsys import processes
from tests.conftest import free_port, metrics_addrs

pytestmark = pytest.mark.integration


def test_retrieval_without_a_model_is_alive_but_not_ready(
    stack: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    empty = replace(stack, artifacts_dir=tmp_path / "no-artifacts", var_dir=tmp_path / "var",
                    retrieval_addr=f"127.0.0.1:{free_port()}", **metrics_addrs())
    (tmp_path / "no-artifacts").mkdir()
    processes.start(empty, "retrieval")
    try:
        assert processes.is_serving(empty.retrieval_addr, 2.0, LIVENESS)
        assert not processes.is_serving(empty.retrieval_addr, 2.0)
        assert "retrieval is running but not ready (no model loaded?" in capsys.readouterr().err
    finally:
        processes.stop(empty, "retrieval")


def test_the_stacks_services_are_ready(stack: Settings) -> None:
    for name in processes.SERVICES:
        addr = processes.address(stack, name)
        assert processes.is_serving(addr, 2.0) and processes.is_serving(addr, 2.0, LIVENESS), name
