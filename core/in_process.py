"""Calling a gRPC servicer in this process as if over a channel: the co-located deployment.

In the co-located deployment (Settings.deployment, docs/benchmarks.md) the orchestrator's process
holds the retrieval and ranking servicers themselves and calls them through an InProcessStub: the
same request and response messages, the same validation and error mapping (the servicers'
handles_errors), but no serialization, no socket, no second server and no second process. A
failure arrives as the AioRpcError a remote call would raise, with the same status code, so the
orchestrator's fail-open paths and failure notes cannot tell the two deployments apart.

What a remote call has and this one does not: a deadline that interrupts the callee (a local call
runs to the end on the event loop; the callee's own work is a few milliseconds of CPU), and
isolation (a crash or a slow model takes the orchestrator with it). The separate services stay for
that, and for scaling retrieval and ranking apart from the orchestrator.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

Method = Callable[[Any, Any], Awaitable[Any]]


class LocalContext:
    """The part of grpc.aio.ServicerContext the servicers use (handles_errors aborts): abort() raises what a
    client would see."""

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> None:
        raise grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


_CONTEXT = LocalContext()


class InProcessStub:
    """A stub over a servicer object: `stub.Method(request, timeout=...)` awaits servicer.Method(request, ctx)."""

    def __init__(self, servicer: object, methods: Sequence[str]) -> None:
        for name in methods:
            setattr(self, name, _bound(getattr(servicer, name)))


def _bound(method: Method) -> Callable[..., Awaitable[Any]]:
    async def call(request: Any, timeout: float | None = None, metadata: Any = None) -> Any:
        # the request object itself, not a copy: no servicer changes its request
        return await method(request, _CONTEXT)

    return call


@dataclass
class Backend:
    """An internal service loaded in a process: its servicer, readiness, and what to stop at shutdown."""

    servicer: Any
    healthy: Callable[[], bool]
    tasks: list[Any] = field(default_factory=list)  # background asyncio tasks (model watchers, live sync)
    on_close: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for f in self.on_close:
            f()
