"""Rate limits per API key, held in Redis so they hold across orchestrator replicas (docs/security.md).

Each key has two buckets: calls (rate per second and burst, one token per call) and, for LogInteractions,
interactions (a rate per second; the bucket holds one second's worth). Limits are the key's own
(api_keys, migration 0005) or its scope's defaults (Settings, RECSYS_RATE_...); a rate of 0 is unlimited.

Both buckets are checked and charged in one Lua script, one round trip, atomic across replicas: a call
passes only when both have room, and a refused call charges neither. Each bucket is GCRA (a token bucket
kept as one number, the time it would be full again) on Redis's clock, so replicas' clocks do not matter;
its key expires when the bucket is full again, so idle keys leave nothing behind.

Over a limit: RESOURCE_EXHAUSTED, a message naming the limit and a google.rpc.RetryInfo in the status
details. Redis down, or not answering within CHECK_TIMEOUT_S: the call passes unchecked (fail open),
counted in recsys_rate_limit_unchecked_total and logged at most every 10 s.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import redis.exceptions
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from prometheus_client import Counter
from redis.asyncio import Redis

from core.breaker import Breaker, CircuitOpen, summary
from core.config import Settings
from core.log_limit import RateLimitedLog
from protos import recsys_pb2 as pb
from storage.api_keys import LIMIT_MAX, SCOPES, ApiKey

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 0.05  # a Redis slower than this costs the call no more: it passes unchecked
REJECTED = Counter("recsys_rate_limited", "calls refused RESOURCE_EXHAUSTED by an API key's rate limit, by the "
                   "key's scope and the limit (requests, interactions)", ["scope", "limit"])
UNCHECKED = Counter("recsys_rate_limit_unchecked", "calls let through without a rate-limit check (fail open): "
                    "Redis known down (breaker_open), too slow (timeout) or failing (error)", ["reason"])
BUCKETS = ("requests", "interactions")
_unchecked_log = RateLimitedLog(log)

# GCRA per bucket, in microseconds of Redis's clock. A bucket is one value, its TAT (the time it is full
# again): a call of cost n passes when TAT' = max(TAT, now) + n * interval is at most now + burst * interval.
# KEYS: the requests bucket, the interactions bucket. ARGV: for each, interval_us (0: unlimited), burst and
# cost; then now_us, or nothing for Redis's TIME (tests pass a clock). Returns {1, 0, 0} when the call passes
# (both charged), else {0, bucket (1, 2), microseconds until it would pass (-1: never, cost > burst)}.
SCRIPT = """
local now = tonumber(ARGV[7])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local tats = {}
for i = 1, 2 do
  local interval, burst, cost = tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i])
  if interval > 0 and cost > 0 then
    if cost > burst then return {0, i, -1} end
    local tat = math.max(tonumber(redis.call('GET', KEYS[i])) or now, now) + cost * interval
    local wait = tat - burst * interval - now
    if wait > 0 then return {0, i, wait} end
    tats[i] = tat
  end
end
for i, tat in pairs(tats) do
  redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX', math.max(1, math.ceil((tat - now) / 1000)))
end
return {1, 0, 0}
"""


@dataclass(frozen=True)
class Limits:
    rate_per_s: float  # calls per second; 0: unlimited
    burst: int  # calls at once
    interactions_per_s: float  # LogInteractions entries per second; 0: unlimited

    @property
    def interactions_burst(self) -> int:
        """The interactions bucket holds one second's worth (at least one)."""
        return max(1, math.ceil(self.interactions_per_s))


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: str = ""  # the bucket that refused: "requests" or "interactions"
    retry_after_s: float | None = None  # when the call would pass; None: never (a batch over the bucket)
    checked: bool = True  # False: Redis did not answer, the call passed unchecked


def scope_defaults(settings: Settings) -> dict[str, Limits]:
    """The scopes' default limits; ValueError naming the variable that is out of range."""
    defaults = {
        "read": Limits(settings.rate_read_per_s, settings.rate_read_burst, settings.rate_interactions_per_s),
        "write": Limits(settings.rate_write_per_s, settings.rate_write_burst, settings.rate_interactions_per_s),
        "admin": Limits(settings.rate_admin_per_s, settings.rate_admin_burst, settings.rate_interactions_per_s),
    }
    for scope, limits in defaults.items():
        for name, value, low in ((f"{scope}_per_s", limits.rate_per_s, 0), (f"{scope}_burst", limits.burst, 1),
                                 ("interactions_per_s", limits.interactions_per_s, 0)):
            if not low <= value <= LIMIT_MAX:
                raise ValueError(f"RECSYS_RATE_{name.upper()}={value}: must be between {low} and {LIMIT_MAX}"
                                 f"{' (0 = unlimited)' if low == 0 else ''}")
    assert set(defaults) == set(SCOPES)
    return defaults


def limits_for(key: ApiKey, defaults: Mapping[str, Limits]) -> Limits:
    """The key's own limits, its scope's default for each it does not set."""
    scope = defaults[key.scope]
    return Limits(scope.rate_per_s if key.rate_per_s is None else key.rate_per_s,
                  scope.burst if key.burst is None else key.burst,
                  scope.interactions_per_s if key.interactions_per_s is None else key.interactions_per_s)


