"""Train the two-tower model: a softmax over the whole catalogue, or in-batch with logQ correction.

Every interaction is an example: the user's history before it (most recent first) and
demographics -> the items from it on. Two ways to get negatives:

- full (catalogues up to FULL_SOFTMAX_MAX_ITEMS): every item is a negative. The item
  tower runs over the whole catalogue once per batch, which at a few thousand items
  costs less than the user tower. Items the user already had are masked out of the
  softmax, as serving and evaluation exclude them.
- in_batch (large catalogues): the other items of the batch are the negatives. Popular
  items show up as in-batch negatives more often than a uniform sample would, which
  pushes them down too hard; subtracting log q(item) from the logits (logQ correction,
  Yi et al. 2019) undoes that bias.

With future_window W > 1 (full softmax only) an example's targets are its next W items
(PinnerFormer's dense all-action loss): what a user does next is a set more than a
sequence, and that is what a recommender is judged on. Each user's last interaction
is held out and the model is compared with the popularity baseline on it.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from core.two_tower import ItemContent, ModelConfig, TwoTower
from core.vocab import Vocab
from training import evaluate
from training.dataset import Dataset
from training.examples import Examples, build_examples

FULL_SOFTMAX_MAX_ITEMS = 20_000  # above this the per-batch item tower pass over the catalogue gets slow


@dataclass
class TrainConfig:
    dim: int = 64
    hidden: int = 256
    history_len: int = 50
    demographic_keys: tuple[str, ...] = ("age", "gender", "occupation")
    max_categories: int = 16  # per item; more are cut
    max_tokens: int = 16  # title words per item; more are cut
    epochs: int = 5  # chosen on validation (per-user protocol); more starts to overfit
    batch_size: int = 1024  # as good as 512 on validation, and the catalogue pass per step is paid half as often
    lr: float = 4e-3
    weight_decay: float = 0.0
    temperature: float = 0.1
    negatives: str = "auto"  # "full", "in_batch", or "auto": full up to FULL_SOFTMAX_MAX_ITEMS items
    future_window: int = 1  # targets per example with full negatives: the next W items
    id_dropout: float = 0.1  # share of item ids hidden from the item tower per step: trains the content path
    dropout: float = 0.1  # on the towers' MLP inputs
    user_weighting: str = "none"  # "sqrt": an example weighs 1/sqrt(its user's examples), so heavy users count less
    holdout: bool = True  # hold out each user's last interaction for the metrics
    seed: int = 1337
    threads: int = 1  # torch intra-op threads while training (restored afterwards); 2 is only ~10% faster on
    # a quiet 2-core box and 3-5x slower when anything else runs (OpenMP spin-wait)


@dataclass
class TrainedModel:
    model: TwoTower
    vocab: Vocab
    config: TrainConfig
    metrics: dict[str, Any]

    @torch.no_grad()
    def item_vectors(self) -> np.ndarray:
        """float32 [n_items, dim], row i = vocab.item_ids[i]."""
        return self.model.all_items()[1:].numpy().astype(np.float32)

    @torch.no_grad()
    def user_vectors(self, recent_item_ids: list[list[str]], attributes: list[dict[str, Any]]) -> np.ndarray:
        """float32 [U, dim] user-tower vectors; each history most recent first (unknown ids skipped)."""
        length = self.model.config.history_len
        history = torch.zeros(len(recent_item_ids), length, dtype=torch.long)
        for row, ids in enumerate(recent_item_ids):
            known = [i for i in (self.vocab.item_index(x) for x in ids) if i][:length]
            history[row, : len(known)] = torch.tensor(known, dtype=torch.long)
        demographics = torch.tensor([self.vocab.demographic_indices(a) for a in attributes], dtype=torch.long)
        demographics = demographics.reshape(len(attributes), len(self.vocab.demographics))
        return torch.cat([self.model.users(h, d) for h, d in zip(history.split(4096), demographics.split(4096),
                                                                  strict=True)]).numpy().astype(np.float32)


def sampled_softmax_loss(
    users: torch.Tensor, items: torch.Tensor, item_ids: torch.Tensor, log_q: torch.Tensor, temperature: float
) -> torch.Tensor:
    """In-batch softmax: row i's positive is column i, the other columns are its negatives.

    users, items: [B, D] unit vectors; item_ids: [B] item of each column; log_q: [B] log of
    each column item's sampling probability. A column holding the same item as row i's
    positive is not a negative for row i and is masked out.
    """
    logits = users @ items.T / temperature - log_q.unsqueeze(0)
    same = item_ids.unsqueeze(0) == item_ids.unsqueeze(1)
    same.fill_diagonal_(False)
    logits = logits.masked_fill(same, -torch.inf)
    return F.cross_entropy(logits, torch.arange(len(item_ids)))


def full_softmax_loss(
    users: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, seen: torch.Tensor | None, temperature: float,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax over the whole catalogue, several positives per row.

    users [B, D]; items [n + 1, D] (row 0 = padding, never a candidate); targets [B, W] item
    indices (0 = none); seen [B, n + 1] True where the user already had the item (masked out,
    unless it is a target). The loss is the mean negative log-likelihood over the targets.
    """
    logits = users @ items.T / temperature
    logits[:, 0] = -torch.inf
    if seen is not None:
        logits = logits.masked_fill(seen.scatter(1, targets, False), -torch.inf)
    logp = torch.log_softmax(logits, dim=1).gather(1, targets)
    valid = targets > 0
    w = valid.float() if weights is None else valid * weights.unsqueeze(1)
    return -torch.where(valid, logp, 0.0).mul(w).sum() / w.sum().clamp_min(1e-9)


