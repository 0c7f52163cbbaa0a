"""The two-tower retrieval model.

Item tower: item id embedding + mean of its category embeddings -> MLP -> unit vector.
User tower: recency-weighted mean of the user's recent items (an item-history table
of its own) + demographic embeddings -> MLP -> unit vector. There is no user-id
embedding on purpose: any user, new or old, is encoded from what they just did, so a
click changes their vector at once, without retraining.

Dense indices: items 1..n_items, 0 = padding; demographic value 0 = unknown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ModelConfig:
    n_items: int  # items are 1..n_items; 0 pads histories
    n_categories: int  # categories are 1..n_categories; 0 pads category lists
    demographic_sizes: dict[str, int] = field(default_factory=dict)  # key -> vocabulary size incl. 0
    dim: int = 64  # output embedding size (the FAISS vector)
    hidden: int = 128  # MLP hidden width in both towers
    demographic_dim: int = 16
    history_len: int = 50  # recent items the user tower reads, most recent first
    recency_decay: float = 0.9  # initial weight of the k-th most recent item: decay**k (then learned)


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.GELU(), nn.Linear(hidden, n_out))


class ItemTower(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.id_emb = nn.Embedding(cfg.n_items + 1, cfg.dim, padding_idx=0)
        # padding_idx rows are left out of the mean: an item without categories gets zeros
        self.category_emb = nn.EmbeddingBag(cfg.n_categories + 1, cfg.dim, mode="mean", padding_idx=0)
        self.mlp = _mlp(2 * cfg.dim, cfg.hidden, cfg.dim)

    def forward(self, items: torch.Tensor, categories: torch.Tensor) -> torch.Tensor:
        """items [B] dense indices, categories [B, C] padded category indices -> [B, dim] unit vectors."""
        x = torch.cat([self.id_emb(items), self.category_emb(categories)], dim=-1)
        return F.normalize(self.mlp(x), dim=-1)


class UserTower(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.history_len = cfg.history_len
        # an EmbeddingBag with per-position weights: lookup and weighted sum in one kernel, ~2.5x
        # faster on CPU than gathering [B, L, dim] and reducing it
        self.history_emb = nn.EmbeddingBag(cfg.n_items + 1, cfg.dim, mode="sum", padding_idx=0)
        # log-weights per recency position, starting as an exponential decay
        self.position_logit = nn.Parameter(torch.arange(cfg.history_len) * math.log(cfg.recency_decay))
        self.demographic_embs = nn.ModuleList(
            nn.Embedding(size, cfg.demographic_dim, padding_idx=0) for size in cfg.demographic_sizes.values()
        )
        n_in = cfg.dim + cfg.demographic_dim * len(cfg.demographic_sizes)
        self.mlp = _mlp(n_in, cfg.hidden, cfg.dim)

    def forward(self, history: torch.Tensor, demographics: torch.Tensor) -> torch.Tensor:
        """history [B, L] item indices (most recent first, 0 = none), demographics [B, K] -> [B, dim]."""
        length = history.shape[1]
        weight = self.position_logit[:length].exp() * (history > 0)  # [B, L]
        weight = weight / weight.sum(dim=1, keepdim=True).clamp_min(1e-9)  # empty history -> all zeros
        pooled = self.history_emb(history, per_sample_weights=weight)  # weighted mean of the history
        demo = [emb(demographics[:, k]) for k, emb in enumerate(self.demographic_embs)]
        x = torch.cat([pooled, *demo], dim=-1)
        return F.normalize(self.mlp(x), dim=-1)


class TwoTower(nn.Module):
    def __init__(self, cfg: ModelConfig, item_categories: torch.Tensor) -> None:
        """item_categories: [n_items + 1, C] padded category indices of every item (row 0 = padding)."""
        super().__init__()
        self.config = cfg
        self.item_tower = ItemTower(cfg)
        self.user_tower = UserTower(cfg)
        self.register_buffer("item_categories", item_categories, persistent=True)

    def items(self, items: torch.Tensor) -> torch.Tensor:
        return self.item_tower(items, self.item_categories[items])

    def users(self, history: torch.Tensor, demographics: torch.Tensor) -> torch.Tensor:
        return self.user_tower(history, demographics)

    @torch.no_grad()
    def all_items(self, batch_size: int = 65536) -> torch.Tensor:
        """[n_items + 1, dim] embeddings of every item; row 0 (padding) is meaningless."""
        ids = torch.arange(self.config.n_items + 1)
        return torch.cat([self.items(chunk) for chunk in ids.split(batch_size)])
