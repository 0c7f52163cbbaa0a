"""Candidate sources over one served version (core.served.Served).

Each source returns scored candidates, best first, never an excluded or inactive item;
the retriever merges them. Sources are plain functions so tests and the offline
evaluation call them without a server.

    two_tower        FAISS nearest items to the user-tower vector (recent items + demographics)
    similar_items    FAISS nearest items to an item's embedding
    also_bought      co-visitation neighbours of an item, or of the user's recent items
    content          TF-IDF cosine to an item, or to the user's recent items
    trending         time-decayed counts in a window, overall / per category / per segment
    segment_popular  what the user's segments like (cold start with demographics)
    popular          all-time most popular items (cold start, fill)
"""

from __future__ import annotations

from collections.abc import Collection
from typing import NamedTuple

import numpy as np

from core.interleave import interleave
from core.served import Served
from core.trending import Trending

ANCHORS = 10  # the user's most recent items that anchor item-to-item sources
ANCHOR_DECAY = 0.8  # weight of the r-th most recent anchor: ANCHOR_DECAY ** r
PROFILE_TERMS = 20  # a user's content profile keeps its strongest terms: a query's cost stays small


class Candidate(NamedTuple):  # a tuple: hundreds are made per request, and tuples are cheap to make
    item_id: str
    score: float
    source: str
    anchor_item_id: str = ""  # the item that led to it ("because you watched X", "similar to X")


# ---------------------------------------------------------------------------- embeddings


def user_query(s: Served, recent_item_ids: list[str], attributes: dict[str, str]) -> np.ndarray | None:
    """The user-tower vector of the user's recent items and demographics; None when nothing is known."""
    return s.arts.user_encoder.encode(recent_item_ids, attributes)


def _search(s: Served, query: np.ndarray, k: int, skip: Collection[str]) -> list[tuple[int, float]]:
    """The k best (row, score) of a FAISS search that are active and not skipped; searches deeper
    when inactive or skipped items crowd the top."""
    total = s.index.ntotal
    n = min(total, k + len(skip) + min(s.n_inactive, k))
    q = query.reshape(1, -1).astype(np.float32)
    ids = s.item_ids
    while True:
        scores, rows = s.index.search(q, n)
        ok = rows[0] >= 0
        ok[ok] = s.active_rows(rows[0][ok])
        found = [(r, sc) for r, sc in zip(rows[0][ok].tolist(), scores[0][ok].tolist(), strict=True)
                 if ids[r] not in skip][:k]
        # Done when full, at the whole catalogue, or when the index ran out of hits: an IVF
        # search returns fewer than n (-1 rows) when its probed lists hold no more.
        if len(found) == k or n >= total or int((rows[0] >= 0).sum()) < n:
            return found
        n = min(total, 4 * n)


def two_tower(
    s: Served, query: np.ndarray | None, recent_item_ids: list[str], k: int, exclude: Collection[str]
) -> list[Candidate]:
    """Nearest items to the user-tower vector; each anchored on the recent item closest to it."""
    if query is None:
        return []
    found = _search(s, query, k, exclude)
    anchors = _anchors(s, [r for r, _ in found], recent_item_ids)
    return [Candidate(s.item_ids[r], sc, "two_tower", a) for (r, sc), a in zip(found, anchors, strict=True)]


def _anchors(s: Served, rows: list[int], recent_item_ids: list[str]) -> list[str]:
    """For each candidate row, the recent item most similar to it (by item embedding)."""
    recent = [(i, s.item_index[i]) for i in recent_item_ids[:50] if i in s.item_index]
    if not recent or not rows:
        return [""] * len(rows)
    sims = s.embeddings[rows] @ s.embeddings[[r for _, r in recent]].T
    return [recent[j][0] for j in sims.argmax(axis=1)]


