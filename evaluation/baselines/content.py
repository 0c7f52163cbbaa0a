"""Content-based: TF-IDF over each item's title, description and categories.

A user's profile is the sum of their training items' unit TF-IDF vectors; an item's
score is the cosine between the profile and the item's vector.
"""

from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from evaluation.baselines.matrix import UserItems, l2_normalize_rows
from training.dataset import Dataset


def item_texts(train: Dataset, catalog: list[str]) -> list[str]:
    items = train.items.set_index("item_id").reindex(catalog)
    texts = []
    for title, description, categories in zip(items["title"], items["description"], items["categories"], strict=True):
        cats = categories if isinstance(categories, list) else []
        # categories also as whole tokens ("cat_sci_fi"), so "Sci-Fi" is not just "sci" and "fi"
        cat_tokens = " ".join("cat_" + "".join(ch if ch.isalnum() else "_" for ch in c.lower()) for c in cats)
        texts.append(" ".join(str(x) for x in (title, description, cat_tokens) if isinstance(x, str)))
    return texts


class TfidfContent:
    name = "content-tfidf"

    def __init__(self, min_df: int, ngram_max: int) -> None:
        self.min_df, self.ngram_max = min_df, ngram_max
        self.params = {"min_df": min_df, "ngram_max": ngram_max}
        self.ui: UserItems | None = None

    def fit(self, train: Dataset, catalog: list[str], seed: int) -> None:
        self.ui = UserItems.build(train, catalog)
        vectorizer = TfidfVectorizer(min_df=self.min_df, ngram_range=(1, self.ngram_max), sublinear_tf=True)
        self.V = vectorizer.fit_transform(item_texts(train, catalog)).astype(np.float32).tocsr()  # unit rows

    def score(self, user_ids: list[str]) -> np.ndarray:
        assert self.ui is not None, "fit first"
        profile = l2_normalize_rows(self.ui.block(user_ids) @ self.V)
        return np.asarray((profile @ self.V.T).toarray(), dtype=np.float32)


def candidates() -> list[TfidfContent]:
    return [TfidfContent(min_df, n) for min_df in (1, 2, 5) for n in (1, 2)]
