"""UpsertItems and UpsertUser with an update_mask over the running stack: a status-only update keeps the
title, a preferences-only update keeps the demographics, a path that is no field is INVALID_ARGUMENT
naming it; without a mask the item as sent replaces the stored one."""

from __future__ import annotations

import uuid

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
