"""Live changes to the running retrieval service over gRPC: items added through
UpsertItems become retrievable within seconds without a rebuild, retired items stop
being served, and a newly published version is swapped in under load without a failed
request (and without losing the items added live)."""

from __future__ import annotations

import threading
import time
import uuid

import grpc
import pytest

from core.config import Settings
from protos import internal_pb2 as ipb
from protos import internal_pb2_grpc as ipb_grpc
from protos import recsys_pb2 as pb
from protos import recsys_pb2_grpc as pb_grpc
from tests.test_retrieval_sources import JEDI, STAR_WARS, publish_copy, retrieval  # noqa: F401

pytestmark = pytest.mark.integration

SAGA = {STAR_WARS, "172", JEDI}


def _new_item(category: str) -> pb.Item:
    return pb.Item(
        item_id=f"live-{uuid.uuid4().hex[:8]}", title="Star Wars: Shadows of the Saga",
        description="Star Wars (1999), Action, Adventure, Sci-Fi, War: the saga goes on",
        categories=["Action", "Adventure", "Sci-Fi", "War", category],
    )


def _knows(stub: ipb_grpc.RetrievalStub, item_id: str) -> bool:
    """Retrieval has the item in its index: its embedding neighbours come back."""
    found = stub.Retrieve(ipb.RetrieveRequest(k=5, item_id=item_id, sources=[ipb.SourceRequest(name="similar_items",
                                                                                            k=5)]), timeout=5)
    return bool(found.candidates.sources) and found.candidates.sources[0] == "similar_items"


def _wait(condition, what: str, timeout_s: float = 15.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s} s"
        time.sleep(0.2)


def _ids(items) -> list[str]:  # noqa: ANN001
    return [i.item_id for i in items]


def test_a_new_item_is_served_within_seconds_and_a_retired_one_stops_being_served(
    api: pb_grpc.RecommenderStub, retrieval: ipb_grpc.RetrievalStub,  # noqa: F811
) -> None:
    category = f"Space Opera {uuid.uuid4().hex[:6]}"  # only the new item has it
    item = _new_item(category)
    assert not _knows(retrieval, item.item_id)
    assert api.UpsertItems(pb.UpsertItemsRequest(items=[item]), timeout=10).created == 1
    started = time.monotonic()
    _wait(lambda: _knows(retrieval, item.item_id), "retrieval learning of the new item")
    assert time.monotonic() - started < 10

    own = api.SimilarItems(pb.SimilarItemsRequest(item_id=item.item_id, k=10), timeout=10)
    assert SAGA & set(_ids(own.items)), _ids(own.items)  # its content puts it beside the saga
    assert all(i.reason == f"Similar to {item.title}" for i in own.items)
    assert item.item_id in _ids(api.SimilarItems(pb.SimilarItemsRequest(item_id=STAR_WARS, k=10), timeout=10).items)

    fan = f"fan-{uuid.uuid4().hex[:8]}"
    api.LogInteractions(pb.LogInteractionsRequest(interactions=[
        pb.Interaction(user_id=fan, item_id=i, type=pb.RATING, value=5) for i in sorted(SAGA)]), timeout=10)
    only_new = pb.Filters(include_categories=[category])
    rec = api.Recommend(pb.RecommendRequest(user_id=fan, k=5, filters=only_new), timeout=10)
    assert _ids(rec.items) == [item.item_id] and not rec.degraded

    item.status = pb.RETIRED
    api.UpsertItems(pb.UpsertItemsRequest(items=[item]), timeout=10)
    # at once through the API (the orchestrator filters by status) ...
    assert item.item_id not in _ids(api.SimilarItems(pb.SimilarItemsRequest(item_id=STAR_WARS, k=10), timeout=10).items)
    rec = api.Recommend(pb.RecommendRequest(user_id=fan, k=5, filters=only_new, context=pb.Context(surface="again")),
                        timeout=10)
    assert _ids(rec.items) == []
    # ... and within seconds retrieval stops returning it as a candidate
    page = ipb.RetrieveRequest(k=50, item_id=STAR_WARS, sources=[ipb.SourceRequest(name="content", k=25),
                                                               ipb.SourceRequest(name="similar_items", k=25)])
    _wait(lambda: item.item_id not in retrieval.Retrieve(page, timeout=5).candidates.item_ids,
          "retrieval dropping the retired item")


