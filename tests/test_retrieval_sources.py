"""Every candidate source of the Retrieval service, on MovieLens-100K, over gRPC, plus the
builders and the trending clock in process.

The stack's model version is published again with the sources' artifacts (co-visitation,
TF-IDF, segment popularity) when training did not build them, and the running retrieval
service swaps it in by itself.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

import grpc
import psycopg
import pytest

from core import content, covisitation, segments
from core.config import Settings
from core.trending import Event, Trending, TrendingConfig
from protos import internal_pb2 as ipb
from protos import internal_pb2_grpc as ipb_grpc
from protos import recsys_pb2 as pb
from protos import recsys_pb2_grpc as pb_grpc
from training.dataset import load_postgres
from training.sources import source_artifacts

pytestmark = pytest.mark.integration

SOURCE_FILES = (covisitation.NPZ, content.NPZ, segments.FILE)
STAR_WARS, EMPIRE, JEDI, TOY_STORY = "50", "172", "181", "1"


# ---------------------------------------------------------------------------- publishing


def publish_copy(settings: Settings, build_sources: bool) -> str:
    """Publish the CURRENT version again under a new name (with the sources' artifacts built from
    PostgreSQL if asked), the way an export does: a temporary folder renamed whole, then CURRENT."""
    root = settings.artifacts_dir
    current = (root / "CURRENT").read_text().strip()
    version = f"{current.split('-copy')[0]}-copy{uuid.uuid4().hex[:6]}"
    tmp = root / f".{version}.tmp"
    shutil.copytree(root / current, tmp)
    if build_sources:
        ds = load_postgres(settings.database_url)
        for artifact in source_artifacts(ds):
            artifact.save(tmp)
    manifest = json.loads((tmp / "manifest.json").read_text())
    manifest["version"] = version
    (tmp / "manifest.json").write_text(json.dumps(manifest))
    tmp.rename(root / version)
    (root / ".CURRENT.tmp").write_text(version + "\n")
    os.replace(root / ".CURRENT.tmp", root / "CURRENT")
    return version


def served_version(stub: ipb_grpc.RetrievalStub) -> str:
    return stub.Retrieve(ipb.RetrieveRequest(k=1, sources=[ipb.SourceRequest(name="popular", k=1)]),
                         timeout=5).model_version


def wait_for_version(stub: ipb_grpc.RetrievalStub, version: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while served_version(stub) != version:
        assert time.monotonic() < deadline, f"retrieval did not swap to {version} in {timeout_s} s"
        time.sleep(0.2)


@pytest.fixture(scope="session")
def retrieval(stack: Settings) -> ipb_grpc.RetrievalStub:
    """The stack's retrieval service, serving a version that has every source's artifacts."""
    channel = grpc.insecure_channel(stack.retrieval_addr)
    stub = ipb_grpc.RetrievalStub(channel)
    current = stack.artifacts_dir / (stack.artifacts_dir / "CURRENT").read_text().strip()
    if not all((current / name).exists() for name in SOURCE_FILES):
        wait_for_version(stub, publish_copy(stack, build_sources=True))
    return stub


def _retrieve(stub: ipb_grpc.RetrievalStub, **kw: object) -> ipb.CandidateList:
    return stub.Retrieve(ipb.RetrieveRequest(**kw), timeout=5).candidates  # type: ignore[arg-type]


def _categories(database_url: str, item_ids: list[str]) -> dict[str, set[str]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT item_id, categories FROM items WHERE item_id = ANY(%s)", (item_ids,)).fetchall()
    return {i: set(c) for i, c in rows}


# ---------------------------------------------------------------------------- sources over gRPC


def test_also_bought_of_star_wars_holds_the_other_star_wars_films(
    retrieval: ipb_grpc.RetrievalStub, api: pb_grpc.RecommenderStub
) -> None:
    found = _retrieve(retrieval, k=20, item_id=STAR_WARS, sources=[ipb.SourceRequest(name="also_bought", k=20)])
    assert {EMPIRE, JEDI} <= set(found.item_ids)
    assert set(found.sources) == {"also_bought"} and set(found.anchor_item_ids) == {STAR_WARS}
    assert list(found.scores) == sorted(found.scores, reverse=True)

    page = api.SimilarItems(pb.SimilarItemsRequest(item_id=STAR_WARS, k=20, mode="also_bought"), timeout=10)
    assert {EMPIRE, JEDI} <= {i.item_id for i in page.items}
    reasons = {i.reason for i in page.items if i.source == "also_bought"}
    assert reasons == {"People who liked Star Wars also liked this"}
    both = api.SimilarItems(pb.SimilarItemsRequest(item_id=STAR_WARS, k=30, mode="all", debug=True), timeout=10)
    # all three ran and answered; an item is credited to the first source listed that found it (also_bought),
    # so which of them the 30 shown are credited to depends on the trained model
    ran = {s.stage: s for s in both.debug.stages}
    assert all(ran[f"source:{n}"].outcome == "ok" and ran[f"source:{n}"].candidates_out > 0
               for n in ("also_bought", "similar_items", "content"))
    assert {"also_bought", "content"} <= {i.source for i in both.items} <= {"also_bought", "similar_items", "content"}
    assert len({i.item_id for i in both.items}) == len(both.items) and STAR_WARS not in {i.item_id for i in both.items}


def test_content_similarity_finds_films_of_the_same_genres(
    retrieval: ipb_grpc.RetrievalStub, api: pb_grpc.RecommenderStub, stack: Settings
) -> None:
    found = _retrieve(retrieval, k=10, item_id=TOY_STORY, sources=[ipb.SourceRequest(name="content", k=10)])
    assert len(found.item_ids) == 10 and set(found.sources) == {"content"}
    cats = _categories(stack.database_url, [TOY_STORY, *found.item_ids])
    # Toy Story is Animation, Children's, Comedy: every neighbour shares at least two of them
    assert all(len(cats[i] & cats[TOY_STORY]) >= 2 for i in found.item_ids), {i: cats[i] for i in found.item_ids}

    page = api.SimilarItems(pb.SimilarItemsRequest(item_id=TOY_STORY, k=20), timeout=10)  # mode "" = similar
    assert {i.source for i in page.items} == {"similar_items", "content"}
    assert all(i.reason == "Similar to Toy Story" for i in page.items)


def test_the_default_mix_merges_sources_without_duplicates_or_excluded_items(
    retrieval: ipb_grpc.RetrievalStub,
) -> None:
    recent = [STAR_WARS, EMPIRE, JEDI, TOY_STORY]
    user = ipb.UserContext(user_id="mix", recent_item_ids=recent, attributes={"age": "30", "gender": "F"})
    found = _retrieve(retrieval, k=200, user=user, exclude_item_ids=recent)
    ids = list(found.item_ids)
    assert len(ids) == 200 and len(set(ids)) == 200 and not set(ids) & set(recent)
    assert {"two_tower", "also_bought", "content"} <= set(found.sources)
    # anchored sources name one of the user's items as the reason
    assert all(a in recent for a, s in zip(found.anchor_item_ids, found.sources, strict=True)
               if s in ("two_tower", "also_bought", "content"))


def test_cold_start_users_get_what_their_segments_like(
    retrieval: ipb_grpc.RetrievalStub, api: pb_grpc.RecommenderStub, stack: Settings
) -> None:
    retired = api.Trending(pb.TrendingRequest(k=10, segment="occupation:retired"), timeout=10)
    young = api.Trending(pb.TrendingRequest(k=10, segment="age:15"), timeout=10)  # a number maps to its band
    top_retired = [i.item_id for i in retired.items]
    assert len(top_retired) == 10 and len(set(top_retired) & {i.item_id for i in young.items}) <= 5
    assert all(i.reason == "Popular with people like you" for i in retired.items)
    # the retired list leans retired: its items draw a larger share of retired users than the catalogue does
    with psycopg.connect(stack.database_url) as conn:
        share = conn.execute(
            "SELECT (avg(r) FILTER (WHERE item_id = ANY(%s)))::float8, avg(r)::float8 FROM ("
            "  SELECT i.item_id, (u.demographics->>'occupation' = 'retired')::int AS r "
            "  FROM interactions i JOIN users u USING (user_id)) t", (top_retired[:5],)).fetchone()
    assert share[0] > 1.5 * share[1], share  # (the all-time top 5 overall: 0.9 times)

    teen_attrs = {"age": "15", "gender": "F", "occupation": "student"}
    found = _retrieve(retrieval, k=50, user=ipb.UserContext(user_id="teen", attributes=teen_attrs))
    assert found.sources[0] == "segment_popular" and list(found.sources).count("segment_popular") >= 25
    # every candidate is scored by the segments' popularity, whichever source found it: the segments' best
    # first, the segment list in its order, and items outside the lists below
    seg_scores = [sc for sc, src in zip(found.scores, found.sources, strict=True) if src == "segment_popular"]
    assert found.scores[0] == max(found.scores) > min(found.scores)
    assert seg_scores == sorted(seg_scores, reverse=True)

    # over the public API a new user with demographics only gets a full, healthy answer in the sources' merged
    # order (ranking keeps it for a user with no history), led by the segments' favourite
    user = pb.User(user_id=f"cold-{uuid.uuid4().hex[:8]}")
    user.demographics.update(teen_attrs)
    api.UpsertUser(pb.UpsertUserRequest(user=user), timeout=10)
    resp = api.Recommend(pb.RecommendRequest(user_id=user.user_id, k=10, debug=True), timeout=10)
    assert len(resp.items) == 10 and not resp.degraded
    assert resp.items[0].item_id == found.item_ids[0] and resp.items[0].source == "segment_popular"
    assert all(set(i.score_parts) == {"retrieval"} for i in resp.items)  # not the learned ranker's parts


def test_trending_follows_new_interactions_per_window_category_and_segment(
    retrieval: ipb_grpc.RetrievalStub, api: pb_grpc.RecommenderStub, stack: Settings
) -> None:
    item = "1201"  # an obscure film: nobody else makes it trend
    category = sorted(_categories(stack.database_url, [item])[item])[0]
    segment_value = f"astronaut{uuid.uuid4().hex[:6]}"
    users = []
    for _ in range(6):
        user = pb.User(user_id=f"trend-{uuid.uuid4().hex[:8]}")
        user.demographics.update({"occupation": segment_value, "age": 40})
        api.UpsertUser(pb.UpsertUserRequest(user=user), timeout=10)
        users.append(user.user_id)
    kinds = (pb.VIEW, pb.CLICK, pb.ADD_TO_CART, pb.PURCHASE)
    events = [pb.Interaction(user_id=u, item_id=item, type=t) for u in users for t in kinds]
    assert api.LogInteractions(pb.LogInteractionsRequest(interactions=events), timeout=10).accepted == len(events)

    def top(**kw: str) -> list[pb.ScoredItem]:
        return list(api.Trending(pb.TrendingRequest(k=5, **kw), timeout=10).items)

    deadline = time.monotonic() + 15
    while not (found := top(window="1h")) or found[0].item_id != item:
        assert time.monotonic() < deadline, f"{item} did not start trending: {[i.item_id for i in found]}"
        time.sleep(0.3)
    assert found[0].source == "trending" and found[0].reason == "Trending now"
    in_category = top(window="24h", category=category)
    assert in_category[0].item_id == item and in_category[0].reason == f"Trending in {category}"
    in_segment = top(window="7d", segment=f"occupation:{segment_value}")
    assert [i.item_id for i in in_segment if i.source == "trending"] == [item]
    assert item not in [i.item_id for i in top(window="1h", segment="occupation:retired") if i.source == "trending"]


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.TrendingRequest(window="2h"), "window"),
        (pb.TrendingRequest(segment="planet:mars"), "segment"),
        (pb.TrendingRequest(segment="age:old"), "segment"),
        (pb.SimilarItemsRequest(item_id=STAR_WARS, mode="bought"), "mode"),
    ],
)
def test_bad_trending_and_similar_requests_are_invalid_argument(
    api: pb_grpc.RecommenderStub, request_: object, field: str
) -> None:
    call = api.Trending if isinstance(request_, pb.TrendingRequest) else api.SimilarItems
    with pytest.raises(grpc.RpcError) as err:
        call(request_, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith(f"{field}:")


@pytest.mark.parametrize(
    ("source", "field"),
    [
        (ipb.SourceRequest(name="also_bought", k=1001), "sources[0].k"),
        (ipb.SourceRequest(name="trending", k=5, window="1y"), "sources[0].window"),
        (ipb.SourceRequest(name="content", k=5, window="1h"), "sources[0].window"),
        (ipb.SourceRequest(name="segment_popular", k=5, segment="nope"), "sources[0].segment"),
        (ipb.SourceRequest(name="similar_items", k=5), "item_id"),
    ],
)
def test_bad_sources_are_invalid_argument(retrieval: ipb_grpc.RetrievalStub, source: ipb.SourceRequest,
                                          field: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        retrieval.Retrieve(ipb.RetrieveRequest(k=10, sources=[source]), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith(f"{field}:")


# ---------------------------------------------------------------------------- in process


def test_covisitation_weighs_interaction_types_and_normalizes_popularity() -> None:
    w = covisitation.interaction_weights(
        ["purchase", "add_to_cart", "click", "view", "rating", "rating", "rating"], [1, 1, 1, 1, 5, 4, 2])
    assert list(w[:4]) == sorted(w[:4], reverse=True) and w[3] > 0
    assert w[4] == 1.0 and 0 < w[5] < 1 and w[6] == 0


def test_trending_windows_decay_and_the_clock() -> None:
    day = 86400.0
    old_data = 1_000_000.0  # long ago: only the "latest" clock sees a window around it
    events = [Event(n, "fresh", 1.0, old_data - 600) for n in range(5)]
    events += [Event(10 + n, "yesterday", 1.0, old_data - 0.9 * day, ("gender:f",)) for n in range(8)]
    events += [Event(20 + n, "last_week", 1.0, old_data - 5 * day) for n in range(20)]

    def top(t: Trending, window: str, segment: str = "") -> list[str]:
        return [i for i, _ in t.top(window, "", segment, 10, lambda _i: True)]

    latest = Trending(TrendingConfig(clock="latest"), wall_clock=lambda: old_data + 1000 * day)
    latest.add(events)
    assert top(latest, "1h") == ["fresh"]
    assert top(latest, "24h") == ["fresh", "yesterday"]  # 5 fresh events outweigh 8 from 22 hours ago ...
    assert top(latest, "7d") == ["last_week", "yesterday", "fresh"]  # ... but not in a week's window
    assert top(latest, "24h", "gender:f") == ["yesterday"]
    assert top(latest, "")[0] == "last_week"  # all time counts every interaction
    latest.set_categories("fresh", ["Drama"])
    assert [i for i, _ in latest.top("7d", "Drama", "", 10, lambda _i: True)] == ["fresh"]

    wall = Trending(TrendingConfig(clock="now"), wall_clock=lambda: old_data + 1000 * day)
    wall.add(events)
    assert top(wall, "7d") == [] and top(wall, "")[0] == "last_week"
    auto = Trending(TrendingConfig(clock="auto"), wall_clock=lambda: old_data + 1000 * day)
    auto.add(events)  # nothing within a week of now: the newest interaction is the clock
    assert top(auto, "1h") == ["fresh"]


def test_source_artifacts_round_trip(tmp_path: Path) -> None:
    from training import movielens

    ds = movielens.load(movielens.fetch(Settings().data_dir))
    for module, built in zip((covisitation, content, segments), source_artifacts(ds), strict=True):
        built.save(tmp_path)
        loaded = module.load(tmp_path)
        assert loaded is not None
    cov = covisitation.load(tmp_path)
    assert cov is not None and cov.neighbours_of(STAR_WARS, 1)[0][0] == JEDI
    idx = content.load(tmp_path)
    assert idx is not None
    terms, weights = idx.vector(TOY_STORY)  # type: ignore[misc]
    assert idx.similar(terms, weights, 1, skip={TOY_STORY})[0][1] > 0.5
    assert covisitation.load(tmp_path / "nothing-here") is None
