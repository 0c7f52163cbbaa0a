"""The ranking logic without servers: validation, the newcomer's order, the learned ranker of the
version the request names (current or previous), the weighted scorer when there is none or it fails."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from core.errors import InvalidArgument
from protos import internal_pb2 as ipb
from ranking import ranker as served
from ranking.rank import NEWCOMER_ORDER, Ranking
from ranking.ranker import Ranked, RankerSlot

ITEMS = ["a", "b", "c"]


class FakeRanker:
    """Scores candidates by a fixed preference; what scored is visible in model_version."""

    def __init__(self, version: str, prefer: Sequence[str], fail: bool = False) -> None:
        self.version = version
        self.model_version = f"ranker-{version}"
        self.prefer = list(prefer)
        self.fail = fail
        self.trees = SimpleNamespace(num_trees=lambda: 1, engine="fake")

    def rank(self, user_id: str, recent: Sequence[str], item_ids: Sequence[str], *args: Any, **kwargs: Any) -> Ranked:
        if self.fail:
            raise RuntimeError("broken trees")
        scores = np.array([len(self.prefer) - self.prefer.index(i) for i in item_ids], dtype=np.float64)
        return Ranked(scores=scores, part_names=["ranker"], parts=scores[:, None].copy())


class Features:
    def __init__(self, users: dict[str, dict[str, Any]] | None = None) -> None:
        self.users = users or {}
        self.features = {"a": {"popularity": 1}, "b": {"popularity": 50}, "c": {"popularity": 5}}
        self.max_popularity = 50

    def user_features(self, user_id: str) -> dict[str, Any]:
        return self.users.get(user_id, {})

    def get(self, item_id: str) -> dict[str, Any]:
        return self.features.get(item_id, {})


def request(recent: Sequence[str] = ("x",), version: str = "", user_id: str = "u1",
            scores: Sequence[float] = (0.3, 0.2, 0.1)) -> ipb.RankRequest:
    return ipb.RankRequest(
        user=ipb.UserContext(user_id=user_id, recent_item_ids=list(recent)),
        candidates=ipb.CandidateList(item_ids=ITEMS, scores=list(scores), sources=["two_tower"] * 3),
        model_version=version,
    )


def ranking(slot: RankerSlot) -> Ranking:
    features = Features()
    return Ranking(features, features, learned=slot)  # type: ignore[arg-type]


def order(resp: ipb.RankResponse) -> list[str]:
    return [ITEMS[i] for i in resp.order]


def test_requests_are_checked_with_the_field_named() -> None:
    r = ranking(RankerSlot())
    with pytest.raises(InvalidArgument, match="candidates"):
        r.rank(ipb.RankRequest())
    bad = request()
    del bad.candidates.scores[:]
    with pytest.raises(InvalidArgument) as err:
        r.rank(bad)
    assert err.value.field == "candidates.scores"


def test_a_newcomer_keeps_the_callers_order() -> None:
    resp = ranking(RankerSlot(FakeRanker("v1", ["c", "b", "a"]))).rank(request(recent=(), user_id=""))
    assert order(resp) == ITEMS and resp.model_version == NEWCOMER_ORDER
    assert list(resp.score_parts) == pytest.approx([0.3, 0.2, 0.1])


def test_the_learned_ranker_scores_and_the_weighted_scorer_stands_in() -> None:
    resp = ranking(RankerSlot(FakeRanker("v1", ["c", "b", "a"]))).rank(request())
    assert order(resp) == ["c", "b", "a"] and resp.model_version == "ranker-v1"
    broken = ranking(RankerSlot(FakeRanker("v1", ITEMS, fail=True))).rank(request())
    none = ranking(RankerSlot()).rank(request())
    assert broken.model_version == none.model_version == "weighted-v1"
    assert order(broken) == order(none) and "retrieval" in broken.score_part_names


def test_the_version_asked_for_scores_while_the_slot_holds_it() -> None:
    slot = RankerSlot(FakeRanker("v1", ["c", "b", "a"]))
    slot.put("v2", FakeRanker("v2", ["b", "a", "c"]))  # type: ignore[arg-type]
    assert slot.versions == ["v2", "v1"]
    r = ranking(slot)
    # retrieval still answered with v1: ranking scores with v1's ranker, and says so
    resp = r.rank(request(version="v1"))
    assert order(resp) == ["c", "b", "a"] and resp.model_version == "ranker-v1"
    assert r.rank(request(version="v2")).model_version == "ranker-v2"
    # a version it does not hold (retrieval ahead of ranking, or long gone), or none named: the current one
    assert r.rank(request(version="v3")).model_version == "ranker-v2"
    assert r.rank(request()).model_version == "ranker-v2"
    # a third version drops the first
    slot.put("v3", None)
    assert slot.versions == ["v3", "v2"]
    assert r.rank(request(version="v1")).model_version == "weighted-v1"  # v3, the current one, has no ranker
    assert r.rank(request(version="v2")).model_version == "ranker-v2"


def test_the_slot_follows_current_and_keeps_the_previous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rankers = {"v1": FakeRanker("v1", ITEMS), "v2": FakeRanker("v2", ITEMS)}

    def load(version_dir: Path) -> FakeRanker | None:
        if version_dir.name == "broken":
            raise ValueError("format_version 1, this code reads 2")
        return rankers.get(version_dir.name)

    monkeypatch.setattr(served, "load", load)
    slot = RankerSlot(artifacts_dir=tmp_path)
    assert not slot.refresh() and slot.ranker is None  # nothing published
    for version in ("v1", "v2"):
        (tmp_path / "CURRENT").write_text(version + "\n")
        assert slot.refresh()
    assert slot.versions == ["v2", "v1"] and not slot.refresh()
    assert slot.for_version("v1") is rankers["v1"] and slot.for_version("v2") is rankers["v2"]
    (tmp_path / "CURRENT").write_text("broken\n")
    assert not slot.refresh()  # logged; both rankers kept
    assert slot.versions == ["v2", "v1"] and slot.for_version("broken") is rankers["v2"]
