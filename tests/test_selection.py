"""Selection: diversity (MMR, caps), promotions (boost, reserved slots), pinned positions."""

from __future__ import annotations

from orchestrator.selection import Diversity, Promotions, price_band, select
from storage.records import ItemRecord

ITEMS = {
    "d1": ItemRecord("d1", categories=["drama"], price=9),
    "d2": ItemRecord("d2", categories=["drama"], price=12),
    "d3": ItemRecord("d3", categories=["drama"], price=15),
    "c1": ItemRecord("c1", categories=["comedy"], price=30),
    "c2": ItemRecord("c2", categories=["comedy"], price=300),
    "h1": ItemRecord("h1", categories=["horror"], price=11),
}
IDS = ["d1", "d2", "d3", "c1", "c2", "h1"]
SCORES = [1.0, 0.95, 0.9, 0.5, 0.45, 0.1]


def chosen(k: int, **kw: object) -> list[str]:
    return [IDS[j] for j in select(IDS, SCORES, k, ITEMS.get, **kw)]  # type: ignore[arg-type]


def test_relevance_order_by_default() -> None:
    assert chosen(4) == ["d1", "d2", "d3", "c1"]


def test_mmr_trades_relevance_for_variety() -> None:
    assert chosen(3, diversity=Diversity(mmr_lambda=0.5)) == ["d1", "c1", "h1"]
    assert chosen(3, diversity=Diversity(mmr_lambda=0.9)) == ["d1", "d2", "d3"]  # weak: relevance wins


def test_caps_per_category_and_price_band() -> None:
    assert chosen(4, diversity=Diversity(max_per_category=1)) == ["d1", "c1", "h1"]  # caps may leave fewer
    assert price_band(9) == 0 and price_band(12) == 1 and price_band(None) == -1
    assert chosen(4, diversity=Diversity(max_per_price_band=1)) == ["d1", "d2", "c1", "c2"]


def test_promotions_boost_and_reserved_slots() -> None:
    assert chosen(3, promotions=Promotions(frozenset({"h1"}), boost=1.5)) == ["h1", "d1", "d2"]
    assert chosen(3, promotions=Promotions(frozenset({"h1"}), boost=0.5)) == ["d1", "d2", "d3"]
    reserved = chosen(4, promotions=Promotions(frozenset({"c2", "h1"}), reserved_share=0.5))
    assert set(reserved) == {"d1", "d2", "c2", "h1"} and reserved[:2] == ["d1", "d2"]


def test_pinned_positions() -> None:
    assert chosen(4, promotions=Promotions(pinned={0: "h1", 2: "c2"})) == ["h1", "d1", "c2", "d2"]
    assert chosen(2, promotions=Promotions(pinned={5: "h1"})) == ["d1", "d2"]  # beyond k: not shown
