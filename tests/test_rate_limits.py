"""Rate limits per API key (docs/security.md, orchestrator/rate_limits.py).

The bucket logic (the Lua script) against real Redis, on a clock the test passes in; then two orchestrator
processes with auth on sharing one Redis (this module's own, tests/faults.py, so it can be stopped) and the
session stack's PostgreSQL, retrieval and ranking: one key over its limit is refused on both while another
is not, LogInteractions over the interactions limit stores nothing, and with Redis stopped calls pass
unchecked and the metric says so. `recsys keys create/limit/list` with limits.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import grpc
import psycopg
import pytest
import redis
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from prometheus_client import REGISTRY
from psycopg.rows import dict_row
from redis.asyncio import Redis
from typer.testing import CliRunner

from core.breaker import Breaker
from core.config import Settings
from orchestrator.dependencies import redis_down
from orchestrator.rate_limits import (
    Limits,
    RateLimiter,
    Verdict,
    bucket_keys,
    limits_for,
    redis_client,
    refusal,
    scope_defaults,
)
from protos import recsys_pb2 as pb
from protos import recsys_pb2_grpc as pb_grpc
from recsys import processes
from recsys.cli import app
from storage.api_keys import ApiKey, create_key, set_limits
from tests.conftest import TEST_REDIS_URL, free_port
from tests.faults import OwnedServers, eventually, owned_servers
from tests.test_metrics import scrape, value

NOW = 1_700_000_000_000_000  # microseconds: the clock the unit tests give the script


def _key_id() -> int:
    return 10**12 + secrets.randbelow(10**12)  # no collision with a real key's buckets in the shared Redis


def _run(scenario) -> None:  # noqa: ANN001
    async def wrapped() -> None:
        client = Redis.from_url(TEST_REDIS_URL)
        try:
            await scenario(RateLimiter(client, {}), client)
        finally:
            await client.aclose()

    asyncio.run(wrapped())


# ---------------------------------------------------------------------------- the bucket, against real Redis


def test_burst_then_the_rate_with_the_exact_retry_delay() -> None:
    async def scenario(limiter: RateLimiter, client: Redis) -> None:
        key, limits = _key_id(), Limits(rate_per_s=10, burst=3, interactions_per_s=0)
        assert [(await limiter.admit(key, limits, now_us=NOW)).allowed for _ in range(3)] == [True] * 3
        assert await limiter.admit(key, limits, now_us=NOW) == Verdict(False, "requests", 0.1)
        assert await limiter.admit(key, limits, now_us=NOW + 40_000) == Verdict(False, "requests", 0.06)
        # refill: 0.25 s at 10/s is two calls, and the third waits for the next tenth
        assert (await limiter.admit(key, limits, now_us=NOW + 250_000)).allowed
        assert (await limiter.admit(key, limits, now_us=NOW + 250_000)).allowed
        assert await limiter.admit(key, limits, now_us=NOW + 250_000) == Verdict(False, "requests", 0.05)
        # idle long enough to be full again: the full burst, never more
        later = NOW + 10_000_000
        assert [(await limiter.admit(key, limits, now_us=later)).allowed for _ in range(4)] == [True] * 3 + [False]
        await client.delete(*bucket_keys(key))

    _run(scenario)


def test_interactions_bucket_holds_a_second_and_a_refusal_charges_nothing() -> None:
    async def scenario(limiter: RateLimiter, client: Redis) -> None:
        key, limits = _key_id(), Limits(rate_per_s=10, burst=2, interactions_per_s=100)
        assert (await limiter.admit(key, limits, interactions=60, now_us=NOW)).allowed
        assert await limiter.admit(key, limits, interactions=60, now_us=NOW) == Verdict(False, "interactions", 0.2)
        # more than the bucket ever holds: no wait helps
        assert await limiter.admit(key, limits, interactions=101, now_us=NOW) == Verdict(False, "interactions", None)
        # neither refusal took the call's token: one call of the burst is left, then the rate
        assert (await limiter.admit(key, limits, interactions=40, now_us=NOW)).allowed
        assert await limiter.admit(key, limits, now_us=NOW) == Verdict(False, "requests", 0.1)
        assert int(await client.get(bucket_keys(key)[1])) == NOW + 1_000_000  # full again a second from now
        await client.delete(*bucket_keys(key))

    _run(scenario)


def test_idle_buckets_expire_and_unlimited_keys_cost_no_round_trip() -> None:
    async def scenario(limiter: RateLimiter, client: Redis) -> None:
        key = _key_id()
        assert (await limiter.admit(key, Limits(5, 10, 0))).allowed  # Redis's own clock
        ttl_ms = await client.pttl(bucket_keys(key)[0])
        assert 0 < ttl_ms <= 200  # gone once the bucket is full again: 0.2 s after one call at 5/s
        assert await client.exists(bucket_keys(key)[1]) == 0  # no interactions in the call: not touched
        unlimited = _key_id()
        for _ in range(50):
            assert (await limiter.admit(unlimited, Limits(0, 1, 0), interactions=10)).allowed
        assert await client.exists(*bucket_keys(unlimited)) == 0
        await client.delete(*bucket_keys(key))

    _run(scenario)


def test_on_redis_s_clock_a_burst_is_followed_by_a_wait_of_at_most_one_interval() -> None:
    async def scenario(limiter: RateLimiter, client: Redis) -> None:
        key, limits = _key_id(), Limits(rate_per_s=2, burst=4, interactions_per_s=0)
        verdicts = [await limiter.admit(key, limits) for _ in range(5)]
        assert [v.allowed for v in verdicts] == [True] * 4 + [False]
        assert verdicts[-1].retry_after_s is not None and 0.3 < verdicts[-1].retry_after_s <= 0.5
        await client.delete(*bucket_keys(key))

    _run(scenario)


def _retry_delay(refused: grpc.Status | grpc.RpcError) -> float | None:
    """The RetryInfo delay in a refusal's rich status details (grpc-status-details-bin); None without one."""
    if isinstance(refused, grpc.RpcError):
        status = rpc_status.from_call(refused)
    else:
        status = status_pb2.Status.FromString(dict(refused.trailing_metadata)["grpc-status-details-bin"])
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToTimedelta().total_seconds()
    return None


