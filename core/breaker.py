"""Circuit breakers: a dependency that is down or frozen costs a request no waiting once detected.

One breaker per dependency (PostgreSQL, Redis, retrieval, ranking) in each process that calls it.

    closed  calls go through; `threshold` failures in a row (connection errors, timeouts: the
            dependency did not answer, not an answer that says no) open it
    open    calls are refused at once with Unavailable, so the caller's fail-open path answers
            (degraded) without waiting on a timeout; a probe, the dependency's cheapest call, runs
            every `probe_every_s` in the background and closes the breaker the first time it works

No user request is the trial call of a half-open state: against a frozen dependency a trial waits
its whole timeout, and the probe's success is what "serving again" means for recovery time.
The libraries we looked at (pybreaker, aiobreaker, purgatory) all trial on a caller's request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from core.errors import Unavailable

log = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[object]]
IsFailure = Callable[[BaseException], bool]


class CircuitOpen(Unavailable):
    """Refused without calling: the dependency is known to be down."""


class Breaker:
    def __init__(self, name: str, probe: Probe, is_failure: IsFailure, threshold: int = 3,
                 probe_every_s: float = 0.25, probe_timeout_s: float = 0.5) -> None:
        self.name = name
        self.probe = probe
        self.is_failure = is_failure
        self.threshold = threshold
        self.probe_every_s = probe_every_s
        self.probe_timeout_s = probe_timeout_s
        self.failures = 0  # in a row
        self.opened_at: float | None = None  # monotonic; None while closed
        self.last_error = ""
        self.trips = 0  # times opened, for stats and tests
        self._prober: asyncio.Task | None = None

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def check(self) -> None:
        """Raise CircuitOpen while the dependency is known to be down."""
        if self.opened_at is not None:
            down = time.monotonic() - self.opened_at
            raise CircuitOpen(f"{self.name} unavailable for {down:.1f} s ({self.last_error}); not called")

    def success(self) -> None:
        self.failures = 0

    def failure(self, exc: BaseException) -> None:
        """Count exc if it says the dependency did not answer (open at the threshold); an error that
        is an answer (a constraint violated, a status that says no) is a success."""
        if isinstance(exc, CircuitOpen):
            return
        if not self.is_failure(exc):
            self.success()
            return
        self.failures += 1
        self.last_error = summary(exc)
        if self.opened_at is None and self.failures >= self.threshold:
            self._open()

    @asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Around one call of the dependency: refused while open, counted either way."""
        self.check()
        try:
            yield
        except BaseException as exc:
            self.failure(exc)
            raise
        self.success()

    def _open(self) -> None:
        self.opened_at = time.monotonic()
        self.trips += 1
        log.warning("%s is not answering (%s): calls refused until it does", self.name, self.last_error)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): the next check stays open until closed
            return
        if self._prober is None or self._prober.done():
            self._prober = loop.create_task(self._probe_until_up())

    def close(self) -> None:
        if self.opened_at is not None:
            log.warning("%s answers again after %.1f s", self.name, time.monotonic() - self.opened_at)
        self.opened_at, self.failures = None, 0

    async def _probe_until_up(self) -> None:
        while self.opened_at is not None:
            await asyncio.sleep(self.probe_every_s)
            try:
                await asyncio.wait_for(self.probe(), self.probe_timeout_s)
            except Exception as exc:  # noqa: BLE001 - still down: try again
                self.last_error = summary(exc)
                continue
            self.close()

    def stop(self) -> None:
        if self._prober is not None:
            self._prober.cancel()


def summary(exc: BaseException) -> str:
    """An exception in one short line (no traceback): what the breaker reports."""
    code = getattr(exc, "code", None)
    if callable(code):  # a grpc.aio.AioRpcError
        try:
            return f"{code().name}: {exc.details()}"  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001
            pass
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
