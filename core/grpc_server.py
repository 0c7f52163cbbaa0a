"""Running a grpc.aio server the same way for every service.

Each server gets health checking (grpc.health.v1), server reflection, and a clean
shutdown on SIGTERM / SIGINT: health says NOT_SERVING, new calls are refused with UNAVAILABLE
(a client retries them elsewhere), the calls in flight finish within a grace, then it stops.

Errors, the same on every server: a request whose bytes do not parse is INVALID_ARGUMENT
(RejectMalformed: grpc.aio would answer UNKNOWN and log a traceback per request); a servicer's
RecsysError is its status (handles_errors), and anything else INTERNAL with its traceback logged
once. What a client can provoke is logged in one brief line, rate-limited.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor, ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from core import process_group, tracing
from core.errors import RecsysError
from core.log_limit import RateLimitedLog
from core.metrics import RpcMetrics, serve_metrics
from core.tls import ServerTls, listen
from protos import internal_pb2, recsys_pb2

log = logging.getLogger(__name__)

LIVENESS = "liveness"  # the health service name that says only "this process answers"
_client_errors = RateLimitedLog(log)

Registrar = Callable[[grpc.aio.Server], None]
MAX_REQUEST_BYTES = 4 * 1024 * 1024  # gRPC's default, stated: a larger request is RESOURCE_EXHAUSTED
SERVER_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
]


def service_descriptor(name: str) -> ServiceDescriptor:
    """A service of the public API (protos/recsys.proto) or an internal one (protos/internal.proto)."""
    for file in (recsys_pb2.DESCRIPTOR, internal_pb2.DESCRIPTOR):
        if name in file.services_by_name:
            return file.services_by_name[name]
    raise KeyError(f"no service {name!r} in protos/")


def _reflection_pool(files: Sequence[FileDescriptor]) -> descriptor_pool.DescriptorPool:
    """Only these files and what they import: reflection looks symbols up in the process's default pool
    otherwise, and the orchestrator, a client of the internal services, holds their definitions too."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file: FileDescriptor) -> None:
        if file.name in added:
            return
        for dependency in file.dependencies:
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        pool.Add(proto)
        added.add(file.name)

    for file in files:
        add(file)
    return pool


