"""Settings shared by the CLI and every service, read from the environment.

Every value has a default that works on a fresh checkout; set the environment
variable to change it. Services receive their settings from the process that starts
them (the CLI) through the same variables, so one `Settings.from_env()` rules all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
N = TypeVar("N", int, float)


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


DEPLOYMENTS = ("separate", "colocated")


def _deployment(value: str) -> str:
    if value not in DEPLOYMENTS:
        raise ValueError(f"RECSYS_DEPLOYMENT={value!r}: use one of {', '.join(DEPLOYMENTS)}")
    return value


def _processes(value: int) -> int:
    if not 1 <= value <= 64:
        raise ValueError(f"RECSYS_ORCHESTRATOR_PROCESSES={value}: must be 1 to 64")
    return value


def _non_negative(name: str, value: N) -> N:
    if value < 0:
        raise ValueError(f"{name}={value}: must be 0 or more")
    return value


def _file(name: str) -> str:
    """A file's path made absolute ("" when unset): services started from another directory find it too."""
    value = os.environ.get(name, "").strip()
    return str(Path(value).expanduser().absolute()) if value else ""


def _number(name: str, default: str, kind: type[N]) -> N:
    """A numeric variable; a value that is not one names the variable (a bare ValueError does not)."""
    value = _env(name, default)
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}: must be {'an integer' if kind is int else 'a number'}") from None


