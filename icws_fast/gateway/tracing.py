"""OpenTelemetry traces over OTLP, when ``--opentelemetry-collector-endpoint`` is set.

The ``otel`` extra is optional: it is imported here only, and only when asked for. Until
:func:`setup_tracing` succeeds, :func:`span` is a no-op, so the gateway's code can open spans
unconditionally at no cost. Spans cover per-connection and per-call work (relays, ``ws_close``,
polls), never per-message fan-out.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

_tracer: Any = None


def setup_tracing(endpoint: str, gateway_principal: str) -> bool:
    """Export spans to ``endpoint`` (OTLP/gRPC); False (and a warning) when the ``otel`` extra is missing."""
    global _tracer
    try:
        from opentelemetry import trace  # noqa: PLC0415
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter  # noqa: PLC0415
        from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415
    except ImportError:
        log.warning("--opentelemetry-collector-endpoint needs the 'otel' extra (pip install icws_fast[otel])")
        return False
    resource = Resource.create({"service.name": "icws-gateway", "gateway.principal": gateway_principal})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    trace.set_tracer_provider(provider)
    _tracer = trace.get_tracer("icws_fast.gateway")
    return True


@contextlib.contextmanager
def span(name: str, **attributes: str | int) -> Iterator[None]:
    """A span named ``name`` around the block when tracing is on; nothing otherwise."""
    if _tracer is None:
        yield
        return
    with _tracer.start_as_current_span(name, attributes=attributes):
        yield
