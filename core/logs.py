"""Service logs: one line per event, as text (the default) or JSON (`RECSYS_LOG_FORMAT=json`, for a
log pipeline), with the request's context on every line logged while serving it.

The context (request id, a hash of the user id, surface, model version) lives in a contextvar the
orchestrator sets per request, so a line logged anywhere below it (a component, a dependency's
breaker) carries it without being passed along. The user id is hashed: logs are not a copy of who
did what.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from contextvars import ContextVar

REQUEST: ContextVar[dict[str, str] | None] = ContextVar("recsys_request", default=None)


def user_hash(user_id: str) -> str:
    return hashlib.blake2b(user_id.encode(), digest_size=6).hexdigest() if user_id else ""


def set_request(**fields: str) -> None:
    """The context of the request being served (empty values left out)."""
    REQUEST.set({k: v for k, v in fields.items() if v})


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "service": self.service, "logger": record.name, "msg": record.getMessage(),
        }
        line.update(REQUEST.get() or {})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class _TextWithContext(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = REQUEST.get()
        return f"{text} [{' '.join(f'{k}={v}' for k, v in context.items())}]" if context else text


def configure(service: str, fmt: str | None = None) -> None:
    """Log INFO and up to stderr, in `fmt` ("text" or "json"; default: $RECSYS_LOG_FORMAT, else text)."""
    fmt = (fmt or os.environ.get("RECSYS_LOG_FORMAT", "") or "text").strip().lower()
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(_TextWithContext(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
