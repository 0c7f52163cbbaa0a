"""Authentication (docs/security.md): API keys and scopes on the Recommender, the service token on the
internal services, and `recsys keys`.

A retrieval and an orchestrator of this module's own run with RECSYS_AUTH=on and a service token, on the
session stack's database, artifacts and ranking (the stack itself runs on loopback with auth off).
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg.rows import dict_row
from typer.testing import CliRunner

from core.config import Settings
from core.errors import Unavailable
from core.service_auth import auth_on, bearer, is_loopback
from orchestrator.auth import KeyCache, allows, required_scope
from protos import internal_pb2 as ipb
from protos import internal_pb2_grpc as ipb_grpc
from protos import recsys_pb2 as pb
from protos import recsys_pb2_grpc as pb_grpc
from recsys import processes
from recsys.cli import app
from storage.api_keys import ApiKey, create_key, hash_key, revoke_key
from tests.conftest import free_port

# ---------------------------------------------------------------------------- units


def test_loopback_addresses() -> None:
    assert all(is_loopback(a) for a in ("127.0.0.1:50051", "127.1.2.3:1", "[::1]:50051", "localhost:50051"))
    assert not any(is_loopback(a) for a in ("0.0.0.0:50051", "[::]:50051", ":50051", "10.0.0.5:1", "api:50051"))


def test_auth_is_on_unless_loopback_and_off_only_on_loopback() -> None:
    assert auth_on(Settings(auth="auto"), "0.0.0.0:50051")
    assert not auth_on(Settings(auth="auto"), "127.0.0.1:50051")
    assert auth_on(Settings(auth="on"), "127.0.0.1:50051")
    assert not auth_on(Settings(auth="off"), "127.0.0.1:50051")
    with pytest.raises(ValueError, match="loopback address only"):
        auth_on(Settings(auth="off"), "0.0.0.0:50051")
    with pytest.raises(ValueError, match="use on, off or auto"):
        auth_on(Settings(auth="yes"), "127.0.0.1:50051")


def test_bearer_and_scopes() -> None:
    assert bearer([("authorization", "Bearer abc")]) == "abc"
    assert bearer([("x", "y")]) is None
    assert bearer([("authorization", "Basic abc")]) == ""
    assert required_scope("/recsys.v1.Recommender/Trending") == "read"
    assert required_scope("/recsys.v1.Recommender/UpsertItems") == "write"
    assert required_scope("/recsys.v1.Recommender/SomethingNew") == "admin"
    assert allows("admin", "write") and allows("write", "read") and not allows("read", "write")


def test_cached_keys_keep_working_while_postgresql_is_down() -> None:
    record = ApiKey(1, "shop", "read", datetime.now(UTC))
    calls: list[str] = []
    down = False

    async def lookup(key: str) -> ApiKey | None:
        calls.append(key)
        if down:
            raise Unavailable("PostgreSQL unavailable")
        return record if key == "good" else None

    async def scenario() -> None:
        nonlocal down
        cache = KeyCache(lookup, ttl_s=0.05)
        assert await asyncio.gather(*(cache.get("good") for _ in range(20))) == [record] * 20
        assert calls == ["good"]  # concurrent calls share one lookup
        down = True
        await asyncio.sleep(0.06)
        assert await cache.get("good") == record  # expired, PostgreSQL away: the known answer holds
        with pytest.raises(Unavailable):
            await cache.get("never-seen")

    asyncio.run(scenario())


def test_a_caller_giving_up_does_not_cancel_the_shared_lookup() -> None:
    record = ApiKey(1, "shop", "read", datetime.now(UTC))

    async def slow_lookup(key: str) -> ApiKey | None:
        await asyncio.sleep(0.05)
        return record

    async def scenario() -> None:
        cache = KeyCache(slow_lookup)
        impatient = asyncio.create_task(cache.get("k"))
        patient = asyncio.create_task(cache.get("k"))
        await asyncio.sleep(0.01)
        impatient.cancel()  # its deadline passed
        assert await asyncio.wait_for(patient, 1) == record

    asyncio.run(scenario())


# ---------------------------------------------------------------------------- servers with auth on


@pytest.fixture(scope="module")
def secured(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = replace(stack, auth="on", service_token=secrets.token_urlsafe(16),
                       var_dir=tmp_path_factory.mktemp("auth") / "var",
                       orchestrator_addr=f"127.0.0.1:{free_port()}", retrieval_addr=f"127.0.0.1:{free_port()}")
    processes.start(settings, "retrieval")
    try:
        processes.start(settings, "orchestrator")
        try:
            yield settings
        finally:
            processes.stop(settings, "orchestrator")
    finally:
        processes.stop(settings, "retrieval")


@pytest.fixture(scope="module")
def api(secured: Settings) -> Iterator[pb_grpc.RecommenderStub]:
    with grpc.insecure_channel(secured.orchestrator_addr) as channel:
        yield pb_grpc.RecommenderStub(channel)


def _key(settings: Settings, scope: str) -> tuple[int, str]:
    with psycopg.connect(settings.database_url, autocommit=True, row_factory=dict_row) as conn:
        record, key = create_key(conn, scope, f"test-{scope}")
    return record.id, key


def _as(key: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")]


def _code(call) -> tuple[grpc.StatusCode, str]:  # noqa: ANN001
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details()


def _click(user_id: str) -> pb.LogInteractionsRequest:
    return pb.LogInteractionsRequest(interactions=[pb.Interaction(user_id=user_id, item_id="50", type=pb.CLICK)])


def test_a_call_without_a_key_is_unauthenticated_and_health_stays_open(
    secured: Settings, api: pb_grpc.RecommenderStub,
) -> None:
    code, details = _code(lambda: api.GetItem(pb.GetItemRequest(item_id="50"), timeout=5))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "authorization: Bearer" in details
    code, details = _code(lambda: api.GetItem(pb.GetItemRequest(item_id="50"), timeout=5,
                                              metadata=_as("rk_made-up")))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "unknown API key" in details
    assert processes.is_serving(secured.orchestrator_addr)  # health without a key


def test_scopes(secured: Settings, api: pb_grpc.RecommenderStub) -> None:
    _, read = _key(secured, "read")
    _, write = _key(secured, "write")
    user = f"auth-{uuid.uuid4().hex[:8]}"
    answer = api.Recommend(pb.RecommendRequest(user_id="1", k=5, context=pb.Context(surface=f"s-{user}")),
                           timeout=10, metadata=_as(read))
    assert len(answer.items) == 5
    # the orchestrator's calls carry the service token: its retrieval (auth on) answered
    assert not answer.degraded, answer.degraded_reasons
    code, details = _code(lambda: api.LogInteractions(_click(user), timeout=5, metadata=_as(read)))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "needs 'write'" in details, details
    assert api.LogInteractions(_click(user), timeout=5, metadata=_as(write)).accepted == 1


def test_a_revoked_key_stops_working_within_a_second(secured: Settings, api: pb_grpc.RecommenderStub) -> None:
    key_id, key = _key(secured, "read")
    request = pb.GetItemRequest(item_id="50")
    assert api.GetItem(request, timeout=5, metadata=_as(key)).item_id == "50"  # now cached
    with psycopg.connect(secured.database_url, autocommit=True, row_factory=dict_row) as conn:
        assert revoke_key(conn, key_id) is not None
    revoked = time.monotonic()
    while True:
        try:
            api.GetItem(request, timeout=5, metadata=_as(key))
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED and "revoked" in err.details()
            break
        assert time.monotonic() - revoked < 1.5, "a revoked key still worked 1.5 s later"
        time.sleep(0.05)
    assert time.monotonic() - revoked < 1.5


def test_retrieve_needs_the_service_token(secured: Settings) -> None:
    request = ipb.RetrieveRequest(k=5, sources=[ipb.SourceRequest(name="popular", k=5)])
    with grpc.insecure_channel(secured.retrieval_addr) as channel:
        retrieval = ipb_grpc.RetrievalStub(channel)
        code, details = _code(lambda: retrieval.Retrieve(request, timeout=5))
        assert code == grpc.StatusCode.UNAUTHENTICATED and "RECSYS_SERVICE_TOKEN" in details
        code, _ = _code(lambda: retrieval.Retrieve(request, timeout=5, metadata=_as("wrong")))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        found = retrieval.Retrieve(request, timeout=5, metadata=_as(secured.service_token))
        assert len(found.candidates.item_ids) == 5
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING  # open without a token


# ---------------------------------------------------------------------------- recsys keys


def test_keys_create_list_revoke(database_url: str, redis_url: str) -> None:
    runner = CliRunner()
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url}

    def run(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(app, ["keys", *args], env=env)
        return result.exit_code, result.stdout, result.stderr

    code, out, err = run("create", "--scope", "write", "--name", "cli-test")
    assert code == 0, err
    key = out.strip()
    assert key.startswith("rk_") and len(key) > 40 and "shown only now" in err
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        row = conn.execute("SELECT id, scope FROM api_keys WHERE key_hash = %s", (hash_key(key),)).fetchone()
    assert row is not None and row["scope"] == "write"  # stored hashed: the key itself is nowhere
    code, out, _ = run("list")
    line = next(x for x in out.splitlines() if "cli-test" in x)
    assert code == 0 and "write" in line and key not in out and line.rstrip().endswith("-")
    assert run("revoke", str(row["id"]))[0] == 0
    line = next(x for x in run("list")[1].splitlines() if "cli-test" in x)
    assert not line.rstrip().endswith("-")  # a revocation time

    for args, says in ((("create", "--scope", "root"), "use one of read, write, admin"),
                       (("revoke", "999999"), "no API key 999999"), (("revoke", "abc"), "ID 'abc'")):
        code, _, err = run(*args)
        assert code == 2 and says in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2, err


def test_batch_precompute_sends_the_api_key(secured: Settings) -> None:
    """`recsys batch precompute` calls the Recommender with RECSYS_API_KEY, as the other client commands do."""
    from orchestrator.batch import precompute

    with pytest.raises(grpc.RpcError) as err:
        precompute(secured.database_url, secured.orchestrator_addr, "home", 5, users=["12"])
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    _, key = _key(secured, "read")
    assert precompute(secured.database_url, secured.orchestrator_addr, "home", 5, users=["12"],
                      metadata=_as(key)) == 1
