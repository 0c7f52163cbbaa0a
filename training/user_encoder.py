"""The serving-time user tower: recent items + attributes -> the FAISS query vector.

Runs on CPU, one thread, without autograd; loads from user_tower.pt alone, so a
serving process needs nothing from training but the version folder.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.two_tower import ModelConfig, UserTower
from training.vocab import Vocab


class UserEncoder:
    def __init__(self, tower: UserTower, vocab: Vocab, history_len: int) -> None:
        torch.set_num_threads(1)  # OpenMP spin-wait between torch and faiss threads costs tens of ms on 2 cores
        self.tower = tower.eval()
        self.vocab = vocab
        self.history_len = history_len

    @classmethod
    def load(cls, path: Path) -> UserEncoder:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        config = ModelConfig(**blob["model_config"])
        tower = UserTower(config)
        tower.load_state_dict(blob["state_dict"])
        return cls(tower, Vocab.from_dict(blob["vocab"]), config.history_len)

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
        history = torch.zeros(1, self.history_len, dtype=torch.long)
        history[0, : len(items)] = torch.tensor(items, dtype=torch.long)
        with torch.inference_mode():
            out = self.tower(history, torch.tensor([demographics], dtype=torch.long))
        return out[0].numpy().astype(np.float32, copy=False)
