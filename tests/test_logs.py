"""Service log lines: JSON with the request's context when asked for, text otherwise (in process)."""

from __future__ import annotations

import io
import json
import logging

from core.logs import JsonFormatter, configure, set_request, user_hash


def test_json_lines_carry_the_request_context_and_a_traceback_in_one_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("orchestrator"))
    logger = logging.getLogger("test.logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        set_request(request_id="r-1", user=user_hash("42"), surface="home")
        logger.warning("degraded recommend answer: %s", "ranking failed")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("unexpected")
    finally:
        set_request()
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["msg"] == "degraded recommend answer: ranking failed" and first["service"] == "orchestrator"
    assert (first["request_id"], first["surface"]) == ("r-1", "home")
    assert first["user"] == user_hash("42") != "42"  # hashed: the log holds no user ids
    assert "ValueError: boom" in second["exc"]


def test_configure_picks_the_format(monkeypatch) -> None:  # noqa: ANN001
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        monkeypatch.setenv("RECSYS_LOG_FORMAT", "json")
        configure("ranking")
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
        configure("ranking", "text")
        assert not isinstance(root.handlers[0].formatter, JsonFormatter)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