@dataclass(frozen=True)
class Settings:
    # Where the servers are. Empty means "start the embedded ones" (CLI only).
    database_url: str = ""
    redis_url: str = ""
    # Files.
    data_dir: Path = ROOT / "data"
    artifacts_dir: Path = ROOT / "artifacts"
    var_dir: Path = ROOT / "var"  # embedded servers' data, pid files, service logs
    # The orchestrator's surfaces and experiments (orchestrator/config.py); missing = defaults.
    config_path: Path = ROOT / "config" / "recsys.toml"
    # Feast project name; its registry lives in var_dir.
    feast_project: str = "recsys"
    # Service addresses (host:port).
    orchestrator_addr: str = "127.0.0.1:50051"
    retrieval_addr: str = "127.0.0.1:50052"
    ranking_addr: str = "127.0.0.1:50053"
    worker_addr: str = "127.0.0.1:50054"  # the real-time worker's health endpoint
    # Prometheus metrics endpoints (http://ADDR/metrics); empty = none.
    orchestrator_metrics_addr: str = "127.0.0.1:9151"
    retrieval_metrics_addr: str = "127.0.0.1:9152"
    ranking_metrics_addr: str = "127.0.0.1:9153"
    worker_metrics_addr: str = "127.0.0.1:9154"
    # Recommend cache TTL in seconds.
    cache_ttl_s: int = 1800
    # Users' histories kept in each orchestrator process's memory (orchestrator/histories.py): at most this
    # many history items in all (0 = off), each user's read again after this many seconds (capped by the
    # cache TTL) or once their history generation moves (an interaction logged elsewhere, UpsertUser).
    hot_history_items: int = 200_000
    hot_history_max_age_s: float = 60.0
    # Per-downstream-call timeouts (seconds), capped by the caller's deadline.
    retrieval_timeout_s: float = 0.5
    ranking_timeout_s: float = 0.5
    # Longest wait for a PostgreSQL connection from the pool (the request's own budget may be less).
    db_checkout_timeout_s: float = 0.5
    # Authentication (docs/security.md): "on", "off" (loopback addresses only) or "auto" (on unless the
    # server binds a loopback address).
    auth: str = "auto"
    # gRPC server reflection (grpcurl list/describe); off hides the API's shape from whoever reaches a port.
    reflection: bool = True
    # The shared secret internal services (retrieval, ranking, the worker) require of their callers;
    # empty: `recsys serve all` and the demo generate one per stack.
    service_token: str = ""
    # "separate": the orchestrator calls the retrieval and ranking services over gRPC (each its own
    # process, scaled and restarted apart); "colocated": the orchestrator's process runs their servicers
    # itself and calls them in process (core/in_process.py, recsys/colocated.py): no internal hops.
    deployment: str = "separate"
    # Processes serving the orchestrator's address (recsys/workers.py): the kernel spreads connections over
    # them (SO_REUSEPORT), so one box's cores all serve; each holds its own caches (and, co-located, model).
    orchestrator_processes: int = 1
    # TLS (docs/security.md, core/tls.py): PEM files; all empty = plaintext. A server serves TLS with its
    # certificate chain and key; clients verify servers with tls_ca_file (empty: the system's roots).
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_ca_file: str = ""
    # "require": servers accept only clients presenting a certificate signed by tls_ca_file (mutual TLS).
    tls_client_auth: str = "off"
    # The certificate and key this process presents as a client (required with tls_client_auth=require).
    tls_client_cert_file: str = ""
    tls_client_key_file: str = ""
    # Rate limits per API key (docs/security.md), by the key's scope, for keys whose own limit is unset:
    # calls per second and burst (calls at once), and interactions per second in LogInteractions; 0 = unlimited.
    rate_read_per_s: float = 200.0
    rate_read_burst: int = 400
    rate_write_per_s: float = 100.0
    rate_write_burst: int = 200
    rate_admin_per_s: float = 100.0
    rate_admin_burst: int = 200
    rate_interactions_per_s: float = 2000.0

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            database_url=os.environ.get("DATABASE_URL", "").strip(),
            redis_url=os.environ.get("REDIS_URL", "").strip(),
            data_dir=Path(_env("RECSYS_DATA_DIR", str(ROOT / "data"))),
            artifacts_dir=Path(_env("RECSYS_ARTIFACTS_DIR", str(ROOT / "artifacts"))),
            var_dir=Path(_env("RECSYS_VAR_DIR", str(ROOT / "var"))),
            config_path=Path(_env("RECSYS_CONFIG", str(ROOT / "config" / "recsys.toml"))),
            feast_project=_env("RECSYS_FEAST_PROJECT", "recsys"),
            orchestrator_addr=_env("RECSYS_ORCHESTRATOR_ADDR", "127.0.0.1:50051"),
            retrieval_addr=_env("RECSYS_RETRIEVAL_ADDR", "127.0.0.1:50052"),
            ranking_addr=_env("RECSYS_RANKING_ADDR", "127.0.0.1:50053"),
            worker_addr=_env("RECSYS_WORKER_ADDR", "127.0.0.1:50054"),
            orchestrator_metrics_addr=os.environ.get("RECSYS_ORCHESTRATOR_METRICS_ADDR", "127.0.0.1:9151").strip(),
            retrieval_metrics_addr=os.environ.get("RECSYS_RETRIEVAL_METRICS_ADDR", "127.0.0.1:9152").strip(),
            ranking_metrics_addr=os.environ.get("RECSYS_RANKING_METRICS_ADDR", "127.0.0.1:9153").strip(),
            worker_metrics_addr=os.environ.get("RECSYS_WORKER_METRICS_ADDR", "127.0.0.1:9154").strip(),
            cache_ttl_s=int(_env("RECSYS_CACHE_TTL_S", "1800")),
            hot_history_items=_non_negative("RECSYS_HOT_HISTORY_ITEMS",
                                            _number("RECSYS_HOT_HISTORY_ITEMS", "200000", int)),
            hot_history_max_age_s=_non_negative("RECSYS_HOT_HISTORY_MAX_AGE_S",
                                                _number("RECSYS_HOT_HISTORY_MAX_AGE_S", "60", float)),
            retrieval_timeout_s=float(_env("RECSYS_RETRIEVAL_TIMEOUT_S", "0.5")),
            ranking_timeout_s=float(_env("RECSYS_RANKING_TIMEOUT_S", "0.5")),
            db_checkout_timeout_s=float(_env("RECSYS_DB_CHECKOUT_TIMEOUT_S", "0.5")),
            auth=_env("RECSYS_AUTH", "auto").lower(),
            reflection=_env("RECSYS_REFLECTION", "on").lower() not in ("off", "0", "false", "no"),
            service_token=os.environ.get("RECSYS_SERVICE_TOKEN", "").strip(),
            deployment=_deployment(_env("RECSYS_DEPLOYMENT", "separate").lower()),
            orchestrator_processes=_processes(_number("RECSYS_ORCHESTRATOR_PROCESSES", "1", int)),
            tls_cert_file=_file("RECSYS_TLS_CERT_FILE"),
            tls_key_file=_file("RECSYS_TLS_KEY_FILE"),
            tls_ca_file=_file("RECSYS_TLS_CA_FILE"),
            tls_client_auth=_env("RECSYS_TLS_CLIENT_AUTH", "off").lower(),
            tls_client_cert_file=_file("RECSYS_TLS_CLIENT_CERT_FILE"),
            tls_client_key_file=_file("RECSYS_TLS_CLIENT_KEY_FILE"),
            rate_read_per_s=_number("RECSYS_RATE_READ_PER_S", "200", float),
            rate_read_burst=_number("RECSYS_RATE_READ_BURST", "400", int),
            rate_write_per_s=_number("RECSYS_RATE_WRITE_PER_S", "100", float),
            rate_write_burst=_number("RECSYS_RATE_WRITE_BURST", "200", int),
            rate_admin_per_s=_number("RECSYS_RATE_ADMIN_PER_S", "100", float),
            rate_admin_burst=_number("RECSYS_RATE_ADMIN_BURST", "200", int),
            rate_interactions_per_s=_number("RECSYS_RATE_INTERACTIONS_PER_S", "2000", float),
        )

    def with_urls(self, database_url: str, redis_url: str) -> Settings:
        return replace(self, database_url=database_url, redis_url=redis_url)

    def to_env(self) -> dict[str, str]:
        """The environment that gives a child process these same settings."""
        return {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "RECSYS_DATA_DIR": str(self.data_dir),
            "RECSYS_ARTIFACTS_DIR": str(self.artifacts_dir),
            "RECSYS_VAR_DIR": str(self.var_dir),
            "RECSYS_CONFIG": str(self.config_path),
            "RECSYS_FEAST_PROJECT": self.feast_project,
            "RECSYS_ORCHESTRATOR_ADDR": self.orchestrator_addr,
            "RECSYS_RETRIEVAL_ADDR": self.retrieval_addr,
            "RECSYS_RANKING_ADDR": self.ranking_addr,
            "RECSYS_WORKER_ADDR": self.worker_addr,
            "RECSYS_ORCHESTRATOR_METRICS_ADDR": self.orchestrator_metrics_addr,
            "RECSYS_RETRIEVAL_METRICS_ADDR": self.retrieval_metrics_addr,
            "RECSYS_RANKING_METRICS_ADDR": self.ranking_metrics_addr,
            "RECSYS_WORKER_METRICS_ADDR": self.worker_metrics_addr,
            "RECSYS_CACHE_TTL_S": str(self.cache_ttl_s),
            "RECSYS_HOT_HISTORY_ITEMS": str(self.hot_history_items),
            "RECSYS_HOT_HISTORY_MAX_AGE_S": str(self.hot_history_max_age_s),
            "RECSYS_RETRIEVAL_TIMEOUT_S": str(self.retrieval_timeout_s),
            "RECSYS_RANKING_TIMEOUT_S": str(self.ranking_timeout_s),
            "RECSYS_DB_CHECKOUT_TIMEOUT_S": str(self.db_checkout_timeout_s),
            "RECSYS_AUTH": self.auth,
            "RECSYS_REFLECTION": "on" if self.reflection else "off",
            "RECSYS_SERVICE_TOKEN": self.service_token,
            "RECSYS_DEPLOYMENT": self.deployment,
            "RECSYS_ORCHESTRATOR_PROCESSES": str(self.orchestrator_processes),
            "RECSYS_TLS_CERT_FILE": self.tls_cert_file,
            "RECSYS_TLS_KEY_FILE": self.tls_key_file,
            "RECSYS_TLS_CA_FILE": self.tls_ca_file,
            "RECSYS_TLS_CLIENT_AUTH": self.tls_client_auth,
            "RECSYS_TLS_CLIENT_CERT_FILE": self.tls_client_cert_file,
            "RECSYS_TLS_CLIENT_KEY_FILE": self.tls_client_key_file,
            "RECSYS_RATE_READ_PER_S": str(self.rate_read_per_s),
            "RECSYS_RATE_READ_BURST": str(self.rate_read_burst),
            "RECSYS_RATE_WRITE_PER_S": str(self.rate_write_per_s),
            "RECSYS_RATE_WRITE_BURST": str(self.rate_write_burst),
            "RECSYS_RATE_ADMIN_PER_S": str(self.rate_admin_per_s),
            "RECSYS_RATE_ADMIN_BURST": str(self.rate_admin_burst),
            "RECSYS_RATE_INTERACTIONS_PER_S": str(self.rate_interactions_per_s),
        }
