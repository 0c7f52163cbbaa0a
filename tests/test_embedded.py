"""The embedded PostgreSQL and Redis: start, connect, reuse, stop (real servers, ~2 s)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import redis

from core.config import ROOT, Settings
from recsys.embedded import embedded_status, ensure_servers, stop_servers

PG_PORT = 55433
REDIS_PORT = 56380


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    if _port_open(PG_PORT) or _port_open(REDIS_PORT):
        pytest.skip(f"ports {PG_PORT}/{REDIS_PORT} are taken by something else")
    monkeypatch.setenv("RECSYS_EMBEDDED_PG_PORT", str(PG_PORT))
    monkeypatch.setenv("RECSYS_EMBEDDED_REDIS_PORT", str(REDIS_PORT))
    settings = Settings(var_dir=tmp_path / "var")
    yield settings
    stop_servers(settings)  # even when the test failed half way


@pytest.mark.integration
def test_embedded_servers_start_are_reused_and_stop(settings: Settings) -> None:
    started = ensure_servers(settings)
    assert started.database_url == f"postgresql://postgres@127.0.0.1:{PG_PORT}/recsys"
    assert started.redis_url == f"redis://127.0.0.1:{REDIS_PORT}/0"
    assert started.var_dir == settings.var_dir
    assert (settings.var_dir / "postgres" / "PG_VERSION").exists()

    with psycopg.connect(started.database_url) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (42)")
    client = redis.Redis.from_url(started.redis_url)
    client.set("k", "v")
    client.close()

    # A later command (another process) reuses the running servers and sees the data.
    code = (
        "from core.config import Settings; from recsys.embedded import ensure_servers; "
        "s = ensure_servers(Settings.from_env()); print(s.database_url); print(s.redis_url)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["RECSYS_VAR_DIR"] = str(settings.var_dir)
    child = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == [started.database_url, started.redis_url]
    again = ensure_servers(settings)
    assert (again.database_url, again.redis_url) == (started.database_url, started.redis_url)
    with psycopg.connect(again.database_url) as conn:
        assert conn.execute("SELECT x FROM t").fetchone() == (42,)
    client = redis.Redis.from_url(again.redis_url)
    assert client.get("k") == b"v"
    client.close()
    assert embedded_status(settings) == {"postgres": started.database_url, "redis": started.redis_url}

    # URLs that are set are left alone.
    given = settings.with_urls("postgresql://elsewhere/db", "redis://elsewhere:1/0")
    assert ensure_servers(given) == given

    assert sorted(stop_servers(settings)) == ["postgres", "redis"]
    assert embedded_status(settings) == {}
    assert not _port_open(PG_PORT) and not _port_open(REDIS_PORT)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(started.database_url, connect_timeout=2).close()
    assert stop_servers(settings) == []

    # Restart over the existing data directory: the data is still there.
    restarted = ensure_servers(settings)
    with psycopg.connect(restarted.database_url) as conn:
        assert conn.execute("SELECT x FROM t").fetchone() == (42,)
