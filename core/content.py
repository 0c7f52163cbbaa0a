"""Content similarity: TF-IDF over each item's title, description, categories and brand.

Serves items nobody has interacted with yet: a new item is similar to others by its
words alone. Vectors are sublinear TF x smoothed IDF, unit length, so a dot product
is a cosine. Queries walk an inverted index (term -> items by weight), so a query
costs its terms' posting lengths, not the catalogue size; very common terms are cut
to their `MAX_POSTINGS` strongest items. Items added at serving time (`add`) join a
small side index until the next build.

    <version>/content.npz   indptr, term_ids, weights (CSR over item_ids), idf
    <version>/content.json  item_ids and terms
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core import npz_store

NAME = "content"  # content.npz + content.json in a version folder
NPZ = f"{NAME}.npz"
MAX_POSTINGS = 5000  # per query term; bounds a query's cost on large catalogues
CATEGORY_SHARE = 0.6  # of the squared norm: cosine = 0.6 x categories/brand cosine + 0.4 x words cosine

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset("a an and the of in on to for with at by from is it as or be".split())


def tokens(title: str, description: str, categories: Iterable[str], brand: str = "") -> list[str]:
    """Words of the title and description, plus one whole token per category and for the brand
    ("cat:sci-fi", so a category is more than its words)."""
    words = [w for w in _WORD.findall(f"{title} {description}".lower()) if len(w) > 1 and w not in _STOP]
    cats = [f"cat:{c.strip().lower()}" for c in categories if c.strip()]
    return words + cats + ([f"brand:{brand.strip().lower()}"] if brand.strip() else [])


@dataclass
class ContentIndex:
    item_ids: list[str]
    terms: list[str]
    idf: np.ndarray  # float32 [n_terms]
    indptr: np.ndarray  # int64 [n_items + 1]: item i's terms are entries indptr[i]:indptr[i + 1]
    term_ids: np.ndarray  # int32
    weights: np.ndarray  # float32, unit rows
    _row: dict[str, int] = field(default_factory=dict, repr=False)
    _term: dict[str, int] = field(default_factory=dict, repr=False)
    _post_ptr: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64), repr=False)
    _post_items: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32), repr=False)
    _post_weights: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)
    # items added after the build: their vectors and postings
    _live: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    _live_postings: dict[int, list[tuple[int, float]]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._row = {item_id: i for i, item_id in enumerate(self.item_ids)}
        self._term = {t: i for i, t in enumerate(self.terms)}
        # inverted index: postings of each term, strongest items first
        items = np.repeat(np.arange(len(self.indptr) - 1, dtype=np.int32), np.diff(self.indptr))
        order = np.lexsort((-self.weights, self.term_ids))
        self._post_items, self._post_weights = items[order], self.weights[order]
        self._post_ptr = np.zeros(len(self.terms) + 1, dtype=np.int64)
        self._post_ptr[1:] = np.cumsum(np.bincount(self.term_ids, minlength=len(self.terms)))

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._row

    def vectorize(self, title: str, description: str, categories: Iterable[str],
                  brand: str = "") -> tuple[np.ndarray, np.ndarray]:
        """(term ids, unit weights) of a text; words the index never saw are left out."""
        counts = Counter(t for t in tokens(title, description, categories, brand) if t in self._term)
        return weigh(counts, self._term, self.idf)

    def vector(self, item_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        i = self._row.get(item_id)
        if i is None:
            return None
        if i in self._live:
            return self._live[i]
        lo, hi = int(self.indptr[i]), int(self.indptr[i + 1])
        return self.term_ids[lo:hi], self.weights[lo:hi]

    def add(self, item_id: str, title: str, description: str, categories: Iterable[str], brand: str = "") -> None:
        """Index an item live (new, or its text changed); it is found by queries at once."""
        ids, w = self.vectorize(title, description, categories, brand)
        i = self._row.get(item_id)
        if i is None:
            i = len(self.item_ids)
            self.item_ids.append(item_id)
            self._row[item_id] = i
        elif i in self._live:  # re-added: drop its previous live postings
            for t in self._live[i][0].tolist():
                self._live_postings[t] = [p for p in self._live_postings[t] if p[0] != i]
        self._live[i] = (ids, w)
        for t, x in zip(ids.tolist(), w.tolist(), strict=True):
            self._live_postings.setdefault(t, []).append((i, x))

    def similar(self, terms: np.ndarray, weights: np.ndarray, k: int, skip: Collection[str] = (),
                keep: Callable[[str], bool] | None = None) -> list[tuple[str, float]]:
        """The k items with the highest cosine to a (unit) query vector, best first; `skip`ped
        items and those `keep` rejects are passed over."""
        if len(terms) == 0:
            return []
        parts_i, parts_s = [], []
        live_i: list[int] = []
        live_s: list[float] = []
        for t, x in zip(terms.tolist(), weights.tolist(), strict=True):
            lo = int(self._post_ptr[t])
            hi = min(int(self._post_ptr[t + 1]), lo + MAX_POSTINGS)
            parts_i.append(self._post_items[lo:hi])
            parts_s.append(self._post_weights[lo:hi] * x)
            for i, w in self._live_postings.get(t, ()):
                live_i.append(i)
                live_s.append(w * x)
        parts_i.append(np.array(live_i, np.int32))
        parts_s.append(np.array(live_s, np.float32))
        items, values = np.concatenate(parts_i), np.concatenate(parts_s).astype(np.float64)
        n = len(self.item_ids)
        if 4 * len(items) >= n:  # dense accumulation is cheaper than sorting the postings
            dense = np.bincount(items, weights=values, minlength=n)
            rows = np.flatnonzero(dense)
            scores = dense[rows]
        else:
            rows, inverse = np.unique(items, return_inverse=True)
            scores = np.bincount(inverse, weights=values)
        if self._live:  # a live item's base postings are stale: score it from its live vector alone
            stale = np.isin(rows, np.fromiter(self._live, np.int64, len(self._live)))
            if stale.any():
                scores[stale] = self._rescore_live(rows[stale], terms, weights)
        out: list[tuple[str, float]] = []
        for order in _best_first(scores, k + len(skip) + 16):
            for row, score in zip(rows[order].tolist(), scores[order].tolist(), strict=True):
                if score <= 0:
                    return out
                item_id = self.item_ids[row]
                if item_id in skip or (keep is not None and not keep(item_id)):
                    continue
                out.append((item_id, score))
                if len(out) == k:
                    return out
        return out

    def _rescore_live(self, rows: np.ndarray, terms: np.ndarray, weights: np.ndarray) -> np.ndarray:
        query = dict(zip(terms.tolist(), weights.tolist(), strict=True))
        out = np.zeros(len(rows))
        for n, i in enumerate(rows.tolist()):
            ids, w = self._live[i]
            out[n] = sum(query.get(t, 0.0) * x for t, x in zip(ids.tolist(), w.tolist(), strict=True))
        return out

    def save(self, version_dir: Path) -> None:
        version_dir = Path(version_dir)
        n = len(self.indptr) - 1  # live additions are not part of a version
        npz_store.save(version_dir, NAME, {"indptr": self.indptr, "term_ids": self.term_ids, "weights": self.weights,
                                           "idf": self.idf}, {"item_ids": self.item_ids[:n], "terms": self.terms})


def _best_first(scores: np.ndarray, m: int) -> Iterator[np.ndarray]:
    """Positions of scores, highest first (ties in position order, as a stable sort puts them), in two
    chunks: the m best (with every value tied with the m-th), then the rest. Most requests need only the
    first: sorting and walking a whole category's postings cost more than the query itself."""
    if m >= len(scores):
        yield np.argsort(-scores, kind="stable")
        return
    kth = np.partition(scores, len(scores) - m)[len(scores) - m]  # the m-th largest
    top = scores >= kth
    first = np.flatnonzero(top)
    yield first[np.argsort(-scores[first], kind="stable")]
    rest = np.flatnonzero(~top)
    yield rest[np.argsort(-scores[rest], kind="stable")]


def load(version_dir: Path) -> ContentIndex | None:
    """The version's content index; None when the version was built without one."""
    stored = npz_store.load(version_dir, NAME)
    if stored is None:
        return None
    z, meta = stored
    return ContentIndex(list(meta["item_ids"]), list(meta["terms"]), z["idf"], z["indptr"], z["term_ids"], z["weights"])


def weigh(counts: Counter[str], term_index: dict[str, int], idf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sublinear TF x IDF; words and categories/brand are unit blocks weighted CATEGORY_SHARE apart,
    so sharing the categories counts more than sharing a rare title word ("Toy Story" vs "Philadelphia Story")."""
    ids = np.array([term_index[t] for t in counts], dtype=np.int32)
    w = np.array([1 + math.log(c) for c in counts.values()], dtype=np.float32) * idf[ids]
    meta = np.array([t.startswith(("cat:", "brand:")) for t in counts], dtype=bool)
    for block, share in ((meta, CATEGORY_SHARE), (~meta, 1 - CATEGORY_SHARE)):
        norm = float(np.linalg.norm(w[block]))
        if norm > 0:
            both = meta.any() and (~meta).any()
            w[block] *= (math.sqrt(share) if both else 1.0) / norm
    return ids, w
