"""The benchmark's yardstick: a grpc.aio Recommender whose Recommend does nothing but answer 100 ids.

    .venv/bin/python -m loadtest.empty_server PORT

The same client, request and response type as the real Recommend, a server with no
interceptors and no work: the cheapest call this machine's grpc.aio can serve. The benchmark
reports every scenario as a ratio to it, since absolute times drift between hosts.
"""

from __future__ import annotations

import asyncio
import sys

import grpc

from protos import recsys_pb2 as pb
from protos import recsys_pb2_grpc as pb_grpc

ANSWER = pb.RecommendResponse(items=[pb.ScoredItem(item_id=str(i), score=1.0 / (1 + i)) for i in range(100)])


class EmptyRecommender(pb_grpc.RecommenderServicer):
    async def Recommend(self, request: pb.RecommendRequest, context: grpc.aio.ServicerContext) -> pb.RecommendResponse:
        return ANSWER


async def serve(port: int) -> None:
    server = grpc.aio.server()
    pb_grpc.add_RecommenderServicer_to_server(EmptyRecommender(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
