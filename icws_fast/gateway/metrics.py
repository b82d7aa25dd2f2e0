"""Prometheus metrics of the gateway, and the HTTP endpoint that serves them with /health and /ready.

Names follow the Rust gateway (``clients_connected``, ``active_pollers``, ``poller_duration``,
``connection_opening_time``, ``connection_duration``, ``client_connected_count``) so existing
dashboards find them; docs/operations.md describes every metric and lists the differences
(``tls_resolution_time`` is absent: picows does not expose when the TLS handshake starts). Unlike the
Rust gateway, no metric is labelled by client key: the only label with open-ended values is the canister
id, whose number is bounded by what the gateway serves.

The label values of ``errors_total`` and ``dropped_messages_total`` are a closed set (:data:`ERROR_KINDS`,
:data:`DROP_REASONS`), created at zero when the gateway starts: a counter that appears only at its first
increment hides that increment from ``rate()`` and ``increase()``, so an alert would miss the first error.
The ``process_*`` metrics (memory, CPU, file descriptors) come from prometheus-client's process collector.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

# Latency buckets from 1 ms to 30 s: poll round trips and connection set-up both live here.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_DURATION_BUCKETS = (1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 6 * 3600.0, 24 * 3600.0)

#: Every ``kind`` of ``errors_total`` (docs/operations.md says what each counts).
ERROR_KINDS: tuple[str, ...] = (
    "poll_reject",
    "poll_status",
    "poll_timeout",
    "poll_transport",
    "poll_decode",
    "poll_nonce_gap",
    "poll_stale_batch",
    "poll_invalid_batch",
    "poll_resync",
    "canister",
    "poller_crash",
    "connection_refused",
    "slow_consumer",
    "duplicate_client_key",
    "session_internal_error",
)

#: Every ``reason`` of ``dropped_messages_total`` (docs/operations.md says what each counts).
DROP_REASONS: tuple[str, ...] = ("unknown_client", "invalid_certificate", "gap")


class GatewayMetrics:
    """Every metric of one gateway, in its own registry (several gateways can share a process in tests)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.clients_connected = Gauge("clients_connected", "WebSocket connections currently open", registry=r)
        self.client_connected_count = Counter(
            "client_connected_count", "IC WebSocket sessions set up (ws_open relayed)", ["canister_id"], registry=r
        )
        self.active_pollers = Gauge("active_pollers", "Canister pollers currently running", registry=r)
        self.poller_duration = Histogram(
            "poller_duration",
            "Round trip of one ws_get_messages poll, in seconds",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.connection_opening_time = Histogram(
            "connection_opening_time",
            "From the WebSocket upgrade to the first canister message relayed, in seconds",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.connection_duration = Histogram(
            "connection_duration",
            "Lifetime of a WebSocket connection, in seconds",
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.messages_to_clients = Counter(
            "relayed_messages_to_clients", "Canister messages relayed to clients", ["canister_id"], registry=r
        )
        self.bytes_to_clients = Counter(
            "relayed_bytes_to_clients", "Bytes of canister messages relayed to clients", ["canister_id"], registry=r
        )
        self.envelopes_to_ic = Counter(
            "relayed_envelopes_to_ic",
            "Client envelopes relayed to the IC, by outcome (accepted, pending, rejected, canister_error, invalid, "
            "transient)",
            ["canister_id", "outcome"],
            registry=r,
        )
        self.polled_messages = Counter(
            "polled_messages", "Messages returned by ws_get_messages polls", ["canister_id"], registry=r
        )
        self.dropped_messages = Counter(
            "dropped_messages",
            "Polled messages not relayed, by reason (no such client, invalid certificate or tree...)",
            ["reason"],
            registry=r,
        )
        self.errors = Counter("errors", "Errors by kind", ["kind"], registry=r)
        self.closed_connections = Counter(
            "closed_connections", "Connections the gateway closed, by close code", ["code"], registry=r
        )
        self.send_queue_bytes = Histogram(
            "client_send_queue_bytes",
            "Bytes already waiting in a client's send buffer when a message is queued behind them",
            buckets=(0, 1024, 16384, 65536, 262144, 1048576, 4194304, 16777216),
            registry=r,
        )
        self.ws_close_calls = Counter("ws_close_calls", "ws_close calls made, by outcome", ["outcome"], registry=r)
        self.send_buffer_bytes = Gauge(
            "clients_send_buffer_bytes",
            "Bytes written to clients and not yet sent, all clients together, at the time of the scrape",
            registry=r,
        )
        self.ready = Gauge("gateway_ready", "1 while /ready says ready, else 0", registry=r)
        ProcessCollector(registry=r)
        for kind in ERROR_KINDS:
            self.errors.labels(kind)
        for reason in DROP_REASONS:
            self.dropped_messages.labels(reason)
        for outcome in ("ok", "error"):
            self.ws_close_calls.labels(outcome)


class HealthServer:
    """``/metrics``, ``/health`` (the process is up) and ``/ready`` (accepting clients) over HTTP."""

    def __init__(self, metrics: GatewayMetrics, is_ready: Callable[[], bool]) -> None:
        self._metrics = metrics
        self._is_ready = is_ready
        # Read at each scrape, so an alert sees what a load balancer sees on /ready.
        metrics.ready.set_function(lambda: float(is_ready()))
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str | None, port: int, *, path: Path | None = None) -> None:
        """Listen on ``host:port`` (port 0 picks a free one, then found in :attr:`port`), or on the Unix socket
        ``path`` when it is given."""
        app = web.Application()
        app.router.add_get("/metrics", self._serve_metrics)
        app.router.add_get("/health", self._serve_health)
        app.router.add_get("/ready", self._serve_ready)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site: web.BaseSite = (
            web.TCPSite(self._runner, host, port) if path is None else web.UnixSite(self._runner, str(path))
        )
        await site.start()
        if path is None:
            self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _serve_metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self._metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _serve_health(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _serve_ready(self, _request: web.Request) -> web.Response:
        if self._is_ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")
