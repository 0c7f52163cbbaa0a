"""UpsertItems and UpsertUser with an update_mask over the running stack: a status-only update keeps the
title, a preferences-only update keeps the demographics, a path that is no field is INVALID_ARGUMENT
naming it; without a mask the item as sent replaces the stored one."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from protos import recsys_pb2 as pb
from protos import recsys_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration


def _item(api: pb_grpc.RecommenderStub, item_id: str) -> pb.Item:
    return api.GetItem(pb.GetItemRequest(item_id=item_id), timeout=10)


def test_a_status_only_update_keeps_the_title(api: pb_grpc.RecommenderStub) -> None:
    item_id = f"p-{uuid.uuid4().hex[:8]}"
    full = pb.Item(item_id=item_id, title="Star Wars", categories=["Sci-Fi"], brand="Lucasfilm", price=9.5)
    resp = api.UpsertItems(pb.UpsertItemsRequest(items=[full]), timeout=10)
    assert (resp.upserted, resp.created) == (1, 1)

    status_only = pb.UpsertItemsRequest(items=[pb.Item(item_id=item_id, status=pb.OUT_OF_STOCK)],
                                        update_mask=FieldMask(paths=["status"]))
    assert api.UpsertItems(status_only, timeout=10).created == 0
    got = _item(api, item_id)
    assert got.status == pb.OUT_OF_STOCK
    assert (got.title, list(got.categories), got.brand, got.price) == ("Star Wars", ["Sci-Fi"], "Lucasfilm", 9.5)

    # no mask: the item as sent is the item (what a full catalogue sync sends)
    api.UpsertItems(pb.UpsertItemsRequest(items=[pb.Item(item_id=item_id, status=pb.ACTIVE)]), timeout=10)
    got = _item(api, item_id)
    assert got.status == pb.ACTIVE and got.title == "" and not got.categories


def test_a_new_item_under_a_mask_takes_what_is_sent(api: pb_grpc.RecommenderStub) -> None:
    item_id = f"p-{uuid.uuid4().hex[:8]}"
    api.UpsertItems(pb.UpsertItemsRequest(items=[pb.Item(item_id=item_id, title="Fresh", status=pb.ACTIVE)],
                                          update_mask=FieldMask(paths=["status"])), timeout=10)
    assert _item(api, item_id).title == "Fresh"


def test_a_mask_path_that_is_no_field_is_invalid_argument_naming_it(api: pb_grpc.RecommenderStub) -> None:
    for request, call in (
        (pb.UpsertItemsRequest(items=[pb.Item(item_id="1")], update_mask=FieldMask(paths=["status", "titel"])),
         api.UpsertItems),
        (pb.UpsertUserRequest(user=pb.User(user_id="1"), update_mask=FieldMask(paths=["user_id"])),
         api.UpsertUser),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith("update_mask.paths[")
    assert _item(api, "1").title  # nothing was written


def test_a_preferences_only_update_keeps_the_demographics(api: pb_grpc.RecommenderStub) -> None:
    user_id = f"p-user-{uuid.uuid4().hex[:6]}"
    user = pb.User(user_id=user_id)
    user.demographics.update({"age": 30, "gender": "F"})
    api.UpsertUser(pb.UpsertUserRequest(user=user), timeout=10)
    prefs = pb.User(user_id=user_id)
    prefs.preferences.update({"preferred_categories": ["Comedy"]})
    stored = api.UpsertUser(pb.UpsertUserRequest(user=prefs, update_mask=FieldMask(paths=["preferences"])),
                            timeout=10)
    assert dict(stored.demographics) == {"age": 30, "gender": "F"}
    assert list(stored.preferences["preferred_categories"]) == ["Comedy"]
    got = api.GetUser(pb.GetUserRequest(user_id=user_id), timeout=10)
    assert dict(got.demographics) == {"age": 30, "gender": "F"}


def _all_pages(call: Callable[[str], Any], field: str, size: int) -> list[str]:
    """The ids of every page, following next_page_token; every page but the last is full."""
    ids: list[str] = []
    token = ""
    while True:
        page = call(token)
        rows = getattr(page, field)
        ids += [r.item_id if field == "items" else r.user_id for r in rows]
        token = page.next_page_token
        if not token:
            return ids
        assert len(rows) == size


def test_list_pages_cover_everything_once(api: pb_grpc.RecommenderStub) -> None:
    """ListItems and ListUsers page through every row once, in id order; a status filter holds across pages;
    a token from elsewhere is INVALID_ARGUMENT."""
    seen = _all_pages(lambda token: api.ListItems(pb.ListItemsRequest(page_size=250, page_token=token), timeout=10),
                      "items", 250)
    assert len(seen) == len(set(seen)) and seen == sorted(seen) and len(seen) >= 1682
    assert "1" in seen and api.ListItems(pb.ListItemsRequest(page_size=1), timeout=10).items[0].item_id == seen[0]
    users = _all_pages(lambda token: api.ListUsers(pb.ListUsersRequest(page_size=400, page_token=token), timeout=10),
                       "users", 400)
    assert len(users) == len(set(users)) and users == sorted(users) and len(users) >= 943

    item_id = f"p-{uuid.uuid4().hex[:8]}"
    api.UpsertItems(pb.UpsertItemsRequest(items=[pb.Item(item_id=item_id, title="Gone", status=pb.RETIRED)]),
                    timeout=10)
    retired = api.ListItems(pb.ListItemsRequest(status=pb.RETIRED, page_size=1000), timeout=10)
    assert item_id in {i.item_id for i in retired.items} and all(i.status == pb.RETIRED for i in retired.items)

    first = api.ListItems(pb.ListItemsRequest(page_size=2), timeout=10)
    for request, field in ((pb.ListItemsRequest(page_token="not-a-token"), "page_token"),
                           (pb.ListItemsRequest(page_token=first.next_page_token, status=pb.RETIRED), "page_token"),
                           (pb.ListItemsRequest(page_size=1001), "page_size")):
        with pytest.raises(grpc.RpcError) as err:
            api.ListItems(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith(field)
    with pytest.raises(grpc.RpcError) as err:
        api.ListUsers(pb.ListUsersRequest(page_token=first.next_page_token), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "another list" in err.value.details()
