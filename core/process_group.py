"""A server's helper processes (recsys/workers.py) and when they are ready.

The first process starts the others with the write end of a pipe each; a helper writes one byte
once its server is serving (`notify_ready`, called by core.grpc_server.serve). Until every helper
has, the first process's health says NOT_SERVING: a client connecting meanwhile would land on
the first process only (the kernel spreads connections over the listening sockets there are).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence

READY_FD_ENV = "RECSYS_READY_FD"
_waiting: list[int] = []  # read ends of the pipes of helpers not ready yet


def spawn(argv: Sequence[str], envs: Sequence[dict[str, str]],
          preexec_fn: Callable[[], None] | None = None) -> list[subprocess.Popen]:
    """One helper per environment, each told where to say it is ready."""
    procs = []
    for env in envs:
        read, write = os.pipe()
        procs.append(subprocess.Popen(list(argv), env={**env, READY_FD_ENV: str(write)}, pass_fds=(write,),
                                      stdin=subprocess.DEVNULL, preexec_fn=preexec_fn))
        os.close(write)
        os.set_blocking(read, False)
        _waiting.append(read)
    return procs


def helpers_ready() -> bool:
    """True once every helper said it serves (always, without helpers). A helper that exited first
    never does: the group stays not ready, and its log says why."""
    for fd in list(_waiting):
        try:
            said = os.read(fd, 1)
        except BlockingIOError:
            continue
        if said:
            _waiting.remove(fd)
            os.close(fd)
    return not _waiting


def notify_ready() -> None:
    """In a helper: tell the first process this one serves (a no-op elsewhere)."""
    fd = os.environ.pop(READY_FD_ENV, "")
    if fd:
        try:
            os.write(int(fd), b"r")
            os.close(int(fd))
        except OSError:  # the first process is gone: it will not count us
            pass
