"""The check that a stack is running before load is sent at it."""

from __future__ import annotations

import sys

from core.config import Settings
from recsys.processes import is_serving

NOT_RUNNING_EXIT = 2


def require_serving(addr: str, settings: Settings | None = None) -> None:
    """Exit 2 with what to do when nothing answers a gRPC health check at addr (TLS: the settings')."""
    if not is_serving(addr, timeout_s=2.0, settings=settings):
        print(f"no Recommender answers a health check at {addr}.\n"
              "start the stack first: make demo (or make serve)", file=sys.stderr)
        raise SystemExit(NOT_RUNNING_EXIT)
