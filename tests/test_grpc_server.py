"""The serving processes' shared startup: what loading made is frozen, the collector runs again, and a
hot swap still frees the old version."""

from __future__ import annotations

import gc
import shutil
import weakref
from pathlib import Path

import pytest

from core.config import Settings
from core.grpc_server import freeze_loaded_objects


def test_loaded_objects_are_frozen_and_collection_is_enabled_again() -> None:
    loaded = [{"item": i} for i in range(1000)]  # stands for what a service loads
    gc.disable()  # as `recsys serve` does while the service loads
    try:
        freeze_loaded_objects()
        assert gc.isenabled(), "collection must run again once serving (cyclic garbage would pile up)"
        assert gc.get_freeze_count() >= len(loaded)
        assert not any(d is loaded[0] for d in gc.get_objects())  # frozen objects are out of the collector's view
    finally:
        gc.unfreeze()
        gc.enable()


@pytest.mark.integration
def test_a_hot_swap_frees_the_old_version_although_startup_objects_are_frozen(
    stack: Settings, tmp_path: Path
) -> None:
    """Frozen objects are never walked by the collector: an old version kept alive by a reference cycle
    would never be freed (at 10M items, 3 GB per swap). Reference counting must free it. (Ranking holds the
    previous version's ranker on purpose, for requests retrieval answered with it: it goes one swap later.)"""
    from ranking.ranker import RankerSlot
    from retrieval.retriever import Retriever

    version = (stack.artifacts_dir / "CURRENT").read_text().strip()
    for name in (version, f"{version}-next", f"{version}-third"):
        shutil.copytree(stack.artifacts_dir / version, tmp_path / name)
    (tmp_path / "CURRENT").write_text(version)
    retriever, slot = Retriever(tmp_path), RankerSlot(artifacts_dir=tmp_path)
    assert retriever.load() and slot.refresh() and slot.ranker is not None
    try:
        freeze_loaded_objects()
        served, index, ranker = weakref.ref(retriever.served), weakref.ref(retriever.served.index), weakref.ref(
            slot.ranker)
        (tmp_path / "CURRENT").write_text(f"{version}-next")
        assert retriever.load() and slot.refresh()
        assert served() is None and index() is None
        assert ranker() is not None and slot.for_version(version) is ranker()  # the previous version's, kept
        (tmp_path / "CURRENT").write_text(f"{version}-third")
        assert slot.refresh() and ranker() is None
    finally:
        gc.unfreeze()
