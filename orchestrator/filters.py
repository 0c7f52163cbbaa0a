"""Candidate filters: each is a named predicate (True = keep); removals are counted per filter
and, for the debug trace, listed by id."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from orchestrator.catalog import Catalog
from orchestrator.filter_expr import Filter
from protos import recsys_pb2 as pb

T = TypeVar("T")
Rule = tuple[str, Callable[[str], bool]]


def request_rules(
    filters: pb.Filters, seen: set[str], catalog: Catalog, expression: Filter | None = None,
    interactions: Mapping[str, set[str]] | None = None,
) -> list[Rule]:
    """Rules for one request: the catalogue's status, the user's history, the request's filters
    and its filter expression (which may look at the user's interaction types per item)."""
    rules: list[Rule] = [("inactive", catalog.is_active)]
    if seen and not filters.include_seen:
        rules.append(("seen", lambda i: i not in seen))
    if filters.exclude_item_ids:
        excluded = set(filters.exclude_item_ids)
        rules.append(("exclude_item_ids", lambda i: i not in excluded))
    if filters.include_categories:
        wanted = set(filters.include_categories)
        rules.append(("include_categories", lambda i: not wanted.isdisjoint(catalog.items[i].categories)))
    if filters.exclude_categories:
        unwanted = set(filters.exclude_categories)
        rules.append(("exclude_categories", lambda i: unwanted.isdisjoint(catalog.items[i].categories)))
    if filters.HasField("min_price"):
        lo = filters.min_price
        rules.append(("min_price", lambda i: (catalog.items[i].price or 0.0) >= lo))
    if filters.HasField("max_price"):
        hi = filters.max_price
        rules.append(("max_price", lambda i: catalog.items[i].price is None or catalog.items[i].price <= hi))
    if expression is not None:
        history = interactions or {}
        rules.append(("expression", lambda i: expression.keep(catalog.items[i], history.get(i, set()))))
    return rules


@dataclass
class Filtered(Generic[T]):
    kept: list[T]
    removed: dict[str, int]  # filter name -> how many it removed
    removed_ids: dict[str, list[str]]  # filter name -> the first ids it removed (when asked for)


def filter_items(items: Sequence[T], key: Callable[[T], str], rules: list[Rule], keep_ids: int = 0) -> Filtered[T]:
    """Keep items that pass every rule (in order: "inactive" first, so later rules see known items);
    an item is charged to the first rule that removes it. keep_ids: record up to that many removed
    ids per rule (the debug trace), 0 = counts only."""
    kept: list[T] = []
    removed: dict[str, int] = {}
    removed_ids: dict[str, list[str]] = {}
    for it in items:
        item_id = key(it)
        for name, keep in rules:
            if not keep(item_id):
                n = removed[name] = removed.get(name, 0) + 1
                if n <= keep_ids:
                    removed_ids.setdefault(name, []).append(item_id)
                break
        else:
            kept.append(it)
    return Filtered(kept, removed, removed_ids)


def apply_rules(items: Sequence[T], key: Callable[[T], str], rules: list[Rule]) -> tuple[list[T], dict[str, int]]:
    """filter_items without the ids: kept items and removal counts per rule."""
    out = filter_items(items, key, rules)
    return out.kept, out.removed
