"""The Recommend pipeline's candidate stage and its debug trace: gated sources called in parallel, each
under its own timeout; removed ids per filter; onboarding preferences for cold start; a stage that
misses the caller's deadline. Pure logic first (no servers), then over the real stack."""

from __future__ import annotations

import os
import random
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace

import grpc
import psycopg
import pytest

from core.config import Settings
from core.errors import InvalidArgument
from core.interleave import interleave
from orchestrator import config
from orchestrator.filters import filter_items
from orchestrator.preferences import check_preferences
from orchestrator.sources import (
    DEFAULT_SOURCES,
    Call,
    CandidateSource,
    Group,
    UserQuery,
    fill_target,
    merge,
    own_candidates,
    plan,
)
from protos import recsys_pb2 as pb
from protos import recsys_pb2_grpc as pb_grpc
from recsys import processes
from tests.conftest import free_port

# ---------------------------------------------------------------------------- pure logic

WARM = UserQuery(history=30, has_demographics=True)
COLD_PICKER = UserQuery(history=1, has_demographics=False, preferred_categories=("Comedy", "Western"))
STRANGER = UserQuery(history=0, has_demographics=False)


def _names(calls: list[Call]) -> list[str]:
    return [c.stage for c in calls]


def test_gates_pick_the_sources_for_each_kind_of_user() -> None:
    calls, gated = plan(DEFAULT_SOURCES, WARM, 200)
    assert _names(calls) == ["source:two_tower", "source:also_bought", "source:content", "source:trending",
                             "source:popular"]
    assert dict(gated) == {"source:segment_popular": "not a cold start (30 interactions)",
                           "source:preferred_categories": "not a cold start (30 interactions)"}

    calls, gated = plan(DEFAULT_SOURCES, COLD_PICKER, 200)
    # a few interactions: personalised sources run, and the cold-start ones too, one call per picked category
    assert _names(calls) == ["source:two_tower", "source:also_bought", "source:content",
                             "source:preferred_categories:Comedy", "source:preferred_categories:Western",
                             "source:trending", "source:popular"]
    assert [(c.category, c.picked) for c in calls if c.picked] == [("Comedy", True), ("Western", True)]
    assert calls[3].source_request() == pb.SourceRequest(name="trending", k=100, window="7d", category="Comedy")
    assert dict(gated) == {"source:segment_popular": "no demographics"}

    calls, gated = plan(DEFAULT_SOURCES, STRANGER, 200)
    assert _names(calls) == ["source:popular"]
    assert dict(gated)["source:two_tower"] == "no history"

    demo = UserQuery(history=0, has_demographics=True)
    assert _names(plan(DEFAULT_SOURCES, demo, 200)[0]) == ["source:segment_popular", "source:trending",
                                                            "source:popular"]


def test_bigger_requests_scale_every_source() -> None:
    calls, _ = plan(DEFAULT_SOURCES, WARM, 1000)
    assert {c.spec.name: c.k for c in calls} == {"two_tower": 1000, "also_bought": 250, "content": 100,
                                                 "trending": 50, "popular": 1000}


def _group(spec: CandidateSource, ids: list[str], category: str = "") -> Group:
    n = len(ids)
    return Group(Call(spec, 10, category, bool(category)), ids, [float(10 - r) for r in range(n)],
                 [spec.retrieval_source] * n, [""] * n)


