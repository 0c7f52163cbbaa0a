"""Calling a gRPC servicer in this process as if over a channel: the co-located deployment.

In the co-located deployment (Settings.deployment, docs/benchmarks.md) the orchestrator's process
holds the retrieval and ranking servicers themselves and calls them through an InProcessStub: the
same request and response messages, the same validation and error mapping (the servicers'
handles_errors), but no serialization, no socket, no second server and no second process. A
failure arrives as the AioRpcError a remote call would raise, with the same status code, so the
orchestrator's fail-open paths and failure notes cannot tell the two deployments apart.

One difference on purpose: a servicer does not re-check every field of an in-process request
(`in_process(context)`); the orchestrator built it from a public request it checked, and over gRPC the
same servicer checks all of them.

What a remote call has and this one does not: a deadline that interrupts the callee (a local call
runs to the end on the event loop; the callee's own work is a few milliseconds of CPU), and isolation
(a crash or a slow model takes the orchestrator with it). The separate services stay for that, and for
scaling retrieval and ranking apart from the orchestrator.
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

    # The caller is this process's orchestrator, whose requests are built from checked public input:
    # servicers skip re-checking every field of them (core.validation over hundreds of ids per call).
    in_process = True

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> None:
        raise grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


_CONTEXT = LocalContext()


def in_process(context: object) -> bool:
    """True for a call through an InProcessStub (its requests need no second check), False over gRPC."""
    return getattr(context, "in_process", False)


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
