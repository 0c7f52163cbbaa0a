"""The serving-time item tower: an item's content (and id, when known) -> its vector.

This is how an item added after training enters the live index: retrieval embeds it
from its categories, title and attributes, the same way training placed items whose id
it had hidden (id dropout), so the vector lands among similar known items. Runs on CPU,
one thread, without autograd; loads from item_tower.pt alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.two_tower import ItemTower, ModelConfig
from core.vocab import Vocab


class ItemEncoder:
    def __init__(self, tower: ItemTower, vocab: Vocab, max_categories: int, max_tokens: int) -> None:
        torch.set_num_threads(1)  # see UserEncoder
        self.tower = tower.eval()
        self.vocab = vocab
        self.max_categories = max_categories
        self.max_tokens = max_tokens

    @classmethod
    def load(cls, path: Path) -> ItemEncoder:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        tower = ItemTower(ModelConfig(**blob["model_config"]))
        tower.load_state_dict(blob["state_dict"])
        return cls(tower, Vocab.from_dict(blob["vocab"]), blob["max_categories"], blob["max_tokens"])

    @staticmethod
    def save(path: Path, tower: ItemTower, config: ModelConfig, vocab: Vocab, max_categories: int,
             max_tokens: int) -> None:
        blob: dict[str, Any] = {
            "state_dict": tower.state_dict(),
            "model_config": asdict(config),
            "vocab": vocab.to_dict(),
            "max_categories": max_categories,
            "max_tokens": max_tokens,
        }
        torch.save(blob, path)

    def encode(
        self, categories: Sequence[str], title: str, attributes: dict[str, Any] | None = None, *,
        item_id: str = "", brand: str = "", price: float | None = None,
    ) -> np.ndarray:
        """(D,) float32 unit vector of one item.

        An item id the model knows adds its learned id embedding; an unknown or empty one
        gives the content-only vector. Unknown categories and title words are skipped;
        attributes["year"] is read when present.
        """
        cats, words, year, price_bucket = self.vocab.content_indices(categories, title, attributes or {}, brand,
                                                                     price)
        cats, words = cats[: self.max_categories] or [0], words[: self.max_tokens] or [0]
        with torch.inference_mode():
            out = self.tower(
                torch.tensor([self.vocab.item_index(item_id) if item_id else 0]),
                torch.tensor([cats]), torch.tensor([words]), torch.tensor([year]), torch.tensor([price_bucket]),
            )
        return out[0].numpy().astype(np.float32, copy=False)
