"""Hot histories (orchestrator/histories.py): the rules in process, then the stack's orchestrator showing an
interaction logged by another replica in its next miss, while a write that bypasses the API waits out the
entry's age."""

from __future__ import annotations

import asyncio
import time
import uuid

import psycopg
import pytest
from redis.asyncio import Redis

from core.config import Settings
from orchestrator.histories import HotHistories
from orchestrator.interactions import log_interactions
from protos import recsys_pb2 as pb
from protos import recsys_pb2_grpc as pb_grpc
from storage.db import async_pool
from storage.interactions import HistoryEntry
from storage.records import UserRecord


def _history(n: int) -> list[HistoryEntry]:
    return [HistoryEntry(f"i{k}", frozenset({"click"}), 1000.0 - k) for k in range(n)]


USER = UserRecord("u1", {}, {}, None, None)


def test_an_entry_serves_only_at_the_generation_it_was_read_at() -> None:
    held = HotHistories(100, 60)
    held.put("u1", 3, time.monotonic(), USER, _history(2))
    assert held.get("u1", 3) == (USER, _history(2))
    assert held.get("u1", 4) is None  # an interaction since: read again
    assert held.get("u1", 3) is None  # and the old entry is gone
    assert (held.hits, held.misses) == (1, 2)


def test_no_generation_no_entry() -> None:
    held = HotHistories(100, 60)
    held.put("u1", None, time.monotonic(), USER, _history(2))  # Redis away when it was read
    assert len(held) == 0 and held.get("u1", None) is None
    off = HotHistories(0, 60)
    off.put("u1", 1, time.monotonic(), USER, _history(2))
    assert len(off) == 0 and not off.enabled


def test_an_entry_older_than_its_age_limit_is_read_again() -> None:
    held = HotHistories(100, 5)
    held.put("u1", 1, time.monotonic() - 6, USER, _history(2))  # the read started 6 s ago
    assert held.get("u1", 1) is None and len(held) == 0


def test_logged_rows_merge_only_onto_the_generation_just_before() -> None:
    held = HotHistories(100, 60)
    held.put("u1", 3, time.monotonic(), USER, _history(3))  # i0 (ts 1000) .. i2 (ts 998)
    assert held.logged("u1", 4, [("i2", "purchase", 2000.0), ("new", "view", 999.5)], limit=1000)
    got = held.get("u1", 4)
    assert got is not None
    assert [(h.item_id, set(h.types), h.ts) for h in got[1]] == [
        ("i2", {"click", "purchase"}, 2000.0), ("i0", {"click"}, 1000.0), ("new", {"view"}, 999.5),
        ("i1", {"click"}, 999.0)]
    assert not held.logged("u1", 6, [("x", "click", 3000.0)], limit=1000)  # 5 came from elsewhere
    assert held.get("u1", 6) is None and len(held) == 0
    held.put("u2", 1, time.monotonic(), USER, _history(3))
    assert not held.logged("u2", 2, [("x", "click", 3000.0)], limit=3)  # at the read's limit: older items unknown
    assert len(held) == 0
    held.put("u3", 1, time.monotonic(), None, [])  # no row yet: LogInteractions creates one
    assert not held.logged("u3", 2, [("x", "click", 3000.0)], limit=1000)
    held.put("u4", 5, time.monotonic(), USER, _history(1))
    held.put("u4", 4, time.monotonic(), USER, [])  # a read that began before the entry's update
    assert held.get("u4", 5) is not None


def test_least_recently_used_users_go_first_past_the_item_budget() -> None:
    held = HotHistories(10, 60)
    now = time.monotonic()
    held.put("a", 1, now, USER, _history(3))  # 4 items with the row
    held.put("b", 1, now, USER, _history(3))
    assert held.get("a", 1) is not None  # a used last: b goes first
    held.put("c", 1, now, USER, _history(3))
    assert held.get("b", 1) is None and held.get("a", 1) is not None and held.get("c", 1) is not None
    assert held.size == 8 and len(held) == 2
    held.put("huge", 1, now, USER, _history(20))  # over the whole budget: not kept, nothing evicted
    assert len(held) == 2
    held.put("a", 2, now, USER, _history(1))  # read again: replaces its entry
    assert held.size == 6
    held.forget(["a", "nobody"])
    assert held.size == 4 and held.get("a", 2) is None


# ---------------------------------------------------------------------------- the stack


