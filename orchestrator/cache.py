"""The Recommend cache, in one component: key, lookup, staleness rules and write.

    key     the user's hash (storage/cache.py); field = surface, variant, k, filters, diversity,
            promotions and the model version now served
    stale   any accepted interaction of the user bumps the user's generation (LogInteractions):
            an answer written at an older generation is never served; an answer holding an item
            the catalogue no longer shows as active (out of stock, retired) is recomputed; a new
            model version changes the field, so answers report it
    write   after the response, for healthy (not degraded), non-debug answers, at the generation
            read before the answer was computed (an interaction logged meanwhile makes it stale)

Redis down: no cache (the lookup marks the answer degraded; the write is skipped). Once its breaker
is open (orchestrator/dependencies.py) neither waits on Redis's socket timeout.
"""

from __future__ import annotations

import asyncio
import logging

from orchestrator.pipeline import SideEffect, describe
from orchestrator.query import Deps, RequestQuery
from protos import internal_pb2 as ipb
from protos import recsys_pb2 as pb
from storage import cache

log = logging.getLogger(__name__)


class ModelVersion:
    """The model version the retrieval service serves now, as this replica last saw it: from every
    Retrieve answer, and from a probe each second, so cache hits switch to a new version too."""

    def __init__(self, deps: Deps, interval_s: float = 1.0) -> None:
        self.deps = deps
        self.interval_s = interval_s
        self.current = ""

    def seen(self, version: str) -> None:
        if version:
            self.current = version

    async def probe(self) -> None:
        resp = await self.deps.retrieval.Retrieve(
            ipb.RetrieveRequest(k=1, sources=[ipb.SourceRequest(name="popular", k=1)]), timeout=1.0)
        self.seen(resp.model_version)

    async def watch(self) -> None:
        while True:
            try:
                await self.probe()
            except Exception as exc:  # noqa: BLE001 - retrieval down: keep the last version seen
                log.debug("model version probe failed: %s", describe(exc))
            await asyncio.sleep(self.interval_s)


def _field(q: RequestQuery, req: pb.RecommendRequest, version: str) -> str:
    return cache.fingerprint(
        q.surface, q.variant, q.k, version,
        *(m.SerializeToString(deterministic=True) for m in (req.filters, req.diversity, req.promotions)),
    )


class RecommendationCache:
    def __init__(self, deps: Deps, versions: ModelVersion) -> None:
        self.deps = deps
        self.versions = versions

    async def lookup(self, q: RequestQuery, req: pb.RecommendRequest) -> pb.RecommendResponse | None:
        """A fresh cached answer for this request, or None (miss, stale or Redis away: trace says which)."""
        if self.deps.redis is None:  # deployed without a cache (in-process tests, the offline harness)
            return None
        record = q.trace.start("cache:lookup")
        try:
            # the client's socket timeout (0.25 s, orchestrator/service.py) bounds the call: no timer task
            async with self.deps.breakers.redis_guard():
                gen, history_gen, raw = await cache.get(self.deps.redis, q.user_id,
                                                        _field(q, req, self.versions.current))
        except Exception as exc:  # noqa: BLE001 - a cache is optional
            record.outcome, record.error = "failed", describe(exc)
            q.trace.degrade(record, f"cache unavailable: {record.error}")
            q.trace.finish(record)
            return None
        q.scratch["cache_gen"] = gen
        q.scratch["history_gen"] = history_gen  # what a held history must match (orchestrator/histories.py)
        response = pb.RecommendResponse.FromString(raw) if raw else None
        if response is not None:
            inactive = [i.item_id for i in response.items if not self.deps.catalog.is_active(i.item_id)]
            if inactive:
                record.note = f"stale: {inactive[0]!r} is no longer active"
                response = None
        record.note = record.note or ("hit" if response is not None else "miss")
        q.trace.finish(record)
        self.deps.stats.count("cache_hit" if response is not None else "cache_miss")
        return response


class CacheWrite(SideEffect):
    name = "cache_write"

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def enable(self, q: RequestQuery) -> str | None:
        if q.debug:
            return "debug answers are not cached"
        if self.deps.redis is None:
            return "no cache"
        return None if "cache_gen" in q.scratch and not q.scratch.get("cache_hit") else "nothing to write"

    async def run(self, q: RequestQuery, response: pb.RecommendResponse) -> None:
        if response.degraded:
            return
        value = response.SerializeToString()
        # the field of the version the answer holds (retrieval's): the next lookup finds it once the
        # replica's view of the current version catches up
        field = _field(q, q.scratch["request"], response.model_version)
        ttl = self.deps.settings.cache_ttl_s
        async with self.deps.breakers.redis_guard():
            await cache.put(self.deps.redis, q.user_id, field, q.scratch["cache_gen"], value, ttl)


class Exposures(SideEffect):
    """The exposure log (A/B attribution): what was shown to whom, under which variant; hits too."""

    name = "exposures"

    def __init__(self, deps: Deps) -> None:
        self.exposures = deps.exposures

    async def run(self, q: RequestQuery, response: pb.RecommendResponse) -> None:
        self.exposures.add(response.request_id, q.user_id, q.surface, response.experiment_variant,
                           [i.item_id for i in response.items])
