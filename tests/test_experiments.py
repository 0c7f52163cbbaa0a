"""A/B experiments: stable bucketing that matches the shares, forced variants, and the
report counting what was logged (real PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from core.errors import InvalidArgument
from orchestrator.experiment_report import collect, render, two_proportion_z, wilson
from orchestrator.experiments import DEFAULT, Experiment, Experiments, Variant, parse
from tests.conftest import fresh_database

EXP = Experiment("ranker", "s1", (Variant("control", 0.5), Variant("a", 0.3, {"ranker": False}),
                                  Variant("b", 0.2)), ("home",))


def test_bucketing_is_stable_and_matches_the_shares() -> None:
    users = [f"user-{i}" for i in range(20_000)]
    first = [EXP.assign(u).name for u in users]
    assert first == [EXP.assign(u).name for u in users]  # same user, same variant, every time
    for name, share in (("control", 0.5), ("a", 0.3), ("b", 0.2)):
        observed = first.count(name) / len(users)
        assert abs(observed - share) < 0.015, (name, observed)  # ~4.5 standard errors at n=20k
    # Another salt reshuffles users independently.
    other = Experiment("ranker", "s2", EXP.variants)
    moved = sum(a != other.assign(u).name for u, a in zip(users, first, strict=True)) / len(users)
    assert 0.5 < moved < 0.7  # independent draws disagree with probability 1 - (.25+.09+.04) = 0.62


def test_assignment_per_surface_and_forced_variants() -> None:
    exps = Experiments([EXP])
    got = exps.assign("u1", "home")
    assert got.label == f"ranker/{EXP.assign('u1').name}"
    assert exps.assign("u1", "item_page") == DEFAULT
    assert exps.assign("u1", "home", forced="a") == exps.assign("u1", "home", forced="ranker/a")
    assert exps.assign("u1", "home", forced="a").params == {"ranker": False}
    with pytest.raises(InvalidArgument, match="^experiment_variant: no variant 'zzz'"):
        exps.assign("u1", "home", forced="zzz")
    with pytest.raises(InvalidArgument, match="^experiment_variant: no experiment runs on surface"):
        exps.assign("u1", "cart", forced="a")


def test_config_is_validated() -> None:
    good = {"experiment": [{"name": "x", "variant": [{"name": "c", "share": 0.5}, {"name": "t", "share": 0.5}]}]}
    assert parse(good)[0].salt == "x"
    bad = {"experiment": [{"name": "x", "variant": [{"name": "c", "share": 0.5}, {"name": "t", "share": 0.4}]}]}
    with pytest.raises(ValueError, match=r"experiment\[0\].variant: shares must be >= 0 and add up to 1"):
        parse(bad)


def test_statistics_on_known_values() -> None:
    lo, hi = wilson(50, 100)
    assert (round(lo, 4), round(hi, 4)) == (0.4038, 0.5962)
    assert wilson(0, 10)[0] == 0.0 and 0.25 < wilson(0, 10)[1] < 0.35
    z, p = two_proportion_z(100, 1000, 130, 1000)
    assert z == pytest.approx(2.1027, abs=1e-4) and p == pytest.approx(0.0355, abs=1e-4)
    assert two_proportion_z(10, 100, 10, 100) == (0.0, 1.0)


@pytest.fixture
def database_url() -> Iterator[str]:
    """A database of this test's own: it writes rows the shared one must not see."""
    with fresh_database() as url:
        yield url


def test_report_counts_what_was_logged(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO users (user_id) VALUES ('r1'), ('r2') ON CONFLICT DO NOTHING")
        conn.execute("INSERT INTO items (item_id) VALUES ('x1'), ('x2'), ('x3') ON CONFLICT DO NOTHING")
        conn.execute("""INSERT INTO exposures (request_id, user_id, variant, item_ids) VALUES
            ('q1', 'r1', 'rep/control', '{x1,x2}'), ('q2', 'r2', 'rep/control', '{x1}'),
            ('q3', 'r1', 'rep/t', '{x2,x3}'), ('q4', 'r2', 'rep/t', '{x3}'), ('q5', 'r2', 'other/c', '{x1}')""")
        conn.execute("""INSERT INTO interactions (user_id, item_id, type, request_id) VALUES
            ('r1', 'x2', 'click', 'q1'), ('r1', 'x2', 'purchase', 'q1'),  -- q1: clicked and converted
            ('r2', 'x2', 'click', 'q2'),                                  -- item not in q2: not attributed
            ('r1', 'x3', 'view', 'q3'),                                   -- a view is not engagement
            ('r2', 'x3', 'add_to_cart', 'q4'),                            -- q4 clicked
            ('r1', 'x1', 'click', 'q5')                                   -- another user's request""")
    stats = collect(database_url, "rep")
    assert [(s.variant, s.exposures, s.clicked, s.converted) for s in stats] == [
        ("rep/control", 2, 1, 1), ("rep/t", 2, 1, 0)]
    assert len(collect(database_url)) == 3
    table = render(stats)
    assert "rep/control" in table and "(baseline)" in table and "50.00%" in table
