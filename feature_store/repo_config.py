"""Feast's RepoConfig built from Settings, so no feature_store.yaml needs editing."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from psycopg.conninfo import conninfo_to_dict

from core.config import Settings

if TYPE_CHECKING:
    from feast import RepoConfig


def registry_path(settings: Settings) -> Path:
    return settings.var_dir / "feast" / "registry.db"


def offline_store_config(database_url: str) -> dict[str, object]:
    """Feast postgres offline store settings from a libpq URL or key=value string."""
    if not database_url:
        raise ValueError("database_url is empty: the feature store needs a PostgreSQL server URL")
    info = conninfo_to_dict(database_url)
    user = str(info.get("user") or getpass.getuser())
    return {
        "type": "postgres",
        "host": str(info.get("host") or "localhost"),
        "port": int(info.get("port") or 5432),
        "database": str(info.get("dbname") or user),
        "user": user,
        "password": str(info.get("password") or ""),
        # Feast defaults to "require", which a local server without TLS refuses.
        "sslmode": str(info.get("sslmode") or "disable"),
    }


def redis_connection_string(redis_url: str) -> str:
    """`redis://[user:pass@]host:port/db` -> Feast's `host:port,db=N[,password=...]`."""
    if not redis_url:
        raise ValueError("redis_url is empty: the feature store needs a Redis server URL")
    url = urlsplit(redis_url)
    if url.scheme not in ("redis", "rediss"):
        raise ValueError(f"redis_url {redis_url!r}: Feast's Redis store needs a redis:// or rediss:// URL")
    db = url.path.strip("/") or "0"
    parts = [f"{url.hostname or 'localhost'}:{url.port or 6379}", f"db={int(db)}"]
    if url.username:
        parts.append(f"username={unquote(url.username)}")
    if url.password:
        # Feast splits the string on commas, so a password with one cannot be expressed.
        parts.append(f"password={unquote(url.password)}")
    if url.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def repo_config(settings: Settings) -> RepoConfig:
    from feast import RepoConfig
    from feast.repo_config import RegistryConfig

    path = registry_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    return RepoConfig(
        project=settings.feast_project,
        provider="local",
        registry=RegistryConfig(registry_type="file", path=str(path)),
        offline_store=offline_store_config(settings.database_url),
        online_store={"type": "redis", "connection_string": redis_connection_string(settings.redis_url)},
        entity_key_serialization_version=3,
        repo_path=path.parent,
    )
