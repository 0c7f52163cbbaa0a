"""The serving processes' shared startup: what loading made is frozen, and the collector runs again."""

from __future__ import annotations

import gc

from recsys.grpc_server import freeze_loaded_objects


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
