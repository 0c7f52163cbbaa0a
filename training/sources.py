"""The retrieval service's sources other than the two-tower, built from a dataset: co-visitation,
TF-IDF content and segment popularity. Their formats and what serving does with them are in
core/covisitation.py, core/content.py and core/segments.py."""

from __future__ import annotations

import math
from collections import Counter
from typing import NamedTuple

import numpy as np
import pandas as pd

from core import content, covisitation, segments
from training.dataset import Dataset


class SourceArtifacts(NamedTuple):
    """Each with save(folder): iterate it for artifacts.export's `extras`. The ranker's signals read the
    co-visitation and TF-IDF ones too (training.ranker_signals.build_signals), so they are built once."""

    covisitation: covisitation.Covisitation
    content: content.ContentIndex
    segments: segments.SegmentPopularity


def source_artifacts(dataset: Dataset) -> SourceArtifacts:
    """"Also bought" (co-visitation), content similarity (TF-IDF) and segment popularity."""
    return SourceArtifacts(build_covisitation(dataset), build_content(dataset), build_segments(dataset))


def build_covisitation(
    dataset: Dataset, config: covisitation.CovisitationConfig | None = None
) -> covisitation.Covisitation:
    cfg = config or covisitation.CovisitationConfig()
    item_ids = [str(i) for i in dataset.items["item_id"]]
    n = len(item_ids)
    inter = dataset.interactions
    weight = covisitation.interaction_weights(inter["type"].to_numpy(), inter["value"].to_numpy(), cfg.rating_max)
    keep = weight > 0
    item = pd.Categorical(inter["item_id"][keep], categories=item_ids).codes.astype(np.int64)
    user = pd.factorize(inter["user_id"][keep])[0]
    ts = inter["ts"][keep].astype("int64").to_numpy() / 1e9  # datetime64[ns, UTC] -> unix seconds
    weight = weight[keep]
    order = np.lexsort((ts, user))  # each user's interactions in time order
    item, user, ts, weight = item[order], user[order], ts[order], weight[order]

    src, dst, w = [], [], []
    for lag in range(1, cfg.max_lag + 1):
        a, b = slice(0, len(item) - lag), slice(lag, len(item))
        ok = (user[a] == user[b]) & (ts[b] - ts[a] <= cfg.window_s) & (item[a] != item[b]) & (item[a] >= 0) \
            & (item[b] >= 0)
        if not ok.any():
            break  # no user has this many interactions within the window
        pair_w = weight[a][ok] * weight[b][ok]
        src += [item[a][ok], item[b][ok]]
        dst += [item[b][ok], item[a][ok]]
        w += [pair_w, pair_w]
    if not src:
        return covisitation.Covisitation(item_ids, np.zeros(n + 1, np.int64), np.zeros(0, np.int32),
                                         np.zeros(0, np.float32), cfg)

    keys, inverse = np.unique(np.concatenate(src) * n + np.concatenate(dst), return_inverse=True)
    counts = np.bincount(inverse, weights=np.concatenate(w))
    a, b = keys // n, keys % n
    totals = np.bincount(a, weights=counts, minlength=n)
    scores = counts / np.sqrt(totals[a] * totals[b])
    ok = counts >= cfg.min_count
    a, b, scores = a[ok], b[ok], scores[ok]

    order = np.lexsort((-scores, a))  # by item, best first
    a, b, scores = a[order], b[order], scores[order]
    starts = np.searchsorted(a, np.arange(n))
    rank = np.arange(len(a)) - starts[a]
    top = rank < cfg.top_n
    a, b, scores = a[top], b[top], scores[top]
    indptr = np.zeros(n + 1, dtype=np.int64)
    indptr[1:] = np.cumsum(np.bincount(a, minlength=n))
    return covisitation.Covisitation(item_ids, indptr, b.astype(np.int32), scores.astype(np.float32), cfg)


def build_content(dataset: Dataset) -> content.ContentIndex:
    items = dataset.items
    docs = [Counter(content.tokens(t, d, c, b)) for t, d, c, b in
            zip(items["title"], items["description"], items["categories"], items["brand"], strict=True)]
    df = Counter(t for doc in docs for t in doc)
    terms = sorted(df)
    term_index = {t: i for i, t in enumerate(terms)}
    n = len(docs)
    idf = np.array([math.log((1 + n) / (1 + df[t])) + 1 for t in terms], dtype=np.float32)
    indptr = np.zeros(n + 1, dtype=np.int64)
    ids, weights = [], []
    for i, doc in enumerate(docs):
        t_ids, w = content.weigh(doc, term_index, idf)
        ids.append(t_ids)
        weights.append(w)
        indptr[i + 1] = indptr[i] + len(t_ids)
    return content.ContentIndex(
        [str(i) for i in items["item_id"]], terms, idf, indptr,
        np.concatenate(ids) if ids else np.zeros(0, np.int32),
        np.concatenate(weights) if weights else np.zeros(0, np.float32),
    )


def build_segments(
    dataset: Dataset, config: segments.SegmentConfig | None = None
) -> segments.SegmentPopularity:
    cfg = config or segments.SegmentConfig()
    users = pd.DataFrame({"user_id": dataset.users["user_id"],
                          "segment": [segments.segment_tokens(d) for d in dataset.users["demographics"]]})
    users = users.explode("segment").dropna()
    sizes = users["segment"].value_counts()
    users = users[users["segment"].isin(sizes[sizes >= cfg.min_users].index)]

    inter = dataset.interactions
    weight = covisitation.interaction_weights(inter["type"].to_numpy(), inter["value"].to_numpy())
    events = pd.DataFrame({"user_id": inter["user_id"], "item_id": inter["item_id"], "w": weight})
    events = events[events["w"] > 0]
    overall = events.groupby("item_id")["w"].sum()
    total = float(overall.sum())

    per = events.merge(users, on="user_id").groupby(["segment", "item_id"], sort=False)["w"].sum().reset_index()
    per = per[per["w"] >= cfg.min_count]
    seg_total = per.groupby("segment")["w"].transform("sum").to_numpy()
    lift = (per["w"].to_numpy() / seg_total) / (overall.reindex(per["item_id"]).to_numpy() / total)
    per["score"] = per["w"].to_numpy() * np.sqrt(lift)
    per = per.sort_values(["segment", "score", "item_id"], ascending=[True, False, True])
    lists = {
        s: [(str(i), float(x)) for i, x in zip(g["item_id"].head(cfg.top_n), g["score"].head(cfg.top_n), strict=True)]
        for s, g in per.groupby("segment", sort=True)
    }
    return segments.SegmentPopularity(lists, cfg)
