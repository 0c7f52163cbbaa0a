"""Locust users for the public Recommender API over gRPC.

Run it through `make loadtest` (loadtest/run.py), or directly:

    .venv/bin/python -m locust -f loadtest/locustfile.py --headless -u 20 -r 10 -t 30s

The target is RECSYS_ORCHESTRATOR_ADDR (default 127.0.0.1:50051), or --host.

This module runs inside the Locust process, which must never import feast (feast
imported before locust recurses forever in one process): only grpc, the generated
stubs, core.config and core.tls are imported here.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import grpc
import grpc.experimental.gevent
from locust import User, between, task
from locust.env import Environment
from locust.exception import LocustError

from core import tls
from core.config import Settings
from protos import recsys_pb2 as pb
from protos import recsys_pb2_grpc as pb_grpc

# Locust runs on gevent: gRPC's C core must yield to gevent's loop instead of blocking
# the whole process in a call. Must run before any channel exists.
grpc.experimental.gevent.init_gevent()

# MovieLens-100K ids.
N_USERS = 943
N_ITEMS = 1682
SURFACES = ("home", "home", "home", "item_page", "cart")  # mostly home, like real traffic
INTERACTION_TYPES = (pb.VIEW, pb.VIEW, pb.CLICK, pb.RATING)
TIMEOUT_S = 5.0


class LocustInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Reports every unary call to Locust's statistics as a "grpc" request named by its method."""

    def __init__(self, environment: Environment) -> None:
        self.env = environment

    def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], client_call_details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        exception: Exception | None = None
        response_length = 0
        start = time.perf_counter()
        outcome = continuation(client_call_details, request)
        try:
            response_length = outcome.result().ByteSize()  # result() raises the call's RpcError
        except grpc.RpcError as exc:
            exception = exc
        self.env.events.request.fire(
            request_type="grpc",
            name=client_call_details.method,
            response_time=(time.perf_counter() - start) * 1000,
            response_length=response_length,
            response=outcome,
            context=None,
            exception=exception,
        )
        return outcome


class GrpcUser(User):
    """A User whose `stub` is a gRPC stub on an intercepted channel (Locust's gRPC pattern)."""

    abstract = True
    stub_class: type | None = None

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        if not self.host or self.stub_class is None:
            raise LocustError("a GrpcUser needs host (host:port) and stub_class")
        channel = tls.channel(self.host, Settings.from_env())
        self.channel = grpc.intercept_channel(channel, LocustInterceptor(environment))
        self.stub = self.stub_class(self.channel)

    def on_stop(self) -> None:
        self.channel.close()


class RecommenderUser(GrpcUser):
    """A client service that mostly asks for recommendations and sometimes reports interactions."""

    host = Settings.from_env().orchestrator_addr  # --host overrides
    stub_class = pb_grpc.RecommenderStub
    wait_time = between(0.05, 0.5)

    @task(8)
    def recommend(self) -> None:
        request = pb.RecommendRequest(
            user_id=str(random.randint(1, N_USERS)), k=10, context=pb.Context(surface=random.choice(SURFACES))
        )
        self._call(self.stub.Recommend, request)

    @task(2)
    def log_interactions(self) -> None:
        batch = [_interaction() for _ in range(random.randint(1, 3))]
        self._call(self.stub.LogInteractions, pb.LogInteractionsRequest(interactions=batch))

    @staticmethod
    def _call(method: Callable[..., Any], request: Any) -> None:
        try:
            method(request, timeout=TIMEOUT_S)
        except grpc.RpcError:
            pass  # already counted as a failure by the interceptor; keep the user running


def _interaction() -> pb.Interaction:
    kind = random.choice(INTERACTION_TYPES)
    return pb.Interaction(
        user_id=str(random.randint(1, N_USERS)),
        item_id=str(random.randint(1, N_ITEMS)),
        type=kind,
        value=float(random.randint(1, 5)) if kind == pb.RATING else 1.0,
    )
