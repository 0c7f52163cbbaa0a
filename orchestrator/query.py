"""What a pipeline's components read and fill for one request, and what they may call.

One query type serves Recommend, SimilarItems and Trending, so a filter or selector written
once applies to every RPC where its inputs exist (a user's history, a request filter, a
surface setting). The validation layer (orchestrator/validation.py) builds it from a
request; query hydrators fill the user; sources set the model version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from core.config import Settings
from orchestrator.catalog import Catalog
from orchestrator.dependencies import Breakers
from orchestrator.exposures import ExposureLog
from orchestrator.filter_expr import Filter as Expression
from orchestrator.histories import HotHistories
from orchestrator.pipeline import Trace
from orchestrator.stats import Stats
from protos import internal_pb2_grpc as ipb_grpc
from protos import recsys_pb2 as pb
from storage.interactions import HistoryEntry
from storage.records import UserRecord

if TYPE_CHECKING:  # config imports the registry, whose components import this module
    from orchestrator.config import PipelineParams

RECOMMEND, SIMILAR_ITEMS, TRENDING = "recommend", "similar_items", "trending"


@dataclass
class Deps:
    """What components call: PostgreSQL, Redis, the catalogue, the internal services, the logs."""

    settings: Settings
    pool: AsyncConnectionPool
    redis: Redis
    retrieval: ipb_grpc.RetrievalStub
    ranking: ipb_grpc.RankingStub
    catalog: Catalog
    exposures: ExposureLog
    stats: Stats
    breakers: Breakers = field(default_factory=Breakers)  # the pool and the stubs hold theirs; Redis's here
    histories: HotHistories = field(default_factory=lambda: HotHistories(0, 0))  # off unless given


@dataclass
class RequestQuery:
    rpc: str  # RECOMMEND, SIMILAR_ITEMS or TRENDING
    request_id: str
    k: int
    surface: str
    params: PipelineParams  # the surface's settings, the variant's, then the request's own
    remaining: Callable[[], float | None]  # seconds left of the caller's deadline (None: no deadline)
    trace: Trace
    filters: pb.Filters = field(default_factory=pb.Filters)
    expression: Expression | None = None
    user_id: str = ""
    variant: str = "control"  # the experiment label
    debug: bool = False
    pinned: dict[int, str] = field(default_factory=dict)  # position -> item id
    item_id: str = ""  # SimilarItems: the anchor item
    item_sources: tuple[str, ...] = ()  # SimilarItems: the retrieval sources of the mode
    window: str = ""  # Trending
    category: str = ""  # Trending
    segment: str = ""  # Trending, canonical "key:value"
    context: pb.Context = field(default_factory=pb.Context)
    want: int = 200  # candidates asked of the sources
    fill_target: int = 40  # fill sources top the others up to this many
    # filled by query hydrators and sources
    user: UserRecord | None = None
    history: list[HistoryEntry] = field(default_factory=list)  # most recent first
    seen: set[str] = field(default_factory=set)  # items the seen filter removes on this surface
    model_version: str = ""
    scratch: dict[str, Any] = field(default_factory=dict)  # per-request state a component shares (calls)

    @property
    def types_by_item(self) -> dict[str, frozenset[str]]:
        return {h.item_id: h.types for h in self.history}

    @property
    def demographics(self) -> dict[str, Any]:
        return self.user.demographics if self.user else {}
