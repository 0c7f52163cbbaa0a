"""The baselines: most popular, segment-popular, user- and item-kNN, ALS, EASE, recency-weighted EASE, TF-IDF
content."""

from __future__ import annotations

from evaluation.baselines import als, content, ease, knn, popular, segments
from evaluation.protocol import Family

FAMILIES = [
    Family("most-popular", popular.candidates, description="items by number of users, the same for everyone"),
    Family("segment-popular", segments.candidates,
           description="popular in the user's demographic segments (the served segment_popular lists)"),
    Family("user-knn", knn.user_knn_candidates, description="cosine user-kNN over the binary matrix"),
    Family("item-knn", knn.item_knn_candidates, description="cosine item-kNN over the binary matrix"),
    Family("als", als.candidates, stochastic=True, description="implicit-feedback ALS (Hu et al. 2008)"),
    Family("ease", ease.ease_candidates, description="EASE (Steck 2019)"),
    Family("ease-recency", ease.recency_candidates,
           description="EASE, history weighted 0.5^(age/half-life) at scoring time"),
    Family("content-tfidf", content.candidates, description="TF-IDF of title, description, categories; cosine"),
]
