"""The orchestrator served by several processes on one address (RECSYS_ORCHESTRATOR_PROCESSES,
recsys/workers.py), over real servers: ready once all of them serve, connections spread over them,
their metrics summed by the first, a second stack on the address refused, all stopped together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from prometheus_client.mmap_dict import MmapedDict

from core.config import ROOT, Settings
from loadtest.cpu import with_children
from protos import recsys_pb2 as pb
from protos import recsys_pb2_grpc as pb_grpc
from recsys import processes, workers
from tests.conftest import free_port, metrics_addrs, own_var_dir

pytestmark = pytest.mark.integration


def _recommend_counts(metrics_dir: Path) -> dict[int, float]:
    """Per process (pid), Recommend calls in its own metric files."""
    counts: dict[int, float] = {}
    for path in metrics_dir.glob("histogram_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        for key, value, _ts, _pos in MmapedDict.read_all_values_from_file(str(path)):
            _metric, name, labels, _help = json.loads(key)
            # a histogram's file holds its buckets' own counts (not cumulative): they sum to its calls
            if name == "recsys_rpc_seconds_bucket" and labels.get("method") == "Recommend":
                counts[pid] = counts.get(pid, 0.0) + value
    return counts


def test_two_orchestrator_processes_share_the_address_and_the_load(stack: Settings, tmp_path: Path) -> None:
    own = replace(stack, orchestrator_addr=f"127.0.0.1:{free_port()}", orchestrator_processes=2,
                  var_dir=own_var_dir(stack, tmp_path / "var"), **metrics_addrs())
    processes.start(own, "orchestrator")
    try:
        deadline = time.monotonic() + 60  # ready once both serve
        while not processes.is_serving(own.orchestrator_addr, 1.0):
            assert time.monotonic() < deadline, "not ready"
            time.sleep(0.2)
        pids = with_children(int(processes.pid_file(own, "orchestrator").read_text()))
        assert len(pids) == 2

        calls = 0
        channels = [grpc.insecure_channel(own.orchestrator_addr, options=[("grpc.use_local_subchannel_pool", 1)])
                    for _ in range(8)]  # 8 connections: the kernel spreads them over both listeners
        try:
            for channel in channels:
                stub = pb_grpc.RecommenderStub(channel)
                for _ in range(3):
                    request = pb.RecommendRequest(user_id="1", k=5, context=pb.Context(surface=uuid.uuid4().hex[:8]))
                    assert len(stub.Recommend(request, timeout=10).items) == 5
                    calls += 1
        finally:
            for channel in channels:
                channel.close()

        per_process = _recommend_counts(workers.metrics_dir(own))
        assert set(per_process) == set(pids) and all(n > 0 for n in per_process.values()), per_process
        assert sum(per_process.values()) == calls
        with urllib.request.urlopen(f"http://{own.orchestrator_metrics_addr}/metrics", timeout=5) as page:
            text = page.read().decode()
        summed = [line for line in text.splitlines()
                  if line.startswith("recsys_rpc_seconds_count") and 'method="Recommend"' in line]
        assert sum(float(line.rsplit(" ", 1)[1]) for line in summed) == calls  # the first serves both's

        # a second orchestrator on the taken address says so in one line, without sharing the port
        second = subprocess.run([sys.executable, "-m", "recsys.cli", "serve", "orchestrator"], cwd=ROOT,
                                env={**os.environ, **own.to_env(), "RECSYS_VAR_DIR": str(tmp_path / "other")},
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 2 and "cannot listen on" in second.stderr, second.stderr[-500:]
        assert "Traceback" not in second.stderr
    finally:
        processes.stop(own, "orchestrator")
    for pid in pids:  # the first stopped the other with it
        deadline = time.monotonic() + 15
        while os.path.exists(f"/proc/{pid}") and "zombie" not in _state(pid):
            assert time.monotonic() < deadline, f"process {pid} still running"
            time.sleep(0.1)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:", 1)[1].split("\n", 1)[0].lower()
    except (OSError, IndexError):
        return "zombie"