def test_the_refusal_names_the_limit_and_carries_retry_info() -> None:
    limits = Limits(50, 100, 1000)
    status = refusal(3, limits, Verdict(False, "requests", 0.1134))
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status.details == "API key 3: over 50 requests/s (burst 100); retry in 0.12 s"
    assert _retry_delay(status) == pytest.approx(0.1134, abs=1e-6)
    status = refusal(3, limits, Verdict(False, "interactions", None), interactions=1500)
    assert "a batch of 1500 interactions" in status.details and "send at most 1000 per call" in status.details
    assert _retry_delay(status) is None  # waiting would not help: no RetryInfo


def test_scope_defaults_and_a_key_s_own_limits() -> None:
    defaults = scope_defaults(Settings())
    assert defaults["read"] == Limits(200, 400, 2000) and defaults["write"] == Limits(100, 200, 2000)
    key = ApiKey(1, "k", "write", datetime.now(UTC), rate_per_s=5, interactions_per_s=0)
    assert limits_for(key, defaults) == Limits(5, 200, 0)  # burst unset: the scope's
    with pytest.raises(ValueError, match="RECSYS_RATE_READ_BURST=0: must be between 1"):
        scope_defaults(replace(Settings(), rate_read_burst=0))
    with pytest.raises(ValueError, match="RECSYS_RATE_INTERACTIONS_PER_S=-1"):
        scope_defaults(replace(Settings(), rate_interactions_per_s=-1))


def _unchecked(reason: str) -> float:
    return REGISTRY.get_sample_value("recsys_rate_limit_unchecked_total", {"reason": reason}) or 0.0