@pytest.mark.integration
def test_a_logged_batch_merged_into_the_held_history_equals_a_fresh_read(stack: Settings) -> None:
    """LogInteractions in this process: the stored rows merged into the held entry give what PostgreSQL
    would: a repeat of a held item (types merged, moved up), new items, a past timestamp (in the middle),
    one item twice in the batch."""
    from google.protobuf.timestamp_pb2 import Timestamp

    from orchestrator.hydrators import HISTORY_LIMIT
    from storage import cache
    from storage.interactions import user_and_history
    from storage.users import upsert_user

    user = f"hot-merge-{uuid.uuid4().hex[:6]}"

    def click(item: str, kind: int = pb.CLICK, at: float | None = None) -> pb.Interaction:
        msg = pb.Interaction(user_id=user, item_id=item, type=kind, event_id=uuid.uuid4().hex)
        if at is not None:
            msg.timestamp.CopyFrom(Timestamp(seconds=int(at)))
        return msg

    async def run() -> None:
        pool = await async_pool(stack.database_url)
        redis = Redis.from_url(stack.redis_url)
        held = HotHistories(10_000, 60)
        try:
            async with pool.connection() as conn:
                await upsert_user(conn, UserRecord(user, {"age": 30}, {}))
            now = time.time()
            first = [click("10", at=now - 3000), click("11", at=now - 2000), click("12", at=now - 1000)]
            assert (await log_interactions(pool, redis, first, stack.cache_ttl_s)).accepted == 3
            _, generation, _ = await cache.get(redis, user, "none")
            read_at = time.monotonic()
            async with pool.connection() as conn:
                row, history = await user_and_history(conn, user, HISTORY_LIMIT)
            held.put(user, generation, read_at, row, history)

            batch = [click("10", pb.PURCHASE), click("13"), click("14", at=now - 1500), click("13", pb.LIKE)]
            assert (await log_interactions(pool, redis, batch, stack.cache_ttl_s, histories=held)).accepted == 4
            _, generation, _ = await cache.get(redis, user, "none")
            merged = held.get(user, generation)
            assert merged is not None, "the entry was dropped, not merged"
            async with pool.connection() as conn:
                fresh_row, fresh = await user_and_history(conn, user, HISTORY_LIMIT)
            assert merged[1] == fresh
            assert [h.item_id for h in fresh][:2] in (["10", "13"], ["13", "10"]) and fresh[-1].item_id == "11"
            assert merged[0] is not None and fresh_row is not None
            assert merged[0].demographics == fresh_row.demographics
        finally:
            await redis.aclose()
            await pool.close()

    asyncio.run(run())


def _ids(api: pb_grpc.RecommenderStub, user: str) -> list[str]:
    surface = f"hot-{uuid.uuid4().hex[:8]}"  # a surface never asked: a cache miss
    resp = api.Recommend(pb.RecommendRequest(user_id=user, k=10, context=pb.Context(surface=surface)), timeout=10)
    assert not resp.degraded, resp.degraded_reasons
    return [i.item_id for i in resp.items]


@pytest.mark.integration
def test_an_interaction_logged_elsewhere_shows_in_the_next_miss(api: pb_grpc.RecommenderStub, stack: Settings) -> None:
    user = "31"
    first = _ids(api, user)  # read from PostgreSQL and held

    # written straight to PostgreSQL, as `recsys data load` would: no generation bump, so the held
    # history stands until its age limit (60 s), and the item is still recommended
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO interactions (user_id, item_id, type, value) VALUES (%s, %s, 'click', 1)",
                     (user, first[0]))
    assert first[0] in _ids(api, user)

    # logged through another replica's code path (this test's own pool and Redis): the generation moves,
    # and the stack's next miss reads the history again: the clicked items are seen, so not recommended
    async def log_elsewhere() -> None:
        pool = await async_pool(stack.database_url)
        redis = Redis.from_url(stack.redis_url)
        try:
            resp = await log_interactions(pool, redis, [pb.Interaction(
                user_id=user, item_id=first[1], type=pb.CLICK)], stack.cache_ttl_s)
            assert resp.accepted == 1
        finally:
            await redis.aclose()
            await pool.close()

    asyncio.run(log_elsewhere())
    after = _ids(api, user)
    assert first[0] not in after and first[1] not in after


@pytest.mark.integration
def test_upsert_user_shows_the_new_preferences_in_the_next_miss(api: pb_grpc.RecommenderStub) -> None:
    user = f"hot-prefs-{uuid.uuid4().hex[:6]}"
    api.UpsertUser(pb.UpsertUserRequest(user=pb.User(user_id=user)), timeout=10)

    def documentaries() -> int:
        resp = api.Recommend(pb.RecommendRequest(user_id=user, k=10), timeout=10)
        assert not resp.degraded, resp.degraded_reasons
        return sum("Documentary" in i.item.categories for i in resp.items)

    assert documentaries() == 0  # a newcomer: what is popular
    prefs = pb.User(user_id=user)
    prefs.preferences.update({"preferred_categories": ["Documentary"]})
    api.UpsertUser(pb.UpsertUserRequest(user=prefs), timeout=10)
    assert documentaries() >= 3  # the same surface: the cached answer went stale, and the held user too
