"""One rule, every RPC, over real gRPC against the running stack: SimilarItems and Trending honour
filter expressions and surface rules; pinned slots are refilled; with the cache on, the next
answer shows a click, an out-of-stock item and a new model version; new arrivals get their
quota and a surface's brand exclusion holds."""

from __future__ import annotations

import time
import uuid

import grpc
import pytest

from core.config import Settings
from protos import recsys_pb2 as pb
from protos import recsys_pb2_grpc as pb_grpc
from tests.test_retrieval_sources import publish_copy

pytestmark = pytest.mark.integration
STAR_WARS = "50"


def _ids(resp: pb.RecommendResponse | pb.SimilarItemsResponse | pb.TrendingResponse) -> list[str]:
    return [i.item_id for i in resp.items]


def _similar(api: pb_grpc.RecommenderStub, **kw: object) -> pb.SimilarItemsResponse:
    kw.setdefault("item_id", STAR_WARS)
    kw.setdefault("k", 10)
    return api.SimilarItems(pb.SimilarItemsRequest(**kw), timeout=10)


def _eventually(check, timeout_s: float = 10.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_similar_items_and_trending_honour_the_filter_expression(api: pb_grpc.RecommenderStub) -> None:
    plain = _similar(api)
    assert any("Sci-Fi" in i.item.categories for i in plain.items)
    expr = 'EXCLUDE category IN ("Sci-Fi")'
    filtered = _similar(api, filters=pb.Filters(expression=expr))
    assert len(filtered.items) == 10 and not any("Sci-Fi" in i.item.categories for i in filtered.items)
    trending = api.Trending(pb.TrendingRequest(k=10, filters=pb.Filters(expression='INCLUDE category IN ("Drama")')),
                            timeout=10)
    assert len(trending.items) == 10 and all("Drama" in i.item.categories for i in trending.items)
    for call in (lambda f: _similar(api, filters=f), lambda f: api.Trending(pb.TrendingRequest(filters=f), timeout=10),
                 lambda f: api.Recommend(pb.RecommendRequest(user_id="1", filters=f), timeout=10)):
        with pytest.raises(grpc.RpcError) as err:
            call(pb.Filters(expression="this is not a valid expression"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith("filters.expression: ")


def test_similar_items_applies_the_surfaces_seen_rule(api: pb_grpc.RecommenderStub) -> None:
    shown = _similar(api).items[0].item_id
    user = f"sim-{uuid.uuid4().hex[:8]}"
    assert api.LogInteractions(pb.LogInteractionsRequest(interactions=[
        pb.Interaction(user_id=user, item_id=shown, type=pb.VIEW)]), timeout=10).accepted == 1
    assert shown not in _ids(_similar(api, user_id=user))  # every interaction counts as seen by default
    assert shown in _ids(_similar(api, user_id=user, context=pb.Context(surface="cart")))  # only purchases there


def test_a_pinned_slot_whose_item_is_filtered_out_is_refilled(api: pb_grpc.RecommenderStub) -> None:
    plain = api.Recommend(pb.RecommendRequest(user_id="6", k=5), timeout=10)
    for gone in ("no-such-item", "1"):  # unknown; rated by user 6 (seen)
        pinned = api.Recommend(pb.RecommendRequest(user_id="6", k=5, promotions=pb.PromotionOptions(
            pinned={0: gone})), timeout=10)
        assert _ids(pinned) == _ids(plain)


def test_with_the_cache_on_an_out_of_stock_item_leaves_the_next_answer(api: pb_grpc.RecommenderStub) -> None:
    request = pb.RecommendRequest(user_id="8", k=10, context=pb.Context(surface=f"s-{uuid.uuid4().hex[:6]}"))
    first = api.Recommend(request, timeout=10)
    _eventually(lambda: _ids(api.Recommend(request, timeout=10)) == _ids(first))
    item = api.GetItem(pb.GetItemRequest(item_id=first.items[0].item_id), timeout=10)
    item.status = pb.OUT_OF_STOCK
    api.UpsertItems(pb.UpsertItemsRequest(items=[item]), timeout=10)
    try:
        after = api.Recommend(request, timeout=10)
        assert item.item_id not in _ids(after) and len(after.items) == 10
    finally:
        item.status = pb.ACTIVE
        api.UpsertItems(pb.UpsertItemsRequest(items=[item]), timeout=10)


def test_with_the_cache_on_answers_report_a_new_model_version(api: pb_grpc.RecommenderStub, stack: Settings) -> None:
    request = pb.RecommendRequest(user_id="9", k=10, context=pb.Context(surface=f"s-{uuid.uuid4().hex[:6]}"))
    first = api.Recommend(request, timeout=10)
    _eventually(lambda: api.Recommend(request, timeout=10).model_version == first.model_version)
    version = publish_copy(stack, build_sources=False)
    assert version != first.model_version
    _eventually(lambda: api.Recommend(request, timeout=10).model_version == version)  # retrieval polls every 2 s


def test_new_arrivals_get_their_quota_and_a_surface_excludes_a_brand(api: pb_grpc.RecommenderStub) -> None:
    tag = uuid.uuid4().hex[:6]
    new = [pb.Item(item_id=f"new-{tag}-{b}", title=f"New {b}", categories=["Drama"], brand=b)
           for b in ("acme", "globex")]
    api.UpsertItems(pb.UpsertItemsRequest(items=new), timeout=10)
    ids = [i.item_id for i in new]
    try:
        arrivals = api.Recommend(pb.RecommendRequest(user_id="10", k=10, context=pb.Context(surface="arrivals")),
                                 timeout=10)
        shown = {i.item_id: i for i in arrivals.items}
        assert set(ids) <= set(shown) and len(arrivals.items) == 10
        assert all(shown[i].source == "new_arrivals" and shown[i].reason == "New arrival" for i in ids)
        partner = api.Recommend(pb.RecommendRequest(user_id="10", k=10, debug=True,
                                                    context=pb.Context(surface="partner")), timeout=10)
        assert ids[0] not in _ids(partner) and ids[1] in _ids(partner) and len(partner.items) == 10
        removed = {s.stage: s for s in partner.debug.stages}["filter:exclude_brands"]
        assert ids[0] in removed.removed_item_ids["exclude_brands"].item_ids
    finally:
        for it in new:
            it.status = pb.RETIRED
        api.UpsertItems(pb.UpsertItemsRequest(items=new), timeout=10)


def test_a_retried_interaction_with_its_event_id_is_stored_once(api: pb_grpc.RecommenderStub, stack: Settings) -> None:
    import psycopg

    user = f"idem-{uuid.uuid4().hex[:8]}"
    batch = pb.LogInteractionsRequest(interactions=[
        pb.Interaction(user_id=user, item_id=STAR_WARS, type=pb.CLICK, event_id="e-1"),
        pb.Interaction(user_id=user, item_id="1", type=pb.VIEW, event_id="e-2"),
        pb.Interaction(user_id=user, item_id="2", type=pb.VIEW),  # no event id: each call stores it
    ])
    first = api.LogInteractions(batch, timeout=10)
    again = api.LogInteractions(batch, timeout=10)  # the client's retry after, say, a lost answer
    assert first.accepted == again.accepted == 3
    assert [r.duplicate for r in first.results] == [False, False, False]
    assert [r.duplicate for r in again.results] == [True, True, False]
    assert [r.interaction_id for r in again.results[:2]] == [r.interaction_id for r in first.results[:2]]
    # the same event id twice in one batch, and the same event id for another user: each user's own
    other = f"idem-{uuid.uuid4().hex[:8]}"
    mixed = api.LogInteractions(pb.LogInteractionsRequest(interactions=[
        pb.Interaction(user_id=other, item_id="3", type=pb.VIEW, event_id="e-1"),
        pb.Interaction(user_id=other, item_id="3", type=pb.VIEW, event_id="e-1"),
    ]), timeout=10)
    assert [r.duplicate for r in mixed.results] == [False, True]
    assert mixed.results[0].interaction_id == mixed.results[1].interaction_id
    with psycopg.connect(stack.database_url) as conn:
        counts = dict(conn.execute("SELECT user_id, count(*) FROM interactions WHERE user_id IN (%s, %s) "
                                   "GROUP BY user_id", (user, other)).fetchall())
    assert counts == {user: 4, other: 1}
    bad = api.LogInteractions(pb.LogInteractionsRequest(interactions=[
        pb.Interaction(user_id=user, item_id="1", type=pb.VIEW, event_id="x" * 200)]), timeout=10)
    assert bad.results[0].error_code == "INVALID_ARGUMENT" and "event_id" in bad.results[0].error
