"""One model version as the retrieval service serves it: the artifacts, the extra
sources' artifacts built with them, and the live changes made since.

Live changes come from the items table (retrieval.live): an item the version does
not know gets an embedding from its content and joins the FAISS index and the content
index at once; an item that is not active (retired, out of stock) is no longer
returned as a candidate, though it still anchors ("because you watched X"). An item
whose content changes after it was added live gets a new row; its old row is retired.

Everything here is changed only from the event loop's thread, between requests, so a
request never sees a half-applied change; a new version is built whole off to the
side and replaces this object in one assignment.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from core import content, covisitation, segments
from core.artifacts import ModelArtifacts
from storage.records import ItemRecord

log = logging.getLogger(__name__)

CONTENT_NEIGHBOURS = 10  # a new item's embedding without an item tower: its content neighbours' mean


class ItemEncoder(Protocol):
    def encode(self, categories: list[str], title: str, attributes: dict[str, Any]) -> np.ndarray: ...


def _text_key(it: ItemRecord) -> str:
    body = json.dumps([it.title, it.description, sorted(it.categories), it.brand, it.attributes], sort_keys=True,
                      default=str)
    return hashlib.blake2b(body.encode(), digest_size=16).hexdigest()


class Served:
    def __init__(self, arts: ModelArtifacts, version_dir: Path) -> None:
        self.arts = arts
        self.version = arts.version
        self.index = arts.index  # owned by this object from here on: live items are added to it
        self.item_ids: list[str] = list(arts.item_ids)
        self.item_index: dict[str, int] = dict(arts.item_index)
        n, dim = arts.item_embeddings.shape
        self._emb = np.zeros((n + 1024, dim), np.float32)
        self._emb[:n] = arts.item_embeddings
        self._active = np.ones(n + 1024, bool)
        self.n_inactive = 0
        self.covisitation = covisitation.load(version_dir)
        self.content = content.load(version_dir)
        self.segments = segments.load(version_dir)
        self.item_encoder: ItemEncoder | None = getattr(arts, "item_encoder", None)
        self._live_text: dict[str, str] = {}  # items added live -> their content's key
        self.popular = arts.popular

    @property
    def embeddings(self) -> np.ndarray:
        return self._emb[: len(self.item_ids)]

    def servable(self, item_id: str) -> bool:
        """Known and active: may be returned as a candidate."""
        row = self.item_index.get(item_id)
        return row is not None and bool(self._active[row])

    def active_rows(self, rows: np.ndarray) -> np.ndarray:
        """Which of these rows may be returned as candidates."""
        return self._active[rows]

    # ------------------------------------------------------------------ live changes

    def apply(self, items: list[ItemRecord]) -> list[str]:
        """Apply changed items (status, new items); returns the ids added to the index."""
        new = []
        for it in items:
            row = self.item_index.get(it.item_id)
            stale = it.item_id in self._live_text and self._live_text[it.item_id] != _text_key(it)
            if row is None or stale:
                if it.status != "retired":  # retired items are not worth a row
                    new.append(it)
                elif row is not None:
                    self._set_active(row, False)
                continue
            self._set_active(row, it.status == "active")
        if new:
            self._add(new)
        return [it.item_id for it in new]

    def _set_active(self, row: int, active: bool) -> None:
        if bool(self._active[row]) != active:
            self._active[row] = active
            self.n_inactive += -1 if active else 1

    def _add(self, items: list[ItemRecord]) -> None:
        if self.content is not None:
            for it in items:
                self.content.add(it.item_id, it.title, it.description, it.categories, it.brand)
        vectors = np.stack([self._embed(it) for it in items]).astype(np.float32)
        start = len(self.item_ids)
        self._reserve(start + len(items))
        self.index.add(vectors)
        self._emb[start : start + len(items)] = vectors
        for j, it in enumerate(items):
            old = self.item_index.get(it.item_id)
            if old is not None:
                self._set_active(old, False)  # superseded by the new row
            self.item_ids.append(it.item_id)
            self.item_index[it.item_id] = start + j
            self._set_active(start + j, it.status == "active")
            self._live_text[it.item_id] = _text_key(it)
        log.info("added %d live items to version %s (e.g. %s)", len(items), self.version, items[0].item_id)

    def _reserve(self, n: int) -> None:
        if n <= len(self._emb):
            return
        size = max(n, 2 * len(self._emb))
        emb = np.zeros((size, self._emb.shape[1]), np.float32)
        emb[: len(self._emb)] = self._emb
        active = np.ones(size, bool)
        active[: len(self._active)] = self._active
        self._emb, self._active = emb, active

    def _embed(self, it: ItemRecord) -> np.ndarray:
        """A unit vector for an item the model never saw: the item tower over its content when the
        version has one, else the mean of its content neighbours' embeddings, else zeros."""
        if self.item_encoder is not None:
            vec = np.asarray(self.item_encoder.encode(list(it.categories), it.title, dict(it.attributes)), np.float32)
        else:
            vec = np.zeros(self._emb.shape[1], np.float32)
            if self.content is not None:
                terms, weights = self.content.vectorize(it.title, it.description, it.categories, it.brand)
                found = [(self.item_index[i], s) for i, s in
                         self.content.similar(terms, weights, CONTENT_NEIGHBOURS * 2, skip=[it.item_id])
                         if i in self.item_index and i not in self._live_text][:CONTENT_NEIGHBOURS]
                if found:
                    rows, sims = zip(*found, strict=True)
                    vec = (np.asarray(sims, np.float32)[:, None] * self._emb[list(rows)]).sum(axis=0)
        norm = float(np.linalg.norm(vec))
        return vec / norm if norm > 0 else vec
