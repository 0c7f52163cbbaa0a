"""CPU time of the processes serving a benchmark, read from /proc (Linux).

A benchmark's "server CPU per call" is the CPU the stack's processes, PostgreSQL's and Redis's
spent during a scenario, divided by its calls: throughput on a shared machine says little
about what a request costs, CPU per call says what a fleet of them would need.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
DATABASES = ("postgres", "redis-server")  # by command name: the machine's own or the embedded ones


def _stat(pid: int) -> tuple[str, float] | None:
    """(command name, user+system CPU seconds) of one process; None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    return name, (int(fields[11]) + int(fields[12])) * TICK_S  # utime, stime (fields 14, 15)


def database_pids() -> list[int]:
    """Every PostgreSQL and Redis process on the machine (a new backend per connection: list them again
    at each reading)."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None and st[0].startswith(DATABASES):
                pids.append(int(entry.name))
    return pids


def with_children(pid: int) -> list[int]:
    """pid and its child processes (a service of several processes: recsys/workers.py)."""
    out = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


class CpuMeter:
    """Per group of processes, CPU seconds between start() and stop()."""

    def __init__(self, groups: dict[str, Iterable[int]], databases: bool = True) -> None:
        self.groups = {name: list(pids) for name, pids in groups.items()}
        self.databases = databases
        self._start: dict[str, dict[int, float]] = {}

    def _read(self) -> dict[str, dict[int, float]]:
        groups = dict(self.groups)
        if self.databases:
            groups["postgres+redis"] = database_pids()
        out: dict[str, dict[int, float]] = {}
        for name, pids in groups.items():
            out[name] = {}
            for pid in pids:
                st = _stat(pid)
                if st is not None:
                    out[name][pid] = st[1]
        return out

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> dict[str, float]:
        """CPU seconds per group since start(); a process that appeared since counts from zero."""
        end = self._read()
        return {name: sum(t - self._start.get(name, {}).get(pid, 0.0) for pid, t in pids.items())
                for name, pids in end.items()}
