"""The learned ranker's trees as served: LightGBM's model compiled to machine code by lleaves.

LightGBM walks its trees in a generic interpreter: the 200-row feature matrices of real requests took
1.18 ms through 100 trees on this project's machine. lleaves (LLVM, through llvmlite) compiles the same
model file into one function and gives the same scores (to 1e-15) in 0.145 ms (docs/benchmarks.md).
The compile runs where a version is loaded (off the request path) in about 0.6 s for 100 trees.

After compiling, the compiled trees are checked against LightGBM's on a probe of rows made of the
model's own split thresholds (each exactly, just below, just above, or missing); a difference, or no
lleaves on the machine, leaves LightGBM's predict serving, with a warning. `engine` says which one serves.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import lightgbm as lgb
import numpy as np

log = logging.getLogger(__name__)

PROBE_ROWS = 256
TOLERANCE = 1e-9


class Trees:
    def __init__(self, booster: lgb.Booster, compile_trees: bool = True) -> None:
        self.booster = booster
        self.engine = "lightgbm"
        self._compiled = None
        if compile_trees:
            try:
                self._compiled = _compiled(booster)
                self.engine = "lleaves"
            except Exception as exc:  # noqa: BLE001 - LightGBM's own predict still serves
                log.warning("ranker trees not compiled (%s: %s): LightGBM's predict serves",
                            type(exc).__name__, exc)

    def num_trees(self) -> int:
        return int(self.booster.num_trees())

    def predict(self, x: np.ndarray) -> np.ndarray:
        """float64 [len(x)]: the model's score of each row (missing values as NaN)."""
        if self._compiled is not None:
            return self._compiled.predict(x, n_jobs=1)  # one thread: a serving process's rule (core/threads.py)
        return np.asarray(self.booster.predict(x, num_threads=1), dtype=np.float64)


def _compiled(booster: lgb.Booster):  # noqa: ANN202 - lleaves.Model, imported here: optional at import time
    import lleaves

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ranker.lgb"
        booster.save_model(str(path))
        model = lleaves.Model(model_file=str(path))
        model.compile()  # in memory: nothing written beside the version's files
    probe = _probe(booster)
    got = model.predict(probe, n_jobs=1)
    want = booster.predict(probe, num_threads=1)
    worst = float(np.max(np.abs(got - want)))
    if not worst <= TOLERANCE:
        raise ValueError(f"compiled scores differ from LightGBM's by {worst:g} on a probe")
    return model


def _probe(booster: lgb.Booster) -> np.ndarray:
    """Rows whose every value sits at one of its feature's split thresholds, a hair either side of it, or
    is missing: every comparison the trees make is exercised on both sides, and at equality."""
    rng = np.random.default_rng(0)
    splits = booster.trees_to_dataframe()
    splits = splits[splits["split_feature"].notna()]
    names = booster.feature_name()
    probe = np.full((PROBE_ROWS, len(names)), np.nan)
    for j, name in enumerate(names):
        thresholds = splits.loc[splits["split_feature"] == name, "threshold"].to_numpy(dtype=np.float64)
        if not len(thresholds):
            probe[:, j] = rng.normal(size=PROBE_ROWS)
            continue
        values = rng.choice(thresholds, PROBE_ROWS)
        nudge = rng.choice([-1.0, 0.0, 1.0], PROBE_ROWS) * np.maximum(np.abs(values), 1.0) * 1e-6
        probe[:, j] = values + nudge
    probe[rng.random(probe.shape) < 0.1] = np.nan
    return probe