def similar_items(s: Served, item_id: str, k: int, exclude: Collection[str]) -> list[Candidate]:
    """Nearest items to one item's embedding (an item page's "similar items")."""
    row = s.item_index.get(item_id)
    if row is None:
        return []
    found = _search(s, s.embeddings[row], k, {*exclude, item_id})
    return [Candidate(s.item_ids[r], sc, "similar_items", item_id) for r, sc in found]


def rescore(s: Served, query: np.ndarray, found: list[Candidate]) -> list[Candidate]:
    """The same candidates scored by the user vector, so candidates of every source compare in ranking
    (two_tower's already are)."""
    todo = [n for n, c in enumerate(found) if c.source != "two_tower"]
    if not todo:
        return found
    rows = [s.item_index[found[n].item_id] for n in todo]
    out = list(found)
    for n, sc in zip(todo, (s.embeddings[rows] @ query.astype(np.float32)).tolist(), strict=True):
        c = out[n]
        out[n] = Candidate(c.item_id, sc, c.source, c.anchor_item_id)
    return out


def rescore_by_segments(s: Served, user_segments: list[str], found: list[Candidate]) -> list[Candidate]:
    """The same candidates scored by the user's segments' popularity (0 outside their lists): the
    cold-start counterpart of rescore."""
    total = _segment_scores(s, user_segments)
    return [Candidate(c.item_id, total.get(c.item_id, 0.0), c.source, c.anchor_item_id) for c in found]


# ---------------------------------------------------------------------------- item to item


def also_bought(
    s: Served, anchors: list[str], k: int, exclude: Collection[str], fill_similar: bool = False
) -> list[Candidate]:
    """Co-visitation neighbours of the anchors (an item, or the user's recent items, most recent
    first), summed with recency weights; each candidate anchored on its largest contributor.
    fill_similar: an item page short of co-visitation (a new or rare item) gets embedding neighbours."""
    cov = s.covisitation
    found: list[Candidate] = []
    if cov is not None:
        rows, scores, origin = [], [], []
        for r, a in enumerate(anchors[:ANCHORS]):
            i = cov.row(a)
            if i is None:
                continue
            lo, hi = int(cov.indptr[i]), int(cov.indptr[i + 1])
            rows.append(cov.neighbours[lo:hi])
            scores.append(cov.scores[lo:hi] * ANCHOR_DECAY**r)
            origin.append(np.full(hi - lo, r, np.int32))
        if rows:
            found = _aggregate(cov.item_ids, np.concatenate(rows), np.concatenate(scores), np.concatenate(origin),
                               anchors, s, k, {*exclude, *anchors[:ANCHORS]}, "also_bought")
    if fill_similar and len(found) < k and anchors:
        taken = {*exclude, *(c.item_id for c in found)}
        found += similar_items(s, anchors[0], k - len(found), taken)
    return found


def _aggregate(
    ids: list[str], rows: np.ndarray, scores: np.ndarray, origin: np.ndarray, anchors: list[str], s: Served, k: int,
    skip: Collection[str], source: str,
) -> list[Candidate]:
    """Sum contributions per item; the anchor of an item is the one that contributed most."""
    uniq, inverse = np.unique(rows, return_inverse=True)
    total = np.bincount(inverse, weights=scores)
    by_contribution = np.lexsort((-scores, inverse))  # per item, largest contribution first
    first = by_contribution[np.searchsorted(inverse[by_contribution], np.arange(len(uniq)))]
    order = np.argsort(-total, kind="stable")
    out: list[Candidate] = []
    # plain lists: the walk below touches each entry once, and numpy scalars are slow to touch
    for i, score, r in zip(uniq[order].tolist(), total[order].tolist(), origin[first[order]].tolist(), strict=True):
        item_id = ids[i]
        if item_id not in skip and s.servable(item_id):
            out.append(Candidate(item_id, score, source, anchors[r]))
            if len(out) == k:
                break
    return out


