"""The orchestrator through a PostgreSQL outage and a Redis restarted empty, really stopped: an
orchestrator process of its own on PostgreSQL and Redis of the test's (tests/faults.py), with the
session stack's retrieval and ranking, or (co-located) its model in the orchestrator's own process.
Recommend keeps answering (degraded, marked; a user whose history is held in memory, in full) without
waiting on the dead server; writes answer
UNAVAILABLE and a retry with the same event_id stores once; full answers come back within seconds
of the server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest

from core.config import Settings
from core.grpc_server import LIVENESS
from protos import recsys_pb2 as pb
from protos import recsys_pb2_grpc as pb_grpc
from recsys import processes
from tests.faults import OwnedServers, eventually, owned_servers

pytestmark = pytest.mark.integration
DEADLINE_S = 0.3  # a shop's page budget for the call


@pytest.fixture(scope="module", params=["separate", "colocated"])
def own(stack: Settings, tmp_path_factory: pytest.TempPathFactory,
        request: pytest.FixtureRequest) -> Iterator[tuple[OwnedServers, Settings]]:
    """Separate: the session stack's retrieval and ranking; co-located: its model, in the orchestrator."""
    from storage.bulk import load_frames
    from training import movielens

    with owned_servers(Path(tmp_path_factory.mktemp("faults"))) as servers:
        ds = movielens.load(movielens.fetch(stack.data_dir))
        load_frames(servers.database_url, ds.users, ds.items, ds.interactions, replace=True)
        settings = servers.settings(retrieval_addr=stack.retrieval_addr, ranking_addr=stack.ranking_addr,
                                    artifacts_dir=stack.artifacts_dir, config_path=stack.config_path,
                                    deployment=request.param)
        if request.param == "colocated":  # ranking, in the orchestrator, reads Feast: the servers' own registry
            from feature_store import store

            store.apply(settings)
        processes.start(settings, "orchestrator")
        try:
            yield servers, settings
        finally:
            processes.stop(settings, "orchestrator")


@pytest.fixture(scope="module")
def api(own: tuple[OwnedServers, Settings]) -> Iterator[pb_grpc.RecommenderStub]:
    with grpc.insecure_channel(own[1].orchestrator_addr) as channel:
        yield pb_grpc.RecommenderStub(channel)


def _miss(api: pb_grpc.RecommenderStub, user_id: str = "1", debug: bool = False) -> pb.RecommendResponse:
    surface = f"s-{uuid.uuid4().hex[:8]}"  # a new cache key: the whole pipeline runs
    return api.Recommend(pb.RecommendRequest(user_id=user_id, k=10, context=pb.Context(surface=surface),
                                             debug=debug), timeout=DEADLINE_S)


def _full(api: pb_grpc.RecommenderStub) -> bool:
    try:
        return not _miss(api).degraded
    except grpc.RpcError:
        return False


def _click(user_id: str, event_id: str) -> pb.LogInteractionsRequest:
    return pb.LogInteractionsRequest(interactions=[
        pb.Interaction(user_id=user_id, item_id="50", type=pb.CLICK, event_id=event_id)])


def test_postgresql_down_recommend_degrades_writes_answer_unavailable_and_all_recovers(
    own: tuple[OwnedServers, Settings], api: pb_grpc.RecommenderStub,
) -> None:
    servers, _ = own
    eventually(lambda: _full(api), timeout_s=30)
    servers.stop_postgres()
    try:
        answers = [_miss(api, str(u)) for u in range(2, 31)]  # every one within the 300 ms deadline
        assert all(len(a.items) == 10 and a.degraded for a in answers)
        assert all(any("user history unavailable" in r for r in a.degraded_reasons) for a in answers)
        # user 1, answered just before (_full), is held in memory (orchestrator/histories.py): still a
        # full answer, from the history PostgreSQL gave before it went
        held = _miss(api, "1")
        assert not held.degraded and len(held.items) == 10, held.degraded_reasons
        # not ready (PostgreSQL unreachable: answers are cold starts), yet alive and answering; health
        # follows the breaker within its poll (0.2 s), later on a loop busy with the co-located model
        eventually(lambda: not processes.is_serving(own[1].orchestrator_addr, 1.0), timeout_s=3)
        assert processes.is_serving(own[1].orchestrator_addr, 2.0, LIVENESS)
        # once detected, the dead server is not even tried: the hydrator is refused by the breaker
        stage = next(s for s in _miss(api, "7", debug=True).debug.stages if s.stage == "query_hydrator:user")
        assert stage.outcome == "failed" and "CircuitOpen" in stage.note, stage

        user, event = f"pg-{uuid.uuid4().hex[:8]}", f"e-{uuid.uuid4().hex[:8]}"
        for call in (lambda: api.LogInteractions(_click(user, event), timeout=2),
                     lambda: api.GetUser(pb.GetUserRequest(user_id="1"), timeout=2),
                     lambda: api.UpsertItems(pb.UpsertItemsRequest(items=[pb.Item(item_id="50", title="x")]),
                                             timeout=2)):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
    finally:
        servers.start_postgres()
    took = eventually(lambda: _full(api), timeout_s=10)
    assert took < 5.0, f"first full answer {took:.1f} s after PostgreSQL was back"
    eventually(lambda: processes.is_serving(own[1].orchestrator_addr, 1.0), timeout_s=5)  # ready again

    # the client retries the write it was refused, then retries again (a lost answer): stored once
    first = api.LogInteractions(_click(user, event), timeout=5).results[0]
    again = api.LogInteractions(_click(user, event), timeout=5).results[0]
    assert first.accepted and not first.duplicate and again.duplicate
    assert again.interaction_id == first.interaction_id
    with psycopg.connect(servers.database_url) as conn:
        stored = conn.execute("SELECT count(*) FROM interactions WHERE user_id = %s", (user,)).fetchone()[0]
    assert stored == 1
    assert api.GetUser(pb.GetUserRequest(user_id="1"), timeout=5).user_id == "1"


def test_redis_restarted_empty_costs_the_cache_only_and_it_comes_back(
    own: tuple[OwnedServers, Settings], api: pb_grpc.RecommenderStub,
) -> None:
    servers, _ = own
    eventually(lambda: _full(api), timeout_s=30)
    servers.stop_redis(kill=True)
    try:
        answers = [_miss(api, str(u)) for u in range(1, 21)]
        assert all(len(a.items) == 10 and a.degraded for a in answers)
        assert all(any("cache unavailable" in r for r in a.degraded_reasons) for a in answers)
        logged = api.LogInteractions(_click("1", f"e-{uuid.uuid4().hex[:8]}"), timeout=2)
        assert logged.accepted == 1  # durable in PostgreSQL; the stream entry is the sweep's to catch up
    finally:
        servers.start_redis(empty=True)
    took = eventually(lambda: _full(api), timeout_s=10)
    assert took < 5.0, f"first full answer {took:.1f} s after Redis was back"
