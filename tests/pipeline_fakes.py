"""Fake downstream stubs for in-process pipeline tests: retrieval and ranking as plain objects,
the catalogue from records, the user's history given. No servers, no sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import grpc

from core.config import Settings
from orchestrator.catalog import Catalog
from orchestrator.config import OrchestratorConfig, PipelineParams
from orchestrator.exposures import ExposureLog
from orchestrator.pipeline import QueryHydrator
from orchestrator.pipelines import Pipelines
from orchestrator.query import Deps, RequestQuery
from orchestrator.recommend import Recommender
from orchestrator.stats import Stats
from protos import internal_pb2 as ipb
from storage.interactions import HistoryEntry
from storage.records import ItemRecord, UserRecord


def rpc_error(code: grpc.StatusCode, details: str = "") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


async def _within(delay: float, timeout: float | None) -> None:
    """A downstream's delay under the call's deadline, as gRPC enforces it."""
    if timeout is not None and delay > timeout:
        await asyncio.sleep(timeout)
        raise rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED)
    if delay:
        await asyncio.sleep(delay)


@dataclass
class FakeRetrieval:
    """Answers each named source with its list (item ids, best first); records the requests."""

    lists: dict[str, list[str]] = field(default_factory=dict)
    version: str = "v1"
    fail: grpc.StatusCode | None = None
    delay_s: dict[str, float] = field(default_factory=dict)  # per source name
    requests: list[ipb.RetrieveRequest] = field(default_factory=list)

    async def Retrieve(self, request: ipb.RetrieveRequest, timeout: float | None = None) -> ipb.RetrieveResponse:  # noqa: N802
        self.requests.append(request)
        delay = max((self.delay_s.get(s.name, 0.0) for s in request.sources), default=0.0)
        await _within(delay, timeout)
        if self.fail is not None:
            raise rpc_error(self.fail)
        excluded = set(request.exclude_item_ids)
        groups = []
        for s in request.sources:
            ids = [i for i in self.lists.get(s.name, []) if i not in excluded][: s.k]
            groups.append(ipb.CandidateList(item_ids=ids, scores=[1.0 / (1 + r) for r in range(len(ids))],
                                           sources=[s.name] * len(ids), anchor_item_ids=[""] * len(ids)))
        return ipb.RetrieveResponse(groups=groups, model_version=self.version)


@dataclass
class FakeRanking:
    """Scores each candidate by `scores` (default 0), best first; records the requests."""

    scores: dict[str, float] = field(default_factory=dict)
    fail: grpc.StatusCode | None = None
    delay_s: float = 0.0
    requests: list[ipb.RankRequest] = field(default_factory=list)

    async def Rank(self, request: ipb.RankRequest, timeout: float | None = None) -> ipb.RankResponse:  # noqa: N802
        self.requests.append(request)
        await _within(self.delay_s, timeout)
        if self.fail is not None:
            raise rpc_error(self.fail)
        ids = list(request.candidates.item_ids)
        order = sorted(range(len(ids)), key=lambda i: -self.scores.get(ids[i], 0.0))
        return ipb.RankResponse(order=order, scores=[self.scores.get(ids[i], 0.0) for i in order],
                               score_part_names=["ranker"], score_parts=[self.scores.get(ids[i], 0.0) for i in order],
                               model_version="ranker-v1")


class GivenUser(QueryHydrator):
    """The user hydrator with the user given (no PostgreSQL): history most recent first."""

    name = "user"

    def __init__(self, history: dict[str, list[tuple[str, str]]] | None = None,
                 users: dict[str, UserRecord] | None = None, fail: bool = False) -> None:
        self.history = history or {}
        self.users = users or {}
        self.fail = fail

    def enable(self, q: RequestQuery) -> str | None:
        return None if q.user_id else "no user"

    async def hydrate(self, q: RequestQuery) -> None:
        if self.fail:
            raise ConnectionError("PostgreSQL is down")
        q.user = self.users.get(q.user_id)
        now = datetime.now(UTC).timestamp()
        q.history = [HistoryEntry(i, {t}, now - n) for n, (i, t) in enumerate(self.history.get(q.user_id, []))]
        if not q.filters.include_seen:
            q.seen = {h.item_id for h in q.history if not h.types.isdisjoint(q.params.seen_types)}

    def failure_note(self, exc: BaseException) -> str:
        return f"user history unavailable ({type(exc).__name__}): cold start"


def items(n: int, **overrides: dict) -> list[ItemRecord]:
    """Items "1".."n", in category "c<i % 3>", created a day apart (the highest id newest)."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for i in range(1, n + 1):
        kw = {"title": f"Item {i}", "categories": [f"c{i % 3}"], "brand": f"b{i % 2}", "price": float(i),
              "created_at": t0 + timedelta(days=i)}
        kw.update(overrides.get(str(i), {}))
        out.append(ItemRecord(str(i), **kw))
    return out


class Box:
    """A Recommender over fakes; `user` replaces the PostgreSQL hydrator."""

    def __init__(self, n_items: int = 60, lists: dict[str, list[str]] | None = None,
                 ranking: dict[str, float] | None = None, config: OrchestratorConfig | None = None,
                 user: GivenUser | None = None, redis: object = None, settings: Settings | None = None,
                 item_overrides: dict | None = None) -> None:
        self.catalog = Catalog(pool=None)  # type: ignore[arg-type]
        self.catalog.apply(items(n_items, **(item_overrides or {})))
        self.catalog.popular = [(str(i), float(n_items - i)) for i in range(1, n_items + 1)]
        self.retrieval = FakeRetrieval(lists or {})
        self.ranking = FakeRanking(ranking or {})
        self.settings = settings or Settings()
        self.rec = Recommender(self.settings, None, redis, self.retrieval, self.ranking, self.catalog,  # type: ignore[arg-type]
                               ExposureLog(None), config, Stats(redis))  # type: ignore[arg-type]
        self.user = user or GivenUser()
        self.rec.pipelines.query_hydrators[0] = self.user

    @property
    def deps(self) -> Deps:
        return self.rec.deps

    @property
    def pipelines(self) -> Pipelines:
        return self.rec.pipelines


def no_deadline() -> Callable[[], float | None]:
    return lambda: None


def params(**changes: object) -> PipelineParams:
    return PipelineParams().updated(dict(changes), "test")
