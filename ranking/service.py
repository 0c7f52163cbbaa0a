"""The Ranking gRPC service: user features from Feast (one online read per request),
item features from process memory, rescored by the scorer."""

from __future__ import annotations

import asyncio
import logging

import grpc

from feature_store.store import OnlineFeatures
from protos import recsys_pb2 as pb
from protos import recsys_pb2_grpc as pb_grpc
from ranking.item_features import ItemFeatureCache
from ranking.scorer import WeightedScorer, category_profile
from recsys.config import Settings
from recsys.errors import InvalidArgument
from recsys.grpc_server import handles_errors, serve

log = logging.getLogger(__name__)

MAX_CANDIDATES = 2000


class RankingServicer(pb_grpc.RankingServicer):
    def __init__(self, online: OnlineFeatures, items: ItemFeatureCache, scorer: WeightedScorer) -> None:
        self.online = online
        self.items = items
        self.scorer = scorer

    @handles_errors
    async def Rank(self, request: pb.RankRequest, context: grpc.aio.ServicerContext) -> pb.RankResponse:
        n = len(request.candidates)
        if not 1 <= n <= MAX_CANDIDATES:
            raise InvalidArgument("candidates", f"must hold 1 to {MAX_CANDIDATES} candidates, got {n}")
        user = self.online.user_features(request.user.user_id) if request.user.user_id else {}
        # Request-time history is fresher than the materialized one; use both.
        recent = list(request.user.recent_item_ids) + list(user.get("recent_item_ids") or [])
        profile = category_profile(recent[:50], self.items.features)
        feats = [self.items.get(c.item_id) for c in request.candidates]
        scored = self.scorer.score([c.score for c in request.candidates], feats, profile, self.items.max_popularity)
        # Parts travel as packed doubles named once per response: a proto map per candidate
        # was the largest cost of this call.
        return pb.RankResponse(
            candidates=[
                pb.RankedCandidate(candidate=request.candidates[s.index], score=s.score, score_parts=s.parts.values())
                for s in scored
            ],
            model_version=self.scorer.version,
            score_part_names=scored[0].parts.keys(),
        )


async def run(settings: Settings) -> None:
    online = OnlineFeatures(settings)
    items = ItemFeatureCache(online, settings.database_url)
    await asyncio.to_thread(items.refresh)
    watcher = asyncio.create_task(items.watch())

    def register(server: grpc.aio.Server) -> None:
        pb_grpc.add_RankingServicer_to_server(RankingServicer(online, items, WeightedScorer()), server)

    try:
        await serve(settings.ranking_addr, ["Ranking"], register)
    finally:
        watcher.cancel()
