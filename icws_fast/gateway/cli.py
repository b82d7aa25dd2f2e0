"""``icws-gateway``: the command line of the gateway (flags and defaults of the Rust gateway 1.4.x, plus limits).

Exit codes: 0 after a drain on SIGTERM/SIGINT, 1 when start-up fails, 2 for bad flags.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import ssl
import sys
from pathlib import Path

from icws_fast.gateway.identity import load_or_create_identity
from icws_fast.gateway.logs import setup_logging
from icws_fast.gateway.server import Gateway, GatewayConfig
from icws_fast.ic.principal import Principal

log = logging.getLogger("icws_fast.gateway")


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _principal(text: str) -> Principal:
    try:
        return Principal.from_text(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    p = argparse.ArgumentParser(prog="icws-gateway", description="IC WebSocket gateway")
    p.add_argument("--gateway-address", type=_address, default="0.0.0.0:8080", help="WebSocket listen address")
    p.add_argument("--ic-network-url", default="http://127.0.0.1:4943", help="replica (or boundary node) URL")
    p.add_argument("--polling-interval", type=_positive, default=100, help="canister polling interval, in ms")
    p.add_argument(
        "--poll-pipeline-depth",
        type=_positive,
        default=3,
        help="ws_get_messages polls in flight per canister while it has a backlog (1: strictly one at a time)",
    )
    p.add_argument(
        "--prometheus-endpoint", type=_address, default="0.0.0.0:9000", help="/metrics, /health and /ready address"
    )
    p.add_argument("--tls-certificate-pem-path", help="certificate chain (PEM) to serve wss://")
    p.add_argument("--tls-certificate-key-pem-path", help="private key (PEM) of the certificate")
    p.add_argument("--opentelemetry-collector-endpoint", help="OTLP gRPC endpoint to export traces to")
    p.add_argument("--max-clients", type=_positive, default=10_000, help="connections accepted at once")
    p.add_argument("--max-clients-per-ip", type=_positive, default=100, help="connections accepted per client IP")
    p.add_argument("--max-message-size", type=_positive, default=256 * 1024, help="largest client frame, in bytes")
    p.add_argument(
        "--max-send-buffer",
        type=_positive,
        default=4 * 1024 * 1024,
        help="bytes a client may leave unread from earlier batches before it is closed as a slow consumer",
    )
    p.add_argument(
        "--allowed-canister-id",
        action="append",
        type=_principal,
        help="serve only this canister (repeat for several; default: any canister)",
    )
    p.add_argument(
        "--ping-interval", type=float, default=20.0, help="seconds of client silence before a ping (0: never)"
    )
    p.add_argument("--handshake-timeout", type=float, default=5.0, help="seconds for the HTTP upgrade")
    p.add_argument("--first-message-timeout", type=float, default=10.0, help="seconds for the client's ws_open")
    p.add_argument("--drain-timeout", type=float, default=10.0, help="seconds to drain on SIGTERM/SIGINT")
    p.add_argument("--log-format", choices=("text", "json"), default="text")
    p.add_argument("--log-level", default=None, help="stdout level when RUST_LOG_STDOUT is unset (default info)")
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="where key_pair and traces/ live")
    return p


def _ssl_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if not cert and not key:
        return None
    if not cert or not key:
        raise SystemExit("--tls-certificate-pem-path and --tls-certificate-key-pem-path go together")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


async def _serve(args: argparse.Namespace) -> int:
    identity = load_or_create_identity(args.data_dir / "key_pair")
    print(f"gateway principal: {identity.sender}", flush=True)
    if args.opentelemetry_collector_endpoint:
        from icws_fast.gateway.tracing import setup_tracing  # noqa: PLC0415 - the otel extra is optional

        setup_tracing(args.opentelemetry_collector_endpoint, str(identity.sender))
    host, port = args.gateway_address
    metrics_host, metrics_port = args.prometheus_endpoint
    config = GatewayConfig(
        ic_url=args.ic_network_url,
        host=host,
        port=port,
        polling_interval_s=args.polling_interval / 1000,
        poll_pipeline_depth=args.poll_pipeline_depth,
        metrics_host=metrics_host,
        metrics_port=metrics_port,
        ssl_context=_ssl_context(args.tls_certificate_pem_path, args.tls_certificate_key_pem_path),
        max_clients=args.max_clients,
        max_clients_per_ip=args.max_clients_per_ip,
        max_message_size=args.max_message_size,
        max_send_buffer=args.max_send_buffer,
        handshake_timeout_s=args.handshake_timeout,
        open_timeout_s=args.first_message_timeout,
        drain_timeout_s=args.drain_timeout,
        ping_interval_s=args.ping_interval,
        allowed_canisters=frozenset(args.allowed_canister_id) if args.allowed_canister_id else None,
    )
    # Handlers first: a signal that arrives while starting up must still end in a drain, not a traceback.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gateway = Gateway(config, identity)
    try:
        await gateway.start()
    except Exception as exc:
        log.error("gateway failed to start: %s", exc)
        with contextlib.suppress(Exception):
            await gateway.agent.close()
        return 1
    scheme = "wss" if config.ssl_context is not None else "ws"
    print(
        f"listening on {scheme}://{host}:{gateway.port} (metrics on {metrics_host}:{gateway.metrics_port})", flush=True
    )
    await stop.wait()
    log.info("signal received: draining")
    await gateway.drain()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the gateway until SIGTERM/SIGINT; returns the exit code."""
    args = build_parser().parse_args(argv)
    stdout_spec = os.environ.get("RUST_LOG_STDOUT") or args.log_level or "info"
    file_spec = os.environ.get("RUST_LOG_FILE") or "trace"
    try:
        setup_logging(
            stdout_spec=stdout_spec,
            file_spec=file_spec,
            log_format=args.log_format,
            traces_dir=args.data_dir / "traces",
        )
    except ValueError as exc:
        print(f"icws-gateway: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop  # noqa: PLC0415 - not installed on Windows
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return asyncio.run(_serve(args))
    return uvloop.run(_serve(args))


if __name__ == "__main__":
    sys.exit(main())
