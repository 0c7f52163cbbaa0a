"""The serving-time user tower: recent items + attributes -> the FAISS query vector.

Loads from user_tower.pt alone, so a serving process needs nothing from training but
the version folder. The forward pass runs in numpy on the tower's weights: for one
user it is a few small matrix products, and numpy does them in ~40 us where torch's
per-module dispatch costs ~10x that (tests check both give the same vector). Retrieval and ranking
both encode a request's user; co-located, the second finds the first's vector (`_RECENT`).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import erf

from core.two_tower import ModelConfig, UserTower
from core.vocab import Vocab

RECENT_VECTORS = 64  # the last users' vectors, per process: a request encodes its user in retrieval and ranking
_RECENT: dict[tuple, np.ndarray] = {}  # oldest first


class UserEncoder:
    def __init__(self, tower: UserTower, vocab: Vocab, history_len: int, key: str = "") -> None:
        torch.set_num_threads(1)  # OpenMP spin-wait between torch and faiss threads costs tens of ms on 2 cores
        self.tower = tower.eval()
        self.vocab = vocab
        self.history_len = history_len
        w = {k: v.detach().numpy().astype(np.float32) for k, v in tower.state_dict().items()}
        self._history_emb = w["history_emb.weight"]
        self._kernel_logit = w["kernel_logit"]
        self._length_emb = w["length_emb.weight"]
        self._demo_embs = [w[f"demographic_embs.{k}.weight"] for k in range(len(tower.demographic_embs))]
        self._w1, self._b1 = w["mlp.0.weight"].T.copy(), w["mlp.0.bias"]
        self._w2, self._b2 = w["mlp.2.weight"].T.copy(), w["mlp.2.bias"]
        # encoders loaded from one file share their recent vectors (retrieval's and ranking's, co-located)
        self._key = key or f"object-{id(self)}"

    @classmethod
    def load(cls, path: Path) -> UserEncoder:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        config = ModelConfig(**blob["model_config"])
        tower = UserTower(config)
        tower.load_state_dict(blob["state_dict"])
        stat = Path(path).stat()
        return cls(tower, Vocab.from_dict(blob["vocab"]), config.history_len,
                   key=f"{Path(path).resolve()}:{stat.st_mtime_ns}:{stat.st_size}")

    @staticmethod
    def save(path: Path, tower: UserTower, config: ModelConfig, vocab: Vocab) -> None:
        blob: dict[str, Any] = {
            "state_dict": tower.state_dict(),
            "model_config": asdict(config),
            "vocab": vocab.to_dict(),
        }
        torch.save(blob, path)

    def encode(self, recent_item_ids: list[str], attributes: dict[str, str]) -> np.ndarray | None:
        """(D,) float32 unit vector from the user's recent items (most recent first) and attributes.

        Item ids unknown to the model are skipped; attribute values are strings ("24", "M").
        None when nothing known is given: the caller falls back to popular items.
        """
        items = [i for i in (self.vocab.item_index(x) for x in recent_item_ids) if i][: self.history_len]
        demographics = self.vocab.demographic_indices(attributes)
        if not items and not any(demographics):
            return None
        key = (self._key, tuple(items), tuple(demographics))
        found = _RECENT.get(key)
        if found is None:
            found = _RECENT[key] = self._forward(items, demographics)
            found.setflags(write=False)  # shared: callers read it
            if len(_RECENT) > RECENT_VECTORS:
                try:
                    del _RECENT[next(iter(_RECENT))]
                except (KeyError, RuntimeError, StopIteration):  # another thread evicted (or added) meanwhile
                    pass
        return found

    def _forward(self, items: list[int], demographics: list[int]) -> np.ndarray:
        n = len(items)
        if n:  # the tower's recency kernels: a softmax over the positions present
            logit = self._kernel_logit[:, :n]
            weight = np.exp(logit - logit.max(axis=1, keepdims=True))
            weight /= weight.sum(axis=1, keepdims=True)
            pooled = (weight @ self._history_emb[items]).ravel()
        else:
            pooled = np.zeros(self._kernel_logit.shape[0] * self._history_emb.shape[1], dtype=np.float32)
        length = int(math.log2(n)) + 1 if n else 0
        x = np.concatenate([pooled, self._length_emb[length],
                            *(emb[d] for emb, d in zip(self._demo_embs, demographics, strict=True))])
        h = x @ self._w1 + self._b1
        h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))  # exact GELU, as nn.GELU()
        out = h @ self._w2 + self._b2
        return (out / max(float(np.linalg.norm(out)), 1e-12)).astype(np.float32)

    def encode_torch(self, recent_item_ids: list[str], attributes: dict[str, str]) -> np.ndarray | None:
        """encode() through the torch module: the reference the numpy path is tested against."""
        items = [i for i in (self.vocab.item_index(x) for x in recent_item_ids) if i][: self.history_len]
        demographics = self.vocab.demographic_indices(attributes)
        if not items and not any(demographics):
            return None
        history = torch.zeros(1, self.history_len, dtype=torch.long)
        history[0, : len(items)] = torch.tensor(items, dtype=torch.long)
        with torch.inference_mode():
            out = self.tower(history, torch.tensor([demographics], dtype=torch.long))
        return out[0].numpy().astype(np.float32, copy=False)
