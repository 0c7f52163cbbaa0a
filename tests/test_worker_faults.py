"""The real-time worker through faults, against servers of its own (tests/faults.py): PostgreSQL
restarted, Redis restarted empty; ranking's item features through a wipe; the embedded
Redis keeping its data over a stop and a crash."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
import redis

from core.config import Settings
from feature_store import store
from feature_store.push_worker import PushWorker
from feature_store.schema import ITEM_TABLE, VERSION_KEY
from ranking.item_features import ItemFeatureCache
from recsys import processes
from storage.streams import GROUP, MAXLEN, STREAM, Event
from tests.faults import OwnedServers, eventually, owned_servers
from training.synthetic import load_into_postgres

if TYPE_CHECKING:
    pass

pytestmark = pytest.mark.integration



@dataclass
class Env:
    servers: OwnedServers
    settings: Settings
    worker: PushWorker
    features: store.OnlineFeatures


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """A small synthetic shop, its features materialized, a worker running in a thread (as worker_service runs it)."""
    with owned_servers(tmp_path_factory.mktemp("worker_faults")) as servers:
        settings = servers.settings()
        load_into_postgres(servers.database_url, n_users=200, n_items=100, n_interactions=2000, progress=False)
        store.materialize(settings)
        worker = PushWorker(settings)
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,), name="push-worker", daemon=True)
        thread.start()
        eventually(lambda: worker.healthy)
        online = store.OnlineFeatures(settings)
        yield Env(servers, settings, worker, online)
        online.close()
        stop.set()
        thread.join(10)
        worker.close()


def _store_interaction(database_url: str, user: str, kind: str = "click") -> Event:
    """What LogInteractions writes to PostgreSQL first (the user touched, the interaction)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO users (user_id, last_active_at) VALUES (%s, now()) "
                     "ON CONFLICT (user_id) DO UPDATE SET last_active_at = now()", (user,))
        row = conn.execute("SELECT item_id FROM items ORDER BY random() LIMIT 1").fetchone()
        assert row is not None
        (iid,) = conn.execute("INSERT INTO interactions (user_id, item_id, type) VALUES (%s, %s, %s) "
                              "RETURNING interaction_id", (user, row[0], kind)).fetchone() or (None,)
    return Event(str(iid), user, row[0], kind, 1.0)


def _publish(redis_url: str, event: Event) -> None:
    """What LogInteractions does next: the stream entry."""
    client = redis.Redis.from_url(redis_url)
    try:
        client.xadd(STREAM, event.fields(), maxlen=MAXLEN, approximate=True)
    finally:
        client.close()


def _log(env: Env, user: str) -> None:
    _publish(env.servers.redis_url, _store_interaction(env.servers.database_url, user))


def _lagging(env: Env, users: list[str] | None = None) -> list[str]:
    """Users whose online features differ from what PostgreSQL gives now (all users by default)."""
    with psycopg.connect(env.servers.database_url) as conn:
        if users is None:
            users = [r[0] for r in conn.execute("SELECT user_id FROM users ORDER BY user_id")]
        return env.features.lagging(conn, users)


def _items_match_postgres(env: Env) -> bool:
    with psycopg.connect(env.servers.database_url, row_factory=psycopg.rows.dict_row) as conn:
        table = {r["item_id"]: r for r in conn.execute(f"SELECT * FROM {ITEM_TABLE}")}
    online = store.OnlineFeatures(env.settings)
    try:
        return all(
            all(f[n] == table[i][n] for n in f) for i, f in online.all_item_features(list(table)).items()
        )
    finally:
        online.close()


