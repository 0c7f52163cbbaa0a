"""Conversions between protos and storage records."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from core.errors import InvalidArgument
from core.validation import MAX_NAME_LEN, check_count, check_finite, check_id, check_struct, check_text, check_timestamp
from orchestrator.preferences import check_preferences
from protos import recsys_pb2 as pb
from storage.records import ItemRecord, UserRecord

# What one item or user may hold (docs/api-limits.md): every replica keeps the catalogue in memory and
# answers carry it, so a 3.5 MB description costs memory everywhere and breaks clients' message limits.
MAX_TITLE_LEN = 500
MAX_DESCRIPTION_LEN = 10_000
MAX_CATEGORIES = 32
MAX_ATTRIBUTES_BYTES = 16 * 1024
MAX_USER_STRUCT_BYTES = 4 * 1024  # demographics, preferences: sent to retrieval and ranking per request

_STATUS_TO_DB = {pb.ITEM_STATUS_UNSPECIFIED: "active", pb.ACTIVE: "active",
                 pb.OUT_OF_STOCK: "out_of_stock", pb.RETIRED: "retired"}
_STATUS_TO_PB = {"active": pb.ACTIVE, "out_of_stock": pb.OUT_OF_STOCK, "retired": pb.RETIRED}
INTERACTION_TYPES = {pb.VIEW: "view", pb.CLICK: "click", pb.ADD_TO_CART: "add_to_cart",
                     pb.PURCHASE: "purchase", pb.RATING: "rating", pb.LIKE: "like"}


def to_struct(d: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(d or {})
    return s


def from_struct(s: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(s)


def to_timestamp(dt: datetime | None) -> timestamp_pb2.Timestamp | None:
    if dt is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(dt.astimezone(UTC))
    return ts


def from_timestamp(ts: timestamp_pb2.Timestamp, present: bool, field: str = "timestamp") -> datetime | None:
    """The timestamp if set, checked (core.validation.check_timestamp: InvalidArgument naming `field`)."""
    return check_timestamp(field, ts) if present else None


def item_to_pb(it: ItemRecord) -> pb.Item:
    msg = pb.Item(
        item_id=it.item_id, title=it.title, description=it.description, categories=it.categories,
        brand=it.brand, attributes=to_struct(it.attributes), status=_STATUS_TO_PB[it.status],
    )
    if it.price is not None:
        msg.price = it.price
    if it.created_at is not None:
        msg.created_at.CopyFrom(to_timestamp(it.created_at))
    return msg


def item_status(value: int, field: str = "status") -> str:
    """The stored name of an ItemStatus; INVALID_ARGUMENT for a number that is none."""
    if value not in _STATUS_TO_DB:
        raise InvalidArgument(field, f"unknown status {value}")
    return _STATUS_TO_DB[value]


def item_from_pb(msg: pb.Item, field: str) -> ItemRecord:
    check_id(f"{field}.item_id", msg.item_id)
    if msg.status not in _STATUS_TO_DB:
        raise InvalidArgument(f"{field}.status", f"unknown status {msg.status}")
    price = None
    if msg.HasField("price"):
        price = check_finite(f"{field}.price", msg.price)
        if price < 0:
            raise InvalidArgument(f"{field}.price", f"must not be negative, got {price}")
    check_text(f"{field}.title", msg.title, MAX_TITLE_LEN)
    check_text(f"{field}.description", msg.description, MAX_DESCRIPTION_LEN, multiline=True)
    check_text(f"{field}.brand", msg.brand, MAX_NAME_LEN)
    check_count(f"{field}.categories", len(msg.categories), MAX_CATEGORIES)
    for j, c in enumerate(msg.categories):
        check_id(f"{field}.categories[{j}]", c, MAX_NAME_LEN)
    check_struct(f"{field}.attributes", msg.attributes, MAX_ATTRIBUTES_BYTES)
    return ItemRecord(
        item_id=msg.item_id, title=msg.title, description=msg.description, categories=list(msg.categories),
        brand=msg.brand, price=price, attributes=from_struct(msg.attributes), status=_STATUS_TO_DB[msg.status],
    )


def user_to_pb(u: UserRecord) -> pb.User:
    msg = pb.User(user_id=u.user_id, demographics=to_struct(u.demographics), preferences=to_struct(u.preferences))
    if u.created_at is not None:
        msg.created_at.CopyFrom(to_timestamp(u.created_at))
    if u.last_active_at is not None:
        msg.last_active_at.CopyFrom(to_timestamp(u.last_active_at))
    return msg


def user_from_pb(msg: pb.User) -> UserRecord:
    check_id("user.user_id", msg.user_id)
    check_struct("user.demographics", msg.demographics, MAX_USER_STRUCT_BYTES)
    check_struct("user.preferences", msg.preferences, MAX_USER_STRUCT_BYTES)
    return UserRecord(user_id=msg.user_id, demographics=from_struct(msg.demographics),
                      preferences=check_preferences(from_struct(msg.preferences)))
