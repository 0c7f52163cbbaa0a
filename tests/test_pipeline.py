"""The serving pipelines in process, over fake retrieval and ranking stubs: every component, every
fail-open path, the three RPCs. No servers; the whole module runs in a few seconds."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import InvalidArgument, NotFound
from orchestrator import config
from orchestrator.pipeline import Candidate, Pipeline, Setting, Slots, Source, Trace, merge
from orchestrator.query import RECOMMEND, RequestQuery
from orchestrator.source_config import DEFAULT_SOURCES
from protos import internal_pb2 as ipb
from protos import recsys_pb2 as pb
from storage.records import UserRecord
from tests.pipeline_fakes import Box, GivenUser, no_deadline, params

TT = [str(i) for i in range(1, 51)]
LISTS = {"two_tower": TT, "also_bought": ["61", "62", "2"], "content": ["63", "64"], "trending": ["65", "1"],
         "popular": [str(i) for i in range(1, 81)], "segment_popular": ["70", "71", "72"],
         "similar_items": ["10", "11", "12", "13", "14", "15"]}
WARM = {"warm": [(str(i), "view") for i in range(30, 36)]}  # six items: not a cold start


def run(coro):  # noqa: ANN001, ANN201
    return asyncio.run(coro)


def box(**kw: object) -> Box:
    kw.setdefault("lists", dict(LISTS))
    kw.setdefault("user", GivenUser(WARM))
    kw.setdefault("n_items", 80)
    return Box(**kw)  # type: ignore[arg-type]


def rec(b: Box, **kw: object) -> pb.RecommendResponse:
    kw.setdefault("user_id", "warm")
    kw.setdefault("debug", True)
    return run(b.rec.recommend(pb.RecommendRequest(**kw), no_deadline()))


def stages(resp: pb.RecommendResponse | pb.SimilarItemsResponse | pb.TrendingResponse) -> dict[str, pb.StageTrace]:
    return {s.stage: s for s in resp.debug.stages}


def ids(resp: pb.RecommendResponse | pb.SimilarItemsResponse | pb.TrendingResponse) -> list[str]:
    return [i.item_id for i in resp.items]


def with_config(text: dict) -> config.OrchestratorConfig:
    return config.parse(text)


# ---------------------------------------------------------------------------- sources and gates


def test_gates_pick_the_sources_for_each_kind_of_user() -> None:
    users = {"cold-picker": UserRecord("cold-picker", preferences={"preferred_categories": ["c1", "c2"]}),
             "demo": UserRecord("demo", demographics={"age": 30})}
    b = box(user=GivenUser({**WARM, "cold-picker": [("1", "view")]}, users))
    ran = {s.stage for s in rec(b).debug.stages if s.stage.startswith("source:") and s.outcome == "ok"}
    assert ran == {"source:two_tower", "source:also_bought", "source:content", "source:trending"}
    st_ = stages(rec(b))
    assert st_["source:segment_popular"].note == "gated off: not a cold start (6 interactions)"
    assert st_["source:popular"].outcome == "not_needed"  # the filler is called only when the others fall short

    cold = rec(b, user_id="cold-picker")
    sent = [s for r in b.retrieval.requests for s in r.sources]
    assert ipb.SourceRequest(name="trending", k=100, window="7d", category="c1") in sent
    picked = [i for i in cold.items if "which you picked" in i.reason]
    assert picked and all(i.item.categories[0] in ("c1", "c2") for i in picked)
    assert stages(cold)["source:segment_popular"].note == "gated off: no demographics"

    stranger = rec(b, user_id="stranger")
    assert stages(stranger)["source:two_tower"].note == "gated off: no history"
    assert {i.source for i in stranger.items} == {"popular"} and not stranger.degraded
    demo = rec(b, user_id="demo")
    assert {s.stage for s in demo.debug.stages if s.outcome == "ok" and s.stage.startswith("source:")} >= {
        "source:segment_popular", "source:trending"}


def test_bigger_requests_scale_every_source() -> None:
    b = box()
    rec(b, k=250, request_id="big")
    sent = {s.name: s.k for r in b.retrieval.requests for s in r.sources}
    assert sent == {"two_tower": 1000, "also_bought": 250, "content": 100, "trending": 50, "popular": 1000}


def test_default_sources_share_one_call_and_own_timeouts_get_their_own() -> None:
    b = box()
    rec(b)
    assert len(b.retrieval.requests) == 1  # the popular filler was not needed
    shared = b.retrieval.requests[0]
    assert shared.separate_sources and [s.name for s in shared.sources] == ["two_tower", "also_bought", "content",
                                                                            "trending"]
    assert list(shared.exclude_item_ids) == sorted(i for i, _ in WARM["warm"])
    # sources with budgets of their own: a call each, concurrent
    cfg = with_config({"surface": {"own": {"sources": [
        {"name": n, "k": 20, "gate": "history", "timeout_ms": 2000}
        for n in ("two_tower", "also_bought", "content")]}}})
    b = box(config=cfg)
    b.retrieval.delay_s = {"two_tower": 0.05, "also_bought": 0.05, "content": 0.05}
    start = time.perf_counter()
    resp = rec(b, context=pb.Context(surface="own"))
    assert time.perf_counter() - start < 0.14  # three 50 ms calls at once, not one after another
    assert len(b.retrieval.requests) == 3 and not resp.degraded
    ran = [stages(resp)[f"source:{n}"] for n in ("two_tower", "also_bought", "content")]
    assert max(s.start_ms for s in ran) < min(s.start_ms + s.latency_ms for s in ran)


def test_merge_interleaves_by_weight_drops_duplicates_and_fills_last() -> None:
    class S(Source):
        def __init__(self, name: str, weight: float = 1.0, fill: bool = False, append: bool = False) -> None:
            self.name, self.weight, self.fill, self.append = name, weight, fill, append

    def group(s: S, items: list[str]) -> tuple[S, list[Candidate]]:
        return s, [Candidate(i, s.name, float(10 - r), float(10 - r), group=s.name) for r, i in enumerate(items)]

    a, b, fill = S("a"), S("b", weight=0.5), S("p", fill=True)
    groups = [group(fill, ["p1", "a1", "p2"]), group(a, ["a1", "a2", "a3", "a4"]), group(b, ["b1", "a2", "b2"])]
    m = merge(groups, 8)
    # weight 0.5: b's first item ranks with a's second; "a2" stays where it ranks best (a, rank 1)
    assert [c.item_id for c in m] == ["a1", "a2", "b1", "a3", "a4", "b2", "p1", "p2"]
    assert [c.retrieval_score for c in m[:3]] == [10.0, 9.0, 10.0]  # each source's own score, for the ranker
    assert [c.score for c in m[:3]] == [1.0, 0.5, 1 / 3]  # ordered by position: sources' scores do not compare
    assert [c.item_id for c in merge(groups, 3)] == ["a1", "a2", "b1"]
    t = S("t")  # placed by its best rank, credited to the first source in order
    m = merge([group(a, ["y", "x"]), group(t, ["x"])], 10)
    assert [c.item_id for c in m] == ["y", "x"] and [c.source for c in m] == ["a", "a"]
    assert [c.item_id for c in merge(groups, 8, fill_to=6)] == ["a1", "a2", "b1", "a3", "a4", "b2"]
    assert [c.item_id for c in merge([group(fill, ["p1", "p2"])], 8, fill_to=1)] == ["p1", "p2"]
    # appended sources (promoted, pinned) join after the limit
    appended = merge([group(a, ["x", "y"]), group(S("biz", append=True), ["y", "z"])], 1)
    assert [c.item_id for c in appended] == ["x", "y", "z"]


def test_a_source_keeps_what_it_found_itself() -> None:
    """The retrieval service fills a short answer with popular items; the popular source does that here."""
    b = box(lists={**LISTS, "two_tower": ["1", "2"]})
    b.retrieval.lists["popular"] = []

    async def retrieve(request: ipb.RetrieveRequest, timeout: float | None = None) -> ipb.RetrieveResponse:
        groups = [ipb.CandidateList(item_ids=["1", "2", "3"], scores=[3, 2, 1], sources=[s.name, "popular", "popular"],
                                   anchor_item_ids=[""] * 3) for s in request.sources]
        return ipb.RetrieveResponse(groups=groups, model_version="v1")

    b.retrieval.Retrieve = retrieve  # type: ignore[method-assign]
    resp = rec(b, k=5)
    found = {name: s.candidates_out for name, s in stages(resp).items()
             if s.outcome == "ok" and name.startswith("source:")}
    assert found == {"source:two_tower": 1, "source:also_bought": 1, "source:content": 1, "source:trending": 3,
                     "source:popular": 3}  # trending keeps its own all-time fallback, labelled popular


def test_a_gated_off_source_is_not_called_and_a_timed_out_one_is_skipped() -> None:
    cfg = with_config({"surface": {
        "trap": {"sources": [{"name": "two_tower", "k": 50, "gate": "history"},
                             {"name": "segment_popular", "k": 50, "gate": "cold_demographics", "timeout_ms": 1}]},
        "late": {"sources": [{"name": "two_tower", "k": 50, "gate": "history", "timeout_ms": 10},
                             {"name": "also_bought", "k": 50, "gate": "history"},
                             {"name": "trending", "k": 20, "timeout_ms": 10, "optional": True}]}}})
    b = box(config=cfg)
    b.retrieval.delay_s = {"segment_popular": 1.0}
    trap = rec(b, context=pb.Context(surface="trap"))
    assert not trap.degraded and stages(trap)["source:segment_popular"].outcome == "off"
    b.retrieval.delay_s = {"two_tower": 1.0, "trending": 1.0}
    late = rec(b, context=pb.Context(surface="late"))
    assert late.degraded and late.degraded_reasons == ["source:two_tower timed out (after 10 ms): skipped"]
    st_ = stages(late)
    assert st_["source:two_tower"].outcome == "timeout" and st_["source:also_bought"].candidates_out == 3
    assert st_["source:trending"].outcome == "timeout"  # optional: noted, not degraded
    assert {i.source for i in late.items} <= {"also_bought", "popular"}


def test_every_source_down_falls_back_to_popular_marked_degraded() -> None:
    b = box()
    b.retrieval.fail = grpc.StatusCode.UNAVAILABLE
    resp = rec(b, k=10)
    assert resp.degraded and resp.degraded_reasons[0] == "every source failed (UNAVAILABLE): popular items instead"
    assert len(resp.items) == 10 and {i.source for i in resp.items} == {"fallback_popular"}
    assert not {i.item_id for i in resp.items} & {i for i, _ in WARM["warm"]}  # seen items stay out
    assert stages(resp)["source:precomputed"].outcome == "failed"  # no PostgreSQL here: the next fallback


def test_ranking_down_or_late_serves_retrieval_order() -> None:
    b = box()
    b.ranking.scores = {"40": 9.0}
    healthy = rec(b)
    assert healthy.items[0].item_id == "40" and healthy.items[0].score_parts
    b.ranking.fail = grpc.StatusCode.UNAVAILABLE
    down = rec(b)
    assert down.degraded_reasons == ["ranking failed (UNAVAILABLE): retrieval order"]
    assert ids(down)[:2] == ["1", "61"] and not down.items[0].score_parts and len(down.items) == 10
    b.ranking.fail, b.ranking.delay_s = None, 1.0
    start = time.perf_counter()
    late = run(b.rec.recommend(pb.RecommendRequest(user_id="warm"), lambda: 0.3 - (time.perf_counter() - start)))
    assert time.perf_counter() - start < 0.3
    assert late.degraded_reasons == ["ranking failed (DEADLINE_EXCEEDED): retrieval order"] and len(late.items) == 10


def test_user_history_down_is_a_cold_start() -> None:
    b = box(user=GivenUser(WARM, fail=True))
    resp = rec(b)
    assert resp.degraded and resp.degraded_reasons[0].startswith("user history unavailable (ConnectionError)")
    assert len(resp.items) == 10 and stages(resp)["source:two_tower"].note == "gated off: no history"


def test_ranker_gets_the_filtered_candidates_with_the_sources_scores() -> None:
    b = box(item_overrides={"3": {"status": "out_of_stock"}})
    rec(b)
    sent = b.ranking.requests[0].candidates
    assert "3" not in sent.item_ids and sent.sources[0] == "two_tower" and sent.scores[0] == 1.0
    assert list(b.ranking.requests[0].user.recent_item_ids) == [i for i, _ in WARM["warm"]]
    off = rec(b, context=pb.Context(surface="ab"), experiment_variant="")
    assert off.items


# ---------------------------------------------------------------------------- filters, in every RPC


def test_filters_apply_to_every_rpc_and_list_what_they_removed() -> None:
    b = box(item_overrides={"12": {"status": "retired"}})
    expr = 'EXCLUDE category IN ("c1")'
    r = rec(b, k=50, filters=pb.Filters(expression=expr, exclude_item_ids=["2"], max_price=30))
    assert r.items and all("c1" not in i.item.categories and i.item.price <= 30 for i in r.items)
    removed = stages(r)["filter:expression"]
    assert removed.removed["expression"] == len(removed.removed_item_ids["expression"].item_ids) > 0
    assert "2" not in ids(r) and stages(r)["filter:exclude_item_ids"].removed["exclude_item_ids"] == 1

    sim = run(b.rec.similar_items(pb.SimilarItemsRequest(item_id="9", k=5, debug=True,
                                                         filters=pb.Filters(expression=expr)), no_deadline()))
    assert sim.items and all("c1" not in i.item.categories for i in sim.items)
    assert "9" not in ids(sim) and "12" not in ids(sim)  # the anchor, a retired item
    assert stages(sim)["filter:expression"].removed["expression"] > 0

    tr = run(b.rec.trending(pb.TrendingRequest(k=5, debug=True, filters=pb.Filters(expression=expr)), no_deadline()))
    assert tr.items and all("c1" not in i.item.categories for i in tr.items)


@pytest.mark.parametrize("rpc", ["recommend", "similar_items", "trending"])
def test_an_invalid_expression_is_invalid_argument_naming_the_field(rpc: str) -> None:
    b = box()
    bad = pb.Filters(expression="this is not a valid expression")
    call = {"recommend": lambda: b.rec.recommend(pb.RecommendRequest(user_id="u", filters=bad), no_deadline()),
            "similar_items": lambda: b.rec.similar_items(pb.SimilarItemsRequest(item_id="1", filters=bad),
                                                         no_deadline()),
            "trending": lambda: b.rec.trending(pb.TrendingRequest(filters=bad), no_deadline())}[rpc]
    with pytest.raises(InvalidArgument) as err:
        run(call())
    assert str(err.value).startswith("filters.expression: ")


def test_seen_rule_is_per_surface_in_similar_items_too() -> None:
    cfg = with_config({"surface": {"cart": {"seen_types": ["purchase"]}}})
    b = box(config=cfg, user=GivenUser({"u": [("10", "view"), ("11", "purchase")]}))
    default = run(b.rec.similar_items(pb.SimilarItemsRequest(item_id="9", user_id="u"), no_deadline()))
    cart = run(b.rec.similar_items(pb.SimilarItemsRequest(item_id="9", user_id="u",
                                                          context=pb.Context(surface="cart")), no_deadline()))
    assert not {"10", "11"} & set(ids(default))
    assert "10" in ids(cart) and "11" not in ids(cart)  # on the cart, only purchases count as seen
    with pytest.raises(NotFound):
        run(b.rec.similar_items(pb.SimilarItemsRequest(item_id="nope"), no_deadline()))


def test_exclude_brands_is_a_surface_setting_for_every_rpc() -> None:
    cfg = with_config({"surface": {"partner": {"exclude_brands": ["b0"]}}})
    b = box(config=cfg)
    partner = pb.Context(surface="partner")
    assert {i.item.brand for i in rec(b).items} == {"b0", "b1"}
    assert {i.item.brand for i in rec(b, context=partner).items} == {"b1"}
    sim = run(b.rec.similar_items(pb.SimilarItemsRequest(item_id="9", context=partner), no_deadline()))
    assert sim.items and {i.item.brand for i in sim.items} == {"b1"}
    tr = run(b.rec.trending(pb.TrendingRequest(k=5, context=partner), no_deadline()))
    assert tr.items and {i.item.brand for i in tr.items} == {"b1"}
    with pytest.raises(ValueError, match="surface.partner.exclude_brands: must be a list of non-empty strings"):
        with_config({"surface": {"partner": {"exclude_brands": "b0"}}})


# ---------------------------------------------------------------------------- selection


def test_a_pinned_slot_whose_item_is_filtered_out_is_refilled() -> None:
    b = box(item_overrides={"20": {"status": "out_of_stock"}})
    plain = ids(rec(b, k=5))
    pins = {0: "no-such-item", 1: "55", 2: "20", 3: "30"}  # unknown, a new candidate, inactive, seen
    resp = rec(b, k=5, promotions=pb.PromotionOptions(pinned=pins))
    assert len(resp.items) == 5
    assert ids(resp)[1] == "55" and [i for i in ids(resp) if i != "55"] == plain[:4]
    # a pin past k is ignored; a pin of an item the sources found moves it
    moved = rec(b, k=5, promotions=pb.PromotionOptions(pinned={4: plain[0], 7: "56"}))
    assert ids(moved) == [*plain[1:5], plain[0]]


def test_promoted_items_get_their_reserved_share() -> None:
    b = box()
    resp = rec(b, k=10, promotions=pb.PromotionOptions(item_ids=["57", "58", "59"], reserved_share=0.2))
    assert len({"57", "58", "59"} & set(ids(resp))) == 2 and len(resp.items) == 10
    boosted = rec(b, k=10, promotions=pb.PromotionOptions(item_ids=["57"], boost=2.0))
    assert ids(boosted)[0] == "57"


def test_new_arrivals_with_a_quota_surface_what_the_ranker_buries() -> None:
    sources = [*({"name": s.name, "k": s.k, "gate": s.gate} for s in DEFAULT_SOURCES[:3]),
               {"name": "new_arrivals", "k": 20, "quota": 0.3}]
    cfg = with_config({"surface": {"new": {"sources": sources}}})
    b = box(config=cfg, n_items=80, item_overrides={"80": {"status": "retired"}})
    b.ranking.scores = {i: 10.0 - int(i) / 10 for i in TT}  # the ranker prefers two_tower's items
    resp = rec(b, k=10, context=pb.Context(surface="new"))
    new = [i for i in resp.items if i.source == "new_arrivals"]
    assert len(new) == 3 and [i.item_id for i in new] == ["79", "78", "77"]  # newest active first
    assert all(i.reason == "New arrival" for i in new) and len(resp.items) == 10
    assert stages(resp)["selector:source_quota"].candidates_out == 3
    # without the quota the same candidates stay below the ranker's favourites
    cfg = with_config({"surface": {"new": {"sources": [*sources[:3], {"name": "new_arrivals", "k": 20}]}}})
    b2 = box(config=cfg, n_items=80)
    b2.ranking.scores = b.ranking.scores
    assert not [i for i in rec(b2, k=10, context=pb.Context(surface="new")).items if i.source == "new_arrivals"]
    with pytest.raises(ValueError, match="quota: must be a share of the slots from 0 to 1"):
        with_config({"surface": {"new": {"sources": [{"name": "new_arrivals", "k": 20, "quota": 2}]}}})


def test_diversity_caps_and_mmr() -> None:
    b = box()
    capped = rec(b, k=10, diversity=pb.DiversityOptions(max_per_category=2))
    cats = [i.item.categories[0] for i in capped.items]
    assert len(capped.items) == 6 and max(cats.count(c) for c in set(cats)) == 2  # 3 categories x 2
    mmr = rec(b, k=6, diversity=pb.DiversityOptions(mmr_lambda=0.0))
    assert len({i.item.categories[0] for i in mmr.items[:3]}) == 3
    with pytest.raises(InvalidArgument, match="diversity.mmr_lambda"):
        rec(b, diversity=pb.DiversityOptions(mmr_lambda=1.5))


def test_slots_lay_out_fixed_positions_around_the_rest_by_score() -> None:
    c = [Candidate(str(i), "s", score=float(i)) for i in range(5)]
    slots = Slots(4, fixed={1: c[0]}, chosen=[c[2], c[4], c[3]])
    assert [x.item_id for x in slots.layout()] == ["4", "0", "3", "2"] and slots.free == 0


# ---------------------------------------------------------------------------- the library itself


def test_every_component_is_recorded_in_the_trace_and_the_stats_sink() -> None:
    b = box()
    resp = rec(b)
    names = [s.stage for s in resp.debug.stages]
    assert names[0] == "query_hydrator:user" and "hydrator:catalogue" in names and "scorer:ranker" in names
    assert names.index("filter:inactive") < names.index("scorer:ranker") < names.index("selector:top_k")
    assert all(s.outcome in ("ok", "off", "failed", "timeout", "not_needed") for s in resp.debug.stages)
    totals = b.rec.stats.snapshot()
    assert totals["stage:recommend:source:two_tower:ok"] == 1 and totals["stage:recommend:source:two_tower:out"] > 0
    assert totals["stage:recommend:side_effect:exposures:ok"] == 1
    assert totals["stage:recommend:scorer:promotion_boost:off"] == 1


def test_a_component_that_may_not_fail_open_fails_the_request() -> None:
    class Broken(Source):
        name = "broken"
        fail_open = False

        async def fetch(self, q: RequestQuery) -> list[Candidate]:
            raise RuntimeError("bug")

    class Flaky(Source):
        name = "flaky"
        optional = True

        async def fetch(self, q: RequestQuery) -> list[Candidate]:
            raise RuntimeError("flaky")

    q = RequestQuery(RECOMMEND, "r", 5, "home", params(), no_deadline(), Trace())
    with pytest.raises(RuntimeError, match="bug"):
        run(Pipeline("p", sources=[Broken()]).run(q))
    assert run(Pipeline("p", sources=[Flaky()]).run(q)) == [] and not q.trace.degraded


def test_component_settings_are_validated_with_the_rest() -> None:
    class Shows(Source):
        settings = (Setting("show_limit", 3, lambda v, w: v),)

    assert params().setting("exclude_brands") == frozenset()
    with pytest.raises(ValueError, match="unknown setting 'exclude_brand'"):
        with_config({"surface": {"home": {"exclude_brand": ["x"]}}})
    with pytest.raises(ValueError, match="max_per_category: must be an integer"):
        with_config({"surface": {"home": {"max_per_category": "4"}}})
    assert Shows.settings[0].default == 3


# ---------------------------------------------------------------------------- what a client can send


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    k=st.integers(min_value=-2, max_value=600),
    pins=st.dictionaries(st.integers(min_value=-1, max_value=600), st.sampled_from(["1", "5", "30", "55", "x", ""]),
                         max_size=4),
    exclude=st.lists(st.sampled_from(["1", "2", "41", "", "9" * 200]), max_size=3),
    lo=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    expression=st.sampled_from(["", 'EXCLUDE category IN ("c1")', "INCLUDE price < 20", "bogus (", 'x = "']),
    user=st.sampled_from(["warm", "", "stranger", "u" * 129]),
)
def test_any_request_is_answered_or_rejected_naming_a_field(
    k: int, pins: dict[int, str], exclude: list[str], lo: float | None, expression: str, user: str,
) -> None:
    b = BOX
    filters = pb.Filters(exclude_item_ids=exclude, expression=expression)
    if lo is not None:
        filters.min_price = lo
    req = pb.RecommendRequest(user_id=user, k=k, filters=filters, promotions=pb.PromotionOptions(pinned=pins))
    try:
        resp = run(b.rec.recommend(req, no_deadline()))
    except InvalidArgument as exc:
        assert exc.field.split("[")[0].split(".")[0] in ("user_id", "k", "filters", "promotions"), str(exc)
        return
    got = ids(resp)
    want_k = k or 10
    assert len(got) == len(set(got)) <= want_k
    assert all(b.catalog.is_active(i) and i not in exclude for i in got)
    for pos, item_id in pins.items():  # a surviving pin is where it was put
        if 0 <= pos < len(got) and item_id in got and b.catalog.is_active(item_id) and item_id not in exclude \
                and (user != "warm" or item_id not in {i for i, _ in WARM["warm"]}):
            assert got[pos] == item_id or list(pins.values()).count(item_id) > 1
    if not expression and lo is None:  # nothing filters the candidates much: a full answer
        assert len(got) == want_k or len(got) >= 50


BOX = box()
