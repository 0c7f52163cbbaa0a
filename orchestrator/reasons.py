"""A human reason for each recommended item, from the source that found it and its anchor."""

from __future__ import annotations

from orchestrator.catalog import Catalog


def reason(
    source: str, anchor_item_id: str, catalog: Catalog, scope: str = "", segment: bool = False, picked: bool = False,
) -> str:
    """scope: the category a trending or popular list was asked for; segment: it was asked for a segment;
    picked: the scope is a category the user picked at onboarding."""
    if picked and scope and source in ("trending", "popular"):
        return f"{'Trending' if source == 'trending' else 'Popular'} in {scope}, which you picked"
    anchor = catalog.get(anchor_item_id) if anchor_item_id else None
    title = anchor.title if anchor and anchor.title else anchor_item_id
    if source == "two_tower":
        return f"Because you watched {title}" if anchor_item_id else "Picked for you"
    if source in ("similar_items", "content"):
        return f"Similar to {title}" if anchor_item_id else "Similar to what you watched"
    if source == "also_bought":
        return f"People who liked {title} also liked this" if anchor_item_id else "People like you also liked this"
    if segment and not scope and source == "trending":
        return "Trending with people like you"
    if source == "segment_popular" or (segment and not scope):
        return "Popular with people like you"
    if source == "trending":
        return f"Trending in {scope}" if scope else "Trending now"
    if source in ("popular", "fallback_popular"):
        return f"Popular in {scope}" if scope else "Popular right now"
    return "Recommended for you"
