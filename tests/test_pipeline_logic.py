"""Pure logic of the serving path: validation, filters, merging, scoring. No servers."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from core.candidates import Candidate, merge
from core.errors import InvalidArgument
from orchestrator.catalog import Catalog
from orchestrator.config import PipelineParams
from orchestrator.interactions import interaction_from_pb
from orchestrator.pipeline import Candidate as Cand
from orchestrator.pipeline import Pipeline, Trace
from orchestrator.query import RECOMMEND, RequestQuery
from orchestrator.registry import FILTERS
from orchestrator.validation import DEFAULT_K, check_id, check_k
from protos import recsys_pb2 as pb
from ranking.scorer import WeightedScorer, category_profile
from storage.records import ItemRecord

NOW = datetime(2026, 11, 21, tzinfo=UTC)


def _catalog(*items: ItemRecord) -> Catalog:
    cat = Catalog(pool=None)  # type: ignore[arg-type]  # filters only read the in-memory dict
    cat.apply(list(items))
    return cat


def test_k_and_ids_are_checked_with_the_field_named() -> None:
    assert check_k(0) == DEFAULT_K and check_k(500) == 500
    for bad in (-1, 501):
        with pytest.raises(InvalidArgument, match=r"^k: must be between 1 and 500"):
            check_k(bad)
    with pytest.raises(InvalidArgument, match="^user_id: must not be empty"):
        check_id("user_id", "")
    with pytest.raises(InvalidArgument, match="^item_id: must be at most 128"):
        check_id("item_id", "x" * 129)


def test_interaction_validation() -> None:
    ok = interaction_from_pb(pb.Interaction(user_id="u", item_id="i", type=pb.RATING, value=4), "x", NOW)
    assert (ok.type, ok.value, ok.ts) == ("rating", 4.0, None)
    click = interaction_from_pb(pb.Interaction(user_id="u", item_id="i", type=pb.CLICK), "x", NOW)
    assert click.value == 1.0  # unset weight
    future = pb.Interaction(user_id="u", item_id="i", type=pb.VIEW)
    future.timestamp.FromDatetime(NOW + timedelta(hours=1))
    cases = [
        (pb.Interaction(user_id="u", item_id="i"), "x.type"),
        (pb.Interaction(user_id="u", item_id="i", type=99), "x.type"),
        (pb.Interaction(user_id="", item_id="i", type=pb.VIEW), "x.user_id"),
        (pb.Interaction(user_id="u", item_id="i", type=pb.RATING, value=11), "x.value"),
        (pb.Interaction(user_id="u", item_id="i", type=pb.VIEW, value=float("nan")), "x.value"),
        (future, "x.timestamp"),
    ]
    for msg, field in cases:
        with pytest.raises(InvalidArgument) as err:
            interaction_from_pb(msg, "x", NOW)
        assert err.value.field == field


def test_filters_remove_and_count_by_rule() -> None:
    cat = _catalog(
        ItemRecord("a", categories=["kids"], price=5),
        ItemRecord("b", categories=["drama"], price=50),
        ItemRecord("c", categories=["drama"], price=500),
        ItemRecord("d", categories=["drama"], status="retired"),
        ItemRecord("e", categories=["comedy"]),
    )

    def run(ids: list[str], f: pb.Filters, seen: set[str]) -> tuple[list[str], dict[str, int]]:
        q = RequestQuery(RECOMMEND, "r", 10, "home", PipelineParams(), lambda: None, Trace(), filters=f, seen=seen)
        cands = [Cand(i, "s", item=cat.get(i)) for i in ids]
        p = Pipeline("t", filters=[f() for f in FILTERS])
        for flt in p.filters:
            cands = p._filter(flt, q, cands)
        return [c.item_id for c in cands], {k: v for r in q.trace.stages for k, v in r.removed.items()}

    f = pb.Filters(exclude_categories=["kids"], max_price=100, exclude_item_ids=["e"])
    kept, removed = run(["a", "b", "c", "d", "e", "zz"], f, {"b"})
    assert kept == []
    assert removed == {"inactive": 2, "seen": 1, "exclude_item_ids": 1, "exclude_categories": 1, "max_price": 1}
    f = pb.Filters(include_categories=["drama"], min_price=10, include_seen=True)
    kept, _ = run(["a", "b", "c", "e"], f, set())
    assert kept == ["b", "c"]


def test_merge_interleaves_sources_without_duplicates() -> None:
    a = [Candidate("1", 0.9, "two_tower"), Candidate("2", 0.8, "two_tower"), Candidate("3", 0.7, "two_tower")]
    b = [Candidate("2", 50, "popular"), Candidate("4", 40, "popular")]
    assert [(c.item_id, c.source) for c in merge([a, b], 10)] == [
        ("1", "two_tower"), ("2", "popular"), ("4", "popular"), ("3", "two_tower")]
    assert len(merge([a, b], 2)) == 2


def test_weighted_scorer_orders_by_parts() -> None:
    items = {"x": {"categories": ["drama"]}, "y": {"categories": ["drama"]}}
    profile = category_profile(["x", "y", "missing"], items)
    assert profile == Counter({"drama": 2})
    feats = [
        {"popularity": 10, "avg_rating": 3.0, "n_ratings": 10, "categories": ["comedy"]},
        {"popularity": 10, "avg_rating": 3.0, "n_ratings": 10, "categories": ["comedy"]},
        {"popularity": 500, "avg_rating": 4.5, "n_ratings": 400, "categories": ["drama"]},
    ]
    scored = WeightedScorer().score([1.0, 0.5, 0.49], feats, profile, max_popularity=500)
    # Popular, well rated and on-profile beats a slightly higher retrieval score, not a much higher one.
    assert [s.index for s in scored] == [0, 2, 1]
    second = scored[1].parts
    assert second["affinity"] > 0 and second["popularity"] == pytest.approx(0.15)
    assert scored[0].parts["affinity"] == 0 and scored[0].parts["retrieval"] == pytest.approx(1.0)
