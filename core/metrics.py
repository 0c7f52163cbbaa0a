"""Prometheus metrics (prometheus-client) every service exports at http://ADDR/metrics.

Each service process has its own registry (the client's default one) and serves it from a
thread of prometheus-client's own HTTP server; a service served by several processes
(recsys/workers.py) uses prometheus-client's multiprocess mode instead: every process writes
its counters and histograms to files in RECSYS_METRICS_DIR and the first one serves their sum,
with its own scrape-time gauges; the address comes from Settings
(`RECSYS_<SERVICE>_METRICS_ADDR`, empty = off). What every server has: calls per method and
status code with their latency (`recsys_rpc_seconds`, a server interceptor). What a service adds
(its pipeline components, dependencies, model version) it registers itself, often as a gauge read
at scrape time (`gauge`), so the hot path pays nothing for it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Histogram, multiprocess, start_http_server, values
from prometheus_client.core import REGISTRY, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# Importing Feast sets PROMETHEUS_MULTIPROC_DIR (for its gunicorn feature server), which switches every
# metric created afterwards to file-backed values: an mmap write and a pid check per increment, a file per
# metric left in /tmp, and inherited by every process the CLI starts. Each of our services is one process
# exporting its own registry: in-memory values, whatever the environment says; a service of several
# processes, file-backed values in the directory its first process made for them.
MULTIPROCESS_DIR = os.environ.get("RECSYS_METRICS_DIR", "")
if MULTIPROCESS_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = MULTIPROCESS_DIR
    values.ValueClass = values.MultiProcessValue()
else:
    values.ValueClass = values.MutexValue
_SCRAPE_TIME: list[Collector] = []  # this process's gauges read at scrape time (gauge(), info())

# latency buckets from a cache hit (~1 ms) to a deadline (~0.5 s)
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5)

RPC_SECONDS = Histogram("recsys_rpc_seconds", "gRPC calls served, by method and status code: latency in seconds",
                        ["method", "code"], buckets=LATENCY_BUCKETS)


class RpcMetrics(grpc.aio.ServerInterceptor):
    """Every unary call's latency and status code (health checks included: a probe storm shows)."""

    def __init__(self) -> None:
        self._children: dict[tuple[str, str], Any] = {}  # .labels() costs a lock and a dict: once per pair

    def observe(self, method: str, code: grpc.StatusCode | None, seconds: float) -> None:
        key = (method, code.name if code is not None else "OK")
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = RPC_SECONDS.labels(*key)
        child.observe(seconds)

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        behaviour, method = handler.unary_unary, details.method.rsplit("/", 1)[-1]

        async def measured(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start = time.perf_counter()
            try:
                response = await behaviour(request, context)
            except BaseException:
                code = context.code()
                self.observe(method, code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN,
                             time.perf_counter() - start)
                raise
            code = context.code()
            self.observe(method, code if isinstance(code, grpc.StatusCode) else None, time.perf_counter() - start)
            return response

        return grpc.unary_unary_rpc_method_handler(
            measured, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


def serve_metrics(addr: str) -> bool:
    """Serve the process's metrics at http://addr/metrics from a thread; False when off or the port is taken
    (the service serves on without metrics: a metrics port must never keep it from starting)."""
    if not addr:
        return False
    host, _, port = addr.rpartition(":")
    registry = REGISTRY
    if MULTIPROCESS_DIR:  # every process's counters and histograms, summed; this one's gauges
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=MULTIPROCESS_DIR)
        for collector in _SCRAPE_TIME:
            registry.register(collector)
    try:
        start_http_server(int(port), addr=host or "127.0.0.1", registry=registry)
    except (OSError, ValueError) as exc:
        log.warning("no metrics endpoint at %s: %s", addr, exc)
        return False
    log.info("metrics at http://%s/metrics", addr)
    return True


class _Gauges(Collector):
    def __init__(self, name: str, doc: str, labels: list[str], read: Callable[[], Iterable[tuple[list[str], float]]]):
        self.name, self.doc, self.labels, self.read = name, doc, labels, read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.name, self.doc, labels=self.labels)
        try:
            for values, value in self.read():
                family.add_metric(values, value)
        except Exception as exc:  # noqa: BLE001 - a scrape never fails for one gauge
            log.debug("gauge %s unreadable: %s", self.name, exc)
        yield family


class _Info(Collector):
    def __init__(self, name: str, doc: str, read: Callable[[], dict[str, str]]) -> None:
        self.name, self.doc, self.read = name, doc, read

    def collect(self) -> Iterable[InfoMetricFamily]:
        family = InfoMetricFamily(self.name, self.doc)
        family.add_metric([], self.read())
        yield family


def gauge(name: str, doc: str, labels: list[str], read: Callable[[], Iterable[tuple[list[str], float]]]) -> None:
    """A gauge whose values `read()` gives at scrape time: ([label values], value) pairs."""
    _register(_Gauges(name, doc, labels, read))


def info(name: str, doc: str, read: Callable[[], dict[str, str]]) -> None:
    """An info metric (`name_info{...} 1`) whose labels `read()` gives at scrape time."""
    _register(_Info(name, doc, read))


def _register(collector: Collector) -> None:
    REGISTRY.register(collector)
    _SCRAPE_TIME.append(collector)
