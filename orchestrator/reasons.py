"""A human reason for each recommended item, from the source that found it."""

from __future__ import annotations

from orchestrator.catalog import Catalog


def reason(source: str, anchor_item_id: str, catalog: Catalog) -> str:
    anchor = catalog.get(anchor_item_id) if anchor_item_id else None
    title = anchor.title if anchor and anchor.title else anchor_item_id
    if source == "two_tower":
        return f"Because you watched {title}" if anchor_item_id else "Picked for you"
    if source == "similar_items":
        return f"Similar to {title}"
    if source in ("popular", "fallback_popular"):
        return "Popular right now"
    return "Recommended for you"
