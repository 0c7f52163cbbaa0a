"""The learned ranker's per-item signals (core.ranker_features.RankerSignals), built from a dataset.

Serving loads them from the version folder and computes the features over them; only
training builds them, from the interactions the ranker's models were trained on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from core.ranker_features import RankerSignals, SignalConfig
from core.vocab import item_year
from training.dataset import Dataset
from training.sources import SourceArtifacts, source_artifacts


def build_signals(
    dataset: Dataset, config: SignalConfig | None = None, sources: SourceArtifacts | None = None,
) -> RankerSignals:
    """Per-item signals from a dataset's items and (only) its interactions. `sources`: the co-visitation
    and TF-IDF artifacts of the same dataset when already built (for retrieval), else built here."""
    cfg = config or SignalConfig()
    items = dataset.items
    item_ids = [str(i) for i in items["item_id"]]
    n = len(item_ids)
    inter = dataset.interactions
    rows = pd.Index(item_ids).get_indexer(inter["item_id"])
    keep = rows >= 0
    rows, inter = rows[keep], inter[keep]

    counts = np.bincount(rows, minlength=n).astype(np.float32)
    recent = np.zeros(n, dtype=np.float32)
    if len(inter):
        newest = inter["ts"].max()
        in_window = (inter["ts"] > newest - pd.Timedelta(days=cfg.recent_days)).to_numpy()
        recent = np.bincount(rows[in_window], minlength=n).astype(np.float32)

    rated = (inter["type"] == "rating").to_numpy()
    rating = np.full(n, np.nan, dtype=np.float32)
    if rated.any():
        values = inter["value"].to_numpy(dtype=np.float64)[rated]
        sums = np.bincount(rows[rated], weights=values, minlength=n)
        ns = np.bincount(rows[rated], minlength=n)
        prior = float(values.mean())
        rating = ((sums + prior * cfg.rating_prior_n) / (ns + cfg.rating_prior_n)).astype(np.float32)

    year = np.array([np.nan if (y := item_year(a)) is None else y for a in items["attributes"]], dtype=np.float32)
    prices = items["price"].to_numpy(dtype=np.float64)
    log_price = np.where(np.isfinite(prices) & (prices >= 0), np.log1p(np.where(prices >= 0, prices, 0)), np.nan)

    categories = sorted({c for cs in items["categories"] for c in cs})
    cat_index = {c: i for i, c in enumerate(categories)}
    cat_rows = [(r, cat_index[c]) for r, cs in enumerate(items["categories"]) for c in set(cs)]
    cat_matrix = sp.csr_matrix(
        (np.ones(len(cat_rows), np.float32), ([r for r, _ in cat_rows], [c for _, c in cat_rows])),
        shape=(n, max(1, len(categories))))

    sources = sources or source_artifacts(dataset)
    text = sources.content
    content_matrix = sp.csr_matrix((text.weights, text.term_ids, text.indptr), shape=(n, max(1, len(text.terms))))
    cov = sources.covisitation
    cov_matrix = sp.csr_matrix((cov.scores, cov.neighbours, cov.indptr), shape=(n, n))

    return RankerSignals(
        item_ids=item_ids, popularity=np.log1p(counts), recent_popularity=np.log1p(recent), rating=rating, year=year,
        log_price=log_price.astype(np.float32), categories=cat_matrix, content=content_matrix.astype(np.float32),
        covisitation=cov_matrix.astype(np.float32), ease=_ease(rows, inter, n, cfg), config=cfg,
    )


def _ease(rows: np.ndarray, inter: pd.DataFrame, n: int, cfg: SignalConfig) -> np.ndarray | None:
    """EASE (Steck 2019): B = I - P / diag(P) with P = (X'X + lambda I)^-1, over binary user x item data."""
    if n > cfg.ease_max_items or n == 0:
        return None
    users = pd.factorize(inter["user_id"])[0]
    x = sp.csr_matrix((np.ones(len(rows), np.float32), (users, rows)), shape=(int(users.max(initial=-1)) + 1, n))
    x.data[:] = 1.0  # repeats count once
    gram = (x.T @ x).toarray().astype(np.float64)
    gram[np.diag_indices(n)] += cfg.ease_lambda
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b.astype(np.float32)