def test_merge_interleaves_by_weight_drops_duplicates_and_fills_last() -> None:
    a, b = CandidateSource("a", 10, source="two_tower"), CandidateSource("b", 10, source="content", weight=0.5)
    fill = CandidateSource("p", 10, source="popular", fill=True)
    groups = [_group(fill, ["p1", "a1", "p2"]), _group(a, ["a1", "a2", "a3", "a4"]), _group(b, ["b1", "a2", "b2"])]
    m = merge(groups, 8)
    # weight 0.5: b's first item ranks with a's second; "a2" stays where it ranks best (a, rank 1)
    assert m.item_ids == ["a1", "a2", "b1", "a3", "a4", "b2", "p1", "p2"]
    assert m.sources == ["two_tower", "two_tower", "content", "two_tower", "two_tower", "content", "popular",
                         "popular"]
    assert m.scores[:3] == [10.0, 9.0, 10.0]  # each source's own score, for the ranker
    assert len(merge(groups, 3)) == 3 and merge(groups, 3).item_ids == ["a1", "a2", "b1"]
    # placed by its best rank, credited to the first source in config order: "x" ranks first in t but
    # keeps a's source and score
    t = CandidateSource("t", 10, source="trending")
    m = merge([_group(a, ["y", "x"]), _group(t, ["x"])], 10)
    assert m.item_ids == ["y", "x"] and m.sources == ["two_tower", "two_tower"] and m.scores == [10.0, 9.0]
    m = merge([_group(a, ["y", "w", "v", "x"]), _group(t, ["x"])], 10)
    assert m.item_ids == ["y", "x", "w", "v"] and m.sources[1] == "two_tower"
    # fill sources top up to fill_to only, unless nothing else ran
    assert merge(groups, 8, fill_to=6).item_ids == ["a1", "a2", "b1", "a3", "a4", "b2"]
    assert merge(groups, 8, fill_to=7).item_ids[-1] == "p1"
    assert merge([_group(fill, ["p1", "p2"])], 8, fill_to=1).item_ids == ["p1", "p2"]
    # equal weights: round-robin by rank, the first source in config order winning ties
    c = CandidateSource("c", 10, source="content")
    assert merge([_group(a, ["x", "y"]), _group(c, ["z", "x"])], 10).item_ids == ["x", "z", "y"]


def test_equal_weights_interleave_as_a_round_robin_that_skips_taken_items() -> None:
    def round_robin(lists: list[list[str]], limit: int) -> list[str]:
        out: list[str] = []
        for r in range(max(map(len, lists))):
            for items in lists:
                if r < len(items) and items[r] not in out:
                    out.append(items[r])
        return out[:limit]

    rng = random.Random(7)
    for _ in range(200):
        lists = [[str(rng.randrange(30)) for _ in range(rng.randrange(12))] for _ in range(rng.randrange(1, 5))]
        lists = [list(dict.fromkeys(items)) for items in lists]  # a source lists an item once
        if not any(lists):
            continue
        limit = rng.randrange(1, 40)
        assert [i for i, _, _ in interleave(lists, limit)] == round_robin(lists, limit), lists


def test_a_source_keeps_what_it_found_itself() -> None:
    """The retrieval service fills a short answer with popular items; the popular source does that here."""
    found = pb.CandidateList(item_ids=["1", "2", "3", "4"], scores=[4, 3, 2, 1],
                             sources=["trending", "popular", "popular", "two_tower"], anchor_item_ids=[""] * 4)
    pref = CandidateSource("pref", 10, source="trending", preferred_categories=True)
    comedies = {"1", "2"}
    g = own_candidates(Call(pref, 10, "Comedy", True), found, lambda i, c: c == "Comedy" and i in comedies)
    assert g.item_ids == ["1", "2"]  # "3": the global fill, outside the category; "4": not this source
    tt = own_candidates(Call(DEFAULT_SOURCES[0], 10), found, lambda i, c: True)
    assert tt.item_ids == ["4"]


def test_source_config_is_checked_when_it_loads() -> None:
    params = config.parse({"surface": {"home": {"sources": [
        {"name": "two_tower", "k": 100, "gate": "history", "timeout_ms": 40, "weight": 2},
        {"name": "filler", "source": "popular", "k": 50, "fill": True, "optional": True},
    ]}}}).surface("home")
    assert [s.name for s in params.sources] == ["two_tower", "filler"] and params.sources[0].timeout_ms == 40
    assert config.parse({}).surface("home").sources == DEFAULT_SOURCES
    bad = [
        ({"name": "magic", "k": 5}, "sources[0].source: unknown retrieval source 'magic'"),
        ({"name": "two_tower", "k": 0}, "sources[0].k: must be between 1 and 1000"),
        ({"name": "two_tower", "k": 5, "gate": "sometimes"}, "sources[0].gate: unknown gate 'sometimes'"),
        ({"name": "two_tower", "k": 5, "window": "7d"}, "sources[0].window: only the trending source"),
        ({"name": "two_tower", "k": 5, "timeout_ms": -1}, "sources[0].timeout_ms"),
        ({"name": "two_tower", "k": "5"}, "sources[0].k: must be an integer"),
        ({"name": "two_tower"}, "sources[0].k: is required"),
    ]
    for entry, message in bad:
        with pytest.raises(ValueError) as err:
            config.parse({"surface": {"home": {"sources": [entry]}}})
        assert message in str(err.value), str(err.value)
    with pytest.raises(ValueError, match="cold_start_interactions"):
        config.parse({"surface": {"default": {"cold_start_interactions": -1}}})
    # an experiment variant may swap the list; it is parsed once, when the file loads
    cfg = config.parse({"experiment": [{"name": "e", "salt": "s", "variant": [
        {"name": "control", "share": 0.5},
        {"name": "no_content", "share": 0.5, "params": {"sources": [{"name": "two_tower", "k": 200}]}}]}]})
    variant = cfg.experiments.assign("u", "home", "no_content").params
    assert isinstance(variant["sources"][0], CandidateSource)


