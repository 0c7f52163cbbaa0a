"""Vocabularies: external ids and feature values <-> the model's dense indices.

Index 0 is reserved everywhere: padding for item histories, category and token lists,
and "unknown" for demographic values, years and prices, so serving maps anything new
to 0 instead of failing. The same token functions run at training and at serving
time; that is what keeps "24" from a request and 24 from the database in the same age
bucket, and a title typed into UpsertItems in the same words as the catalogue's.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

# MovieLens-style age buckets; their lower bounds.
AGE_BUCKETS = (0, 18, 25, 35, 45, 50, 56)
# Title words that say nothing about an item.
STOPWORDS = frozenset("a an and at by de for from in is la le of on or the to with".split())
MIN_TOKEN_ITEMS = 2  # a title word must appear in this many items to get an embedding: one-offs only memorize
MAX_TOKENS = 50_000
N_BUCKETS = 16  # quantile buckets for numeric content (year, price)


def demographic_token(key: str, value: Any) -> str | None:
    """The vocabulary token of one demographic value; None when missing."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = str(value).strip().lower()
    if not text:
        return None
    if key == "age":
        try:
            age = float(text)
        except ValueError:
            return text  # already a bucket label such as "25-34"
        bucket = max(i for i, low in enumerate(AGE_BUCKETS) if age >= low) if age >= 0 else 0
        return f"age{bucket}"
    return text


_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def text_tokens(title: str, brand: str = "") -> list[str]:
    """Lower-case title words (stopwords and numbers dropped) and the brand as one token."""
    words = [w for w in _WORD.findall(title.lower()) if w not in STOPWORDS and not w.isdigit()]
    return words + ([f"brand:{brand.strip().lower()}"] if brand and brand.strip() else [])


def item_year(attributes: Any) -> float | None:
    """attributes["year"] as a number, None when absent or not a number."""
    if not isinstance(attributes, dict):
        return None
    value = attributes.get("year")
    try:
        year = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return year if math.isfinite(year) else None


def _bounds(values: Iterable[float | None]) -> list[float]:
    """Lower bounds of up to N_BUCKETS quantile buckets over the known values."""
    known = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if len(known) == 0:
        return []
    return sorted({float(q) for q in np.quantile(known, np.linspace(0, 1, N_BUCKETS, endpoint=False))})


def _bucket(bounds: list[float], value: float | None) -> int:
    """1..len(bounds) for a known value (below the first bound -> 1), 0 for unknown."""
    if value is None or not bounds or not math.isfinite(value):
        return 0
    return max(1, int(np.searchsorted(bounds, value, side="right")))


@dataclass
class Vocab:
    item_ids: list[str]  # model index i + 1 <-> item_ids[i]
    categories: list[str]  # category index i + 1 <-> categories[i]
    demographics: dict[str, list[str]]  # feature key -> tokens; index i + 1 <-> tokens[i]
    tokens: list[str] = field(default_factory=list)  # title word index i + 1 <-> tokens[i]
    year_bounds: list[float] = field(default_factory=list)  # lower bounds of the year buckets
    price_bounds: list[float] = field(default_factory=list)  # lower bounds of the log-price buckets
    _item_index: dict[str, int] = field(default_factory=dict, repr=False)
    _demo_index: dict[str, dict[str, int]] = field(default_factory=dict, repr=False)
    _category_index: dict[str, int] = field(default_factory=dict, repr=False)
    _token_index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._item_index = {item_id: i + 1 for i, item_id in enumerate(self.item_ids)}
        self._demo_index = {k: {t: i + 1 for i, t in enumerate(ts)} for k, ts in self.demographics.items()}
        self._category_index = {c: i + 1 for i, c in enumerate(self.categories)}
        self._token_index = {t: i + 1 for i, t in enumerate(self.tokens)}

    @classmethod
    def build(cls, items: pd.DataFrame, users: pd.DataFrame, demographic_keys: tuple[str, ...]) -> Vocab:
        categories = sorted({c for cs in items["categories"] for c in cs})
        demographics: dict[str, list[str]] = {}
        for key in demographic_keys:
            tokens = {demographic_token(key, d.get(key)) for d in users["demographics"]}
            demographics[key] = sorted(t for t in tokens if t is not None)
        brands = items["brand"] if "brand" in items else [""] * len(items)
        df = Counter(t for title, brand in zip(items["title"], brands, strict=True)
                     for t in set(text_tokens(str(title), str(brand))))
        words = sorted((t for t, n in df.items() if n >= MIN_TOKEN_ITEMS), key=lambda t: (-df[t], t))[:MAX_TOKENS]
        prices = items["price"] if "price" in items else []
        return cls(
            item_ids=list(items["item_id"]), categories=categories, demographics=demographics,
            tokens=sorted(words),
            year_bounds=_bounds(item_year(a) for a in items["attributes"]),
            price_bounds=_bounds(math.log1p(p) if p == p and p >= 0 else None for p in prices),
        )

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def item_index(self, item_id: str) -> int:
        """Dense index of an item, 0 when unknown."""
        return self._item_index.get(item_id, 0)

    def category_index(self) -> dict[str, int]:
        return dict(self._category_index)

    def demographic_indices(self, values: dict[str, Any]) -> list[int]:
        """One index per demographic key (0 = unknown), in key order."""
        out = []
        for key, index in self._demo_index.items():
            token = demographic_token(key, values.get(key))
            out.append(index.get(token, 0) if token is not None else 0)
        return out

    def content_indices(
        self, categories: Iterable[str], title: str, attributes: Any, brand: str = "", price: float | None = None,
    ) -> tuple[list[int], list[int], int, int]:
        """An item's content as the item tower reads it: category and title-word indices (unknown ones
        dropped), year bucket and price bucket (0 = unknown)."""
        cats = [i for i in (self._category_index.get(c, 0) for c in categories) if i]
        words = [i for i in (self._token_index.get(t, 0) for t in text_tokens(title, brand)) if i]
        log_price = math.log1p(price) if price is not None and price == price and price >= 0 else None
        return cats, words, _bucket(self.year_bounds, item_year(attributes)), _bucket(self.price_bounds, log_price)

    def to_dict(self) -> dict[str, Any]:
        return {"item_ids": self.item_ids, "categories": self.categories, "demographics": self.demographics,
                "tokens": self.tokens, "year_bounds": self.year_bounds, "price_bounds": self.price_bounds}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Vocab:
        return cls(item_ids=list(d["item_ids"]), categories=list(d["categories"]),
                   demographics={k: list(v) for k, v in d["demographics"].items()},
                   tokens=list(d.get("tokens", [])), year_bounds=list(d.get("year_bounds", [])),
                   price_bounds=list(d.get("price_bounds", [])))
