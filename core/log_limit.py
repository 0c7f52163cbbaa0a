"""Log lines that a caller can provoke at will (bad requests, refused rows), rate-limited: a client
sending a million malformed requests must not write a million lines. At most one line per key per
interval; the next line says how many were left out meanwhile."""

from __future__ import annotations

import logging
import time

MAX_KEYS = 1024  # keys are method names and the like; past this (a bug) the oldest are forgotten


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, interval_s: float = 10.0) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._last: dict[str, tuple[float, int]] = {}  # key -> (when it last logged, lines left out since)

    def log(self, level: int, key: str, msg: str, *args: object) -> bool:
        """Log unless `key` logged within the interval; True when it did."""
        if not self.logger.isEnabledFor(level):
            return False
        now = time.monotonic()
        last, skipped = self._last.get(key, (-self.interval_s, 0))
        if now - last < self.interval_s:
            self._last[key] = (last, skipped + 1)
            return False
        if skipped:
            msg = f"{msg} ({skipped} more like it left out since the last)"
        if key not in self._last and len(self._last) >= MAX_KEYS:
            self._last.pop(next(iter(self._last)))
        self._last[key] = (now, 0)
        self.logger.log(level, msg, *args)
        return True

    def info(self, key: str, msg: str, *args: object) -> bool:
        return self.log(logging.INFO, key, msg, *args)

    def warning(self, key: str, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, key, msg, *args)


class Outage:
    """A background loop's failures logged as one outage: the first failure once, in one line (a
    traceback only for what is not a dependency being away), then the recovery with how long it took.
    A loop retrying every second through a 10-minute PostgreSQL outage writes two lines, not 600."""

    def __init__(self, logger: logging.Logger, what: str, expected: tuple[type[BaseException], ...] = ()) -> None:
        self.logger = logger
        self.what = what
        self.expected = expected  # exception types that mean "a dependency is away": no traceback
        self.since: float | None = None
        self.failures = 0

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        if self.since is not None:
            return
        self.since = time.monotonic()
        first = str(exc).strip().splitlines()
        self.logger.warning("%s failed (%s%s); retrying quietly until it works", self.what, type(exc).__name__,
                            f": {first[0]}" if first else "", exc_info=not isinstance(exc, self.expected))

    def ok(self) -> None:
        if self.since is not None:
            self.logger.warning("%s works again after %.1f s (%d failed tries)", self.what,
                                time.monotonic() - self.since, self.failures)
            self.since, self.failures = None, 0
