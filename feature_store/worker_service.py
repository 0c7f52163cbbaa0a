"""The real-time worker as a service process: the push loop in a thread, a gRPC health
endpoint beside it (so it is started, watched and stopped like the other services). The
health check says NOT_SERVING until the worker has reached Redis and PostgreSQL, and again
while either is away (feature_store/push_worker.py, "Faults")."""

from __future__ import annotations

import asyncio
import logging
import threading

from core import metrics, tls
from core.config import Settings
from core.grpc_server import serve
from core.service_auth import internal_interceptors
from feature_store.push_worker import PushWorker
from storage.streams import GROUP, STREAM

log = logging.getLogger(__name__)


async def run(settings: Settings) -> None:
    # The endpoint serves only health checks (open) today; a method added to it is guarded from the start.
    interceptors = internal_interceptors(settings, settings.worker_addr)
    server_tls = tls.server_tls(settings)
    worker = await asyncio.to_thread(PushWorker, settings)
    metrics.gauge("recsys_worker_pending", "stream entries read and not yet acknowledged", [],
                  lambda: [([], float(worker.redis.xpending(STREAM, GROUP)["pending"]))])
    metrics.gauge("recsys_worker_healthy", "1 while the worker reaches PostgreSQL and Redis", [],
                  lambda: [([], 1.0 if worker.healthy else 0.0)])
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), name="push-worker", daemon=True)
    thread.start()

    async def shutdown() -> None:
        stop.set()
        await asyncio.to_thread(thread.join, 10)
        worker.close()
        log.info("worker stopped after %d stream entries", worker.processed)

    await serve(settings.worker_addr, [], lambda server: None, on_shutdown=shutdown, healthy=lambda: worker.healthy,
                metrics_addr=settings.worker_metrics_addr, extra_interceptors=interceptors, reflect=settings.reflection,
                tls=server_tls)
