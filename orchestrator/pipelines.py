"""Recommend, SimilarItems and Trending as pipelines: lists of the same registered components.

The RPCs differ only in their sources (a surface's configured sources; the anchor item's;
the trending source) and in which components their query enables. Pipelines are built once
per source list (a surface or an experiment variant may change it) and kept.
"""

from __future__ import annotations

from orchestrator import registry
from orchestrator.cache import CacheWrite, Exposures
from orchestrator.hydrators import CatalogueItems, UserHistory
from orchestrator.pipeline import Pipeline, Source
from orchestrator.query import Deps
from orchestrator.scorers.boost import PromotionBoost
from orchestrator.scorers.ranker import Ranker
from orchestrator.source_config import CandidateSource
from orchestrator.sources.business import BusinessItems
from orchestrator.sources.fallback import CataloguePopular, Precomputed
from orchestrator.sources.retrieval import RetrievalSource, item_sources, trending_source


def configured_source(spec: CandidateSource, deps: Deps) -> Source:
    kind = registry.LOCAL_SOURCES.get(spec.retrieval_source, RetrievalSource)
    return kind(spec, deps)


class Pipelines:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self._recommend: dict[tuple[CandidateSource, ...], Pipeline] = {}
        self._similar: dict[tuple[str, ...], Pipeline] = {}
        d = deps
        self.query_hydrators = [UserHistory(d)]
        self.hydrators = [CatalogueItems(d)]
        self.filters = [f() for f in registry.FILTERS]
        self.scorers = [Ranker(d), PromotionBoost()]
        self.selectors = [s() for s in registry.SELECTORS]
        self.trending = self._build("trending", [trending_source(d), CataloguePopular(d, fill=True)])

    def _build(self, name: str, sources: list[Source], side_effects: tuple = ()) -> Pipeline:
        return Pipeline(name, self.query_hydrators, sources, self.hydrators, self.filters, self.scorers,
                        self.selectors, side_effects, self.deps.stats)

    def recommend(self, sources: tuple[CandidateSource, ...]) -> Pipeline:
        p = self._recommend.get(sources)
        if p is None:
            d = self.deps
            p = self._recommend[sources] = self._build(
                "recommend", [*(configured_source(s, d) for s in sources), BusinessItems(), Precomputed(d),
                              CataloguePopular(d)], (CacheWrite(d), Exposures(d)))
        return p

    def similar_items(self, names: tuple[str, ...]) -> Pipeline:
        p = self._similar.get(names)
        if p is None:
            p = self._similar[names] = self._build(
                "similar_items", [*item_sources(names, self.deps), CataloguePopular(self.deps, fill=True)])
        return p
