"""OpenTelemetry traces over OTLP, when ``--opentelemetry-collector-endpoint`` is set.

The ``otel`` extra is optional: it is imported here only, and only when asked for.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def setup_tracing(endpoint: str, gateway_principal: str) -> bool:
    """Install a global tracer provider exporting to ``endpoint``; False (and a warning) without the extra."""
    # The otel extra is optional, so its imports live here and run only when tracing is asked for.
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
    return True
