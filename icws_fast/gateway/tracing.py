"""OpenTelemetry traces over OTLP/gRPC, when ``--opentelemetry-collector-endpoint`` is set.

The ``otel`` extra is optional: it is imported here only, and only by :func:`setup_tracing`. Until
that succeeds, :func:`span` and :func:`start_span` hand out :data:`NO_SPAN`, whose methods do
nothing, so the gateway opens spans unconditionally at no cost. Spans cover per-connection and
per-call work, never per-message fan-out:

``client_session``
    one WebSocket connection, from admission to disconnect; ``canister_id`` and ``client_key``
    once the client's ``ws_open`` is accepted. Its connection's relays are its children.
``relay``
    one client envelope submitted to the IC (``method``: ``ws_open`` or ``ws_message``).
``ws_close``
    the gateway's ``ws_close`` call for a client that went away.
``poll`` and ``poll_reply``
    one ``ws_get_messages`` query (``nonce``), and the handling of its reply (``messages``: how many came).

Exporting never holds up the gateway: finished spans go into a bounded queue that a background
thread sends in batches (dropping spans when the queue is full), and the exporter gives up on an
unreachable collector after its timeout, logging a warning.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import logging
import threading
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from icws_fast.errors import CallPending

log = logging.getLogger(__name__)

# What a span attribute may be here (the OTel API takes more; the gateway needs no more).
AttributeValue = str | int | bool


class TraceSpan(Protocol):
    """The part of an OpenTelemetry span the gateway uses; :data:`NO_SPAN` when tracing is off."""

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        """Set one attribute."""

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        """Set several attributes."""

    def end(self) -> None:
        """Finish the span (queued for export then)."""


class _NoSpan:
    """The span handed out while tracing is off: accepts everything, records nothing."""

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        pass

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        pass

    def end(self) -> None:
        pass


NO_SPAN: TraceSpan = _NoSpan()

# The SDK's TracerProvider, its exporter and its Tracer while tracing is on; Any because the extra is optional.
_provider: Any = None
_exporter: Any = None
_tracer: Any = None


def setup_tracing(endpoint: str, gateway_principal: str) -> None:
    """Export the gateway's spans to the OTLP/gRPC collector at ``endpoint`` (e.g. ``http://127.0.0.1:4317``).

    As with the Rust gateway's (tonic) exporter, the connection is plaintext unless ``endpoint``
    starts with ``https://``. Nothing connects yet: the exporter dials on its first batch.
    The service name is the Rust gateway's, ``ic-ws-gw-`` and the first five characters of the
    gateway's principal; the full principal is the ``gateway.principal`` resource attribute.

    Raises :class:`SystemExit` with a message (exit status 1, no traceback) when the ``otel``
    extra is not installed: the operator asked for traces, so running without them would hide
    the mistake.
    """
    global _provider, _exporter, _tracer
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter  # noqa: PLC0415
        from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415
    except ImportError as exc:
        raise SystemExit(
            f"--opentelemetry-collector-endpoint needs the 'otel' extra (pip install 'icws_fast[otel]'): {exc}"
        ) from None
    shutdown_tracing()
    resource = Resource.create(
        {"service.name": f"ic-ws-gw-{gateway_principal[:5]}", "gateway.principal": gateway_principal}
    )
    # A provider of our own rather than the process-wide one, which can be set only once per process.
    # The SDK's exit hook is replaced by ours, which bounds how long a dead collector can delay the exit.
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    # insecure=True is overridden by an https:// endpoint, which gets TLS.
    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _provider, _exporter = provider, exporter
    _tracer = provider.get_tracer("icws_fast.gateway")
    atexit.register(shutdown_tracing)
    log.info("exporting traces to %s", endpoint)


def shutdown_tracing(timeout_s: float = 5.0) -> None:
    """Send the spans still queued and turn tracing off, in about ``timeout_s`` at most; no-op when off.

    Runs at exit too. The SDK's own shutdown may retry a dead collector for its export timeout
    once per batch still queued, so it runs in a thread given ``timeout_s``; past that, the
    exporter is shut down, which drops what is left and makes the export thread (a daemon) give up.
    """
    global _provider, _exporter, _tracer
    provider, exporter = _provider, _exporter
    _provider = _exporter = _tracer = None
    atexit.unregister(shutdown_tracing)
    if provider is None:
        return
    flushing = threading.Thread(target=provider.shutdown, name="icws-otel-shutdown", daemon=True)
    flushing.start()
    flushing.join(timeout_s)
    if flushing.is_alive():
        log.warning("the OpenTelemetry collector did not take the last spans within %.1fs; dropping them", timeout_s)
        exporter.shutdown()


def start_span(name: str, **attributes: AttributeValue) -> TraceSpan:
    """A span that the caller ends, for work that is not one block (a connection's lifetime).

    It is not made current; pass it to :func:`span_context` for the tasks that work inside it.
    """
    if _tracer is None:
        return NO_SPAN
    span_: TraceSpan = _tracer.start_span(name, attributes=attributes)
    return span_


def span_context(parent: TraceSpan) -> contextvars.Context | None:
    """A copy of the current context in which ``parent`` is the current span, for ``create_task(context=...)``.

    Spans that a task so created opens become children of ``parent``. None while tracing is off
    (``create_task`` then copies the current context, as without the argument).
    """
    if _tracer is None or parent is NO_SPAN:
        return None
    from opentelemetry import context, trace  # noqa: PLC0415 - imported already by setup_tracing

    ctx = contextvars.copy_context()
    # The token is dropped on purpose: the copy belongs to the one task it is made for.
    ctx.run(context.attach, trace.set_span_in_context(parent))  # type: ignore[arg-type]
    return ctx


# What span() hands out while tracing is off: one shared block, reusable and reentrant, that yields NO_SPAN.
# A generator-based context manager per call cost 1.8 µs, paid twice per poll by the poller.
_NO_SPAN_BLOCK = contextlib.nullcontext(NO_SPAN)


def span(name: str, **attributes: AttributeValue) -> contextlib.AbstractContextManager[TraceSpan]:
    """A span named ``name`` around the block, child of the current span; :data:`NO_SPAN` when tracing is off.

    An exception leaving the block is recorded and marks the span as failed, except two that are
    not failures: :class:`~icws_fast.errors.CallPending` (the IC accepted a relayed call whose
    outcome only its sender may read) and :class:`asyncio.CancelledError` (a poll that is no
    longer wanted), which set the ``outcome`` attribute instead.
    """
    if _tracer is None:
        return _NO_SPAN_BLOCK
    return _recorded_span(_tracer, name, attributes)


@contextlib.contextmanager
def _recorded_span(tracer: Any, name: str, attributes: Mapping[str, AttributeValue]) -> Iterator[TraceSpan]:
    from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415 - imported already by setup_tracing

    with tracer.start_as_current_span(
        name, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as current:
        try:
            yield current
        except CallPending:
            current.set_attribute("outcome", "pending")
            raise
        except asyncio.CancelledError:
            current.set_attribute("outcome", "cancelled")
            raise
        except Exception as exc:
            current.record_exception(exc)
            current.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
