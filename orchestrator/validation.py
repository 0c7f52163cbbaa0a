"""Request validation: every rule names the field it checks."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from core.errors import InvalidArgument
from orchestrator.config import PipelineParams
from protos import recsys_pb2 as pb
from storage.records import MAX_ID_LEN

MAX_K = 500
DEFAULT_K = 10
MAX_BATCH = 1000


def check_id(field: str, value: str) -> str:
    if not value:
        raise InvalidArgument(field, "must not be empty")
    if len(value) > MAX_ID_LEN:
        raise InvalidArgument(field, f"must be at most {MAX_ID_LEN} characters, got {len(value)}")
    return value


def check_k(value: int, field: str = "k") -> int:
    """0 means unset (proto3 default) and gives DEFAULT_K; otherwise 1..MAX_K."""
    if value == 0:
        return DEFAULT_K
    if not 1 <= value <= MAX_K:
        raise InvalidArgument(field, f"must be between 1 and {MAX_K}, got {value}")
    return value


def check_batch(field: str, n: int) -> None:
    if not 1 <= n <= MAX_BATCH:
        raise InvalidArgument(field, f"must hold 1 to {MAX_BATCH} entries, got {n}")


def check_finite(field: str, value: float) -> float:
    if not math.isfinite(value):
        raise InvalidArgument(field, f"must be a finite number, got {value}")
    return value


MAX_PROMOTED = 100


def request_params(surface: PipelineParams, variant: dict[str, Any], req: pb.RecommendRequest) -> PipelineParams:
    """The pipeline settings of one request: surface defaults, then the experiment variant's
    params (validated when the config was loaded), then the request's own options."""
    params = surface.updated(variant, "experiment variant") if variant else surface
    changes: dict[str, Any] = {}
    d = req.diversity
    if d.HasField("mmr_lambda"):
        if not 0.0 <= d.mmr_lambda <= 1.0:
            raise InvalidArgument("diversity.mmr_lambda", f"must be between 0 and 1, got {d.mmr_lambda}")
        changes["mmr_lambda"] = d.mmr_lambda
    for name in ("max_per_category", "max_per_price_band"):
        value = getattr(d, name)
        if not 0 <= value <= MAX_K:
            raise InvalidArgument(f"diversity.{name}", f"must be between 0 and {MAX_K}, got {value}")
        if value:
            changes[name] = value
    p = req.promotions
    if len(p.item_ids) > MAX_PROMOTED:
        raise InvalidArgument("promotions.item_ids", f"must hold at most {MAX_PROMOTED} ids, got {len(p.item_ids)}")
    for i, item_id in enumerate(p.item_ids):
        check_id(f"promotions.item_ids[{i}]", item_id)
    if p.item_ids:
        changes["promoted"] = params.promoted | set(p.item_ids)
    if not 0.0 <= check_finite("promotions.boost", p.boost) <= 10.0:
        raise InvalidArgument("promotions.boost", f"must be between 0 and 10, got {p.boost}")
    if p.boost:
        changes["promotion_boost"] = p.boost
    if not 0.0 <= check_finite("promotions.reserved_share", p.reserved_share) <= 1.0:
        raise InvalidArgument("promotions.reserved_share", f"must be between 0 and 1, got {p.reserved_share}")
    if p.reserved_share:
        changes["reserved_share"] = p.reserved_share
    for pos, item_id in p.pinned.items():
        if not 0 <= pos < MAX_K:
            raise InvalidArgument("promotions.pinned", f"positions must be between 0 and {MAX_K - 1}, got {pos}")
        check_id(f"promotions.pinned[{pos}]", item_id)
    return replace(params, **changes) if changes else params
