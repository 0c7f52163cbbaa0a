"""The two-tower retrieval model.

Item tower: item id embedding + its content (mean of category embeddings, mean of
title-word embeddings, year and price buckets) -> MLP -> unit vector. Training drops
the id now and then, so the content path alone places an item well: that is how a
new item, unknown to the model, gets a vector (core.item_encoder).

User tower: the user's recent items pooled by a few learned recency kernels (one
leaning on the last item or two, others on a longer past), the history length and
demographic embeddings -> MLP -> unit vector. There is no user-id embedding on
purpose: any user, new or old, is encoded from what they just did, so a click
changes their vector at once, without retraining.

Dense indices: items 1..n_items, 0 = padding or unknown; every other vocabulary
likewise keeps 0 for padding / unknown.
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
    n_tokens: int = 0  # title words 1..n_tokens; 0 pads
    n_year_buckets: int = 0  # year buckets 1..n; 0 = unknown
    n_price_buckets: int = 0  # price buckets 1..n; 0 = unknown
    dim: int = 64  # output embedding size (the FAISS vector)
    hidden: int = 256  # MLP hidden width in both towers
    demographic_dim: int = 16
    bucket_dim: int = 16  # year, price and history-length embeddings
    history_len: int = 50  # recent items the user tower reads, most recent first
    recency_decays: tuple[float, ...] = (0.3, 0.8, 0.97)  # initial per-position decay of each pooling kernel
    dropout: float = 0.0  # on each tower's MLP input, while training


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.GELU(), nn.Linear(hidden, n_out))


@dataclass
class ItemContent:
    """Content of every item, row i = item index i (row 0: padding, all zeros)."""

    categories: torch.Tensor  # [n + 1, C] category indices, 0-padded
    tokens: torch.Tensor  # [n + 1, T] title-word indices, 0-padded
    year: torch.Tensor  # [n + 1] year bucket, 0 = unknown
    price: torch.Tensor  # [n + 1] price bucket, 0 = unknown

    @classmethod
    def from_rows(cls, rows: list[tuple[list[int], list[int], int, int]]) -> ItemContent:
        """From content_indices() tuples, one per row (row 0 included)."""
        def pad(lists: list[list[int]]) -> torch.Tensor:
            out = torch.zeros(len(lists), max(1, max((len(x) for x in lists), default=1)), dtype=torch.long)
            for r, x in enumerate(lists):
                out[r, : len(x)] = torch.tensor(x, dtype=torch.long)
            return out

        return cls(
            categories=pad([r[0] for r in rows]), tokens=pad([r[1] for r in rows]),
            year=torch.tensor([r[2] for r in rows], dtype=torch.long),
            price=torch.tensor([r[3] for r in rows], dtype=torch.long),
        )


class ItemTower(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.id_emb = nn.Embedding(cfg.n_items + 1, cfg.dim, padding_idx=0)
        # padding_idx rows are left out of the means: an item without categories gets zeros
        self.category_emb = nn.EmbeddingBag(cfg.n_categories + 1, cfg.dim, mode="mean", padding_idx=0)
        self.token_emb = nn.EmbeddingBag(cfg.n_tokens + 1, cfg.dim, mode="mean", padding_idx=0)
        self.year_emb = nn.Embedding(cfg.n_year_buckets + 1, cfg.bucket_dim, padding_idx=0)
        self.price_emb = nn.Embedding(cfg.n_price_buckets + 1, cfg.bucket_dim, padding_idx=0)
        self.mlp = _mlp(3 * cfg.dim + 2 * cfg.bucket_dim, cfg.hidden, cfg.dim)
        self.dropout = cfg.dropout

    def forward(
        self, items: torch.Tensor, categories: torch.Tensor, tokens: torch.Tensor, year: torch.Tensor,
        price: torch.Tensor, id_keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """items [B] (0 = unknown: content only), categories [B, C], tokens [B, T], year [B], price [B]
        -> [B, dim] unit vectors. id_keep [B] (0/1) drops the id of some rows while training."""
        ids = self.id_emb(items)
        if id_keep is not None:
            ids = ids * id_keep.unsqueeze(1)
        x = torch.cat([ids, self.category_emb(categories), self.token_emb(tokens),
                       self.year_emb(year), self.price_emb(price)], dim=-1)
        return F.normalize(self.mlp(F.dropout(x, self.dropout, self.training)), dim=-1)


def length_bucket(n: torch.Tensor) -> torch.Tensor:
    """History length -> 0 (none), 1 (one item), 2 (2-3), 3 (4-7), ... (log2 buckets)."""
    return torch.where(n > 0, torch.log2(n.clamp_min(1).float()).floor().long() + 1, 0)


class UserTower(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.history_len = cfg.history_len
        self.history_emb = nn.Embedding(cfg.n_items + 1, cfg.dim, padding_idx=0)
        # log-weights per (kernel, recency position), starting as exponential decays
        positions = torch.arange(cfg.history_len, dtype=torch.float32)
        self.kernel_logit = nn.Parameter(torch.stack([positions * math.log(d) for d in cfg.recency_decays]))
        self.length_emb = nn.Embedding(int(math.log2(max(cfg.history_len, 1))) + 2, cfg.bucket_dim)
        self.demographic_embs = nn.ModuleList(
            nn.Embedding(size, cfg.demographic_dim, padding_idx=0) for size in cfg.demographic_sizes.values()
        )
        n_in = len(cfg.recency_decays) * cfg.dim + cfg.bucket_dim + cfg.demographic_dim * len(cfg.demographic_sizes)
        self.mlp = _mlp(n_in, cfg.hidden, cfg.dim)
        self.dropout = cfg.dropout

    def forward(self, history: torch.Tensor, demographics: torch.Tensor) -> torch.Tensor:
        """history [B, L] item indices (most recent first, 0 = none), demographics [B, K] -> [B, dim]."""
        length = history.shape[1]
        present = history > 0  # [B, L]
        logit = self.kernel_logit[:, :length].unsqueeze(0).masked_fill(~present.unsqueeze(1), -torch.inf)
        weight = torch.softmax(logit, dim=-1).nan_to_num(0.0)  # [B, K, L]; an empty history pools to zeros
        pooled = torch.einsum("bkl,bld->bkd", weight, self.history_emb(history)).flatten(1)
        demo = [emb(demographics[:, k]) for k, emb in enumerate(self.demographic_embs)]
        x = torch.cat([pooled, self.length_emb(length_bucket(present.sum(1))), *demo], dim=-1)
        return F.normalize(self.mlp(F.dropout(x, self.dropout, self.training)), dim=-1)


class TwoTower(nn.Module):
    def __init__(self, cfg: ModelConfig, content: ItemContent) -> None:
        super().__init__()
        self.config = cfg
        self.item_tower = ItemTower(cfg)
        self.user_tower = UserTower(cfg)
        for name in ("categories", "tokens", "year", "price"):
            self.register_buffer(f"item_{name}", getattr(content, name), persistent=True)

    def items(self, items: torch.Tensor, id_keep: torch.Tensor | None = None) -> torch.Tensor:
        return self.item_tower(items, self.item_categories[items], self.item_tokens[items], self.item_year[items],
                               self.item_price[items], id_keep)

    def users(self, history: torch.Tensor, demographics: torch.Tensor) -> torch.Tensor:
        return self.user_tower(history, demographics)

    @torch.no_grad()
    def all_items(self, batch_size: int = 65536) -> torch.Tensor:
        """[n_items + 1, dim] embeddings of every item; row 0 (padding) is meaningless."""
        ids = torch.arange(self.config.n_items + 1)
        return torch.cat([self.items(chunk) for chunk in ids.split(batch_size)])
