"""Shared fixtures: a fresh PostgreSQL database and a clean Redis database per test session.

Tests talk to real servers. TEST_DATABASE_URL (default: the local server's `test`
database) is only used to create and drop a throw-away database, so parallel runs
and the demo's own data never collide. TEST_REDIS_URL names the Redis database the
session flushes and uses (default db 9).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
import redis

from core import tls
from core.config import ROOT, Settings
from protos import recsys_pb2_grpc as pb_grpc
from recsys import processes
from storage.db import migrate

ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/9")


def _with_dbname(url: str, dbname: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**info)


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new, migrated database; dropped afterwards."""
    name = f"recsys_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_dbname(ADMIN_URL, name)
    migrate(url)
    try:
        yield url
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A new, migrated database for this test session's modules that write their own rows."""
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(TEST_REDIS_URL)
    client.flushdb()
    client.close()
    return TEST_REDIS_URL


def metrics_addrs() -> dict[str, str]:
    """Free ports for every service's /metrics (the defaults, 9151-9154, belong to `make demo`)."""
    return {f"{name}_metrics_addr": f"127.0.0.1:{free_port()}" for name in ("orchestrator", "retrieval", "ranking",
                                                                           "worker")}


def own_var_dir(stack: Settings, var_dir: Path) -> Path:
    """A var dir of its own beside the stack's, with a copy of its Feast registry (processes.side_var_dir)."""
    return processes.side_var_dir(stack, var_dir)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Surfaces and an experiment for the stack's orchestrator; the experiment runs only on
# its own surface so other tests see the plain "control" pipeline.
STACK_CONFIG = """
[surface.cart]
seen_types = ["purchase"]

[surface.arrivals]                  # the newest items get a fifth of the slots
sources = [
  { name = "two_tower", k = 200, gate = "history" },
  { name = "also_bought", k = 50, gate = "history" },
  { name = "new_arrivals", k = 20, quota = 0.2 },
  { name = "popular", k = 200, fill = true, optional = true },
]

[surface.partner]                   # the same, never showing one brand
exclude_brands = ["acme"]
sources = [
  { name = "two_tower", k = 200, gate = "history" },
  { name = "also_bought", k = 50, gate = "history" },
  { name = "new_arrivals", k = 20, quota = 0.2 },
  { name = "popular", k = 200, fill = true, optional = true },
]

[[experiment]]
name = "ab"
salt = "test"
surfaces = ["ab_surface"]
[[experiment.variant]]
name = "control"
share = 0.5
[[experiment.variant]]
name = "no_ranker"
share = 0.5
params = { ranker = false, mmr_lambda = 0.5 }
"""


@pytest.fixture(scope="session")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """MovieLens-100K loaded, a model trained (2 epochs), features materialized, the three services running.

    It has a database of its own (other modules write rows of their own into `database_url`)."""
    with fresh_database() as database_url:
        yield from _running_stack(database_url, redis_url, tmp_path_factory)


def _running_stack(database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    from feature_store import store
    from storage.bulk import load_frames
    from training import movielens
    from training.dataset import load_postgres
    from training.pipeline import train_and_export
    from training.train import TrainConfig

    tmp = tmp_path_factory.mktemp("stack")
    (tmp / "recsys.toml").write_text(STACK_CONFIG)
    settings = Settings(
        config_path=tmp / "recsys.toml",
        database_url=database_url, redis_url=redis_url, data_dir=ROOT / "data",
        artifacts_dir=tmp / "artifacts", var_dir=tmp / "var", feast_project=f"t{uuid.uuid4().hex[:8]}",
        orchestrator_addr=f"127.0.0.1:{free_port()}", retrieval_addr=f"127.0.0.1:{free_port()}",
        ranking_addr=f"127.0.0.1:{free_port()}", worker_addr=f"127.0.0.1:{free_port()}",
        **metrics_addrs(),
    )
    ds = movielens.load(movielens.fetch(settings.data_dir))
    load_frames(database_url, ds.users, ds.items, ds.interactions, replace=True)
    train_and_export(load_postgres(database_url), settings.artifacts_dir, replace(TrainConfig(), epochs=2))
    store.apply(settings)
    store.materialize(settings)
    processes.start_all(settings)
    yield settings
    processes.stop_all(settings)


@pytest.fixture(scope="session")
def api(stack: Settings) -> Iterator[pb_grpc.RecommenderStub]:
    with tls.channel(stack.orchestrator_addr, stack) as channel:  # TLS when the stack's settings have it
        yield pb_grpc.RecommenderStub(channel)
