"""Business rules over real gRPC: filter expressions, per-surface seen rules, diversity,
promotions and pinned positions, A/B variants and the experiments report."""

from __future__ import annotations

import time
from collections import Counter

import grpc
import psycopg
import pytest

from core.config import Settings
from orchestrator.experiment_report import collect
from protos import recsys_pb2 as pb
from protos import recsys_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration


def _rec(api: pb_grpc.RecommenderStub, **kw: object) -> pb.RecommendResponse:
    kw.setdefault("k", 10)
    return api.Recommend(pb.RecommendRequest(**kw), timeout=10)


def _ids(resp: pb.RecommendResponse) -> list[str]:
    return [i.item_id for i in resp.items]


def test_filter_expression_changes_the_answer(api: pb_grpc.RecommenderStub) -> None:
    plain = _rec(api, user_id="5", k=20)
    assert any("Comedy" in i.item.categories for i in plain.items)
    no_comedy = _rec(api, user_id="5", k=20, filters=pb.Filters(expression='EXCLUDE category IN ("Comedy")'))
    assert len(no_comedy.items) == 20 and not any("Comedy" in i.item.categories for i in no_comedy.items)
    nineties = _rec(api, user_id="5", k=10, filters=pb.Filters(expression="INCLUDE year >= 1990 AND year < 1995"))
    assert nineties.items and all(1990 <= i.item.attributes["year"] < 1995 for i in nineties.items)
    with pytest.raises(grpc.RpcError) as err:
        _rec(api, user_id="5", filters=pb.Filters(expression='EXCLUDE category IN ("Comedy"'))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("filters.expression: expected ')' or ','")


def test_seen_rule_is_per_surface(api: pb_grpc.RecommenderStub, stack: Settings) -> None:
    with psycopg.connect(stack.database_url) as conn:
        rated = {r[0] for r in conn.execute("SELECT item_id FROM interactions WHERE user_id = '8'")}
    assert not rated & set(_ids(_rec(api, user_id="8", k=30)))
    # On the cart surface only purchases count as seen: rated films may come back.
    assert rated & set(_ids(_rec(api, user_id="8", k=30, context=pb.Context(surface="cart"))))


def test_diversity_caps_and_mmr(api: pb_grpc.RecommenderStub) -> None:
    plain = _rec(api, user_id="9", k=10)
    capped = _rec(api, user_id="9", k=10, diversity=pb.DiversityOptions(max_per_category=2))
    counts = Counter(c for i in capped.items for c in i.item.categories)
    assert counts and max(counts.values()) <= 2
    assert _ids(capped) != _ids(plain)
    mmr = _rec(api, user_id="9", k=10, diversity=pb.DiversityOptions(mmr_lambda=0.3))
    variety = len({c for i in mmr.items for c in i.item.categories})
    assert variety >= len({c for i in plain.items for c in i.item.categories})
    with pytest.raises(grpc.RpcError) as err:
        _rec(api, user_id="9", diversity=pb.DiversityOptions(mmr_lambda=1.5))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "diversity.mmr_lambda" in err.value.details()


def test_promotions_and_pinned_positions(api: pb_grpc.RecommenderStub) -> None:
    plain = _ids(_rec(api, user_id="10", k=10))
    # "1682" (Scream of Stone) is obscure: never retrieved for this user on its own.
    assert "1682" not in plain
    pinned = _rec(api, user_id="10", k=10, promotions=pb.PromotionOptions(pinned={2: "1682"}))
    assert _ids(pinned)[2] == "1682" and _ids(pinned)[:2] == plain[:2]
    reserved = _rec(api, user_id="10", k=10, promotions=pb.PromotionOptions(
        item_ids=["1682", "1681", "1680"], reserved_share=0.2))
    assert len({"1682", "1681", "1680"} & set(_ids(reserved))) == 2
    with pytest.raises(grpc.RpcError) as err:
        _rec(api, user_id="10", promotions=pb.PromotionOptions(reserved_share=2))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "promotions.reserved_share" in err.value.details()


def test_experiment_variants_are_stable_and_split_traffic(api: pb_grpc.RecommenderStub, stack: Settings) -> None:
    ctx = pb.Context(surface="ab_surface")
    labels = {u: _rec(api, user_id=str(u), k=3, context=ctx).experiment_variant for u in range(1, 121)}
    assert set(labels.values()) == {"ab/control", "ab/no_ranker"}
    assert 35 <= Counter(labels.values())["ab/control"] <= 85  # 50% of 120, well within 4 standard errors
    assert _rec(api, user_id="1", k=3, context=ctx).experiment_variant == labels[1]
    forced = _rec(api, user_id="1", k=3, context=ctx, experiment_variant="no_ranker", debug=True)
    assert forced.experiment_variant == "ab/no_ranker"
    assert [s.note for s in forced.debug.stages if s.stage == "scorer:ranker"] == [
        "gated off: ranker off for this variant"]
    assert _rec(api, user_id="1", k=3).experiment_variant == "control"  # other surfaces: no experiment
    with pytest.raises(grpc.RpcError) as err:
        _rec(api, user_id="1", k=3, context=ctx, experiment_variant="nope")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "experiment_variant" in err.value.details()

    # Attribution: a click carrying the request id of an exposure counts for its variant.
    resp = _rec(api, user_id="2", k=3, context=ctx, request_id="ab-click-test")
    api.LogInteractions(pb.LogInteractionsRequest(interactions=[pb.Interaction(
        user_id="2", item_id=resp.items[0].item_id, type=pb.CLICK, request_id="ab-click-test")]), timeout=10)
    # 120 bucketed users + the repeat + the forced variant + this request = 123 exposures in "ab".
    for _ in range(100):  # exposures are written in batches after the response; wait for the last one
        stats = {s.variant: s for s in collect(stack.database_url, "ab")}
        if sum(s.exposures for s in stats.values()) >= 123 and stats[resp.experiment_variant].clicked >= 1:
            break
        time.sleep(0.1)
    assert sum(s.exposures for s in stats.values()) == 123
    assert stats[resp.experiment_variant].clicked >= 1
