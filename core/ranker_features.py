"""What the learned ranker knows about a (user, candidate item) pair.

One module computes the features for training (training/ranker.py) and for serving
(ranking/ranker.py), so a feature means the same thing in both places. Everything a
request needs is in process memory: per-item arrays, an EASE item-item matrix,
co-visitation neighbour lists and TF-IDF vectors, all built from the interactions the
ranker's models were trained on. The user is their recent items, most recent first;
recency is position in that list (the request carries no timestamps).

A feature that cannot be computed is NaN (an item unknown to the ranker, a user
without history, no year in the data); gradient-boosted trees route missing values
on their own.

    two_tower, tt_rank, tt_gap     user-tower . item-tower score; its rank and gap to the best in the request
    ease, ease_recent, ease_rank   EASE item-item scores over the history, plain and recency-weighted; rank
    covisitation     co-visitation with the history, recency-weighted
    sim_last, sim_max5, sim_mean   item-embedding cosine to the last item, the best of the last 5, the mean
    content          TF-IDF cosine to the history's (recency-weighted) profile
    category_share, category_max   share of the history in the item's categories: mean and best category
    popularity, recent_popularity  log interaction counts: all time, the last `recent_days`
    rating           shrunk mean rating (NaN without ratings)
    year, year_gap, price_gap      the item's year; distance of year / log price from the history's mean
    popularity_gap   the item's log popularity minus the history's (mainstream or niche taste)
    history_len, history_popularity   the user: how many recent items, how popular they are
    ease_session, covisitation_session, session_len   with the recent items' times (optional): EASE and
                     co-visitation weighted 0.5 ** (time before the latest item / session_half_life_s), and
                     that weight's sum (how many items the latest session holds); NaN without times
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from core import npz_store

FEATURES = (
    "two_tower", "tt_rank", "tt_gap", "ease", "ease_recent", "covisitation", "sim_last", "sim_max5", "sim_mean",
    "content", "category_share", "category_max", "popularity", "recent_popularity", "rating", "year", "year_gap",
    "price_gap", "popularity_gap", "ease_rank", "history_len", "history_popularity",
    "ease_session", "covisitation_session", "session_len",
)
COL = {name: i for i, name in enumerate(FEATURES)}

NAME = "ranker_signals"  # ranker_signals.npz + ranker_signals.json in the ranker's folder


@dataclass
class SignalConfig:
    ease_lambda: float = 300.0  # L2 of EASE (chosen on validation for MovieLens-100K)
    ease_max_items: int = 4096  # EASE is a dense n x n matrix (64 MB at 4096): above this its features are NaN
    recent_days: float = 30.0  # recent popularity window, back from the newest interaction
    half_life: float = 10.0  # recency weight of the k-th most recent item: 0.5 ** (k / half_life)
    session_half_life_s: float = 120.0  # the session features' weight halves every this many seconds back
    rating_prior_n: float = 10.0  # ratings the shrinkage prior (the global mean) is worth


@dataclass
class RankerSignals:
    """Per-item data the features read; row i describes item_ids[i]."""

    item_ids: list[str]
    popularity: np.ndarray  # float32 log1p(interactions)
    recent_popularity: np.ndarray  # float32 log1p(interactions in the last recent_days)
    rating: np.ndarray  # float32 shrunk mean rating; NaN where the data has no ratings
    year: np.ndarray  # float32, NaN unknown
    log_price: np.ndarray  # float32, NaN unknown
    categories: sp.csr_matrix  # float32 [n, n_categories], 0/1
    content: sp.csr_matrix  # float32 [n, n_terms], unit rows (core.content's TF-IDF)
    covisitation: sp.csr_matrix  # float32 [n, n] neighbour scores (core.covisitation)
    ease: np.ndarray | None  # float32 [n, n], None above ease_max_items
    config: SignalConfig

    def __post_init__(self) -> None:
        self.row = {item_id: i for i, item_id in enumerate(self.item_ids)}
        # Requests read rows of these matrices through raw CSR arrays (_Csr): scipy's indexing
        # checks cost more than the arithmetic at a few hundred rows.
        self._covisitation = _Csr(self.covisitation)  # row = history item, column = its neighbours
        self._content = _Csr(self.content)
        self._categories = _Csr(self.categories)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def rows(self, item_ids: list[str]) -> np.ndarray:
        """int64 rows of item ids, -1 where unknown."""
        get = self.row.get
        return np.fromiter((get(i, -1) for i in item_ids), dtype=np.int64, count=len(item_ids))

    # ------------------------------------------------------------------------ features

    def features(
        self, history: np.ndarray, candidates: np.ndarray, tt_scores: np.ndarray, vectors: np.ndarray,
        has_vector: np.ndarray, gaps: np.ndarray | None = None,
    ) -> np.ndarray:
        """float32 [len(candidates), len(FEATURES)].

        history: the user's item rows, most recent first, known items only, no repeats;
        candidates: rows, -1 for items the ranker does not know; tt_scores: the two-tower
        score of each candidate (NaN when unknown); vectors: [n_items, D] item-tower vectors
        by row, has_vector: which rows have one; gaps (optional): seconds from each history item's
        interaction to the latest one's, aligned with history.
        """
        n = len(candidates)
        out = np.full((n, len(FEATURES)), np.nan, dtype=np.float32)
        known = candidates >= 0
        c = np.where(known, candidates, 0)

        out[:, COL["two_tower"]] = tt_scores
        finite = np.isfinite(tt_scores)
        if finite.any():
            out[:, COL["tt_rank"]] = _rank(tt_scores)
            out[:, COL["tt_gap"]] = tt_scores - tt_scores[finite].max()

        out[:, COL["popularity"]] = self.popularity[c]
        out[:, COL["recent_popularity"]] = self.recent_popularity[c]
        out[:, COL["rating"]] = self.rating[c]
        out[:, COL["year"]] = self.year[c]
        out[:, COL["history_len"]] = len(history)

        if len(history):
            w = recency_weights(len(history), self.config.half_life)
            w_norm = w / w.sum()
            if self.ease is not None:
                block = self.ease.take(history, axis=0).take(c, axis=1)  # [H, C]; np.ix_ costs 2.5x
                out[:, COL["ease"]] = block.sum(axis=0)
                out[:, COL["ease_recent"]] = np.where(known, w @ block, np.nan)
                out[:, COL["ease_rank"]] = _rank(out[:, COL["ease_recent"]])
            # the history's neighbour lists (50 short rows), not the candidates' in-lists (hundreds, long)
            covisit = self._covisitation.rows_to(history, c)
            out[:, COL["covisitation"]] = covisit(w_norm)
            out[:, COL["content"]] = self._content.rows_dot(c, self._content.weighted_sum(history, w_norm))

            share = self._categories.weighted_sum(history, w_norm)  # [n_categories]
            pos, owner = self._categories.positions(c)
            n_cats = np.bincount(owner, minlength=n)
            hit = share[self._categories.indices[pos]]
            total = np.bincount(owner, weights=hit, minlength=n)
            best = np.zeros(n, dtype=np.float64)
            np.maximum.at(best, owner, hit)
            has_cats = n_cats > 0
            out[:, COL["category_share"]] = np.where(has_cats, total / np.maximum(n_cats, 1), np.nan)
            out[:, COL["category_max"]] = np.where(has_cats, best, np.nan)

            with_vec = history[has_vector[history]]
            if len(with_vec):
                cand_vec = vectors[c]
                sims = cand_vec @ vectors[with_vec[:5]].T  # [C, <=5]
                out[:, COL["sim_last"]] = sims[:, 0]
                out[:, COL["sim_max5"]] = sims.max(axis=1)
                out[:, COL["sim_mean"]] = cand_vec @ vectors[with_vec].mean(axis=0)
                no_vec = ~has_vector[c]
                out[no_vec, COL["sim_last"]: COL["sim_mean"] + 1] = np.nan

            if gaps is not None:
                ws = (0.5 ** (np.maximum(gaps, 0.0) / self.config.session_half_life_s)).astype(np.float32)
                out[:, COL["session_len"]] = ws.sum()
                if self.ease is not None:
                    out[:, COL["ease_session"]] = ws @ block
                out[:, COL["covisitation_session"]] = covisit(ws)

            hist_pop = float(self.popularity[history] @ w_norm)
            out[:, COL["history_popularity"]] = hist_pop
            out[:, COL["popularity_gap"]] = self.popularity[c] - hist_pop
            for col, values in (("year_gap", self.year), ("price_gap", self.log_price)):
                hist_values = values[history]
                finite_values = hist_values[np.isfinite(hist_values)]
                if len(finite_values):
                    out[:, COL[col]] = np.abs(values[c] - finite_values.mean())

        if not known.all():
            user_cols = [COL["history_len"], COL["history_popularity"], COL["session_len"]]
            kept = out[~known][:, user_cols]
            out[~known, COL["ease"]:] = np.nan  # everything item-based; the user's own features stay
            out[np.ix_(~known, user_cols)] = kept
        return out

    # ------------------------------------------------------------------------- persist

    def save(self, folder: Path) -> None:
        arrays: dict[str, np.ndarray] = {
            "popularity": self.popularity, "recent_popularity": self.recent_popularity, "rating": self.rating,
            "year": self.year, "log_price": self.log_price,
        }
        for name in ("categories", "content", "covisitation"):
            m: sp.csr_matrix = getattr(self, name)
            arrays.update({f"{name}_indptr": m.indptr, f"{name}_indices": m.indices, f"{name}_data": m.data})
            arrays[f"{name}_shape"] = np.array(m.shape, dtype=np.int64)
        if self.ease is not None:
            arrays["ease"] = self.ease
        npz_store.save(folder, NAME, arrays, {"item_ids": self.item_ids, "config": asdict(self.config)})

    @classmethod
    def load(cls, folder: Path) -> RankerSignals:
        stored = npz_store.load(folder, NAME)
        if stored is None:
            raise FileNotFoundError(f"{npz_store.npz_path(folder, NAME)}: the ranker's signals are missing")
        z, meta = stored

        def csr(name: str) -> sp.csr_matrix:
            return sp.csr_matrix((z[f"{name}_data"], z[f"{name}_indices"], z[f"{name}_indptr"]),
                                 shape=tuple(z[f"{name}_shape"]))

        return cls(
            item_ids=list(meta["item_ids"]), popularity=z["popularity"], recent_popularity=z["recent_popularity"],
            rating=z["rating"], year=z["year"], log_price=z["log_price"], categories=csr("categories"),
            content=csr("content"), covisitation=csr("covisitation"), ease=z.get("ease"),
            config=SignalConfig(**meta["config"]),
        )


def _rank(values: np.ndarray) -> np.ndarray:
    """Rank of each value among the finite ones, best (highest) = 0, scaled to 0..1; NaN stays NaN."""
    finite = np.isfinite(values)
    order = np.argsort(np.where(finite, -values, np.inf), kind="stable")
    rank = np.empty(len(values), dtype=np.float32)
    rank[order] = np.arange(len(values), dtype=np.float32)
    return np.where(finite, rank / max(int(finite.sum()) - 1, 1), np.nan)


class _Csr:
    """Row reads of a CSR matrix in plain numpy."""

    def __init__(self, m: sp.csr_matrix) -> None:
        m = m.tocsr()
        m.sort_indices()
        self.indptr, self.indices, self.data = m.indptr.astype(np.int64), m.indices, m.data
        self.n_cols = m.shape[1]
        self._local = threading.local()  # rows_to's scratch, one per thread (training builds in threads)

    def positions(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Entry positions of the given rows and which of `rows` (0..len-1) each belongs to."""
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lengths = ends - starts
        owner = np.repeat(np.arange(len(rows)), lengths)
        pos = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths) + starts[owner]
        return pos, owner

    def rows_dot(self, rows: np.ndarray, vector: np.ndarray) -> np.ndarray:
        """[len(rows)]: each row . a dense vector."""
        pos, owner = self.positions(rows)
        return np.bincount(owner, weights=self.data[pos] * vector[self.indices[pos]], minlength=len(rows))

    def rows_to(self, rows: np.ndarray, columns: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """For weights over `rows`: [len(columns)], each column's sum of weights[i] * entry (row i, column)
        (columns may repeat). The entries are found once; the function applies any number of weightings."""
        pos, owner = self.positions(rows)
        # each column's slot in a scratch array as long as a row (no sort of the columns, no search):
        # slot[column] = the position of its last occurrence, -1 elsewhere, reset before returning
        slot = self._slots()
        slot[columns] = np.arange(len(columns))
        try:
            last = slot[columns]  # a repeated column reads its last occurrence's sum
            at = slot[self.indices[pos]]
        finally:
            slot[columns] = -1
        hit = at >= 0
        at, data, owner = at[hit], self.data[pos][hit], owner[hit]

        def apply(weights: np.ndarray) -> np.ndarray:
            return np.bincount(at, weights=data * weights[owner], minlength=len(columns))[last]

        return apply

    def _slots(self) -> np.ndarray:
        """This thread's scratch array of n_cols slots, all -1 between calls."""
        slots = getattr(self._local, "slots", None)
        if slots is None:
            slots = self._local.slots = np.full(self.n_cols, -1, dtype=np.int64)
        return slots

    def weighted_sum(self, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """[n_cols]: sum of weights[i] * row i."""
        pos, owner = self.positions(rows)
        return np.bincount(self.indices[pos], weights=self.data[pos] * weights[owner], minlength=self.n_cols)


def recency_weights(n: int, half_life: float) -> np.ndarray:
    """Weight of the k-th most recent item: 0.5 ** (k / half_life)."""
    return (0.5 ** (np.arange(n) / half_life)).astype(np.float32)
