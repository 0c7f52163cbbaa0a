"""Several processes serving the orchestrator's one address, so a box's cores all serve it.

`recsys serve orchestrator` with RECSYS_ORCHESTRATOR_PROCESSES=N (N > 1) starts N-1 more
processes of the same command; every one binds the address with SO_REUSEPORT and the kernel
spreads incoming connections over them (a client's connection stays with one process: a fleet of
clients, or a client with several channels, uses them all). Each process is a whole orchestrator
(its own pool, caches, exposure buffer and, co-located, its own copy of the model): nothing is
shared but PostgreSQL and Redis, so the processes need no coordination. The first one is the one
`recsys stop` signals (its pid is in the pid file); the others stop with it, and die with it should
it be killed outright. The first one is ready (its health says SERVING) once all of them serve
(core/process_group.py). Their metrics are summed by the first one (core/metrics.py).

One process per core is the usual size (each is single-threaded on its event loop); the
benchmark in docs/benchmarks.md measured what the second one buys on two cores.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core import process_group
from core.config import Settings
from core.tls import AddressInUse

INDEX_ENV = "RECSYS_PROCESS_INDEX"  # 0 (or unset): the first process; 1..N-1: the ones it started
METRICS_DIR_ENV = "RECSYS_METRICS_DIR"
_PR_SET_PDEATHSIG = 1


def process_index() -> int:
    return int(os.environ.get(INDEX_ENV, "0") or 0)


def metrics_dir(settings: Settings) -> Path:
    return settings.var_dir / "run" / "metrics-orchestrator"


def prepare(settings: Settings) -> None:
    """Before anything imports core.metrics: the first of several processes makes an empty metrics
    directory and names it in the environment, which the others inherit."""
    if settings.orchestrator_processes == 1 or process_index() != 0:
        return
    path = metrics_dir(settings)
    shutil.rmtree(path, ignore_errors=True)  # a previous run's counts are not this one's
    path.mkdir(parents=True)
    os.environ[METRICS_DIR_ENV] = str(path)


def require_free(addr: str) -> None:
    """A plain bind (no SO_REUSEPORT) fails when anything listens at addr: a second stack is refused
    instead of silently sharing the port with the first."""
    host, _, port = addr.rpartition(":")
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host.strip("[]") or "0.0.0.0", int(port)))
        except OSError as exc:
            raise AddressInUse(f"cannot listen on {addr}: {exc.strerror or exc}") from None


@contextmanager
def helpers(settings: Settings, service: str = "orchestrator") -> Iterator[list[subprocess.Popen]]:
    """In the first process: the other processes, started now, stopped (SIGTERM: they drain) on exit."""
    n = settings.orchestrator_processes
    if n == 1 or process_index() != 0:
        yield []
        return
    require_free(settings.orchestrator_addr)
    procs = process_group.spawn([sys.executable, "-m", "recsys.cli", "serve", service],
                                [{**os.environ, INDEX_ENV: str(i)} for i in range(1, n)], _die_with_parent)
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the first process dies, however it died."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
