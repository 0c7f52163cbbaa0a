"""Selection: diversity (MMR, caps), promotions (boost, reserved slots), pinned positions, as the
selectors run them over scored candidates."""

from __future__ import annotations

import asyncio

from orchestrator.hydrators import CatalogueItems
from orchestrator.pipeline import Candidate, Pipeline, Scorer, Source, Trace
from orchestrator.query import RECOMMEND, RequestQuery
from orchestrator.registry import SELECTORS
from orchestrator.scorers.boost import PromotionBoost
from orchestrator.selection import price_band
from storage.records import ItemRecord
from tests.pipeline_fakes import Box, no_deadline, params

ITEMS = [
    ItemRecord("d1", categories=["drama"], price=9),
    ItemRecord("d2", categories=["drama"], price=12),
    ItemRecord("d3", categories=["drama"], price=15),
    ItemRecord("c1", categories=["comedy"], price=30),
    ItemRecord("c2", categories=["comedy"], price=300),
    ItemRecord("h1", categories=["horror"], price=11),
]
SCORES = {"d1": 1.0, "d2": 0.95, "d3": 0.9, "c1": 0.5, "c2": 0.45, "h1": 0.1}


class Given(Source):
    name = "given"

    async def fetch(self, q: RequestQuery) -> list[Candidate]:
        return [Candidate(i, "given") for i in SCORES]


class Fixed(Scorer):
    name = "fixed"

    async def score(self, q: RequestQuery, candidates: list[Candidate]) -> list[Candidate]:
        for c in candidates:
            c.score = SCORES[c.item_id]
        return sorted(candidates, key=lambda c: -c.score)


def chosen(k: int, pinned: dict[int, str] | None = None, **settings: object) -> list[str]:
    box = Box(n_items=0)
    box.catalog.apply(ITEMS)
    pipeline = Pipeline("t", sources=[Given()], hydrators=[CatalogueItems(box.deps)],
                        scorers=[Fixed(), PromotionBoost()],
                        selectors=[s() for s in SELECTORS])
    q = RequestQuery(RECOMMEND, "r", k, "home", params(**settings), no_deadline(), Trace(), pinned=pinned or {})
    return [c.item_id for c in asyncio.run(pipeline.run(q))]


def test_relevance_order_by_default() -> None:
    assert chosen(4) == ["d1", "d2", "d3", "c1"]


def test_mmr_trades_relevance_for_variety() -> None:
    assert chosen(3, mmr_lambda=0.5) == ["d1", "c1", "h1"]
    assert chosen(3, mmr_lambda=0.9) == ["d1", "d2", "d3"]  # weak: relevance wins


def test_caps_per_category_and_price_band() -> None:
    assert chosen(4, max_per_category=1) == ["d1", "c1", "h1"]  # caps may leave fewer
    assert price_band(9) == 0 and price_band(12) == 1 and price_band(None) == -1
    assert chosen(4, max_per_price_band=1) == ["d1", "d2", "c1", "c2"]


def test_promotions_boost_and_reserved_slots() -> None:
    assert chosen(3, promoted=["h1"], promotion_boost=1.5) == ["h1", "d1", "d2"]
    assert chosen(3, promoted=["h1"], promotion_boost=0.5) == ["d1", "d2", "d3"]
    reserved = chosen(4, promoted=["c2", "h1"], reserved_share=0.5)
    assert set(reserved) == {"d1", "d2", "c2", "h1"} and reserved[:2] == ["d1", "d2"]


def test_pinned_positions() -> None:
    assert chosen(4, {0: "h1", 2: "c2"}) == ["h1", "d1", "c2", "d2"]
    assert chosen(2, {5: "h1"}) == ["d1", "d2"]  # beyond k: not shown
    assert chosen(3, {0: "gone", 1: "h1"}) == ["d1", "h1", "d2"]  # a pin that is not a candidate: refilled
