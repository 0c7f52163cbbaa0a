"""A human reason for each recommended item, from the source that found it and its anchor.

One entry per source in REASONS: a new source adds its line here (or gets "Recommended for you").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.catalog import Catalog


@dataclass(frozen=True)
class Why:
    anchor_title: str  # the anchor item's title ("" if none)
    scope: str  # the category a trending or popular list was asked for
    segment: bool  # it was asked for a segment ("people like you")
    picked: bool  # the scope is a category the user picked at onboarding


def _popular(w: Why) -> str:
    if w.segment and not w.scope:
        return "Popular with people like you"
    return f"Popular in {w.scope}" if w.scope else "Popular right now"


def _trending(w: Why) -> str:
    if w.segment and not w.scope:
        return "Trending with people like you"
    return f"Trending in {w.scope}" if w.scope else "Trending now"


REASONS: dict[str, Callable[[Why], str]] = {
    "two_tower": lambda w: f"Because you watched {w.anchor_title}" if w.anchor_title else "Picked for you",
    "similar_items": lambda w: f"Similar to {w.anchor_title}" if w.anchor_title else "Similar to what you watched",
    "content": lambda w: f"Similar to {w.anchor_title}" if w.anchor_title else "Similar to what you watched",
    "also_bought": lambda w: (f"People who liked {w.anchor_title} also liked this" if w.anchor_title
                              else "People like you also liked this"),
    "segment_popular": lambda w: "Popular with people like you",
    "trending": _trending,
    "popular": _popular,
    "fallback_popular": _popular,
    "new_arrivals": lambda w: f"New in {w.scope}" if w.scope else "New arrival",
}


def reason(
    source: str, anchor_item_id: str, catalog: Catalog, scope: str = "", segment: bool = False, picked: bool = False,
) -> str:
    """scope: the category a trending or popular list was asked for; segment: it was asked for a segment;
    picked: the scope is a category the user picked at onboarding."""
    if picked and scope and source in ("trending", "popular"):
        return f"{'Trending' if source == 'trending' else 'Popular'} in {scope}, which you picked"
    anchor = catalog.get(anchor_item_id) if anchor_item_id else None
    title = (anchor.title if anchor and anchor.title else anchor_item_id) or ""
    explain = REASONS.get(source)
    return explain(Why(title, scope, segment, picked)) if explain else "Recommended for you"
