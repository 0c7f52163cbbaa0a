"""Versioned model artifacts: the format training writes and the one reader serving uses.

    <artifacts_dir>/<version>/manifest.json        version, configs, index parameters, metrics, files
    <artifacts_dir>/<version>/item_ids.json        external item ids; row i of the embeddings = FAISS id i
    <artifacts_dir>/<version>/item_embeddings.npy  float32 [n_items, D], unit rows
    <artifacts_dir>/<version>/index.faiss          inner-product index over those rows
    <artifacts_dir>/<version>/user_tower.pt        user tower state dict + vocabularies
    <artifacts_dir>/<version>/item_tower.pt        item tower state dict + vocabularies (embeds new items)
    <artifacts_dir>/<version>/popular.json         [[item_id, score], ...], the cold-start answer
    <artifacts_dir>/<version>/ranker.lgb           the learned ranker's trees (when trained; ranking/ranker.py)
    <artifacts_dir>/<version>/ranker.json          its features, config and metrics
    <artifacts_dir>/<version>/ranker_signals.*     per-item arrays its features read (EASE, co-visitation, ...)
    <artifacts_dir>/CURRENT                        the version services should serve

training/export.py writes a version folder under a temporary name, renames it whole, and
replaces CURRENT atomically last, so a service polling CURRENT never sees a half-written
version. Every reader of a version goes through read_manifest, which checks the format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from core.index import read_index
from core.item_encoder import ItemEncoder
from core.ranker_features import FEATURES
from core.user_encoder import UserEncoder

FORMAT_VERSION = 2  # 2: content item tower (item_tower.pt), recency-kernel user tower

CURRENT = "CURRENT"
MANIFEST_FILE = "manifest.json"
ITEM_IDS_FILE = "item_ids.json"
EMBEDDINGS_FILE = "item_embeddings.npy"
INDEX_FILE = "index.faiss"
USER_TOWER_FILE = "user_tower.pt"
ITEM_TOWER_FILE = "item_tower.pt"
POPULAR_FILE = "popular.json"
RANKER_MODEL_FILE = "ranker.lgb"
RANKER_META_FILE = "ranker.json"


@dataclass
class ItemVectors:
    """What every reader of a version needs: its item vectors and the user tower (the ranker reads no more)."""

    version: str
    manifest: dict[str, Any]
    item_ids: list[str]
    item_index: dict[str, int]  # external id -> row
    item_embeddings: np.ndarray  # float32 [n_items, D]
    user_encoder: UserEncoder


@dataclass
class ModelArtifacts(ItemVectors):
    """A whole version, as retrieval serves it."""

    index: faiss.Index
    popular: list[tuple[str, float]]
    item_encoder: ItemEncoder  # embeds an item from its content: items added after training


def current_version(artifacts_dir: Path) -> str:
    """The version named in <artifacts_dir>/CURRENT; "" when none is published yet."""
    current = Path(artifacts_dir) / CURRENT
    return current.read_text().strip() if current.exists() else ""


def read_manifest(version_dir: Path) -> dict[str, Any]:
    """A version's manifest, after checking it is a version folder in the format this code reads."""
    manifest_path = Path(version_dir) / MANIFEST_FILE
    if not manifest_path.exists():
        raise FileNotFoundError(f"{manifest_path}: missing; is {version_dir} a model version folder?")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{manifest_path}: format_version {manifest.get('format_version')!r}, "
                         f"this code reads {FORMAT_VERSION}; retrain with this code")
    return manifest


def load_current(artifacts_dir: Path) -> ModelArtifacts:
    """Load the version named in <artifacts_dir>/CURRENT."""
    current = Path(artifacts_dir) / CURRENT
    if not current.exists():
        raise FileNotFoundError(f"{current}: no model published yet; run `recsys train` first")
    version = current_version(artifacts_dir)
    if not version:
        raise FileNotFoundError(f"{current} is empty; run `recsys train` to publish a version")
    return load_version(Path(artifacts_dir) / version)


def load_item_vectors(version_dir: Path) -> ItemVectors:
    """The version's item ids, item vectors and user tower."""
    version_dir = Path(version_dir)
    manifest = read_manifest(version_dir)
    item_ids = json.loads((version_dir / ITEM_IDS_FILE).read_text())
    embeddings = np.load(version_dir / EMBEDDINGS_FILE)
    if len(item_ids) != embeddings.shape[0]:
        raise ValueError(f"{version_dir}: item_ids ({len(item_ids)}) and embeddings ({embeddings.shape[0]}) "
                         "disagree; the version is corrupt")
    return ItemVectors(
        version=manifest["version"], manifest=manifest, item_ids=item_ids,
        item_index={item_id: row for row, item_id in enumerate(item_ids)}, item_embeddings=embeddings,
        user_encoder=UserEncoder.load(version_dir / USER_TOWER_FILE),
    )


def load_version(version_dir: Path) -> ModelArtifacts:
    """Load one version folder; everything retrieval needs comes from it."""
    faiss.omp_set_num_threads(1)  # see UserEncoder: one thread each in serving processes
    version_dir = Path(version_dir)
    base = load_item_vectors(version_dir)
    manifest = base.manifest
    index = read_index(version_dir / INDEX_FILE, manifest.get("index"))
    if manifest["index"]["type"] == "IVF":
        faiss.extract_index_ivf(index).nprobe = int(manifest["index"]["nprobe"])
    if index.ntotal != len(base.item_ids):
        raise ValueError(f"{version_dir}: item_ids ({len(base.item_ids)}) and index ({index.ntotal}) disagree; "
                         "the version is corrupt")
    popular = [(str(i), float(s)) for i, s in json.loads((version_dir / POPULAR_FILE).read_text())]
    return ModelArtifacts(
        **vars(base), index=index, popular=popular, item_encoder=ItemEncoder.load(version_dir / ITEM_TOWER_FILE),
    )


def read_ranker_meta(version_dir: Path) -> dict[str, Any] | None:
    """The learned ranker's ranker.json; None when the version was exported without a ranker. Raises when the
    version's format or the ranker's features are not what this code computes."""
    version_dir = Path(version_dir)
    read_manifest(version_dir)
    if not (version_dir / RANKER_MODEL_FILE).exists():
        return None
    meta = json.loads((version_dir / RANKER_META_FILE).read_text())
    if list(meta["features"]) != list(FEATURES):
        raise ValueError(f"{version_dir / RANKER_META_FILE}: the ranker was trained on features {meta['features']}, "
                         f"this code computes {list(FEATURES)}; retrain with this code")
    return meta


__all__ = ["FORMAT_VERSION", "ItemEncoder", "ItemVectors", "ModelArtifacts", "UserEncoder", "current_version",
           "load_current", "load_item_vectors", "load_version", "read_manifest", "read_ranker_meta"]
