"""PostgreSQL and Redis of a test's own, that it may really stop, restart and wipe.

The session's servers (conftest.py) are shared by every module, so a fault test gets its
own: the project's embedded servers (recsys/embedded.py) on free ports, with the schema
migrated, their data in a temporary directory of their own (the services' files go under
the directory given).

    from tests.faults import eventually, owned_servers

    with owned_servers(tmp_path) as servers:
        settings = servers.settings()       # Settings for them: own Feast project, var_dir, free service ports
        servers.stop_postgres()             # fast shutdown: clients' connections break
        servers.start_postgres()            # same port, same data; returns once it accepts connections
        servers.restart_redis_empty()       # Redis comes back with nothing: no keys, no stream, no groups
        took = eventually(lambda: ..., timeout_s=10)

OwnedServers:
    database_url, redis_url         the `recsys` database (migrated) and Redis db 0
    var_dir                         the servers' files (postgres/, redis/); directory: the services'
    settings(**overrides)           core.config.Settings pointing at them
    stop_postgres(), start_postgres(), restart_postgres()
    stop_redis(kill=False)          kill=True is a crash (SIGKILL): only the append-only file survives
    start_redis(empty=False)        empty=True deletes its snapshot and append-only file first
    restart_redis(kill=False), restart_redis_empty()

Each stop/start blocks until it is done (a start: until the server answers); both servers
are stopped and their data deleted when the block exits. `owned_servers(dir, postgres=False)`
starts only Redis. PostgreSQL takes about a second to initialize and start (Redis a tenth of
that), so share one per module where the tests allow.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from core.config import Settings
from recsys import embedded
from storage.db import migrate
from tests.conftest import free_port, metrics_addrs


@dataclass
class OwnedServers:
    directory: Path  # the services' files (settings().var_dir)
    var_dir: Path  # the embedded servers' files (postgres/, redis/)
    pg_port: int
    redis_port: int
    database_url: str = ""
    redis_url: str = ""
    feast_project: str = field(default_factory=lambda: f"f{uuid.uuid4().hex[:8]}")

    def settings(self, **overrides: Any) -> Settings:
        """Settings for these servers; services get free ports, files go under `directory`/app."""
        base = Settings(
            database_url=self.database_url, redis_url=self.redis_url,
            var_dir=self.directory / "app", artifacts_dir=self.directory / "app" / "artifacts",
            feast_project=self.feast_project,
            orchestrator_addr=f"127.0.0.1:{free_port()}", retrieval_addr=f"127.0.0.1:{free_port()}",
            ranking_addr=f"127.0.0.1:{free_port()}", worker_addr=f"127.0.0.1:{free_port()}",
            **metrics_addrs(),
        )
        return replace(base, **overrides)

    # PostgreSQL

    def start_postgres(self) -> None:
        self.database_url = embedded.start_postgres(self.var_dir, self.pg_port)

    def stop_postgres(self) -> None:
        embedded.stop_postgres(self.var_dir)

    def restart_postgres(self) -> None:
        self.stop_postgres()
        self.start_postgres()

    # Redis

    def start_redis(self, empty: bool = False) -> None:
        if empty:
            embedded.remove_redis_data(self.var_dir)
        self.redis_url = embedded.start_redis(self.var_dir, self.redis_port)

    def stop_redis(self, kill: bool = False) -> None:
        embedded.stop_redis(self.var_dir, kill=kill)

    def restart_redis(self, kill: bool = False) -> None:
        self.stop_redis(kill=kill)
        self.start_redis()

    def restart_redis_empty(self) -> None:
        self.stop_redis()
        self.start_redis(empty=True)


@contextmanager
def owned_servers(directory: Path, postgres: bool = True) -> Iterator[OwnedServers]:
    """Start a PostgreSQL (migrated) and a Redis; stop and delete both afterwards.

    Their data lives in a directory of its own, not under `directory`: as root, PostgreSQL runs
    as another user that must traverse the path to it, and every pytest run resets its temporary
    root (/tmp/pytest-of-<user>) to mode 0700, which would lock a running server out of its data.
    """
    servers = OwnedServers(directory, Path(tempfile.mkdtemp(prefix="recsys-faults-")), free_port(), free_port())
    with ExitStack() as cleanup:  # each step runs even when one before it failed
        cleanup.callback(shutil.rmtree, servers.var_dir, ignore_errors=True)
        cleanup.callback(embedded.stop_redis, servers.var_dir)
        cleanup.callback(embedded.stop_postgres, servers.var_dir)
        if postgres:
            servers.start_postgres()
            migrate(servers.database_url)
        servers.start_redis()
        yield servers


def eventually(check: Callable[[], bool], timeout_s: float = 10.0, every_s: float = 0.05) -> float:
    """Seconds until check() is true; AssertionError after timeout_s."""
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"not true within {timeout_s} s: {getattr(check, '__name__', check)}")
        time.sleep(every_s)
