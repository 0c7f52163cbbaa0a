"""OpenTelemetry tracing, off by default, configured by the standard OTEL_* variables.

    OTEL_TRACES_EXPORTER   none (default) | console (JSON spans on stdout: the service log) | otlp
    OTEL_SERVICE_NAME      default recsys-<service>
    OTEL_EXPORTER_OTLP_*   the OTLP exporter's own (needs opentelemetry-exporter-otlp-proto-grpc)

When on: a span per RPC on every server and per call on the orchestrator's channels (the gRPC
instrumentation, which carries the context in metadata: W3C traceparent), and a span per pipeline
component, made from its trace record when it finishes (so a component pays nothing while tracing
is off). The orchestrator puts the request id on its RPC span.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

log = logging.getLogger(__name__)

enabled = False


def configure(service: str) -> bool:
    """Set the process's tracer provider from OTEL_*; True when tracing is on."""
    global enabled
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    if exporter in ("", "none"):
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME", "").strip() or f"recsys-{service}"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    if exporter == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(
            formatter=lambda span: span.to_json(indent=None) + "\n")))
    elif exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.warning("OTEL_TRACES_EXPORTER=otlp needs `pip install opentelemetry-exporter-otlp-proto-grpc`; "
                        "tracing stays off")
            return False
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        log.warning("OTEL_TRACES_EXPORTER=%s: use none, console or otlp; tracing stays off", exporter)
        return False
    trace.set_tracer_provider(provider)
    enabled = True
    log.info("tracing on (%s exporter), service.name %s", exporter, name)
    return True


def server_interceptors() -> list[Any]:
    if not enabled:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor()]


def client_interceptors() -> list[Any]:
    if not enabled:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors())


def component_span(name: str, latency_ms: float, attributes: dict[str, Any]) -> None:
    """A span for a component that just finished, child of the current (RPC) span."""
    from opentelemetry import trace

    end = time.time_ns()
    span = trace.get_tracer("recsys.pipeline").start_span(name, start_time=end - int(latency_ms * 1e6),
                                                          attributes=attributes)
    span.end(end_time=end)


def annotate(**attributes: str) -> None:
    """Attributes on the current span (the RPC's), e.g. the request id."""
    if enabled:
        from opentelemetry import trace

        trace.get_current_span().set_attributes({f"recsys.{k}": v for k, v in attributes.items() if v})
