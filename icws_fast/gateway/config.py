"""The gateway's configuration: every setting, its flag, its default and its checks, in one place.

:class:`GatewayConfig` is what :class:`~icws_fast.gateway.server.Gateway` runs with. The
``icws-gateway`` command builds its flags from it (the names and defaults of the Rust
ic-websocket-gateway 1.4.x, plus limits of its own); code embedding a gateway builds it directly.
Either way the values are checked once, on construction, and the config never changes afterwards.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from icws_fast import cliconfig
from icws_fast.cliconfig import (
    ConfigError,
    address_flag,
    check_at_least,
    check_http_url,
    check_port,
    check_positive,
    check_readable_file,
    flag,
    parse_float,
    parse_int,
)
from icws_fast.gateway.forwarded import Network, parse_networks
from icws_fast.gateway.logs import EnvFilter
from icws_fast.ic.principal import Principal
from icws_fast.protocol.retry import DEFAULT_BACKOFF, WS_CLOSE_WINDOW_S, Backoff

__all__ = ["GatewayConfig", "flag_table"]


# picows never makes a read buffer smaller than this.
MIN_READ_BUFFER_SIZE = 2048
READ_BUFFER_SIZE = 2048
# The most Linux accepts by default (net.core.somaxconn since 5.4); asyncio's default is 100.
LISTEN_BACKLOG = 4096
# Connections the agent keeps beyond max_concurrent_calls, for polls (up to the pipeline depth per canister) and
# the readiness check.
POLL_CONNECTIONS = 64


def _parse_ms(text: str) -> float:
    """A flag in whole milliseconds, as the Rust gateway takes it, to seconds."""
    return parse_int(text) / 1000


def _show_ms(seconds: float) -> str:
    return f"{round(seconds * 1000)}"


def _show_seconds(seconds: float) -> str:
    return f"{seconds:g}"


def _parse_workers(text: str) -> int:
    """``--workers``: a whole number, or ``auto`` for the CPUs this process may run on (its affinity mask)."""
    if text == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return parse_int(text)


_OTLP_FORMS = "give http://HOST:PORT (plaintext), https://HOST[:PORT] (TLS) or HOST:PORT, e.g. http://127.0.0.1:4317"


def _otlp_endpoint_problem(endpoint: str) -> str | None:
    """What makes ``endpoint`` an address the OTLP/gRPC exporter cannot dial; None when it can.

    The exporter keeps only ``HOST:PORT`` of a URL (the scheme chooses TLS), and gRPC gives a target without a
    port 443, which no plaintext collector listens on; the Rust gateway's exporter (tonic) needs a scheme too,
    but ``HOST:PORT`` has always worked here, so it stays. A path would be dropped: gRPC has none (``/v1/traces``
    is OTLP/HTTP's, served on another port, 4318)."""
    if any(char.isspace() for char in endpoint):
        return "it contains white space"
    scheme, separator, _ = endpoint.partition("://")
    if separator and scheme.lower() not in ("http", "https"):
        return f"{scheme}:// is not a scheme of OTLP/gRPC"
    try:
        parts = urlsplit(endpoint if separator else f"//{endpoint}")
        port = parts.port
    except ValueError:  # a port that is not a number, or beyond 65535
        return "the port is not a number from 1 to 65535"
    if not parts.hostname:
        return "it names no host"
    if port == 0:
        return "the port is not a number from 1 to 65535"
    if port is None and scheme.lower() != "https":
        return "it names no port (a collector listens for OTLP/gRPC on 4317 unless told otherwise)"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return "an OTLP/gRPC endpoint has no path or query (/v1/traces is OTLP/HTTP's, usually on port 4318)"
    return None


@dataclass(frozen=True)
class GatewayConfig:
    """Everything a gateway runs with; the CLI fills it from flags (see :func:`flag_table`), tests build it directly.

    Fields without a flag are for code embedding a gateway. ``log_*``, ``data_dir`` and
    ``opentelemetry_collector_endpoint`` are read by the ``icws-gateway`` command (which sets up
    logging, the identity and tracing for its process); a :class:`Gateway` ignores them.
    """

    ic_url: str = flag("http://127.0.0.1:4943", "--ic-network-url", "replica (or boundary node) URL", metavar="URL")
    """The IC HTTP interface the gateway polls and relays to (``http://`` or ``https://``)."""

    host: str = address_flag("0.0.0.0", "--gateway-address", "WebSocket listen address", port_field="port")
    """Interface the WebSocket server listens on (``0.0.0.0``: every IPv4 interface)."""

    port: int = 8080
    """TCP port of the WebSocket server (0: a free port, then read :attr:`Gateway.port`); set with ``host``."""

    polling_interval_s: float = flag(
        0.1, "--polling-interval", "canister polling interval, in ms", metavar="MS", parse=_parse_ms, show=_show_ms
    )
    """Seconds between two ``ws_get_messages`` polls of a canister that has no backlog."""

    poll_timeout_s: float = 5.0
    """Seconds a ``ws_get_messages`` query may take before the poll counts as failed."""

    poll_pipeline_depth: int = flag(
        3,
        "--poll-pipeline-depth",
        "ws_get_messages polls in flight per canister while it has a backlog (1: strictly one at a time)",
        metavar="N",
        parse=parse_int,
    )
    """Polls a canister's poller keeps in flight while the canister has more messages than one batch."""

    metrics_host: str | None = address_flag(
        "0.0.0.0", "--prometheus-endpoint", "/metrics, /health and /ready address", port_field="metrics_port"
    )
    """Interface of the HTTP server for ``/metrics``, ``/health`` and ``/ready``; None: no such server."""

    metrics_port: int = 9000
    """TCP port of the metrics server (0: a free port, then read :attr:`Gateway.metrics_port`)."""

    tls_certificate_pem_path: Path | None = flag(
        None, "--tls-certificate-pem-path", "certificate chain (PEM) to serve wss://", metavar="FILE", parse=Path
    )
    """Certificate chain (PEM) to serve ``wss://`` with; needs ``tls_certificate_key_pem_path``. None: ``ws://``."""

    tls_certificate_key_pem_path: Path | None = flag(
        None, "--tls-certificate-key-pem-path", "private key (PEM) of the certificate", metavar="FILE", parse=Path
    )
    """Private key (PEM) of ``tls_certificate_pem_path``."""

    opentelemetry_collector_endpoint: str | None = flag(
        None,
        "--opentelemetry-collector-endpoint",
        "OTLP/gRPC collector to export traces to: http://HOST:PORT, https://HOST[:PORT] (TLS) or HOST:PORT",
        metavar="URL",
    )
    """OTLP/gRPC collector the command exports spans to (e.g. ``http://127.0.0.1:4317``); None or empty (as in the
    Rust gateway): no tracing."""

    max_clients: int = flag(10_000, "--max-clients", "connections accepted at once", metavar="N", parse=parse_int)
    """Open connections beyond which new ones are refused (close code 1013, try again later)."""

    max_clients_per_ip: int = flag(
        100, "--max-clients-per-ip", "connections accepted per client IP", metavar="N", parse=parse_int
    )
    """Open connections from one client IP beyond which its new ones are refused."""

    trusted_proxies: tuple[Network, ...] = flag(
        (),
        "--trusted-proxies",
        "load balancers whose X-Forwarded-For names the client, as CIDRs separated by commas (none: ignore the header)",
        metavar="CIDR,...",
        parse=parse_networks,
        collect=lambda lists: tuple(net for nets in lists for net in nets),
    )
    """The proxies (load balancers) trusted to name the client in the upgrade request's ``X-Forwarded-For``.

    A connection from one of them counts, for ``max_clients_per_ip`` and in the logs, as coming from the
    address the header names (read from its right end, see :mod:`icws_fast.gateway.forwarded`). Empty (the
    default): the header is ignored and every connection is its TCP peer's; never list addresses clients use.
    """

    max_message_size: int = flag(
        256 * 1024, "--max-message-size", "largest client frame, in bytes", metavar="BYTES", parse=parse_int
    )
    """Largest WebSocket frame a client may send, in bytes; a larger one closes the connection."""

    max_send_buffer: int = flag(
        4 * 1024 * 1024,
        "--max-send-buffer",
        "bytes a client may leave unread from earlier batches before it is closed as a slow consumer",
        metavar="BYTES",
        parse=parse_int,
    )
    """Bytes written to a client but not yet sent, beyond which the client is closed as a slow consumer."""

    read_buffer_size: int = flag(
        READ_BUFFER_SIZE,
        "--read-buffer-size",
        "initial read buffer of each connection, in bytes (grows for larger frames)",
        metavar="BYTES",
        parse=parse_int,
    )
    """Bytes of the read buffer each connection starts with (picows's ``read_buffer_init_size``, at least 2048).

    Idle sessions cost little beyond this buffer, so it is small: a client's upgrade request and envelopes fit,
    and a larger frame doubles the buffer until it fits (it stays that size for the connection's lifetime)."""

    listen_backlog: int = flag(
        LISTEN_BACKLOG,
        "--listen-backlog",
        "connections the kernel queues for the gateway to accept (capped by net.core.somaxconn)",
        metavar="N",
        parse=parse_int,
    )
    """Established connections the kernel holds for the gateway to accept (``listen(2)``'s backlog).

    A burst of new connections beyond it is dropped by the kernel and retried by the clients' TCP a second or
    more later. Linux silently caps it at ``net.core.somaxconn`` (4096 by default since Linux 5.4)."""

    max_pending_relays: int = 32
    """Envelopes a client may have waiting to be relayed to the IC before it is closed for flooding."""

    max_concurrent_calls: int = flag(
        500,
        "--max-concurrent-calls",
        "calls to the IC made for clients (relayed envelopes, ws_close) in flight at once",
        metavar="N",
        parse=parse_int,
    )
    """Calls to the IC made for clients (relayed envelopes, ``ws_close``) in flight at once; more wait their turn.

    A call holds one HTTP/1.1 connection until the IC has certified it (a second or two on mainnet, a round on a
    local replica), so this bounds the relays per second to about ``N`` / call latency: size it for the relay rate
    you expect (500 / 1.5 s ≈ 330 relays/s). The agent keeps :data:`POLL_CONNECTIONS` connections more than this,
    so that polls always find one: a burst of thousands of ``ws_open`` never queues the polls behind it."""

    handshake_timeout_s: float = flag(
        5.0, "--handshake-timeout", "seconds for the HTTP upgrade", metavar="S", parse=parse_float, show=_show_seconds
    )
    """Seconds a new connection has to complete the WebSocket (HTTP upgrade) handshake."""

    open_timeout_s: float = flag(
        10.0,
        "--first-message-timeout",
        "seconds for the client's ws_open",
        metavar="S",
        parse=parse_float,
        show=_show_seconds,
    )
    """Seconds a connected client has to send its ``ws_open`` envelope.

    Checked, with the pings, by one sweep over the connections every quarter of the shorter of this and
    ``ping_interval_s``: a late client is closed up to that quarter later."""

    close_timeout_s: float = 2.0
    """Seconds the gateway waits for a client to answer a close frame before it drops the connection."""

    ping_interval_s: float = flag(
        20.0,
        "--ping-interval",
        "seconds of client silence before a ping (0: never)",
        metavar="S",
        parse=parse_float,
        show=_show_seconds,
    )
    """Seconds of silence from a client after which it is pinged (and closed if the pong is as late); 0: never.

    Checked by the sweep of ``open_timeout_s``: a ping or a close comes up to one sweep period late."""

    drain_timeout_s: float = flag(
        10.0,
        "--drain-timeout",
        "seconds to drain on SIGTERM/SIGINT",
        metavar="S",
        parse=parse_float,
        show=_show_seconds,
    )
    """Seconds :meth:`Gateway.drain` lets pending relays and queued messages finish before closing clients."""

    retry_backoff: Backoff = DEFAULT_BACKOFF
    """Delays between attempts of a relay or a ``ws_close`` that failed transiently (transport, 429/5xx, a
    retryable reject); a relay is tried until its envelope expires, see ``ws_close_window_s`` for ws_close."""

    ws_close_window_s: float = WS_CLOSE_WINDOW_S
    """Seconds ``ws_close`` for a departed client is retried; the canister's keep-alive drops the client after
    that anyway. A drain cuts it to what is left of ``drain_timeout_s``."""

    canister_error_grace_s: float = 60.0
    """Seconds a canister may answer its polls with ``CANISTER_ERROR`` (stopped for an upgrade, frozen for cycles,
    trapping) before its sessions are closed; until then the poller backs off and tries again."""

    ready_check_interval_s: float = 5.0
    """Seconds between the checks that the IC answers (``/api/v2/status``); ``/ready`` is 503 while it does not."""

    verify_certificates: bool = True
    """Check the certificate of every polled batch (False only for tests of the bare relay)."""

    allowed_canisters: frozenset[Principal] | None = flag(
        None,
        "--allowed-canister-id",
        "serve only this canister (repeat for several; default: any canister)",
        metavar="PRINCIPAL",
        parse=Principal.from_text,  # InvalidPrincipal is a ValueError with the reason
        collect=frozenset,
    )
    """The canisters clients may open a session with; None: any canister."""

    root_key_der: bytes | None = None
    """The IC root key (DER) certificates are checked against; None: the agent's (mainnet's, or the replica's)."""

    log_format: str = flag("text", "--log-format", "log line format", choices=("text", "json"))
    """Format of the command's log lines: ``text`` or ``json`` (one object a line)."""

    log_level: str = flag(
        "info",
        "--log-level",
        "what the command logs to stdout: a level or an EnvFilter spec (e.g. warn,ic_websocket_gateway=debug)",
        env="RUST_LOG_STDOUT",
        metavar="FILTER",
    )
    """EnvFilter spec of the command's stdout log: a level, or ``target=level`` directives after it."""

    log_file_level: str = flag(
        "trace", None, "what the command logs to data/traces/gateway_*.log (an EnvFilter spec)", env="RUST_LOG_FILE"
    )
    """EnvFilter spec of the command's log file (under ``data_dir/traces``); there is no flag, as in Rust."""

    data_dir: Path = flag(Path("data"), "--data-dir", "where key_pair and traces/ live", metavar="DIR", parse=Path)
    """Directory of the command's identity (``key_pair``, kept across restarts) and logs (``traces/``)."""

    workers: int = flag(
        1,
        "--workers",
        "gateway processes sharing the WebSocket port, each with its own identity (auto: one per CPU available)",
        metavar="N",
        parse=_parse_workers,
    )
    """Gateway processes the command runs, under a supervisor that serves one ``/metrics``, ``/health`` and
    ``/ready`` for all of them (docs/operations.md, "Workers"); 1: the command is the gateway, no supervisor.
    Worker 0 keeps ``data_dir/key_pair``, worker ``i`` ``data_dir/key_pair_<i>``. A :class:`Gateway` ignores it."""

    reuse_port: bool = False
    """Listen with ``SO_REUSEPORT``, so that several gateway processes share the WebSocket port (the kernel
    spreads new connections over them); the supervisor of ``workers`` sets it for its workers."""

    metrics_socket: Path | None = None
    """Unix socket to serve ``/metrics``, ``/health`` and ``/ready`` on instead of ``metrics_host``; the
    supervisor of ``workers`` gives each worker one in a private directory and asks them there."""

    def __post_init__(self) -> None:
        check_http_url("ic_url", self.ic_url)
        if self.opentelemetry_collector_endpoint:
            problem = _otlp_endpoint_problem(self.opentelemetry_collector_endpoint)
            if problem is not None:
                raise ConfigError("opentelemetry_collector_endpoint", f"{problem}; {_OTLP_FORMS}")
        check_port("port", self.port)
        check_port("metrics_port", self.metrics_port)
        check_positive("polling_interval_s", self.polling_interval_s, "the polling interval")
        check_positive("poll_timeout_s", self.poll_timeout_s, "the poll timeout")
        check_positive("workers", self.workers, "the number of workers")
        for name in (
            "poll_pipeline_depth",
            "max_clients",
            "max_clients_per_ip",
            "max_pending_relays",
            "max_concurrent_calls",
        ):
            check_positive(name, getattr(self, name), "the limit")
        check_positive("max_message_size", self.max_message_size, "the size")
        check_positive("max_send_buffer", self.max_send_buffer, "the size")
        check_at_least("read_buffer_size", self.read_buffer_size, MIN_READ_BUFFER_SIZE, "the read buffer")
        check_positive("listen_backlog", self.listen_backlog, "the backlog")
        for name in ("handshake_timeout_s", "open_timeout_s", "close_timeout_s", "ready_check_interval_s"):
            check_positive(name, getattr(self, name), "the timeout")
        check_at_least("ping_interval_s", self.ping_interval_s, 0, "the ping interval")
        check_at_least("drain_timeout_s", self.drain_timeout_s, 0, "the drain timeout")
        check_at_least("ws_close_window_s", self.ws_close_window_s, 0, "the ws_close window")
        check_at_least("canister_error_grace_s", self.canister_error_grace_s, 0, "the canister error grace")
        if self.log_format not in ("text", "json"):
            raise ConfigError("log_format", f"expected text or json, got {self.log_format!r}")
        for name in ("log_level", "log_file_level"):
            try:
                EnvFilter(getattr(self, name))
            except ValueError as exc:
                raise ConfigError(name, str(exc)) from None
        for network in self.trusted_proxies:
            if not isinstance(network, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
                raise ConfigError(
                    "trusted_proxies", f"expected ipaddress networks (e.g. ip_network('10.0.0.0/8')), got {network!r}"
                )
        self._check_tls()

    def _check_tls(self) -> None:
        cert, key = self.tls_certificate_pem_path, self.tls_certificate_key_pem_path
        if (cert is None) != (key is None):
            raise ConfigError(
                "tls_certificate_pem_path" if key is None else "tls_certificate_key_pem_path",
                "TLS needs both the certificate (--tls-certificate-pem-path)"
                " and its key (--tls-certificate-key-pem-path)",
            )
        if cert is None or key is None:
            return
        check_readable_file("tls_certificate_pem_path", cert)
        check_readable_file("tls_certificate_key_pem_path", key)
        try:
            self.ssl_context()
        except ssl.SSLError as exc:
            raise ConfigError(
                "tls_certificate_key_pem_path", f"cannot load the certificate {str(cert)!r} with this key: {exc}"
            ) from None

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server TLS context of the certificate and key; None when the gateway serves ``ws://``."""
        if self.tls_certificate_pem_path is None or self.tls_certificate_key_pem_path is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.tls_certificate_pem_path, self.tls_certificate_key_pem_path)
        return ctx


def flag_table() -> str:
    """The flags of ``icws-gateway`` as a Markdown table: flag, environment variable, default, meaning."""
    return cliconfig.flag_table(GatewayConfig)
