"""The request's own filters (pb.Filters): item ids, categories and prices; and Trending's category."""

from __future__ import annotations

from collections.abc import Callable

from orchestrator.pipeline import Candidate, Filter
from orchestrator.query import RequestQuery


class ExcludeItemIds(Filter):
    name = "exclude_item_ids"

    def enable(self, q: RequestQuery) -> str | None:
        return None if q.filters.exclude_item_ids else "not asked"

    def keep(self, q: RequestQuery) -> Callable[[Candidate], bool]:
        excluded = set(q.filters.exclude_item_ids)
        return lambda c: c.item_id not in excluded


class IncludeCategories(Filter):
    name = "include_categories"

    def enable(self, q: RequestQuery) -> str | None:
        return None if q.filters.include_categories else "not asked"

    def keep(self, q: RequestQuery) -> Callable[[Candidate], bool]:
        wanted = set(q.filters.include_categories)
        return lambda c: not wanted.isdisjoint(c.item.categories)


class ExcludeCategories(Filter):
    name = "exclude_categories"

    def enable(self, q: RequestQuery) -> str | None:
        return None if q.filters.exclude_categories else "not asked"

    def keep(self, q: RequestQuery) -> Callable[[Candidate], bool]:
        unwanted = set(q.filters.exclude_categories)
        return lambda c: unwanted.isdisjoint(c.item.categories)


class MinPrice(Filter):
    name = "min_price"

    def enable(self, q: RequestQuery) -> str | None:
        return None if q.filters.HasField("min_price") else "not asked"

    def keep(self, q: RequestQuery) -> Callable[[Candidate], bool]:
        lo = q.filters.min_price
        return lambda c: (c.item.price or 0.0) >= lo


class MaxPrice(Filter):
    name = "max_price"

    def enable(self, q: RequestQuery) -> str | None:
        return None if q.filters.HasField("max_price") else "not asked"

    def keep(self, q: RequestQuery) -> Callable[[Candidate], bool]:
        hi = q.filters.max_price
        return lambda c: c.item.price is None or c.item.price <= hi


class Category(Filter):
    """Trending in a category: the trending source asks for it; fallbacks and fill are held to it here."""

    name = "category"

    def enable(self, q: RequestQuery) -> str | None:
        return None if q.category else "no category asked"

    def keep(self, q: RequestQuery) -> Callable[[Candidate], bool]:
        category = q.category
        return lambda c: category in c.item.categories
