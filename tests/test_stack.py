"""The whole stack over real gRPC: MovieLens-100K in PostgreSQL, a trained two-tower
model, Feast features in Redis, and the three services as separate processes."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from pathlib import Path

import grpc
import psycopg
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from core.config import Settings
from protos import internal_pb2 as ipb
from protos import internal_pb2_grpc as ipb_grpc
from protos import recsys_pb2 as pb
from protos import recsys_pb2_grpc as pb_grpc
from recsys import processes
from storage import cache
from tests.conftest import free_port

pytestmark = pytest.mark.integration


def _rated(database_url: str, user_id: str) -> set[str]:
    with psycopg.connect(database_url) as conn:
        return {r[0] for r in conn.execute("SELECT item_id FROM interactions WHERE user_id = %s", (user_id,))}


def _ids(resp: pb.RecommendResponse) -> list[str]:
    return [i.item_id for i in resp.items]


def test_recommendations_exclude_what_the_user_rated(api: pb_grpc.RecommenderStub, stack: Settings) -> None:
    resp = api.Recommend(pb.RecommendRequest(user_id="1", k=20), timeout=10)
    assert len(resp.items) == 20
    assert not set(_ids(resp)) & _rated(stack.database_url, "1")
    assert resp.model_version and not resp.degraded
    # personalised sources, each item explained by the one that found it (the ranker may put any first)
    because = {"two_tower": "Because you watched ", "also_bought": "People who liked ", "content": "Similar to "}
    assert {i.source for i in resp.items} <= {*because, "trending"} and resp.items[0].source in because
    for item in resp.items:
        assert item.item.title and item.reason.startswith(because.get(item.source, "Trending")), item
    assert [i.score for i in resp.items] == sorted((i.score for i in resp.items), reverse=True)


def test_logged_interactions_change_the_next_answer(api: pb_grpc.RecommenderStub, stack: Settings) -> None:
    user = "7"
    first = api.Recommend(pb.RecommendRequest(user_id=user, k=10), timeout=10)
    r = redis.Redis.from_url(stack.redis_url)
    for _ in range(50):  # the cache write happens after the response
        if r.exists(cache.user_key(user)):
            break
        time.sleep(0.05)
    assert r.exists(cache.user_key(user)), "the answer was not cached"
    again = api.Recommend(pb.RecommendRequest(user_id=user, k=10), timeout=10)
    assert _ids(again) == _ids(first)

    clicked = _ids(first)[:3]  # any accepted interaction makes the user's cached answers stale
    generation = int(r.hget(cache.user_key(user), cache.GENERATION) or 0)
    logged = api.LogInteractions(pb.LogInteractionsRequest(interactions=[
        pb.Interaction(user_id=user, item_id=i, type=pb.PURCHASE) for i in clicked
    ]), timeout=10)
    assert logged.accepted == 3 and logged.rejected == 0
    assert int(r.hget(cache.user_key(user), cache.GENERATION)) == generation + 1, "the cache was not made stale"

    after = api.Recommend(pb.RecommendRequest(user_id=user, k=10), timeout=10)
    assert not set(clicked) & set(_ids(after))
    assert _ids(after) != _ids(first)
    assert set(clicked) <= _rated(stack.database_url, user)


def test_unknown_user_gets_a_cold_start_answer(api: pb_grpc.RecommenderStub) -> None:
    resp = api.Recommend(pb.RecommendRequest(user_id=f"new-{uuid.uuid4()}", k=10, debug=True), timeout=10)
    assert len(resp.items) == 10
    assert {i.source for i in resp.items} == {"popular"}
    assert all(i.reason for i in resp.items)
    kinds = [s.stage.split(":")[0] for s in resp.debug.stages if s.outcome == "ok"]
    assert list(dict.fromkeys(kinds)) == ["cache", "query_hydrator", "source", "hydrator", "filter", "scorer",
                                          "selector"]
    # every candidate source has its own entry; a stranger gets only the popular one (the others gated off)
    ran = [s.stage for s in resp.debug.stages if s.stage.startswith("source:") and s.outcome == "ok"]
    assert ran == ["source:popular"]
    assert {s.stage: s.note for s in resp.debug.stages}["source:two_tower"] == "gated off: no history"


def test_health_and_reflection_answer_on_every_service(stack: Settings) -> None:
    for name, service in [("orchestrator", "recsys.v1.Recommender"), ("retrieval", "recsys.v1.Retrieval"),
                          ("ranking", "recsys.v1.Ranking")]:
        with grpc.insecure_channel(processes.address(stack, name)) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            replies = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
            names = {s.name for reply in replies for s in reply.list_services_response.service}
            assert service in names and "grpc.health.v1.Health" in names


def test_public_reflection_serves_no_internal_definition(stack: Settings) -> None:
    from google.protobuf import descriptor_pb2

    def ask(channel: grpc.Channel, symbol: str) -> reflection_pb2.ServerReflectionResponse:
        return next(iter(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)]), timeout=5)))

    with grpc.insecure_channel(processes.address(stack, "orchestrator")) as channel:
        reply = ask(channel, "recsys.v1.Recommender")
        files = [descriptor_pb2.FileDescriptorProto.FromString(raw)
                 for raw in reply.file_descriptor_response.file_descriptor_proto]
        assert [f.name for f in files if f.package == "recsys.v1"] == ["protos/recsys.proto"]
        defined = {m.name for f in files for m in f.message_type} | {s.name for f in files for s in f.service}
        assert "RecommendRequest" in defined
        assert not defined & {"Retrieval", "Ranking", "RetrieveRequest", "RankRequest", "UserContext"}
        for internal in ("recsys.v1.Retrieval", "recsys.v1.RetrieveRequest"):
            assert ask(channel, internal).error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    with grpc.insecure_channel(processes.address(stack, "retrieval")) as channel:  # its own file, where it is
        assert ask(channel, "recsys.v1.Retrieval").file_descriptor_response.file_descriptor_proto


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.RecommendRequest(user_id="1", k=501), "k"),
        (pb.RecommendRequest(user_id="1", k=-1), "k"),
        (pb.RecommendRequest(user_id="", k=5), "user_id"),
        (pb.RecommendRequest(user_id="x" * 129, k=5), "user_id"),
    ],
)
def test_bad_recommend_requests_are_invalid_argument(
    api: pb_grpc.RecommenderStub, request_: pb.RecommendRequest, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        api.Recommend(request_, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(f"{field}:")


def test_log_interactions_reports_each_entry_and_keeps_the_valid_ones(
    api: pb_grpc.RecommenderStub, stack: Settings
) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    resp = api.LogInteractions(pb.LogInteractionsRequest(interactions=[
        pb.Interaction(user_id=user, item_id="50", type=pb.RATING, value=5),
        pb.Interaction(user_id=user, item_id="no-such-item", type=pb.VIEW),
        pb.Interaction(user_id=user, item_id="181", type=pb.INTERACTION_TYPE_UNSPECIFIED),
        pb.Interaction(user_id=user, item_id="172", type=pb.RATING, value=11),
        pb.Interaction(user_id=user, item_id="172", type=pb.PURCHASE),
    ]), timeout=10)
    assert (resp.accepted, resp.rejected) == (2, 3)
    codes = [(r.accepted, r.error_code) for r in resp.results]
    assert codes == [(True, ""), (False, "NOT_FOUND"), (False, "INVALID_ARGUMENT"), (False, "INVALID_ARGUMENT"),
                     (True, "")]
    assert "interactions[2].type" in resp.results[2].error
    assert "interactions[3].value" in resp.results[3].error
    assert _rated(stack.database_url, user) == {"50", "172"}
    # A user first seen through interactions now exists and is personalized from that history.
    assert api.GetUser(pb.GetUserRequest(user_id=user), timeout=10).user_id == user
    rec = api.Recommend(pb.RecommendRequest(user_id=user, k=5), timeout=10)
    assert rec.items and rec.items[0].source == "two_tower" and not {"50", "172"} & set(_ids(rec))

    for bad in (pb.LogInteractionsRequest(), pb.LogInteractionsRequest(interactions=[pb.Interaction()] * 1001)):
        with pytest.raises(grpc.RpcError) as err:
            api.LogInteractions(bad, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith("interactions:")


def test_items_and_users_round_trip_and_retired_items_stop_being_served(api: pb_grpc.RecommenderStub) -> None:
    user = "13"
    top = api.Recommend(pb.RecommendRequest(user_id=user, k=5), timeout=10).items[0]
    item = api.GetItem(pb.GetItemRequest(item_id=top.item_id), timeout=10)
    assert item.title == top.item.title and item.status == pb.ACTIVE
    item.status = pb.RETIRED
    assert api.UpsertItems(pb.UpsertItemsRequest(items=[item]), timeout=10).upserted == 1
    assert api.GetItem(pb.GetItemRequest(item_id=top.item_id), timeout=10).status == pb.RETIRED
    after = api.Recommend(pb.RecommendRequest(user_id=user, k=5, context=pb.Context(surface="other")), timeout=10)
    assert top.item_id not in _ids(after)

    new = pb.Item(item_id=f"new-{uuid.uuid4().hex[:6]}", title="A new film", categories=["Drama"], price=9.5)
    assert api.UpsertItems(pb.UpsertItemsRequest(items=[new]), timeout=10).created == 1
    assert api.GetItem(pb.GetItemRequest(item_id=new.item_id), timeout=10).price == 9.5

    user_msg = pb.User(user_id=f"onboard-{uuid.uuid4().hex[:6]}")
    user_msg.demographics.update({"age": 30, "gender": "F"})
    saved = api.UpsertUser(pb.UpsertUserRequest(user=user_msg), timeout=10)
    assert saved.demographics["gender"] == "F" and saved.HasField("created_at")

    missing = [(api.GetItem, pb.GetItemRequest(item_id="nope")), (api.GetUser, pb.GetUserRequest(user_id="nope"))]
    for call, req in missing:
        with pytest.raises(grpc.RpcError) as err:
            call(req, timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        api.UpsertItems(pb.UpsertItemsRequest(items=[pb.Item(item_id="x", price=-1)]), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "items[0].price" in err.value.details()


def test_similar_items_and_trending(api: pb_grpc.RecommenderStub) -> None:
    similar = api.SimilarItems(pb.SimilarItemsRequest(item_id="50", k=10), timeout=10)  # Star Wars (1977)
    assert len(similar.items) == 10 and "50" not in [i.item_id for i in similar.items]
    assert all(i.reason.startswith("Similar to Star Wars") for i in similar.items)
    with pytest.raises(grpc.RpcError) as err:
        api.SimilarItems(pb.SimilarItemsRequest(item_id="no-such-item"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and "no-such-item" in err.value.details()

    trending = api.Trending(pb.TrendingRequest(k=5, category="Comedy"), timeout=10)
    assert len(trending.items) == 5 and all("Comedy" in i.item.categories for i in trending.items)


def test_internal_services_validate_too(stack: Settings) -> None:
    with grpc.insecure_channel(stack.retrieval_addr) as channel:
        stub = ipb_grpc.RetrievalStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.Retrieve(ipb.RetrieveRequest(k=10, sources=[ipb.SourceRequest(name="magic", k=5)]), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "sources[0].name" in err.value.details()
        ok = stub.Retrieve(ipb.RetrieveRequest(k=10, user=ipb.UserContext(recent_item_ids=["50"])), timeout=5)
        assert len(ok.candidates.item_ids) == 10 and len(ok.candidates.anchor_item_ids) == 10
    with grpc.insecure_channel(stack.ranking_addr) as channel:
        with pytest.raises(grpc.RpcError) as err:
            ipb_grpc.RankingStub(channel).Rank(ipb.RankRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "candidates" in err.value.details()


def test_services_shut_down_cleanly_on_sigterm(stack: Settings, tmp_path: Path) -> None:
    # A second retrieval process on its own port: SIGTERM stops it with exit code 0.
    extra = replace(stack, retrieval_addr=f"127.0.0.1:{free_port()}", var_dir=tmp_path)
    proc = processes.start(extra, "retrieval")
    assert processes.stop(extra, "retrieval")
    assert proc.wait(timeout=15) == 0


def test_each_answer_is_logged_as_an_exposure(api: pb_grpc.RecommenderStub, stack: Settings) -> None:
    request_id = f"req-{uuid.uuid4().hex}"
    resp = api.Recommend(pb.RecommendRequest(request_id=request_id, user_id="21", k=4), timeout=10)
    assert resp.request_id == request_id
    rows: list = []
    for _ in range(50):  # written after the response, in batches
        with psycopg.connect(stack.database_url) as conn:
            rows = conn.execute("SELECT user_id, variant, item_ids FROM exposures WHERE request_id = %s",
                                (request_id,)).fetchall()
        if rows:
            break
        time.sleep(0.1)
    assert rows == [("21", "control", _ids(resp))]
