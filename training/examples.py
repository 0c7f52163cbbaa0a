"""Training examples: every interaction, in time order per user, with the history before it.

Histories are not materialized (50 indices x every interaction would not fit at tens of
millions of interactions); they are gathered per batch from one sorted item array:
the history of position p is items[p-1], items[p-2], ... back to the user's first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from core.vocab import Vocab
from training.dataset import Dataset


@dataclass
class Examples:
    items: torch.Tensor  # [E] item index of every interaction, sorted by user, then time
    start: torch.Tensor  # [E] position of the same user's first interaction
    stop: torch.Tensor  # [E] end (exclusive) of the same user's training positions: held-out ones stay out
    user: torch.Tensor  # [E] row of the user in `demographics`
    demographics: torch.Tensor  # [n_users, K] demographic indices (0 = unknown)
    train: torch.Tensor  # positions to train on
    holdout: torch.Tensor  # positions held out for evaluation: each user's last interaction

    def history(self, positions: torch.Tensor, length: int) -> torch.Tensor:
        """[P, length] item indices before each position, most recent first, 0-padded."""
        back = positions.unsqueeze(1) - torch.arange(1, length + 1)  # [P, length]
        valid = back >= self.start[positions].unsqueeze(1)
        return torch.where(valid, self.items[back.clamp_min(0)], 0)

    def future(self, positions: torch.Tensor, width: int) -> torch.Tensor:
        """[P, width] item indices from each position on (its own first), 0-padded at the user's end.

        The targets of the dense objective: from a history, predict the next few items, not only
        the next one (the user's future is a set; the order within a session is often noise).
        """
        ahead = positions.unsqueeze(1) + torch.arange(width)  # [P, width]
        valid = ahead < self.stop[positions].unsqueeze(1)
        return torch.where(valid, self.items[ahead.clamp_max(len(self.items) - 1)], 0)

    def prior(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every item before each position, all of them: (row in `positions`, item index) pairs."""
        counts = positions - self.start[positions]
        rows = torch.repeat_interleave(torch.arange(len(positions)), counts)
        first = torch.cumsum(counts, 0) - counts  # offset of each row's block
        offsets = torch.arange(int(counts.sum())) - first[rows]
        return rows, self.items[self.start[positions][rows] + offsets]

    def item_counts(self, n_items: int) -> torch.Tensor:
        """[n_items + 1] how often each item is a training target."""
        return torch.bincount(self.items[self.train], minlength=n_items + 1).float()


def build_examples(dataset: Dataset, vocab: Vocab, holdout: bool) -> Examples:
    inter = dataset.interactions
    items = pd.Index(vocab.item_ids).get_indexer(inter["item_id"]) + 1  # 0 = not in the catalogue
    keep = items > 0  # load_files rejects unknown items; other sources may still carry a few
    users, user_ids = pd.factorize(inter["user_id"][keep])
    ts = inter["ts"][keep].astype("int64").to_numpy()  # ns since the epoch
    # Same-second interactions (3 in 4 in MovieLens) are ordered as serving orders the history
    # (storage.interactions.user_history: max(ts) DESC, item_id), so position means the same in both.
    id_rank = pd.factorize(inter["item_id"][keep], sort=True)[0]
    order = np.lexsort((-id_rank, ts, users))
    items, users = items[keep][order], users[order]

    n = len(items)
    first = np.ones(n, dtype=bool)
    first[1:] = users[1:] != users[:-1]
    start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    last = np.ones(n, dtype=bool)
    last[:-1] = first[1:]
    # hold out each user's last interaction, only where the user has something else to learn from
    held = last & ~first if holdout else np.zeros(n, dtype=bool)
    end = np.flatnonzero(last) + 1  # exclusive end of each user's block
    stop = np.repeat(end - held[last], np.diff(np.concatenate([[0], end])))

    demographics_of = dict(zip(dataset.users["user_id"], dataset.users["demographics"], strict=True))
    demographics = [vocab.demographic_indices(demographics_of.get(u, {})) for u in user_ids]
    return Examples(
        items=torch.from_numpy(items.astype(np.int64)),
        start=torch.from_numpy(start.astype(np.int64)),
        stop=torch.from_numpy(stop.astype(np.int64)),
        user=torch.from_numpy(users.astype(np.int64)),
        demographics=torch.tensor(demographics, dtype=torch.long).reshape(len(user_ids), len(vocab.demographics)),
        train=torch.from_numpy(np.flatnonzero(~held)),
        holdout=torch.from_numpy(np.flatnonzero(held)),
    )