def test_fail_open_when_redis_is_slow_down_or_known_down(tmp_path: Path) -> None:
    with owned_servers(tmp_path, postgres=False) as servers:
        async def scenario() -> None:
            client = redis_client(servers.redis_url)
            breaker = Breaker("Redis", client.ping, redis_down)
            limiter, limits = RateLimiter(client, {}, breaker), Limits(1, 1, 0)
            try:
                assert (await limiter.admit(1, limits)).allowed
                assert not (await limiter.admit(1, limits)).allowed  # Redis answers: limited

                before = _unchecked("timeout")
                sleeper = threading.Thread(target=lambda: redis.Redis.from_url(servers.redis_url).execute_command(
                    "DEBUG", "SLEEP", "0.5"))
                sleeper.start()
                await asyncio.sleep(0.05)
                start = time.monotonic()
                assert await limiter.admit(1, limits) == Verdict(True, checked=False)
                assert time.monotonic() - start < 0.25  # bounded by the limiter's 50 ms, not Redis's 0.5 s
                assert _unchecked("timeout") == before + 1
                assert breaker.failures == 0  # a slow answer is not "down": the cache's calls decide that
                await asyncio.to_thread(sleeper.join)

                servers.stop_redis()
                before = _unchecked("error")
                for _ in range(breaker.threshold):
                    assert await limiter.admit(1, limits) == Verdict(True, checked=False)
                assert _unchecked("error") == before + breaker.threshold and breaker.is_open
                before = _unchecked("breaker_open")
                assert await limiter.admit(1, limits) == Verdict(True, checked=False)  # not even tried
                assert _unchecked("breaker_open") == before + 1
            finally:
                breaker.stop()
                await client.aclose()

        asyncio.run(scenario())


# ---------------------------------------------------------------------------- two orchestrators, one Redis


@dataclass
class Replicas:
    servers: OwnedServers
    settings: list[Settings]
    stubs: list[pb_grpc.RecommenderStub]


