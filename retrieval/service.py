"""The Retrieval gRPC service: a thin translation from protos to Retriever calls."""

from __future__ import annotations

import asyncio
import logging

import grpc

from core import metrics, tls
from core.candidates import Candidate
from core.config import Settings
from core.grpc_server import handles_errors, serve
from core.in_process import Backend, in_process
from core.retrieve import SourceSpec
from core.service_auth import internal_interceptors
from core.trending import TrendingConfig
from core.validation import check_count, check_ids, check_name, check_user_context
from protos import internal_pb2 as ipb
from protos import internal_pb2_grpc as ipb_grpc
from retrieval.retriever import Retriever

log = logging.getLogger(__name__)

# An answer holds at most MAX_SOURCES * 1000 candidates (a source's k is 1..1000, core/sources.py).
MAX_SOURCES = 64
MAX_EXCLUDED = 10_000  # the orchestrator sends the user's seen items, at most its 1000-entry history


def check_request(request: ipb.RetrieveRequest) -> None:
    """The fields the orchestrator fills, checked as the public API checks its own (core.validation); the
    sources' names, k's, windows and segments are checked by core.retrieve with the registry's rules."""
    check_name("request_id", request.request_id)
    check_user_context(request.user)
    check_count("sources", len(request.sources), MAX_SOURCES)
    for i, s in enumerate(request.sources):
        check_name(f"sources[{i}].name", s.name)
        check_name(f"sources[{i}].window", s.window)
        check_name(f"sources[{i}].category", s.category)
        check_name(f"sources[{i}].segment", s.segment)
    check_ids("exclude_item_ids", request.exclude_item_ids, MAX_EXCLUDED)
    check_name("item_id", request.item_id)


class RetrievalServicer(ipb_grpc.RetrievalServicer):
    def __init__(self, retriever: Retriever) -> None:
        self.retriever = retriever

    @handles_errors
    async def Retrieve(self, request: ipb.RetrieveRequest, context: grpc.aio.ServicerContext) -> ipb.RetrieveResponse:
        if not in_process(context):
            check_request(request)
        user = request.user
        if request.separate_sources:
            groups = self.retriever.retrieve_groups(
                recent_item_ids=list(user.recent_item_ids), attributes=dict(user.attributes),
                sources=[SourceSpec(s.name, s.k, s.window, s.category, s.segment) for s in request.sources],
                exclude=set(request.exclude_item_ids), k=request.k, item_id=request.item_id,
            )
            return ipb.RetrieveResponse(groups=[to_candidate_list(g) for g in groups],
                                       model_version=self.retriever.version)
        found = self.retriever.retrieve(
            recent_item_ids=list(user.recent_item_ids),
            attributes=dict(user.attributes),
            sources=[SourceSpec(s.name, s.k, s.window, s.category, s.segment) for s in request.sources],
            exclude=set(request.exclude_item_ids),
            k=request.k,
            item_id=request.item_id,
        )
        return ipb.RetrieveResponse(candidates=to_candidate_list(found), model_version=self.retriever.version)


def to_candidate_list(found: list[Candidate]) -> ipb.CandidateList:
    return ipb.CandidateList(
        item_ids=[c.item_id for c in found], scores=[c.score for c in found],
        sources=[c.source for c in found], anchor_item_ids=[c.anchor_item_id for c in found],
    )


async def load(settings: Settings, export_metrics: bool = True) -> Backend:
    """The retriever with its model loaded, trending synced and its watchers running; ready to serve."""
    retriever = Retriever(settings.artifacts_dir, settings.database_url, TrendingConfig.from_env())
    retriever.load()
    if retriever.live is not None:
        try:  # trending's state before the first request; PostgreSQL away: the poller retries
            await retriever.sync_once()
        except Exception as exc:
            log.warning("live sync failed at start: %s", exc)
            retriever.live.reset()
    if export_metrics:  # co-located, the orchestrator's own recsys_model_version says the same
        metrics.info("recsys_model_version", "the model version retrieval serves",
                     lambda: {"version": retriever.version})
    backend = Backend(RetrievalServicer(retriever), healthy=lambda: retriever.served is not None,  # a model loaded
                      tasks=[asyncio.create_task(retriever.watch()), asyncio.create_task(retriever.follow())])
    if retriever.live is not None:
        backend.on_close.append(retriever.live.close)
    return backend


async def run(settings: Settings) -> None:
    interceptors = internal_interceptors(settings, settings.retrieval_addr)  # a wrong setting fails before loading
    server_tls = tls.server_tls(settings)
    backend = await load(settings)

    def register(server: grpc.aio.Server) -> None:
        ipb_grpc.add_RetrievalServicer_to_server(backend.servicer, server)

    try:
        await serve(settings.retrieval_addr, ["Retrieval"], register, metrics_addr=settings.retrieval_metrics_addr,
                    extra_interceptors=interceptors, reflect=settings.reflection, tls=server_tls,
                    healthy=backend.healthy)
    finally:
        backend.close()
