"""Vocabularies: external ids and feature values <-> the model's dense indices.

Index 0 is reserved everywhere: padding for item histories and category lists, and
"unknown" for demographic values, so serving maps anything new to 0 instead of failing.
The same token functions run at training and at serving time; that is what keeps
"24" from a request and 24 from the database in the same age bucket.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

# MovieLens-style age buckets; their lower bounds.
AGE_BUCKETS = (0, 18, 25, 35, 45, 50, 56)


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


@dataclass
class Vocab:
    item_ids: list[str]  # model index i + 1 <-> item_ids[i]
    categories: list[str]  # category index i + 1 <-> categories[i]
    demographics: dict[str, list[str]]  # feature key -> tokens; index i + 1 <-> tokens[i]
    _item_index: dict[str, int] = field(default_factory=dict, repr=False)
    _demo_index: dict[str, dict[str, int]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._item_index = {item_id: i + 1 for i, item_id in enumerate(self.item_ids)}
        self._demo_index = {k: {t: i + 1 for i, t in enumerate(ts)} for k, ts in self.demographics.items()}

    @classmethod
    def build(cls, items: pd.DataFrame, users: pd.DataFrame, demographic_keys: tuple[str, ...]) -> Vocab:
        categories = sorted({c for cs in items["categories"] for c in cs})
        demographics: dict[str, list[str]] = {}
        for key in demographic_keys:
            tokens = {demographic_token(key, d.get(key)) for d in users["demographics"]}
            demographics[key] = sorted(t for t in tokens if t is not None)
        return cls(item_ids=list(items["item_id"]), categories=categories, demographics=demographics)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def item_index(self, item_id: str) -> int:
        """Dense index of an item, 0 when unknown."""
        return self._item_index.get(item_id, 0)

    def category_index(self) -> dict[str, int]:
        return {c: i + 1 for i, c in enumerate(self.categories)}

    def demographic_indices(self, values: dict[str, Any]) -> list[int]:
        """One index per demographic key (0 = unknown), in key order."""
        out = []
        for key, index in self._demo_index.items():
            token = demographic_token(key, values.get(key))
            out.append(index.get(token, 0) if token is not None else 0)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"item_ids": self.item_ids, "categories": self.categories, "demographics": self.demographics}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Vocab:
        return cls(item_ids=list(d["item_ids"]), categories=list(d["categories"]),
                   demographics={k: list(v) for k, v in d["demographics"].items()})
