"""Starting, watching and stopping the three services as separate processes.

Each service runs as `python -m recsys.cli serve NAME` with the parent's settings in
its environment, logs to var/log/NAME.log and records its pid in var/run/NAME.pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from core import tls
from core.config import ROOT, Settings
from core.grpc_server import LIVENESS
from core.service_auth import with_service_token

# Start order matters: the orchestrator calls retrieval and ranking.
SERVICES = ("retrieval", "ranking", "orchestrator", "worker")
IN_ORCHESTRATOR = ("retrieval", "ranking")  # co-located: served inside the orchestrator's process


def services(settings: Settings) -> tuple[str, ...]:
    """The processes a stack of this deployment runs (Settings.deployment), in start order."""
    if settings.deployment == "colocated":
        return tuple(name for name in SERVICES if name not in IN_ORCHESTRATOR)
    return SERVICES


def address(settings: Settings, name: str) -> str:
    return {"retrieval": settings.retrieval_addr, "ranking": settings.ranking_addr,
            "orchestrator": settings.orchestrator_addr, "worker": settings.worker_addr}[name]


def pid_file(settings: Settings, name: str) -> Path:
    return settings.var_dir / "run" / f"{name}.pid"


def log_file(settings: Settings, name: str) -> Path:
    return settings.var_dir / "log" / f"{name}.log"


def side_var_dir(settings: Settings, var_dir: Path) -> Path:
    """A var dir of its own (pid files, logs) for a stack or process beside this one, holding a copy of
    its Feast registry (which lives in var_dir): what ranking, in process or not, reads features with."""
    import shutil

    if (var_dir / "feast").exists():
        shutil.rmtree(var_dir / "feast")
    shutil.copytree(settings.var_dir / "feast", var_dir / "feast")
    return var_dir


def is_serving(addr: str, timeout_s: float = 1.0, service: str = "", settings: Settings | None = None) -> bool:
    """The health check of `service` ("" = readiness, LIVENESS = the process answers) says SERVING;
    over TLS when the settings configure it (None: plaintext)."""
    try:
        with tls.channel(addr, settings or Settings()) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                               timeout=timeout_s)
        return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def start(settings: Settings, name: str, timeout_s: float = 120.0) -> subprocess.Popen:
    """Start one service in the background and wait until its health check says SERVING."""
    tls.server_tls(settings)  # TLS settings that cannot work: TlsConfigError here, not a service that never answers
    for d in ("run", "log"):
        (settings.var_dir / d).mkdir(parents=True, exist_ok=True)
    log = open(log_file(settings, name), "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "recsys.cli", "serve", name],
        env={**os.environ, **settings.to_env()}, stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, cwd=ROOT, start_new_session=True,  # survives the CLI's exit and Ctrl-C
    )
    log.close()
    pid_file(settings, name).write_text(str(proc.pid))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}; see {log_file(settings, name)}")
        if is_serving(address(settings, name), 0.5, LIVENESS, settings):
            # several orchestrator processes load at once and are ready together: give them longer
            more = 10.0 * (settings.orchestrator_processes - 1) if name == "orchestrator" else 0.0
            _report_readiness(settings, name, deadline, 5.0 + more)
            return proc
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError(f"{name} did not become healthy in {timeout_s:.0f} s; see {log_file(settings, name)}")


def _report_readiness(settings: Settings, name: str, deadline: float, wait_s: float = 5.0) -> None:
    """A started service that is not ready (no model loaded, a server it needs away) says so."""
    until = min(deadline, time.monotonic() + wait_s)
    while not is_serving(address(settings, name), 0.5, settings=settings):
        if time.monotonic() >= until:
            print(f"warning: {name} is running but not ready (no model loaded? run `recsys train`); "
                  f"see {log_file(settings, name)}", file=sys.stderr)
            return
        time.sleep(0.1)


def start_all(settings: Settings) -> Settings:
    """Start every service; with no service token configured, they share one generated for them."""
    settings = with_service_token(settings)
    for name in services(settings):
        start(settings, name)
    return settings


def stop(settings: Settings, name: str, timeout_s: float = 15.0) -> bool:
    """SIGTERM (graceful), then SIGKILL after timeout_s. True when something was stopped."""
    path = pid_file(settings, name)
    if not path.exists():
        return False
    pid = int(path.read_text())
    path.unlink()
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        _reap(pid)
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)  # our own child: collect it so it does not linger as a zombie
    except ChildProcessError:
        pass


def stop_all(settings: Settings) -> list[str]:
    return [name for name in reversed(SERVICES) if stop(settings, name)]
