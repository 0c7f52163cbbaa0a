"""`recsys data load` modes against a real PostgreSQL: insert refuses rows already there in one line,
upsert adds new rows, updates changed ones and keeps history and A/B data, and changes nothing the
second time."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import psycopg
import pytest
from typer.testing import CliRunner

from recsys.cli import app
from storage.bulk import load_frames
from tests.conftest import fresh_database
from tests.test_training import synthetic
from training.dataset import save_files


def _counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: S608 - fixed names
                for t in ("users", "items", "interactions", "exposures")}


def test_upsert_adds_updates_and_keeps_history() -> None:
    data = synthetic(n_users=12, n_items=15, seed=5)
    with fresh_database() as url:
        load_frames(url, data.users, data.items, data.interactions)
        with psycopg.connect(url) as conn:  # an A/B exposure and a live click, as serving leaves them
            conn.execute("INSERT INTO exposures (request_id, user_id, surface, variant, item_ids) "
                         "VALUES ('r1', %s, 'home', 'control', ARRAY['x'])", (str(data.users.user_id[0]),))
            conn.execute("INSERT INTO interactions (user_id, item_id, type, value) VALUES (%s, %s, 'click', 1)",
                         (str(data.users.user_id[0]), str(data.items.item_id[0])))
        before = _counts(url)

        items = data.items.copy()
        items.loc[0, "title"] = "A new title"
        items = pd.concat([items, items.iloc[[1]].assign(item_id="brand-new", title="New")], ignore_index=True)
        users = pd.concat([data.users, data.users.iloc[[0]].assign(user_id="new-user")], ignore_index=True)
        extra = data.interactions.iloc[[0]].assign(user_id="new-user", ts=data.interactions.ts.max())
        interactions = pd.concat([data.interactions, extra], ignore_index=True)

        counts = load_frames(url, users, items, interactions, mode="upsert")
        assert counts == {"users_new": 1, "users_updated": 0, "items_new": 1, "items_updated": 1,
                          "interactions_new": 1, "interactions_present": len(data.interactions)}
        after = _counts(url)
        assert after == {**before, "users": before["users"] + 1, "items": before["items"] + 1,
                         "interactions": before["interactions"] + 1}  # the live click and the exposure kept
        with psycopg.connect(url) as conn:
            title, moved = conn.execute("SELECT title, updated_at > created_at FROM items WHERE item_id = %s",
                                        (str(items.item_id[0]),)).fetchone()
            assert title == "A new title" and moved  # running services see the change (updated_at)
            untouched = conn.execute("SELECT updated_at = created_at FROM items WHERE item_id = %s",
                                     (str(items.item_id[2]),)).fetchone()[0]
            assert untouched  # an unchanged item is not rewritten
        again = load_frames(url, users, items, interactions, mode="upsert")
        assert again["users_new"] == again["items_new"] == again["interactions_new"] == 0
        assert again["users_updated"] == again["items_updated"] == 0
        assert _counts(url) == after


def test_insert_over_loaded_rows_is_one_line_naming_the_way_out(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    data = synthetic(n_users=6, n_items=8, seed=2)
    folder = save_files(data, tmp_path / "shop")
    with fresh_database() as url:
        load_frames(url, data.users, data.items, data.interactions)
        monkeypatch.setenv("DATABASE_URL", url)
        monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # not used by data load
        result = CliRunner().invoke(app, ["data", "load", "--path", str(folder)])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: the database already holds ")
        assert "--mode upsert" in lines[0] and "Traceback" not in result.output
        upserted = CliRunner().invoke(app, ["data", "load", "--mode", "upsert", "--path", str(folder)])
        assert upserted.exit_code == 0, upserted.output
        assert "'interactions_new': 0" in upserted.output