def test_the_worker_recovers_from_a_postgres_restart(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    during, after = "pg-during", "pg-after"
    event = _store_interaction(env.servers.database_url, during)  # stored; its entry comes during the outage
    env.servers.stop_postgres()
    _publish(env.servers.redis_url, event)
    eventually(lambda: not env.worker.healthy, timeout_s=5)  # the entry's push failed: NOT_SERVING
    failed = env.worker.failed_attempts
    eventually(lambda: env.worker.failed_attempts >= failed + 3, timeout_s=5)  # it keeps trying, quietly

    env.servers.start_postgres()
    recovered = eventually(lambda: env.worker.healthy, timeout_s=5)
    assert recovered < 2.5  # a retry every 0.5 s, then the recovery's sweep
    eventually(lambda: not _lagging(env, [during]), timeout_s=5)  # its own pending entry, re-read
    _log(env, after)
    reached = eventually(lambda: not _lagging(env, [after]), timeout_s=5)
    assert reached < 2
    warnings = [r for r in caplog.records if r.name == "feature_store.push_worker" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and not warnings[0].exc_info  # the first failure, once, no traceback
    print(f"PostgreSQL back -> worker healthy in {recovered:.2f} s; a new interaction online in {reached:.2f} s")


def test_the_worker_rebuilds_everything_after_redis_restarts_empty(env: Env) -> None:
    before, lost, after = "wipe-before", "wipe-lost", "wipe-after"
    _log(env, before)
    eventually(lambda: not _lagging(env, [before]), timeout_s=5)
    rebuilds = env.worker.rebuilds

    env.servers.stop_redis()
    _store_interaction(env.servers.database_url, lost)  # stored while Redis is away: no stream entry
    env.servers.start_redis(empty=True)
    _publish(env.servers.redis_url, _store_interaction(env.servers.database_url, after))  # XADD makes a new stream

    took = eventually(lambda: not _lagging(env), timeout_s=10)  # every user, those written before the wipe too
    recovered = eventually(lambda: env.worker.healthy, timeout_s=10)  # item features and the version follow
    client = redis.Redis.from_url(env.servers.redis_url)
    try:
        assert [g["name"] for g in client.xinfo_groups(STREAM)] == [GROUP.encode()]
        assert client.exists(VERSION_KEY)
    finally:
        client.close()
    assert env.worker.rebuilds == rebuilds + 1
    assert _items_match_postgres(env)
    assert took + recovered < 10
    print(f"Redis back empty -> every user's features match PostgreSQL in {took:.2f} s")


def test_ranking_keeps_its_item_features_while_the_version_is_missing(env: Env) -> None:
    online = store.OnlineFeatures(env.settings)
    items = ItemFeatureCache(online, env.servers.database_url)
    client = redis.Redis.from_url(env.servers.redis_url)
    try:
        assert items.refresh()
        loaded = items.features
        version = client.get(VERSION_KEY)
        client.delete(VERSION_KEY)  # as after a wipe, before the worker has rebuilt the store
        assert not items.refresh() and items.features is loaded
        client.set(VERSION_KEY, (version or b"") + b"-new")  # a real new version: reloaded
        assert items.refresh() and items.features == loaded
    finally:
        client.close()
        online.close()


def test_the_embedded_redis_keeps_its_data_over_a_stop_and_a_crash(tmp_path: Path) -> None:
    with owned_servers(tmp_path, postgres=False) as servers:

        def client() -> redis.Redis:
            return redis.Redis.from_url(servers.redis_url)

        r = client()
        assert r.config_get("save")["save"] == "3600 1 300 100 60 10000"
        assert r.config_get("appendonly")["appendonly"] == "yes"
        r.set("k", "v")
        r.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        r.xadd(STREAM, {"a": "1"})
        r.close()

        servers.restart_redis()  # graceful
        r = client()
        assert r.get("k") == b"v" and r.xlen(STREAM) == 1
        assert [g["name"] for g in r.xinfo_groups(STREAM)] == [GROUP.encode()]
        r.xadd(STREAM, {"a": "2"})
        r.close()

        servers.restart_redis(kill=True)  # a crash: the append-only file has it
        r = client()
        assert r.xlen(STREAM) == 2 and r.get("k") == b"v"
        r.close()

        # A data directory from before the append-only file (a snapshot only) keeps its data too.
        servers.stop_redis()
        (servers.var_dir / "redis" / "appendonly.aof").unlink()
        servers.start_redis()
        r = client()
        assert r.xlen(STREAM) == 2 and r.config_get("appendonly")["appendonly"] == "yes"
        r.close()


def test_the_worker_service_says_not_serving_while_redis_or_postgres_is_away(tmp_path: Path) -> None:
    """The service process (health endpoint) over an empty shop: its first start fills the online store."""
    with owned_servers(tmp_path) as servers:
        settings = servers.settings()
        processes.start(settings, "worker", timeout_s=60)
        try:
            client = redis.Redis.from_url(servers.redis_url)
            assert client.exists(VERSION_KEY)  # nothing was materialized: the worker did it
            client.close()
            for stop, start in ((servers.stop_redis, servers.start_redis),
                                (servers.stop_postgres, servers.start_postgres)):
                stop()
                eventually(lambda: not processes.is_serving(settings.worker_addr, 0.5), timeout_s=5)
                start()
                eventually(lambda: processes.is_serving(settings.worker_addr, 0.5), timeout_s=5)
        finally:
            processes.stop(settings, "worker")