async def serve(
    addr: str,
    service_names: Sequence[str],
    register: Registrar,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
    grace_s: float = 5.0,
    healthy: Callable[[], bool] | None = None,
    metrics_addr: str = "",
    extra_interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    reflect: bool = True,
    tls: ServerTls | None = None,
    reuse_port: bool = False,
) -> None:
    """Serve until SIGTERM/SIGINT. service_names are short names from protos/ ("Retrieval").

    Health: the service names and "" are readiness: they follow `healthy` when given (SERVING /
    NOT_SERVING, polled), for a service that cannot do its work (no model loaded, a server it needs
    away); "liveness" is SERVING while the process serves at all (a Kubernetes liveness probe: restart
    only a process that stopped answering, never one waiting on PostgreSQL). metrics_addr: where
    http://.../metrics answers (core/metrics.py); empty = nowhere. tls: core/tls.server_tls(settings);
    None = plaintext. reuse_port: share addr with the other processes of this service (recsys/workers.py);
    otherwise a second server on a taken address fails to start.
    """
    drain = Drain()  # outermost: while draining, a call is refused before anything else runs
    # metrics see every call, refused ones too; authentication (extra) before the rest
    interceptors = [drain, *tracing.server_interceptors(), RpcMetrics(), *extra_interceptors,
                    *(make() for make in INTERCEPTORS)]
    options = [(k, 1 if k == "grpc.so_reuseport" else v) for k, v in SERVER_OPTIONS] if reuse_port else SERVER_OPTIONS
    server = grpc.aio.server(options=options, interceptors=interceptors)
    register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    full_names = [service_descriptor(n).full_name for n in service_names]
    if reflect:
        served = [service_descriptor(n).file for n in service_names]
        reflection.enable_server_reflection([*full_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server,
                                            pool=_reflection_pool([*served, health_pb2.DESCRIPTOR,
                                                                   reflection_pb2.DESCRIPTOR]))
    listen(server, addr, tls)
    serve_metrics(metrics_addr)
    freeze_loaded_objects()
    names = [*full_names, ""]
    if not process_group.helpers_ready():  # the first of several processes: ready once they all serve
        own = healthy

        def healthy() -> bool:
            return process_group.helpers_ready() and (own is None or own())

    serving = healthy is None or healthy()
    await _set_health(health_servicer, names, serving)  # before the first call
    await _set_health(health_servicer, [LIVENESS], True)
    await server.start()
    process_group.notify_ready()  # a helper process: the first one counts it
    watcher = None
    if healthy is not None:
        watcher = asyncio.create_task(_follow_health(health_servicer, names, healthy, serving))
    log.info("serving %s on %s", ", ".join(service_names), addr)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down %s: draining %d calls in flight", addr, drain.in_flight)
    if watcher is not None:
        watcher.cancel()
    await health_servicer.enter_graceful_shutdown()
    await drain.drain(grace_s)
    await server.stop(grace_s)
    if on_shutdown is not None:
        await on_shutdown()


class Drain(grpc.aio.ServerInterceptor):
    """Counts the calls in flight; once draining, refuses new ones with UNAVAILABLE.

    grpc.aio's own `server.stop(grace)` lets the calls our handlers have started finish, but cancels
    the calls gRPC has received and not yet handed to them (CANCELLED, which no client retries): under
    load that was most of them. Draining first hands every queued call to a handler that refuses it,
    with a status a client retries, before the server stops.
    """

    QUIET_S = 0.05  # no call started or refused for this long: gRPC's queue is empty

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        self._last_arrival = 0.0

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None or details.method.startswith("/grpc.health"):
            return handler
        self._last_arrival = time.monotonic()
        if self.draining:
            return _REFUSE
        behaviour = handler.unary_unary

        async def counted(request: Any, context: grpc.aio.ServicerContext) -> Any:
            self.in_flight += 1
            try:
                return await behaviour(request, context)
            finally:
                self.in_flight -= 1

        return grpc.unary_unary_rpc_method_handler(
            counted, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)

    async def drain(self, grace_s: float) -> None:
        """Refuse new calls; return once none is in flight and none arrives, or after grace_s."""
        self.draining = True
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if self.in_flight == 0 and time.monotonic() - self._last_arrival > self.QUIET_S:
                return
            await asyncio.sleep(0.01)
        log.warning("%d calls still in flight after %.1f s of draining", self.in_flight, grace_s)


async def _refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down: retry on another replica")


_REFUSE = grpc.unary_unary_rpc_method_handler(_refuse)


async def _set_health(servicer: health.aio.HealthServicer, names: list[str], serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in names:
        await servicer.set(name, status)


async def _follow_health(
    servicer: health.aio.HealthServicer, names: list[str], healthy: Callable[[], bool], serving: bool,
    every_s: float = 0.2,
) -> None:
    while True:
        await asyncio.sleep(every_s)
        if healthy() != serving:
            serving = not serving
            await _set_health(servicer, names, serving)


def freeze_loaded_objects() -> None:
    """Take what the service loaded before serving out of the garbage collector's full passes.

    Modules, the model, feature tables and Feast's registry are 230-350k container objects
    that live as long as the process. CPython's full (generation 2) collection walks them
    all: 115-190 ms per pause, measured in every service under load, and every request in
    flight waits it out (it was the p99 of 8-in-flight Recommend). gc.freeze() moves them to
    a permanent generation the collector never scans; reference counting still frees them.
    """
    gc.collect()  # garbage from loading is freed now, not frozen
    gc.freeze()
    gc.enable()  # `recsys serve` disables it while the service loads


_CLIENT_CODES = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)


def handles_errors(method: Callable) -> Callable:
    """Servicer-method decorator: a RecsysError becomes its gRPC status with its message (logged in one
    line, rate-limited); any other exception is a bug: INTERNAL, its traceback logged once."""
    name = method.__name__

    @functools.wraps(method)
    async def wrapper(self: object, request: object, context: grpc.aio.ServicerContext) -> object:
        try:
            return await method(self, request, context)
        except RecsysError as exc:
            level = logging.INFO if exc.code in _CLIENT_CODES else logging.WARNING
            _client_errors.log(level, f"{name}:{exc.code.name}", "%s: %s %.200s", name, exc.code.name, exc)
            await context.abort(exc.code, str(exc))
        except grpc.aio.AbortError:  # the method aborted with a status of its own
            raise
        except Exception as exc:
            log.exception("%s failed", name)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__})")

    return wrapper


class _Malformed:
    """What the request deserializer hands on when the bytes do not parse."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


class RejectMalformed(grpc.aio.ServerInterceptor):
    """Requests whose bytes do not parse (b"\x80", invalid UTF-8 in a string) get INVALID_ARGUMENT.

    grpc.aio calls the deserializer outside the servicer and answers its exception with UNKNOWN and a
    logged traceback. Here each unary request's deserializer returns a marker instead, and the method's
    behaviour aborts on it. Handlers are wrapped once per method (cached: one interceptor per server)."""

    def __init__(self) -> None:
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        if method in self._wrapped:
            return self._wrapped[method]
        handler = await continuation(handler_call_details)
        if handler is not None and handler.unary_unary is not None and handler.request_deserializer is not None:
            handler = grpc.unary_unary_rpc_method_handler(
                _rejecting(handler.unary_unary, method), _tolerant(handler.request_deserializer),
                handler.response_serializer)
        if handler is not None:
            self._wrapped[method] = handler
        return handler


def _tolerant(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except Exception as exc:  # DecodeError, and whatever else the bytes provoke: the client's bytes
            return _Malformed(str(exc) or type(exc).__name__)

    return parse


def _rejecting(behavior: Callable[..., Awaitable[Any]], method: str) -> Callable[..., Awaitable[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, _Malformed):
            _client_errors.info(f"{method}:malformed", "%s: INVALID_ARGUMENT malformed request: %.200s",
                                method, request.error)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"request: malformed protobuf ({request.error})")
        result = behavior(request, context)
        return await result if inspect.isawaitable(result) else result

    return handle


# Every server built by serve() runs one of each (a list, so another concern adds its own without touching serve()).
INTERCEPTORS: list[Callable[[], grpc.aio.ServerInterceptor]] = [RejectMalformed]