def test_a_new_version_is_swapped_in_under_load_without_a_failed_request(
    api: pb_grpc.RecommenderStub, retrieval: ipb_grpc.RetrievalStub, stack: Settings,  # noqa: F811
) -> None:
    item = _new_item(f"Space Opera {uuid.uuid4().hex[:6]}")
    api.UpsertItems(pb.UpsertItemsRequest(items=[item]), timeout=10)
    _wait(lambda: _knows(retrieval, item.item_id), "retrieval learning of the new item")
    user = ipb.UserContext(user_id="load", recent_item_ids=sorted(SAGA), attributes={"age": "30"})
    requests = [ipb.RetrieveRequest(k=100, user=user),
                ipb.RetrieveRequest(k=5, item_id=item.item_id, sources=[ipb.SourceRequest(name="similar_items", k=5)])]
    versions: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        with grpc.insecure_channel(stack.retrieval_addr) as channel:
            stub = ipb_grpc.RetrievalStub(channel)
            n = 0
            while not stop.is_set():
                req = requests[n % 2]
                n += 1
                try:
                    resp = stub.Retrieve(req, timeout=5)
                except grpc.RpcError as exc:
                    failures.append(exc.code().name)
                    continue
                versions.append(resp.model_version)
                if len(resp.candidates.item_ids) != req.k:
                    failures.append(f"{len(resp.candidates.item_ids)} candidates")
                elif req.item_id and resp.candidates.sources[0] != "similar_items":
                    failures.append(f"version {resp.model_version} lost the live item")

    worker = threading.Thread(target=hammer)
    worker.start()
    try:
        _wait(lambda: len(versions) >= 10, "the first answers")
        old = versions[-1]
        new = publish_copy(stack, build_sources=False)
        deadline = time.monotonic() + 8.0  # the service polls CURRENT every 2 s
        while (not versions or versions[-1] != new) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # and keeps answering from the new one
    finally:
        stop.set()
        worker.join(timeout=10)
    assert failures == []
    assert versions[0] == old and versions[-1] == new, (old, new, versions[-1])
    swapped = versions.index(new)
    assert set(versions[:swapped]) == {old} and set(versions[swapped:]) == {new}  # one switch, never back
    assert len(versions) > 50


def test_an_idle_database_answers_each_poll_with_nothing_yet_late_commits_are_caught() -> None:
    """The poll's overlap reaches back only to what the previous poll could have missed: a bulk-loaded
    catalogue (one updated_at for every row) is not re-read every second, a row committed late is read."""
    import psycopg

    from retrieval.live import LiveSource
    from tests.conftest import fresh_database

    with fresh_database() as url, psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO items (item_id, title) SELECT 'i' || n, 'x' FROM generate_series(1, 50) n")
        conn.execute("INSERT INTO users (user_id) VALUES ('u')")
        conn.execute("INSERT INTO interactions (user_id, item_id, type) SELECT 'u', 'i' || n, 'click' "
                     "FROM generate_series(1, 30) n")
        live = LiveSource(url)
        assert len(live.changed_items()) == 50  # the first read: everything
        assert len(live.new_interactions()) == 30
        conn.execute("UPDATE items SET updated_at = now() - interval '1 hour'")  # an old, idle catalogue
        live.items_since = conn.execute("SELECT max(updated_at) FROM items").fetchone()[0]
        live._polled_at = None
        live.changed_items()  # the first poll from a watermark re-reads its overlap
        assert live.changed_items() == [] and live.changed_items() == []
        assert live.new_interactions() == [] and live.new_interactions() == []
        # a transaction that began before the last poll and committed after it: its row is read once
        conn.execute("UPDATE items SET updated_at = now() - interval '3 seconds', title = 'late' "
                     "WHERE item_id = 'i7'")
        assert [it.item_id for it in live.changed_items()] == ["i7"]
        conn.execute("INSERT INTO interactions (user_id, item_id, type) VALUES ('u', 'i9', 'click')")
        assert [e.item_id for e in live.new_interactions()] == ["i9"]
        live.close()
