"""The CLI answers a user's mistake in one line, no traceback (in process, no servers)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from recsys.cli import app
from tests.conftest import free_port


def test_recommend_with_no_stack_running_says_so_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_ORCHESTRATOR_ADDR", f"127.0.0.1:{free_port()}")  # nothing listens there
    result = CliRunner().invoke(app, ["recommend", "1"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("UNAVAILABLE: ") and "is the stack running?" in lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("name", "value", "said"), [
    ("RECSYS_ORCHESTRATOR_PROCESSES", "0", "RECSYS_ORCHESTRATOR_PROCESSES=0: must be 1 to 64"),
    ("RECSYS_ORCHESTRATOR_PROCESSES", "two", "RECSYS_ORCHESTRATOR_PROCESSES='two': must be an integer"),
    ("RECSYS_DEPLOYMENT", "both", "RECSYS_DEPLOYMENT='both': use one of separate, colocated"),
])
@pytest.mark.parametrize("service", ["all", "orchestrator"])
def test_serve_with_a_setting_that_is_not_one_says_which_in_one_line(
    monkeypatch: pytest.MonkeyPatch, service: str, name: str, value: str, said: str,
) -> None:
    monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["serve", service])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: {said}"]
