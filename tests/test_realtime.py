"""The learning path in real time: LogInteractions -> stream -> worker -> Feast online
store; any interaction shows in the next (cached) answer; a killed worker loses nothing."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from core.config import Settings
from feature_store.store import OnlineFeatures
from protos import recsys_pb2 as pb
from protos import recsys_pb2_grpc as pb_grpc
from recsys import processes
from storage import cache

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def online(stack: Settings) -> Iterator[OnlineFeatures]:
    features = OnlineFeatures(stack)
    yield features
    features.close()


def _eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if check():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"not true within {timeout_s} s")


def _log(api: pb_grpc.RecommenderStub, user: str, item: str, kind: int, value: float = 0) -> None:
    resp = api.LogInteractions(pb.LogInteractionsRequest(interactions=[
        pb.Interaction(user_id=user, item_id=item, type=kind, value=value)]), timeout=10)
    assert resp.accepted == 1, resp


def test_interactions_reach_the_online_store_through_the_worker(
    api: pb_grpc.RecommenderStub, online: OnlineFeatures
) -> None:
    user = "33"
    before = online.user_features(user)
    _log(api, user, "1", pb.VIEW)
    took = _eventually(lambda: online.user_features(user)["recent_item_ids"][:1] == ["1"])
    after = online.user_features(user)
    assert after["count_view"] == before["count_view"] + 1
    assert after["n_interactions"] == before["n_interactions"] + 1
    assert took < 5


def test_any_interaction_shows_in_the_next_answer_with_the_cache_on(
    api: pb_grpc.RecommenderStub, stack: Settings
) -> None:
    """A single click (a weak event) and a view both reach the next answer: the cached one is stale."""
    user = "44"
    r = redis.Redis.from_url(stack.redis_url)
    first = api.Recommend(pb.RecommendRequest(user_id=user, k=5), timeout=10)
    _eventually(lambda: bool(r.exists(cache.user_key(user))))
    assert [i.item_id for i in api.Recommend(pb.RecommendRequest(user_id=user, k=5), timeout=10).items] == [
        i.item_id for i in first.items]  # served from the cache
    top = first.items[0].item_id
    _log(api, user, top, pb.CLICK)
    after_click = api.Recommend(pb.RecommendRequest(user_id=user, k=5), timeout=10)
    assert top not in [i.item_id for i in after_click.items]
    key = cache.user_key(user)

    def cached_at_the_current_generation() -> bool:
        # the worker bumps the generation again once it pushed the click's features: ask until an answer
        # written at the generation that stays is in the cache
        gen = int(r.hget(key, cache.GENERATION) or 0)
        api.Recommend(pb.RecommendRequest(user_id=user, k=5), timeout=10)
        time.sleep(0.1)  # the cache write happens after the response
        return int(r.hget(key, cache.GENERATION) or 0) == gen and any(
            v.startswith(b"%d:" % gen) for f, v in r.hgetall(key).items() if f != cache.GENERATION.encode())

    _eventually(cached_at_the_current_generation)
    viewed = api.Recommend(pb.RecommendRequest(user_id=user, k=5), timeout=10).items[0].item_id
    _log(api, user, viewed, pb.VIEW)
    assert viewed not in [i.item_id for i in api.Recommend(pb.RecommendRequest(user_id=user, k=5), timeout=10).items]


def test_no_acknowledged_interaction_is_lost_when_the_worker_is_killed(
    api: pb_grpc.RecommenderStub, online: OnlineFeatures, stack: Settings
) -> None:
    import os
    import signal

    pid = int((stack.var_dir / "run" / "worker.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    _eventually(lambda: not processes.is_serving(stack.worker_addr, 0.2))
    user = f"rt-{uuid.uuid4().hex[:8]}"
    for item in ("50", "172", "181"):  # acknowledged while no worker runs
        _log(api, user, item, pb.CLICK)
    time.sleep(0.5)
    assert online.user_features(user)["n_interactions"] == 0
    processes.start(stack, "worker")
    _eventually(lambda: online.user_features(user)["n_interactions"] == 3)
    assert online.user_features(user)["recent_item_ids"] == ["181", "172", "50"]
