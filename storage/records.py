"""Plain records for what the tables hold; the API layer converts them to and from protos."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

ITEM_STATUSES = ("active", "out_of_stock", "retired")
INTERACTION_TYPES = ("view", "click", "add_to_cart", "purchase", "rating", "like")
MAX_ID_LEN = 128


@dataclass
class UserRecord:
    user_id: str
    demographics: dict[str, Any] = field(default_factory=dict)
    preferences: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    last_active_at: datetime | None = None


@dataclass
class ItemRecord:
    item_id: str
    title: str = ""
    description: str = ""
    categories: list[str] = field(default_factory=list)
    brand: str = ""
    price: float | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    status: str = "active"
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass
class InteractionRecord:
    user_id: str
    item_id: str
    type: str
    value: float = 1.0
    request_id: str | None = None
    ts: datetime | None = None  # None = now
    interaction_id: int | None = None
    event_id: str | None = None  # the client's id: unique per user, makes a retry idempotent