def _interval_us(rate_per_s: float) -> int:
    """Microseconds per token (0: unlimited); whole microseconds keep the script's arithmetic exact."""
    return max(1, round(1_000_000 / rate_per_s)) if rate_per_s > 0 else 0


def bucket_keys(key_id: int) -> list[str]:
    # one hash tag per API key: both buckets land on one Redis Cluster slot, as one script needs
    return [f"recsys:ratelimit:{{{key_id}}}:{bucket}" for bucket in BUCKETS]


class RateLimiter:
    """One script call per limited call. The client should be the limiter's own, with socket timeouts of
    CHECK_TIMEOUT_S (redis_client()): a timeout of the client's, not a timer task per call."""

    def __init__(self, client: Redis, defaults: Mapping[str, Limits], breaker: Breaker | None = None) -> None:
        self.client = client
        self.defaults = defaults
        self.breaker = breaker  # the orchestrator's Redis breaker: while open, no call waits on Redis
        self._script = client.register_script(SCRIPT)
        self._rejected: dict[tuple[str, str], Any] = {}  # .labels() takes a lock: once per pair
        self._unchecked = {reason: UNCHECKED.labels(reason) for reason in ("breaker_open", "timeout", "error")}

    async def admit(self, key_id: int, limits: Limits, interactions: int = 0, now_us: int | None = None) -> Verdict:
        """Charge one call (and `interactions` interactions) to the key's buckets, or say which is full."""
        requests_interval = _interval_us(limits.rate_per_s)
        interactions_interval = _interval_us(limits.interactions_per_s) if interactions else 0
        if not requests_interval and not interactions_interval:
            return Verdict(True)  # unlimited: no round trip
        args = [requests_interval, limits.burst, 1, interactions_interval, limits.interactions_burst, interactions]
        if now_us is not None:
            args.append(now_us)
        try:
            if self.breaker is not None:
                self.breaker.check()
            # One round trip on the hot path, and nothing else in it: the verdict must come before any
            # work, so it cannot wait to share a trip with the cache lookup; both buckets in one script
            # so LogInteractions costs no second trip.
            allowed, bucket, wait_us = await self._script(keys=bucket_keys(key_id), args=args)
        except Exception as exc:  # noqa: BLE001 - fail open: a limiter must not take the API down with Redis
            return self._pass_unchecked(exc)
        if self.breaker is not None:
            self.breaker.success()
        if allowed:
            return Verdict(True)
        return Verdict(False, BUCKETS[bucket - 1], None if wait_us < 0 else wait_us / 1_000_000)

    def _pass_unchecked(self, exc: Exception) -> Verdict:
        if isinstance(exc, CircuitOpen):
            reason = "breaker_open"
        elif isinstance(exc, redis.exceptions.TimeoutError | TimeoutError):
            # our budget, not proof Redis is down: the cache's calls (0.25 s) decide that for the breaker
            reason = "timeout"
        else:
            reason = "error"
            if self.breaker is not None:
                self.breaker.failure(exc)
        self._unchecked[reason].inc()
        _unchecked_log.warning("unchecked", "rate limits not checked, calls let through (%s: %s)", reason,
                               summary(exc))
        return Verdict(True, checked=False)

    async def enforce(self, key: ApiKey, request: Any, context: grpc.aio.ServicerContext) -> None:
        """Abort the call RESOURCE_EXHAUSTED when it is over the key's limits."""
        limits = limits_for(key, self.defaults)
        # the request may be RejectMalformed's marker (bytes that did not parse): a call, no interactions
        interactions = len(request.interactions) if isinstance(request, pb.LogInteractionsRequest) else 0
        verdict = await self.admit(key.id, limits, interactions)
        if verdict.allowed:
            return
        child = self._rejected.get((key.scope, verdict.limit))
        if child is None:
            child = self._rejected[(key.scope, verdict.limit)] = REJECTED.labels(key.scope, verdict.limit)
        child.inc()
        await context.abort_with_status(refusal(key.id, limits, verdict, interactions))

    async def aclose(self) -> None:
        await self.client.aclose()


def redis_client(url: str) -> Redis:
    """The limiter's own client: its socket timeouts bound each check at CHECK_TIMEOUT_S."""
    return Redis.from_url(url, socket_timeout=CHECK_TIMEOUT_S, socket_connect_timeout=CHECK_TIMEOUT_S)


def refusal(key_id: int, limits: Limits, verdict: Verdict, interactions: int = 0) -> grpc.Status:
    """RESOURCE_EXHAUSTED naming the limit, with a RetryInfo in the rich status details when waiting helps."""
    if verdict.limit == "requests":
        over = f"over {limits.rate_per_s:g} requests/s (burst {limits.burst})"
    else:
        over = f"over {limits.interactions_per_s:g} interactions/s in LogInteractions"
    details = []
    if verdict.retry_after_s is None:  # a batch larger than the bucket: no wait makes it pass
        message = (f"API key {key_id}: a batch of {interactions} interactions is {over} (it holds one second's "
                   f"worth): send at most {limits.interactions_burst} per call")
    else:
        delay = max(0.001, verdict.retry_after_s)
        message = f"API key {key_id}: {over}; retry in {math.ceil(delay * 100) / 100:.2f} s"
        micros = math.ceil(delay * 1_000_000)
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
            seconds=micros // 1_000_000, nanos=micros % 1_000_000 * 1000)))
        details.append(detail)
    return rpc_status.to_status(status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=message,
                                                  details=details))