@pytest.fixture(scope="module")
def replicas(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    tmp = tmp_path_factory.mktemp("rate")
    with owned_servers(tmp, postgres=False) as servers:
        token = secrets.token_urlsafe(16)
        settings = [replace(stack, auth="on", service_token=token, redis_url=servers.redis_url,
                            var_dir=tmp / f"orchestrator{i}", orchestrator_addr=f"127.0.0.1:{free_port()}",
                            orchestrator_metrics_addr=f"127.0.0.1:{free_port()}") for i in range(2)]
        with ThreadPoolExecutor(2) as pool:  # both start at once: half the wait
            started = [pool.submit(processes.start, s, "orchestrator") for s in settings]
        try:
            for future in started:
                future.result()
            channels = [grpc.insecure_channel(s.orchestrator_addr) for s in settings]
            try:
                yield Replicas(servers, settings, [pb_grpc.RecommenderStub(c) for c in channels])
            finally:
                for channel in channels:
                    channel.close()
        finally:
            for s in settings:
                processes.stop(s, "orchestrator")


def _key(settings: Settings, scope: str, **limits: float) -> tuple[int, list[tuple[str, str]]]:
    with psycopg.connect(settings.database_url, autocommit=True, row_factory=dict_row) as conn:
        record, key = create_key(conn, scope, f"rate-{scope}", limits)
    return record.id, [("authorization", f"Bearer {key}")]


def _get_item(stub: pb_grpc.RecommenderStub, auth: list[tuple[str, str]]) -> grpc.RpcError | None:
    try:
        stub.GetItem(pb.GetItemRequest(item_id="50"), timeout=5, metadata=auth)
    except grpc.RpcError as err:
        return err
    return None


def test_one_key_over_its_limit_is_refused_on_both_replicas_while_another_is_not(replicas: Replicas) -> None:
    settings = replicas.settings[0]
    key_id, limited = _key(settings, "read", rate_per_s=5, burst=5)
    _, other = _key(settings, "read", rate_per_s=5, burst=5)
    before = [scrape(s.orchestrator_metrics_addr) for s in replicas.settings]
    start = time.monotonic()
    refused: list[tuple[int, grpc.RpcError]] = []
    passed = 0
    for i in range(12):  # one key's calls spread over both replicas, the other key's in between
        replica = i % 2
        err = _get_item(replicas.stubs[replica], limited)
        if err is None:
            passed += 1
        else:
            refused.append((replica, err))
        if i % 3 == 0:
            assert _get_item(replicas.stubs[1 - replica], other) is None  # 4 calls of its burst of 5
    elapsed = time.monotonic() - start
    # the burst, and what the rate refilled meanwhile: one bucket for both replicas, not one each
    assert 5 <= passed <= 5 + int(5 * elapsed) + 1, (passed, elapsed)
    assert {replica for replica, _ in refused} == {0, 1}
    for _, err in refused:
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
        assert err.details().startswith(f"API key {key_id}: over 5 requests/s (burst 5); retry in ")
        delay = _retry_delay(err)
        assert delay is not None and 0 < delay <= 0.2  # at most one interval at 5/s
    time.sleep(_retry_delay(refused[-1][1]) or 0)
    assert _get_item(replicas.stubs[0], limited) is None  # the wait RetryInfo gave was enough

    for replica, s in enumerate(replicas.settings):
        after = scrape(s.orchestrator_metrics_addr)
        rejected = sum(1 for r, _ in refused if r == replica)
        for name, labels in (("recsys_rate_limited_total", {"scope": "read", "limit": "requests"}),
                             ("recsys_rpc_seconds_count", {"method": "GetItem", "code": "RESOURCE_EXHAUSTED"})):
            assert value(after, name, **labels) - value(before[replica], name, **labels) == rejected


def test_a_key_s_new_limits_apply_within_a_second(replicas: Replicas) -> None:
    key_id, auth = _key(replicas.settings[0], "read", rate_per_s=1, burst=1)
    assert _get_item(replicas.stubs[0], auth) is None
    assert _get_item(replicas.stubs[1], auth).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with psycopg.connect(replicas.settings[0].database_url, autocommit=True, row_factory=dict_row) as conn:
        assert set_limits(conn, key_id, {"rate_per_s": 0}) is not None  # unlimited
    eventually(lambda: all(_get_item(stub, auth) is None for stub in replicas.stubs for _ in range(5)), 3)


def _batch(user: str, n: int) -> pb.LogInteractionsRequest:
    return pb.LogInteractionsRequest(interactions=[
        pb.Interaction(user_id=user, item_id=str(50 + i), type=pb.CLICK) for i in range(n)])


def _stored(settings: Settings, user: str) -> int:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute("SELECT count(*) FROM interactions WHERE user_id = %s", (user,)).fetchone()[0]


def test_log_interactions_over_the_interactions_limit_is_refused_and_stores_nothing(replicas: Replicas) -> None:
    settings = replicas.settings[0]
    key_id, auth = _key(settings, "write", interactions_per_s=10)  # calls: the write scope's default
    user = f"rate-{uuid.uuid4().hex[:8]}"
    before = scrape(settings.orchestrator_metrics_addr)
    assert replicas.stubs[0].LogInteractions(_batch(user, 8), timeout=5, metadata=auth).accepted == 8
    with pytest.raises(grpc.RpcError) as err:  # 8 more within the second, on the other replica: over 10/s
        replicas.stubs[1].LogInteractions(_batch(user, 8), timeout=5, metadata=auth)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.value.details().startswith(f"API key {key_id}: over 10 interactions/s in LogInteractions; retry in")
    delay = _retry_delay(err.value)
    assert delay is not None and 0.4 < delay <= 0.6  # 6 interactions short, at 10/s
    with pytest.raises(grpc.RpcError) as err:  # more than a second's worth: split it, no wait helps
        replicas.stubs[0].LogInteractions(_batch(user, 20), timeout=5, metadata=auth)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "send at most 10 per call" in err.value.details()
    assert _retry_delay(err.value) is None
    assert _stored(settings, user) == 8  # neither refused batch stored anything
    after = scrape(settings.orchestrator_metrics_addr)
    labels = {"scope": "write", "limit": "interactions"}
    assert value(after, "recsys_rate_limited_total", **labels) - value(before, "recsys_rate_limited_total",
                                                                       **labels) == 1


def test_with_redis_stopped_calls_pass_unchecked_and_the_metric_says_so(replicas: Replicas) -> None:
    _, auth = _key(replicas.settings[0], "read", rate_per_s=1, burst=1)
    assert _get_item(replicas.stubs[0], auth) is None
    assert _get_item(replicas.stubs[1], auth).code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # limited
    before = [scrape(s.orchestrator_metrics_addr) for s in replicas.settings]
    replicas.servers.stop_redis()
    try:
        for stub in replicas.stubs:
            for _ in range(5):
                assert _get_item(stub, auth) is None  # over its limit, but nothing can tell: it passes
    finally:
        replicas.servers.start_redis()
    for replica, s in enumerate(replicas.settings):
        after = scrape(s.orchestrator_metrics_addr)
        moved = sum(value(after, "recsys_rate_limit_unchecked_total", reason=r)
                    - value(before[replica], "recsys_rate_limit_unchecked_total", reason=r)
                    for r in ("breaker_open", "timeout", "error"))
        assert moved == 5
        assert "rate limits not checked" in processes.log_file(s, "orchestrator").read_text()
    # Redis back: the breaker's probe lets it in again within a second, and the limit holds again
    eventually(lambda: _get_item(replicas.stubs[0], auth) is not None, timeout_s=5)


# ---------------------------------------------------------------------------- recsys keys


def test_keys_create_limit_and_list_show_the_limits(database_url: str, redis_url: str) -> None:
    runner = CliRunner()
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url}

    def run(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(app, ["keys", *args], env=env)
        return result.exit_code, result.stdout, result.stderr

    name = f"lim-{uuid.uuid4().hex[:6]}"
    code, _, err = run("create", "--scope", "write", "--name", name, "--rate", "50", "--burst", "100",
                       "--interactions-rate", "1000")
    assert code == 0, err
    assert "limits: 50 requests/s (burst 100), 1000 interactions/s" in err
    key_id = next(line for line in err.splitlines() if line.startswith("API key ")).split()[2]
    code, _, err = run("limit", key_id, "--rate", "7", "--burst", "default")
    assert code == 0 and "limits: 7 requests/s (burst 200*), 1000 interactions/s" in err, err
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        row = conn.execute("SELECT rate_per_s, burst, interactions_per_s FROM api_keys WHERE id = %s",
                           (int(key_id),)).fetchone()
    assert row == {"rate_per_s": 7.0, "burst": None, "interactions_per_s": 1000.0}  # NULL: the scope's default
    code, out, _ = run("list")
    line = next(x for x in out.splitlines() if name in x)
    assert code == 0 and line.split()[3:6] == ["7", "200*", "1000"], line

    for args, says in ((("limit", key_id, "--rate", "fast"), "--rate 'fast': a number from 0 to 1000000"),
                       (("limit", key_id, "--burst", "0"), "--burst '0': a number from 1 to 1000000"),
                       (("limit", key_id, "--burst", "2.5"), "--burst '2.5': a whole number"),
                       (("limit", key_id), "nothing to change"),
                       (("limit", "999999", "--rate", "1"), "no API key 999999"),
                       (("create", "--scope", "read", "--interactions-rate", "-3"), "--interactions-rate '-3'")):
        code, _, err = run(*args)
        assert code == 2 and says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
