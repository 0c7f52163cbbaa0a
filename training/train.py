"""Train the two-tower model: in-batch sampled softmax with logQ correction.

Every interaction is an example: the user's history before it (most recent first) and
demographics -> the item. The other items of the batch are the negatives. Popular items
show up as in-batch negatives more often than a uniform sample would, which pushes
them down too hard; subtracting log q(item) from the logits (logQ correction,
Yi et al. 2019) undoes that bias. Each user's last interaction is held out and the
model is compared with the popularity baseline on it.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from training import evaluate
from training.dataset import Dataset
from training.examples import Examples, build_examples
from training.two_tower import ModelConfig, TwoTower
from training.vocab import Vocab


@dataclass
class TrainConfig:
    dim: int = 64
    hidden: int = 128
    history_len: int = 50
    demographic_keys: tuple[str, ...] = ("age", "gender", "occupation")
    max_categories: int = 16  # per item; more are cut
    epochs: int = 10
    batch_size: int = 512
    lr: float = 3e-3
    weight_decay: float = 0.0
    temperature: float = 0.05
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


def _category_matrix(dataset: Dataset, vocab: Vocab, max_categories: int) -> torch.Tensor:
    """[n_items + 1, C] category indices of each item, 0-padded (row 0 is the padding item)."""
    index = vocab.category_index()
    lists = [[index[c] for c in cs[:max_categories]] for cs in dataset.items["categories"]]
    width = max(1, max((len(cs) for cs in lists), default=1))
    out = torch.zeros(vocab.n_items + 1, width, dtype=torch.long)
    for row, cs in enumerate(lists, start=1):
        out[row, : len(cs)] = torch.tensor(cs, dtype=torch.long)
    return out


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
        dim=config.dim,
        hidden=config.hidden,
        history_len=config.history_len,
    )
    model = TwoTower(model_config, _category_matrix(dataset, vocab, config.max_categories))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    counts = ex.item_counts(vocab.n_items)
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
            demographics = ex.demographics[ex.user[positions]]
            target = ex.items[positions]
            users = model.users(history, demographics)
            items = model.items(target)
            loss = sampled_softmax_loss(users, items, target, log_q[target], config.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss_sum, n_batches = loss_sum + loss.item(), n_batches + 1
            bar.set_postfix(loss=f"{loss_sum / n_batches:.3f}", refresh=False)  # drawn at tqdm's own pace
        epoch_loss = loss_sum / max(1, n_batches)

    with torch.no_grad():
        # Items never seen in training kept their random id vectors: drop them, so the
        # item tower places them by their categories alone.
        model.item_tower.id_emb.weight[counts == 0] = 0.0
    model.eval()

    metrics: dict[str, Any] = {
        "train_examples": len(ex.train),
        "holdout_users": len(ex.holdout),
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