def test_filters_list_the_ids_they_removed_up_to_a_cap() -> None:
    rules = [("odd", lambda i: int(i) % 2 == 0), ("big", lambda i: int(i) < 50)]
    out = filter_items([str(i) for i in range(100)], str, rules, keep_ids=10)
    assert out.removed == {"odd": 50, "big": 25}
    assert out.removed_ids["odd"] == [str(i) for i in range(1, 20, 2)]  # the first 10
    assert out.removed_ids["big"] == [str(i) for i in range(50, 70, 2)]
    assert filter_items(["1", "2"], str, rules).removed_ids == {}  # counts only unless asked


def test_preferred_categories_are_checked() -> None:
    assert check_preferences({"preferred_categories": ["Comedy", "Drama"], "newsletter": True})
    assert check_preferences({"anything": 1}) == {"anything": 1}
    for value, message in [
        ("Comedy", "user.preferences.preferred_categories: must be a list of category names, got str"),
        (["Comedy", ""], "user.preferences.preferred_categories[1]: must be a non-empty string"),
        (["Comedy", 3], "user.preferences.preferred_categories[1]: must be a non-empty string"),
        ([f"c{i}" for i in range(11)], "must hold at most 10 categories, got 11"),
        (["x" * 129], "must be at most 128 characters"),
        (["Comedy", "Comedy"], "must not name a category twice"),
    ]:
        with pytest.raises(InvalidArgument) as err:
            check_preferences({"preferred_categories": value})
        assert message in str(err.value)


# ---------------------------------------------------------------------------- over the real stack

PIPELINE_CONFIG = """
[surface.timeout_two_tower]          # two_tower cannot answer in 1 microsecond: it always times out
sources = [
  { name = "two_tower", k = 200, gate = "history", timeout_ms = 0.001 },
  { name = "also_bought", k = 100, gate = "history" },
  { name = "content", k = 50, gate = "history" },
  { name = "popular", k = 200, fill = true, optional = true },
]

[surface.gated_trap]                 # would time out (and degrade the answer) if its gate let it run
sources = [
  { name = "two_tower", k = 200, gate = "history" },
  { name = "segment_popular", k = 200, gate = "cold_demographics", timeout_ms = 0.001 },
  { name = "popular", k = 200, fill = true, optional = true },
]

[surface.own_calls]                  # each source held to its own budget: one call each, concurrently
sources = [
  { name = "two_tower", k = 200, gate = "history", timeout_ms = 2000 },
  { name = "also_bought", k = 50, gate = "history", timeout_ms = 2000 },
  { name = "content", k = 20, gate = "history", timeout_ms = 2000 },
]

[surface.optional_trending_late]     # an optional source late: noted, the answer stays healthy
sources = [
  { name = "two_tower", k = 200, gate = "history" },
  { name = "trending", k = 20, window = "7d", timeout_ms = 0.001, optional = true },
]
"""

