"""Publishing a model version: the writing side of the artifact format (core/artifacts.py).

A version folder is written under a temporary name and renamed whole, and CURRENT is
replaced atomically last, so a service polling CURRENT never sees a half-written version.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np
import pandas as pd

from core.artifacts import (
    CURRENT,
    EMBEDDINGS_FILE,
    FORMAT_VERSION,
    INDEX_FILE,
    ITEM_IDS_FILE,
    ITEM_TOWER_FILE,
    MANIFEST_FILE,
    POPULAR_FILE,
    RANKER_META_FILE,
    RANKER_MODEL_FILE,
    USER_TOWER_FILE,
)
from core.index import build_index
from core.item_encoder import ItemEncoder
from core.ranker_features import FEATURES
from core.user_encoder import UserEncoder
from training.dataset import Dataset
from training.train import TrainedModel, config_dict, json_ready

if TYPE_CHECKING:  # lightgbm is only needed where a ranker is trained or served
    from training.ranker import TrainedRanker

POPULAR_TOP = 1000

def export(
    model: TrainedModel, dataset: Dataset, artifacts_dir: Path, ranker: TrainedRanker | None = None,
    extras: Sequence[Any] = (),
) -> Path:
    """Write a new version folder and make it CURRENT; returns the version folder.

    `extras` are other sources' artifacts (co-visitation, TF-IDF, segment popularity), each
    with save(folder); they are written before the manifest so their files are listed in it."""
    artifacts_dir = Path(artifacts_dir)
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    version, tmp = _claim_version(artifacts_dir)
    try:
        if ranker is not None:
            _write_ranker(tmp, ranker)
        for extra in extras:
            extra.save(tmp)
        manifest = _write_version(tmp, version, model, dataset)
        if ranker is not None:
            manifest["ranker"] = {"features": list(FEATURES), "config": json_ready(asdict(ranker.config)),
                                  "metrics": ranker.metrics}
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        final = artifacts_dir / version
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_atomic(artifacts_dir / CURRENT, version + "\n")
    return final


def _write_version(folder: Path, version: str, trained: TrainedModel, dataset: Dataset) -> dict[str, Any]:
    model, vocab = trained.model, trained.vocab
    # Retired items never come back: keep them out of the index (still known to the user tower).
    status = dict(zip(dataset.items["item_id"], dataset.items["status"], strict=True))
    rows = [i for i, item_id in enumerate(vocab.item_ids) if status.get(item_id) != "retired"]
    item_ids = [vocab.item_ids[i] for i in rows]
    embeddings = model.all_items()[1:][rows].numpy().astype(np.float32)

    index, index_info = build_index(embeddings)  # exact, IVF or IVF-PQ + re-rank by catalogue size
    faiss.write_index(index, str(folder / INDEX_FILE))
    np.save(folder / EMBEDDINGS_FILE, embeddings)
    (folder / ITEM_IDS_FILE).write_text(json.dumps(item_ids))
    UserEncoder.save(folder / USER_TOWER_FILE, model.user_tower, model.config, vocab)
    ItemEncoder.save(folder / ITEM_TOWER_FILE, model.item_tower, model.config, vocab,
                     trained.config.max_categories, trained.config.max_tokens)
    (folder / POPULAR_FILE).write_text(json.dumps(_popular(dataset, set(item_ids))))

    files = sorted(p.name for p in folder.iterdir())
    return {
        "format_version": FORMAT_VERSION,
        "version": version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "dim": int(embeddings.shape[1]),
        "n_items": len(item_ids),
        "excluded_retired_items": vocab.n_items - len(item_ids),
        "model_config": config_dict(model.config),
        "train_config": config_dict(trained.config),
        "index": index_info,
        "metrics": trained.metrics,
        "data": {"users": len(dataset.users), "items": len(dataset.items),
                 "interactions": len(dataset.interactions)},
        "files": {name: {"bytes": (folder / name).stat().st_size, "sha256": _sha256(folder / name)}
                  for name in files},
    }


def _write_ranker(folder: Path, ranker: TrainedRanker) -> None:
    ranker.booster.save_model(str(folder / RANKER_MODEL_FILE))  # the best iteration when early stopping chose one
    ranker.signals.save(folder)
    meta = {"features": list(FEATURES), "max_history": ranker.config.max_history,
            "config": json_ready(asdict(ranker.config)), "metrics": ranker.metrics}
    (folder / RANKER_META_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def _popular(dataset: Dataset, indexed: set[str]) -> list[list[Any]]:
    """Items by interaction count (all types), most first; only items in the index."""
    counts = dataset.interactions["item_id"].value_counts(sort=False)
    counts = counts[counts.index.isin(indexed)]
    frame = pd.DataFrame({"item_id": counts.index, "n": counts.to_numpy()})
    frame = frame.sort_values(["n", "item_id"], ascending=[False, True]).head(POPULAR_TOP)  # ties: stable by id
    return [[item_id, float(n)] for item_id, n in zip(frame["item_id"], frame["n"], strict=True)]


def _claim_version(artifacts_dir: Path) -> tuple[str, Path]:
    """A fresh version name and its work folder; mkdir is atomic, so two exporters never share one."""
    base = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1, 1000):
        version = base if n == 1 else f"{base}-{n}"
        if (artifacts_dir / version).exists():
            continue
        try:
            (artifacts_dir / f".{version}.tmp").mkdir()
        except FileExistsError:
            continue
        return version, artifacts_dir / f".{version}.tmp"
    raise RuntimeError(f"{artifacts_dir}: no free version name for {base}")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