def content(s: Served, anchors: list[str], k: int, exclude: Collection[str]) -> list[Candidate]:
    """Items whose text (TF-IDF of title, description, categories) is closest to the anchors'
    (an item, or the user's recent items with recency weights). Finds items nobody has interacted with."""
    idx = s.content
    if idx is None:
        return []
    terms, weights = [], []
    used = []
    for r, a in enumerate(anchors[:ANCHORS]):
        vec = idx.vector(a)
        if vec is not None:
            terms.append(vec[0])
            weights.append(vec[1] * ANCHOR_DECAY**r)
            used.append(a)
    if not terms:
        return []
    uniq, inverse = np.unique(np.concatenate(terms), return_inverse=True)
    w = np.bincount(inverse, weights=np.concatenate(weights))
    strongest = np.argsort(-w)[:PROFILE_TERMS]
    uniq, w = uniq[strongest], w[strongest] / (np.linalg.norm(w[strongest]) or 1.0)
    found = idx.similar(uniq.astype(np.int32), w, k, skip={*exclude, *used}, keep=s.servable)
    if len(used) == 1:
        return [Candidate(i, sc, "content", used[0]) for i, sc in found]
    anchor_of = _anchors(s, [s.item_index[i] for i, _ in found], used)
    return [Candidate(i, sc, "content", a) for (i, sc), a in zip(found, anchor_of, strict=True)]


# ---------------------------------------------------------------------------- popularity


def popular(s: Served, k: int, exclude: Collection[str]) -> list[Candidate]:
    """Most popular items of the training data: the cold-start answer."""
    out: list[Candidate] = []
    for item_id, score in s.popular:
        if item_id not in exclude and s.servable(item_id):
            out.append(Candidate(item_id, float(score), "popular"))
            if len(out) == k:
                break
    return out


def _segment_scores(s: Served, user_segments: list[str]) -> dict[str, float]:
    """Each segment's list scaled to its best = 1, summed over the user's segments."""
    return s.segments.scores(user_segments) if s.segments is not None else {}


def segment_popular(s: Served, user_segments: list[str], k: int, exclude: Collection[str]) -> list[Candidate]:
    """What the user's segments (age band, gender, occupation, ...) like: "popular with people like you"."""
    total = _segment_scores(s, user_segments)
    out: list[Candidate] = []
    for item_id, score in sorted(total.items(), key=lambda kv: (-kv[1], kv[0])):
        if item_id not in exclude and s.servable(item_id):
            out.append(Candidate(item_id, score, "segment_popular"))
            if len(out) == k:
                break
    return out


def trending(
    t: Trending, s: Served, window: str, category: str, segment: str, k: int, exclude: Collection[str]
) -> list[Candidate]:
    """Time-decayed counts in the window ("" = all time), in a category and/or segment; when the
    window holds fewer than k, the scope's all-time favourites follow (source "popular")."""
    def keep(item_id: str) -> bool:
        return item_id not in exclude and s.servable(item_id)

    out: list[Candidate] = []
    if window:
        out = [Candidate(i, sc, "trending") for i, sc in t.top(window, category, segment, k, keep)]
    if len(out) < k:
        taken = {c.item_id for c in out}
        if segment:
            listed = s.segments.segments.get(segment, []) if s.segments is not None else []
            more = [(i, sc) for i, sc in listed if i not in taken and keep(i)
                    and (not category or t.in_category(i, category))]
        else:
            more = t.top("", category, "", k, lambda i: i not in taken and keep(i))
        out += [Candidate(i, sc, "popular") for i, sc in more[: k - len(out)]]
    return out


# ---------------------------------------------------------------------------- merging


def merge(groups: list[list[Candidate]], k: int) -> list[Candidate]:
    """Interleave sources round-robin by rank, dropping duplicates (the first to reach an item keeps it)."""
    return [groups[g][r] for _, g, r in interleave([[c.item_id for c in group] for group in groups], k)]
