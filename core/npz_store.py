"""Named arrays with a JSON sidecar in a version folder: how the sources' and the ranker's
artifacts are stored (NAME.npz + NAME.json). Arrays load without pickle, so a version
folder cannot run code."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def npz_path(folder: Path, name: str) -> Path:
    return Path(folder) / f"{name}.npz"


def save(folder: Path, name: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
    np.savez(npz_path(folder, name), **arrays)
    (Path(folder) / f"{name}.json").write_text(json.dumps(meta))


def load(folder: Path, name: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """(arrays, meta) of NAME in folder; None when the folder has no NAME.npz (built without it)."""
    if not npz_path(folder, name).exists():
        return None
    meta = json.loads((Path(folder) / f"{name}.json").read_text())
    with np.load(npz_path(folder, name), allow_pickle=False) as z:
        return {key: z[key] for key in z.files}, meta