def item_content(dataset: Dataset, vocab: Vocab, config: TrainConfig) -> ItemContent:
    """The content rows of every item in vocab order (row 0 = padding)."""
    items = dataset.items.set_index("item_id").loc[vocab.item_ids]
    brands = items["brand"] if "brand" in items else pd.Series("", index=items.index)
    rows = [([], [], 0, 0)]
    for cats, title, attrs, brand, price in zip(items["categories"], items["title"], items["attributes"], brands,
                                                items["price"], strict=True):
        c, t, y, p = vocab.content_indices(cats, str(title), attrs, str(brand or ""), float(price))
        rows.append((c[: config.max_categories], t[: config.max_tokens], y, p))
    return ItemContent.from_rows(rows)


def _lr(step: int, total: int, config: TrainConfig) -> float:
    """Short linear warmup, then cosine decay to a tenth (nanoGPT's schedule)."""
    warmup = max(1, total // 20)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(dataset: Dataset, config: TrainConfig, progress: bool = True) -> TrainedModel:
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _train(dataset, config, progress)
    finally:
        torch.set_num_threads(threads)


def _negatives(config: TrainConfig, n_items: int) -> str:
    if config.negatives == "auto":
        return "full" if n_items <= FULL_SOFTMAX_MAX_ITEMS else "in_batch"
    if config.negatives not in ("full", "in_batch"):
        raise ValueError(f"TrainConfig.negatives must be 'auto', 'full' or 'in_batch', got {config.negatives!r}")
    return config.negatives


def _train(dataset: Dataset, config: TrainConfig, progress: bool) -> TrainedModel:
    t0 = time.perf_counter()
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)

    vocab = Vocab.build(dataset.items, dataset.users, config.demographic_keys)
    ex = build_examples(dataset, vocab, holdout=config.holdout)
    if len(ex.train) == 0:
        raise ValueError("no interactions to train on: the dataset has none that name a known item")
    model_config = ModelConfig(
        n_items=vocab.n_items,
        n_categories=len(vocab.categories),
        demographic_sizes={k: len(v) + 1 for k, v in vocab.demographics.items()},
        n_tokens=len(vocab.tokens),
        n_year_buckets=len(vocab.year_bounds),
        n_price_buckets=len(vocab.price_bounds),
        dim=config.dim,
        hidden=config.hidden,
        history_len=config.history_len,
        dropout=config.dropout,
    )
    model = TwoTower(model_config, item_content(dataset, vocab, config))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    negatives = _negatives(config, vocab.n_items)
    window = config.future_window if negatives == "full" else 1
    all_items = torch.arange(vocab.n_items + 1)

    counts = ex.item_counts(vocab.n_items)
    per_user = torch.bincount(ex.user[ex.train], minlength=len(ex.demographics)).float()
    example_weight = per_user.clamp_min(1).rsqrt() if config.user_weighting == "sqrt" else None
    log_q = torch.log(counts.clamp_min(1.0) / counts.sum())  # sampling probability of each item as a positive

    steps_per_epoch = math.ceil(len(ex.train) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    step, epoch_loss = 0, math.nan
    for epoch in range(config.epochs):
        model.train()
        loss_sum, n_batches = 0.0, 0
        order = ex.train[torch.randperm(len(ex.train), generator=gen)]
        bar = tqdm(order.split(config.batch_size), desc=f"epoch {epoch + 1}/{config.epochs}",
                   disable=not progress, unit="batch")
        for positions in bar:
            for group in optimizer.param_groups:
                group["lr"] = _lr(step, total_steps, config)
            history = ex.history(positions, config.history_len)
            users = model.users(history, ex.demographics[ex.user[positions]])
            if negatives == "full":
                keep = (torch.rand(len(all_items), generator=gen) >= config.id_dropout).float()
                rows, prior = ex.prior(positions)
                seen = torch.zeros(len(positions), len(all_items), dtype=torch.bool)
                seen[rows, prior] = True
                weights = None if example_weight is None else example_weight[ex.user[positions]]
                loss = full_softmax_loss(users, model.items(all_items, keep), ex.future(positions, window), seen,
                                         config.temperature, weights)
            else:
                target = ex.items[positions]
                keep = (torch.rand(len(positions), generator=gen) >= config.id_dropout).float()
                items = model.items(target, keep)
                loss = sampled_softmax_loss(users, items, target, log_q[target], config.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss_sum, n_batches = loss_sum + loss.item(), n_batches + 1
            bar.set_postfix(loss=f"{loss_sum / n_batches:.3f}", refresh=False)  # drawn at tqdm's own pace
        epoch_loss = loss_sum / max(1, n_batches)

    with torch.no_grad():
        # Items never seen in training kept ids that only ever learned to lose: drop them, so the
        # item tower places them by their content alone, as it does for new items.
        model.item_tower.id_emb.weight[counts == 0] = 0.0
    model.eval()

    metrics: dict[str, Any] = {
        "train_examples": len(ex.train),
        "holdout_users": len(ex.holdout),
        "negatives": negatives,
        "last_epoch_loss": round(epoch_loss, 4),
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    if len(ex.holdout):
        metrics.update(_holdout_metrics(model, ex, config))
    return TrainedModel(model=model, vocab=vocab, config=config, metrics=metrics)


@torch.no_grad()
def _holdout_metrics(model: TwoTower, ex: Examples, config: TrainConfig) -> dict[str, Any]:
    item_emb = model.all_items()

    def two_tower(positions: torch.Tensor) -> torch.Tensor:
        users = model.users(ex.history(positions, config.history_len), ex.demographics[ex.user[positions]])
        return users @ item_emb.T

    popularity = evaluate.popularity_scorer(ex, model.config.n_items)
    return {
        "two_tower": evaluate.ranking_metrics(evaluate.ranks(two_tower, ex)),
        "popularity": evaluate.ranking_metrics(evaluate.ranks(popularity, ex)),
    }


def config_dict(config: TrainConfig | ModelConfig) -> dict[str, Any]:
    """A JSON-ready dict of a config (tuples become lists)."""
    return json_ready(asdict(config))


def json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value
