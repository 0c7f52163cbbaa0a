"""Authentication shared by every server (docs/security.md).

When it is on: a server binding a non-loopback address always has it; RECSYS_AUTH=off is accepted
only on a loopback address (a developer's machine, the tests), and logged as a warning.

Internal services (retrieval, ranking, the worker's endpoint) accept only calls carrying the
stack's service token, `authorization: Bearer <token>`. The public API checks API keys instead
(orchestrator/auth.py). Health checks and reflection stay open on every server: orchestrators,
load balancers and grpcurl use them without a credential.
"""

from __future__ import annotations

import hmac
import inspect
import ipaddress
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

import grpc

from core.config import Settings

log = logging.getLogger(__name__)

AUTH_MODES = ("on", "off", "auto")
OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")  # never need a credential


def is_loopback(addr: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost binds; a name or a wildcard (0.0.0.0, [::]) is not."""
    host = addr.rsplit(":", 1)[0].strip("[]") if ":" in addr else addr
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name could resolve to anything: treat it as reachable from outside
        return False


def auth_on(settings: Settings, addr: str) -> bool:
    """Whether a server binding addr authenticates its callers; a warning when it does not."""
    mode = settings.auth
    if mode not in AUTH_MODES:
        raise ValueError(f"RECSYS_AUTH={mode!r}: use on, off or auto")
    loopback = is_loopback(addr)
    if mode == "off" and not loopback:
        raise ValueError(f"RECSYS_AUTH=off is allowed on a loopback address only, and {addr} is not one: "
                         "unset it (auth stays on) or bind 127.0.0.1")
    if mode == "on" or not loopback:
        return True
    log.warning("authentication is OFF on %s (RECSYS_AUTH=%s, loopback only): any local process may call it",
                addr, mode)
    return False


def with_service_token(settings: Settings) -> Settings:
    """settings with a service token: the configured one, else a new one for this stack's services."""
    return settings if settings.service_token else replace(settings, service_token=secrets.token_urlsafe(32))


def bearer(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    """The credential of `authorization: Bearer <credential>`; "" when the metadata is another form,
    None when there is no authorization metadata."""
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else str(value)
            scheme, _, credential = text.strip().partition(" ")
            return credential.strip() if scheme.lower() == "bearer" else ""
    return None


# check(method, request, context); the request as the server's deserializer gave it (RejectMalformed's
# marker for bytes that did not parse), for a check that weighs the call by what it asks (rate limits)
Check = Callable[[str, Any, grpc.aio.ServicerContext], Awaitable[None]]


class CheckingInterceptor(grpc.aio.ServerInterceptor):
    """Runs `check(method, request, context)` before each unary call of the methods `guards(method)` selects;
    the check aborts the call to refuse it. Handlers are wrapped once per method (cached), so the check is
    the only per-call cost; it runs inside the call, after the drain interceptor refused what it must."""

    def __init__(self, check: Check, guards: Callable[[str], bool]) -> None:
        self._check = check
        self._guards = guards
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        method = details.method
        if method in self._wrapped:
            return self._wrapped[method]
        handler = await continuation(details)
        if handler is None or not self._guards(method):
            return handler
        if handler.unary_unary is None:  # none of ours streams; refuse rather than pass one unchecked
            handler = grpc.unary_unary_rpc_method_handler(_unimplemented)
        else:
            handler = grpc.unary_unary_rpc_method_handler(
                _checked(handler.unary_unary, method, self._check), handler.request_deserializer,
                handler.response_serializer)
        self._wrapped[method] = handler
        return handler


def _checked(behaviour: Callable[..., Any], method: str, check: Check) -> Callable[..., Awaitable[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await check(method, request, context)
        result = behaviour(request, context)
        return await result if inspect.isawaitable(result) else result

    return handle


async def _unimplemented(request: Any, context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, "streaming calls are not served")


def guarded(method: str) -> bool:
    return not method.startswith(OPEN_PREFIXES)


def service_token_interceptor(token: str) -> CheckingInterceptor:
    expected = token.encode()

    async def check(method: str, request: Any, context: grpc.aio.ServicerContext) -> None:
        given = bearer(context.invocation_metadata())
        if given is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "internal service: send the stack's service token as 'authorization: Bearer "
                                "<RECSYS_SERVICE_TOKEN>'")
        if not hmac.compare_digest(given.encode(), expected):  # constant time: no timing oracle on the token
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "internal service: wrong service token (every service of a stack needs the "
                                "same RECSYS_SERVICE_TOKEN)")

    return CheckingInterceptor(check, guarded)


def internal_interceptors(settings: Settings, addr: str) -> list[grpc.aio.ServerInterceptor]:
    """What an internal service's server adds to serve(): the service-token check when auth is on."""
    if not auth_on(settings, addr):
        return []
    if not settings.service_token:
        raise ValueError("authentication is on and RECSYS_SERVICE_TOKEN is not set: set the same secret for every "
                         "service of the stack, or start them together with `recsys serve all`")
    return [service_token_interceptor(settings.service_token)]
