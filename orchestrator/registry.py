"""The registration lines: every component the pipelines are built from, by kind, in run order.

A new source, filter or selector is one file and one line here (docs/extending.md). Each
component's gate decides per request whether it runs, so one list serves Recommend,
SimilarItems and Trending; its `settings` become surface settings in the config file.
"""

from __future__ import annotations

from functools import cache

from orchestrator.filters.anchor import Anchor
from orchestrator.filters.brands import ExcludeBrands
from orchestrator.filters.catalogue import Inactive
from orchestrator.filters.expression import Expression
from orchestrator.filters.request import (
    Category,
    ExcludeCategories,
    ExcludeItemIds,
    IncludeCategories,
    MaxPrice,
    MinPrice,
)
from orchestrator.filters.seen import Seen
from orchestrator.pipeline import Filter, Selector, Setting
from orchestrator.selectors.diversity import TopK
from orchestrator.selectors.pinned import Pinned
from orchestrator.selectors.promoted import PromotedReserve
from orchestrator.selectors.quota import SourceQuota
from orchestrator.sources.configured import ConfiguredSource
from orchestrator.sources.new_arrivals import NewArrivals

# Sources of the orchestrator's own, by the name a surface's [[sources]] entry gives in `source`
# (or `name`); every other name is a retrieval source (orchestrator/source_config.py).
LOCAL_SOURCES: dict[str, type[ConfiguredSource]] = {
    "new_arrivals": NewArrivals,
}

# Filters, in order: "inactive" first, so later filters see known items.
FILTERS: tuple[type[Filter], ...] = (
    Inactive,
    Anchor,
    Seen,
    ExcludeItemIds,
    IncludeCategories,
    ExcludeCategories,
    MinPrice,
    MaxPrice,
    Category,
    Expression,
    ExcludeBrands,
)

# Selectors, in order: fixed positions, reserved shares, then the rest (top_k last).
SELECTORS: tuple[type[Selector], ...] = (
    Pinned,
    PromotedReserve,
    SourceQuota,
    TopK,
)


@cache
def component_settings() -> dict[str, Setting]:
    """The surface settings registered components declare."""
    out: dict[str, Setting] = {}
    for kind in (*LOCAL_SOURCES.values(), *FILTERS, *SELECTORS):
        for s in kind.settings:
            out[s.name] = s
    return out
