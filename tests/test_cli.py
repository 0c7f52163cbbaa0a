"""The CLI answers a user's mistake in one line, no traceback (in process, no servers)."""

from __future__ import annotations

from pathlib import Path

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


@pytest.mark.parametrize(("text", "said"), [
    ("[surfce.home]\nmmr_lambda = 0.5\n", "unknown section 'surfce'"),
    ("[surface.home]\nmax_per_category = \"4\"\n", "surface.home.max_per_category: must be an integer from 0 to 500"),
    ("[surface.home\nmmr_lambda = 1\n", "not valid TOML: Expected ']'"),
    ("[surface.home]\nmmr_lamda = 0.5\n", "surface.home: unknown setting 'mmr_lamda'"),
    (None, "no such configuration file"),
])
def test_a_configuration_mistake_is_one_line_naming_the_file_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str | None, said: str,
) -> None:
    path = tmp_path / "recsys.toml"
    if text is not None:
        path.write_text(text)
    checked = CliRunner().invoke(app, ["config", "check", str(path)])
    assert checked.exit_code == 2
    assert checked.output.strip().splitlines() == [checked.output.strip()]
    assert checked.output.startswith(f"error: {path}: ") and said in checked.output, checked.output
    # `serve all` says the same before it starts anything (no embedded server, no service)
    monkeypatch.setenv("RECSYS_CONFIG", str(path))
    monkeypatch.setenv("RECSYS_VAR_DIR", str(tmp_path / "var"))
    served = CliRunner().invoke(app, ["serve", "all"])
    assert served.exit_code == 2 and served.output == checked.output
    assert not (tmp_path / "var").exists()


def test_config_check_reports_what_a_good_file_holds() -> None:
    from core.config import ROOT

    result = CliRunner().invoke(app, ["config", "check", str(ROOT / "config" / "recsys.example.toml")])
    assert result.exit_code == 0
    assert "surfaces cart, default, home; 1 experiment" in result.output
