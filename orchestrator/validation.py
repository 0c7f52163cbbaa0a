"""Request validation, one layer in front of the pipelines: every rule names the field it checks,
and every RPC's request becomes a query (orchestrator/query.py) the same way: the surface's
settings, the experiment variant's, the request's own filters and options. The generic checks
(ids, texts, Structs, counts, timestamps) are core.validation's, shared with the internal services;
the limits are in docs/api-limits.md."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from google.protobuf import field_mask_pb2

from core.errors import InvalidArgument
from core.segments import parse_segment
from core.validation import check_count, check_finite, check_id, check_name, check_string_map, shown
from orchestrator import filter_expr
from orchestrator.config import OrchestratorConfig, PipelineParams
from orchestrator.pipeline import Trace
from orchestrator.query import RECOMMEND, SIMILAR_ITEMS, TRENDING, RequestQuery
from protos import recsys_pb2 as pb

MAX_K = 500
DEFAULT_K = 10
MAX_BATCH = 1000
MAX_FILTER_ENTRIES = 1000  # ids or categories in one request filter
DEBUG_REMOVED_IDS = 100  # removed ids listed per filter in the debug trace
SIMILAR_MODES = {"": ("similar_items", "content"), "similar": ("similar_items", "content"),
                 "also_bought": ("also_bought",), "all": ("also_bought", "similar_items", "content")}
TRENDING_WINDOWS = ("1h", "24h", "7d")
MAX_CONTEXT_ATTRIBUTES = 64
MAX_CONTEXT_VALUE_LEN = 1024
Remaining = Callable[[], float | None]


def check_k(value: int, field: str = "k") -> int:
    """0 means unset (proto3 default) and gives DEFAULT_K; otherwise 1..MAX_K."""
    if value == 0:
        return DEFAULT_K
    if not 1 <= value <= MAX_K:
        raise InvalidArgument(field, f"must be between 1 and {MAX_K}, got {value}")
    return value


def check_batch(field: str, n: int) -> None:
    check_count(field, n, MAX_BATCH, min_n=1)


def check_context(c: pb.Context) -> str:
    """The request's surface (a name) and free-form context attributes; returns the surface as given."""
    check_name("context.surface", c.surface)
    check_string_map("context.attributes", c.attributes, MAX_CONTEXT_ATTRIBUTES, MAX_CONTEXT_VALUE_LEN)
    return c.surface


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


def check_filters(f: pb.Filters) -> filter_expr.Filter | None:
    """The request filters checked, the expression parsed (raises InvalidArgument naming the field)."""
    for name in ("exclude_item_ids", "include_categories", "exclude_categories"):
        values = getattr(f, name)
        if len(values) > MAX_FILTER_ENTRIES:
            raise InvalidArgument(f"filters.{name}",
                                  f"must hold at most {MAX_FILTER_ENTRIES} entries, got {len(values)}")
        for i, v in enumerate(values):
            check_id(f"filters.{name}[{i}]", v)
    for name in ("min_price", "max_price"):
        if f.HasField(name):
            check_finite(f"filters.{name}", getattr(f, name))
    if f.HasField("min_price") and f.HasField("max_price") and f.min_price > f.max_price:
        raise InvalidArgument("filters.min_price", f"must not exceed filters.max_price ({f.min_price} > {f.max_price})")
    return filter_expr.parse(f.expression, "filters.expression") if f.expression else None


def _request_id(value: str) -> str:
    return check_id("request_id", value) if value else uuid.uuid4().hex


def recommend_query(req: pb.RecommendRequest, config: OrchestratorConfig, remaining: Remaining) -> RequestQuery:
    user_id = check_id("user_id", req.user_id)
    k = check_k(req.k)
    request_id = _request_id(req.request_id)
    expression = check_filters(req.filters)
    surface = check_context(req.context) or "home"
    assignment = config.experiments.assign(user_id, surface, check_name("experiment_variant", req.experiment_variant))
    params = request_params(config.surface(surface), assignment.params, req)
    want = min(1000, max(4 * k, 200))  # more than k: filters and selection remove some
    return RequestQuery(
        RECOMMEND, request_id, k, surface, params, remaining, Trace(DEBUG_REMOVED_IDS if req.debug else 0),
        filters=req.filters, expression=expression, user_id=user_id, variant=assignment.label, debug=req.debug,
        pinned={pos: i for pos, i in req.promotions.pinned.items() if pos < k}, context=req.context, want=want,
        fill_target=min(want, 2 * k + 20),
    )


def similar_query(req: pb.SimilarItemsRequest, config: OrchestratorConfig, remaining: Remaining) -> RequestQuery:
    item_id = check_id("item_id", req.item_id)
    k = check_k(req.k)
    mode = req.mode.strip().lower()
    if mode not in SIMILAR_MODES:
        raise InvalidArgument("mode", f"must be one of {', '.join(m for m in SIMILAR_MODES if m)} or empty "
                                      f"(similar), got {shown(req.mode)}")
    user_id = check_id("user_id", req.user_id) if req.user_id else ""
    request_id = _request_id(req.request_id)
    expression = check_filters(req.filters)
    surface = check_context(req.context) or "default"
    want = min(1000, max(4 * k, 100))
    return RequestQuery(
        SIMILAR_ITEMS, request_id, k, surface, config.surface(surface), remaining,
        Trace(DEBUG_REMOVED_IDS if req.debug else 0), filters=req.filters, expression=expression, user_id=user_id,
        debug=req.debug, item_id=item_id, item_sources=SIMILAR_MODES[mode], context=req.context, want=want,
        fill_target=want,
    )


def trending_query(req: pb.TrendingRequest, config: OrchestratorConfig, remaining: Remaining) -> RequestQuery:
    k = check_k(req.k)
    if req.window and req.window not in TRENDING_WINDOWS:
        raise InvalidArgument("window", f"must be one of {', '.join(TRENDING_WINDOWS)} or empty (all time), "
                                        f"got {shown(req.window)}")
    segment = ""
    if check_name("segment", req.segment):
        try:
            segment = parse_segment(req.segment)
        except ValueError as exc:
            raise InvalidArgument("segment", str(exc)) from None
    if req.category:
        check_id("category", req.category)
    request_id = _request_id(req.request_id)
    expression = check_filters(req.filters)
    surface = check_context(req.context) or "default"
    want = min(1000, 2 * k + 20)  # room for the status and request filters
    return RequestQuery(
        TRENDING, request_id, k, surface, config.surface(surface), remaining,
        Trace(DEBUG_REMOVED_IDS if req.debug else 0), filters=req.filters, expression=expression, debug=req.debug,
        window=req.window, category=req.category, segment=segment, context=req.context, want=want, fill_target=want,
    )


def update_fields(mask: field_mask_pb2.FieldMask, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    """The fields an update_mask names (all of `allowed` when it is empty); INVALID_ARGUMENT naming the path
    that is not one of them."""
    if not mask.paths:
        return allowed
    for i, path in enumerate(mask.paths):
        if path not in allowed:
            raise InvalidArgument(f"update_mask.paths[{i}]", f"{path!r} is not a field an update writes; "
                                                             f"{what} fields are {', '.join(allowed)}")
    return tuple(f for f in allowed if f in set(mask.paths))
