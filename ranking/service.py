"""The Ranking gRPC service: a thin translation to ranking.rank.Ranking, with the user's
features from Feast (one online read per request) and item features and the ranking model in
process memory, each refreshed in the background.
"""

from __future__ import annotations

import asyncio

import grpc

from core import metrics, tls
from core.config import Settings
from core.grpc_server import handles_errors, serve
from core.in_process import Backend, in_process
from core.service_auth import internal_interceptors
from feature_store.store import OnlineFeatures
from protos import internal_pb2 as ipb
from protos import internal_pb2_grpc as ipb_grpc
from ranking.item_features import ItemFeatureCache
from ranking.rank import Ranking
from ranking.ranker import RankerSlot
from ranking.scorer import WeightedScorer


class RankingServicer(ipb_grpc.RankingServicer):
    def __init__(self, ranking: Ranking) -> None:
        self.ranking = ranking

    @handles_errors
    async def Rank(self, request: ipb.RankRequest, context: grpc.aio.ServicerContext) -> ipb.RankResponse:
        return self.ranking.rank(request, check=not in_process(context))


async def load(settings: Settings) -> Backend:
    """Ranking with its item features and learned ranker loaded and their watchers running."""
    online = OnlineFeatures(settings)
    items = ItemFeatureCache(online, settings.database_url)
    learned = RankerSlot(artifacts_dir=settings.artifacts_dir)
    await asyncio.to_thread(items.refresh)
    await asyncio.to_thread(learned.refresh)  # a ranker that fails to load is logged; the weighted scorer serves
    ranking = Ranking(online, items, WeightedScorer(), learned)
    metrics.info("recsys_ranker_version", "the learned ranker's model version ('' = the weighted scorer) and the "
                 "item features' version",
                 lambda: {"version": learned.version, "item_features": str(items.version or "")})
    metrics.gauge("recsys_ranking_item_features", "items whose features ranking holds in memory", [],
                  lambda: [([], len(items.features))])
    return Backend(RankingServicer(ranking),
                   # ready with a learned ranker, or at least item features for the weighted scorer
                   healthy=lambda: learned.ranker is not None or bool(items.features),
                   tasks=[asyncio.create_task(items.watch()), asyncio.create_task(learned.watch())])


async def run(settings: Settings) -> None:
    interceptors = internal_interceptors(settings, settings.ranking_addr)  # a wrong setting fails before loading
    server_tls = tls.server_tls(settings)
    backend = await load(settings)

    def register(server: grpc.aio.Server) -> None:
        ipb_grpc.add_RankingServicer_to_server(backend.servicer, server)

    try:
        await serve(settings.ranking_addr, ["Ranking"], register, metrics_addr=settings.ranking_metrics_addr,
                    extra_interceptors=interceptors, reflect=settings.reflection, tls=server_tls,
                    healthy=backend.healthy)
    finally:
        backend.close()