@pytest.fixture(scope="module")
def pipeline_api(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[pb_grpc.RecommenderStub]:
    """A second orchestrator over the shared stack, with surfaces of its own (the shared one keeps its config)."""
    tmp = tmp_path_factory.mktemp("pipeline")
    (tmp / "recsys.toml").write_text(PIPELINE_CONFIG)
    own = replace(stack, config_path=tmp / "recsys.toml", orchestrator_addr=f"127.0.0.1:{free_port()}",
                  var_dir=tmp / "var")
    processes.start(own, "orchestrator")
    try:
        with grpc.insecure_channel(own.orchestrator_addr) as channel:
            yield pb_grpc.RecommenderStub(channel)
    finally:
        processes.stop(own, "orchestrator")


def _rec(api: pb_grpc.RecommenderStub, user_id: str, timeout: float = 10, **kw: object) -> pb.RecommendResponse:
    kw.setdefault("k", 10)
    return api.Recommend(pb.RecommendRequest(user_id=user_id, debug=True, **kw), timeout=timeout)


def _stages(resp: pb.RecommendResponse) -> dict[str, pb.StageTrace]:
    return {s.stage: s for s in resp.debug.stages}


def _categories(stack: Settings) -> dict[str, set[str]]:
    with psycopg.connect(stack.database_url) as conn:
        return {i: set(c) for i, c in conn.execute("SELECT item_id, categories FROM items")}


@pytest.mark.integration
def test_sources_run_in_parallel_each_in_the_trace(
    api: pb_grpc.RecommenderStub, pipeline_api: pb_grpc.RecommenderStub,
) -> None:
    resp = _rec(api, "21")
    stages = _stages(resp)
    ran = [s for name, s in stages.items() if name.startswith("source:") and not s.note.startswith("gated off")]
    assert {s.stage for s in ran} == {"source:two_tower", "source:also_bought", "source:content",
                                      "source:trending", "source:popular"}
    assert all(s.candidates_out > 0 for s in ran if s.stage not in ("source:trending", "source:popular"))
    # the popular filler is called only when the others come up short
    assert stages["source:popular"].note.startswith("not needed: the other sources found")
    # the default sources have no timeout of their own: they share one call, each answered on its own
    assert {s.note for s in ran if s.stage != "source:popular"} == {"one Retrieve call for 4 sources"}
    listed = [s.stage for s in resp.debug.stages]
    assert listed.index("retrieve") < listed.index("source:two_tower") < listed.index("rank")
    assert not resp.degraded and len(resp.items) == 10

    # sources with budgets of their own: a call each, concurrent (every call started before the first one
    # finished, and the whole stage took less than their sum)
    resp = _rec(pipeline_api, "21", context=pb.Context(surface="own_calls"))
    stages = _stages(resp)
    ran = [stages[f"source:{name}"] for name in ("two_tower", "also_bought", "content")]
    assert all(s.candidates_out > 0 and not s.note for s in ran), ran
    assert max(s.start_ms for s in ran) < min(s.start_ms + s.latency_ms for s in ran)
    assert stages["retrieve"].latency_ms < sum(s.latency_ms for s in ran)
    assert not resp.degraded and len(resp.items) == 10


@pytest.mark.integration
def test_a_gated_off_source_is_reported_and_not_called(pipeline_api: pb_grpc.RecommenderStub) -> None:
    resp = _rec(pipeline_api, "22", context=pb.Context(surface="gated_trap"))
    gated = _stages(resp)["source:segment_popular"]
    assert gated.note.startswith("gated off: not a cold start") and gated.candidates_out == 0
    # called, it would have timed out (1 us) and marked the answer degraded
    assert not resp.degraded and len(resp.items) == 10
    assert "segment_popular" not in {i.source for i in resp.items}


@pytest.mark.integration
def test_a_timed_out_source_is_skipped_and_the_rest_served(pipeline_api: pb_grpc.RecommenderStub) -> None:
    resp = _rec(pipeline_api, "23", context=pb.Context(surface="timeout_two_tower"))
    assert resp.degraded and len(resp.items) == 10
    assert resp.degraded_reasons[0].startswith("source:two_tower timed out (DEADLINE_EXCEEDED")
    stages = _stages(resp)
    assert stages["source:two_tower"].candidates_out == 0 and stages["source:also_bought"].candidates_out > 0
    assert stages["retrieve"].note == "2 of 3 sources answered"  # the popular filler was not needed
    # two_tower, with its own timeout, had a call of its own; the other two shared one
    assert stages["source:also_bought"].note == stages["source:content"].note == "one Retrieve call for 2 sources"
    assert {i.source for i in resp.items} <= {"also_bought", "content", "popular"}
    assert resp.items[0].score_parts  # ranked as usual

    # an optional source late: noted in its stage, the answer is not degraded
    ok = _rec(pipeline_api, "23", context=pb.Context(surface="optional_trending_late"))
    assert not ok.degraded and _stages(ok)["source:trending"].note.startswith("timed out (DEADLINE_EXCEEDED")


@pytest.mark.integration
def test_debug_trace_lists_the_ids_each_filter_removed(api: pb_grpc.RecommenderStub, stack: Settings) -> None:
    cats = _categories(stack)
    no_westerns = _rec(api, "24", k=500, filters=pb.Filters(exclude_categories=["Western"]))
    flt = _stages(no_westerns)["filter"]
    removed = list(flt.removed_item_ids["exclude_categories"].item_ids)
    assert 0 < len(removed) == flt.removed["exclude_categories"] < 100
    assert all("Western" in cats[i] for i in removed)
    # the same candidates with only Westerns kept: exactly the ids the exclusion removed
    westerns = _rec(api, "24", k=500, filters=pb.Filters(include_categories=["Western"]))
    assert {i.item_id for i in westerns.items} == set(removed)
    # what the exclusion kept, the inclusion removed
    assert _stages(westerns)["filter"].removed["include_categories"] == flt.candidates_out
    assert len(_stages(westerns)["filter"].removed_item_ids["include_categories"].item_ids) == 100  # capped
    # counts only, without debug
    plain = api.Recommend(pb.RecommendRequest(user_id="24", k=5, filters=pb.Filters(
        exclude_categories=["Western"])), timeout=10)
    assert not plain.HasField("debug")


def _upsert(api: pb_grpc.RecommenderStub, user_id: str, preferences: dict) -> pb.User:
    user = pb.User(user_id=user_id)
    user.preferences.update(preferences)
    return api.UpsertUser(pb.UpsertUserRequest(user=user), timeout=10)


@pytest.mark.integration
def test_cold_user_gets_picked_categories_then_personalized(api: pb_grpc.RecommenderStub, stack: Settings) -> None:
    cats = _categories(stack)
    picked = {"Western", "Film-Noir"}
    user_id = f"onboarded-{uuid.uuid4().hex[:8]}"
    _upsert(api, user_id, {"preferred_categories": sorted(picked)})
    cold = _rec(api, user_id)
    stages = _stages(cold)
    assert stages["source:preferred_categories:Western"].candidates_out > 0
    assert stages["source:preferred_categories:Film-Noir"].candidates_out > 0
    assert stages["source:two_tower"].note == "gated off: no history"
    from_picks = [i for i in cold.items if "which you picked" in i.reason]
    assert len(from_picks) >= 5, [(i.item.title, i.reason) for i in cold.items]
    for i in from_picks:
        scope = i.reason.split(" in ", 1)[1].removesuffix(", which you picked")
        assert scope in picked and scope in cats[i.item_id]
        assert i.reason.startswith(("Popular in", "Trending in"))

    # a few interactions later the personalised sources take over
    liked = ["50", "181", "172", "174", "1"]
    logged = api.LogInteractions(pb.LogInteractionsRequest(interactions=[
        pb.Interaction(user_id=user_id, item_id=i, type=pb.RATING, value=5) for i in liked]), timeout=10)
    assert logged.accepted == 5
    warm = _rec(api, user_id)
    stages = _stages(warm)
    assert stages["source:preferred_categories"].note == "gated off: not a cold start (5 interactions)"
    assert stages["source:two_tower"].candidates_out > 0
    assert not any("which you picked" in i.reason for i in warm.items)
    assert any(i.source in ("two_tower", "also_bought", "content") for i in warm.items)
    assert not set(liked) & {i.item_id for i in warm.items}


@pytest.mark.integration
def test_invalid_preferences_are_invalid_argument(api: pb_grpc.RecommenderStub) -> None:
    for value in ("Comedy", ["Comedy", ""], [f"c{i}" for i in range(11)]):
        with pytest.raises(grpc.RpcError) as err:
            _upsert(api, "bad-prefs", {"preferred_categories": value})
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "preferences.preferred_categories" in err.value.details()
    # the server keeps serving, and a valid value round-trips
    user = _upsert(api, "bad-prefs", {"preferred_categories": ["Comedy"]})
    assert list(user.preferences["preferred_categories"]) == ["Comedy"]


@pytest.mark.integration
def test_history_carries_each_items_latest_time(stack: Settings) -> None:
    import asyncio

    from storage.db import async_pool
    from storage.interactions import user_history_with_types

    async def history() -> list:
        pool = await async_pool(stack.database_url)
        try:
            async with pool.connection() as conn:
                return await user_history_with_types(conn, "7", 50)
        finally:
            await pool.close()

    entries = asyncio.run(history())
    with psycopg.connect(stack.database_url) as conn:
        latest = dict(conn.execute("SELECT item_id, extract(epoch FROM max(ts))::float8 FROM interactions "
                                   "WHERE user_id = '7' GROUP BY item_id").fetchall())
    assert len(entries) == 50 and all(e.ts == latest[e.item_id] for e in entries)
    assert [e.ts for e in entries] == sorted((e.ts for e in entries), reverse=True)  # most recent first


@pytest.mark.integration
def test_a_stage_late_past_the_deadline_still_answers_in_time(api: pb_grpc.RecommenderStub, stack: Settings) -> None:
    """Ranking frozen (SIGSTOP) for one request: its call runs out of the caller's deadline; the answer comes in
    time, in retrieval order, degraded with a reason naming the stage, with k items."""
    pid = int((stack.var_dir / "run" / "ranking.pid").read_text())
    deadline_s = 0.4  # under ranking's own budget (0.5 s): the caller's deadline is what cuts it
    # the ranking channel connected first: a process frozen mid-handshake reads as UNAVAILABLE, not late
    assert not api.Recommend(pb.RecommendRequest(user_id="25", k=10, context=pb.Context(
        surface=f"s-{uuid.uuid4().hex[:8]}")), timeout=10).degraded
    os.kill(pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        resp = api.Recommend(pb.RecommendRequest(user_id="25", k=10, context=pb.Context(
            surface=f"s-{uuid.uuid4().hex[:8]}")), timeout=deadline_s)
        elapsed = time.monotonic() - start
    finally:
        os.kill(pid, signal.SIGCONT)
    assert elapsed < deadline_s
    assert resp.degraded and resp.degraded_reasons == ["ranking failed (DEADLINE_EXCEEDED): retrieval order"]
    assert len(resp.items) == 10 and not resp.items[0].score_parts
    # resumed: the next answer is healthy again
    for _ in range(50):
        if not api.Recommend(pb.RecommendRequest(user_id="25", k=10, debug=True), timeout=10).degraded:
            break
        time.sleep(0.1)
    else:
        pytest.fail("still degraded after SIGCONT")



@pytest.mark.integration
def test_default_sources_send_the_ranker_what_it_was_trained_on(stack: Settings) -> None:
    """For a user with history, the orchestrator's default sources (one shared call, merged here) give the
    retrieval service's default mix: the candidates training/ranker_candidates.py trains the ranker on
    and the offline evaluation serves."""
    with psycopg.connect(stack.database_url) as conn:
        rows = conn.execute("""SELECT item_id, max(ts) AS ts FROM interactions WHERE user_id = '42'
                               GROUP BY item_id ORDER BY max(ts) DESC, item_id""").fetchall()
    history = [r[0] for r in rows]
    base = pb.RetrieveRequest(user=pb.UserContext(user_id="42", recent_item_ids=history[:50]),
                              exclude_item_ids=sorted(history))
    want, k = 200, 10
    default_mix = pb.RetrieveRequest(user=base.user, exclude_item_ids=base.exclude_item_ids, k=want)
    with grpc.insecure_channel(stack.retrieval_addr) as channel:
        retrieval = pb_grpc.RetrievalStub(channel)
        before = list(retrieval.Retrieve(default_mix, timeout=10).candidates.item_ids)
        calls, _ = plan(DEFAULT_SOURCES, UserQuery(history=len(history), has_demographics=True), want)
        main = [c for c in calls if not c.spec.fill]
        # what the orchestrator sends: one call, each source answered on its own ...
        shared = pb.RetrieveRequest()
        shared.CopyFrom(base)
        shared.k, shared.separate_sources = max(c.k for c in main), True
        shared.sources.extend(c.source_request() for c in main)
        answer = retrieval.Retrieve(shared, timeout=10)
        assert not answer.candidates.item_ids and len(answer.groups) == len(main)
        with pytest.raises(grpc.RpcError) as err:  # nothing named: nothing to answer separately
            retrieval.Retrieve(pb.RetrieveRequest(user=base.user, k=10, separate_sources=True), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "sources" in err.value.details()
        groups = [own_candidates(c, found, lambda item_id, category: True)
                  for c, found in zip(main, answer.groups, strict=True)]
        # ... each group what a call naming that source alone finds, less retrieval's popular fill
        for call, group in zip(main, groups, strict=True):
            request = pb.RetrieveRequest()
            request.CopyFrom(base)
            request.k = call.k
            request.sources.append(call.source_request())
            alone = own_candidates(call, retrieval.Retrieve(request, timeout=10).candidates, lambda i, c: True)
            if call.spec.name != "trending":  # trending moves with other tests' interactions
                assert alone.item_ids == group.item_ids, call.stage
        # trending moves with the interactions other tests log: the answer may change between calls, not twice
        after = list(retrieval.Retrieve(default_mix, timeout=10).candidates.item_ids)
    merged = merge(groups, want, fill_target(want, k))
    assert len(before) == want
    assert merged.item_ids in (before, after)
    assert {"two_tower", "also_bought", "content"} <= set(merged.sources)
