"""``icws-gateway``: the command line of the gateway (flags and defaults of the Rust gateway 1.4.x, plus limits).

The flags, their defaults and their checks are declared once, on :class:`GatewayConfig`.
Exit codes: 0 after a drain on SIGTERM/SIGINT, 1 when start-up fails, 2 for bad flags. With ``--workers N``
the command is a supervisor (:mod:`icws_fast.gateway.supervisor`) with the same exit codes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from icws_fast import cliconfig
from icws_fast.errors import AgentTimeout, ConfigError, TransportError
from icws_fast.gateway.config import GatewayConfig
from icws_fast.gateway.heap import audit_periodically, keep_freed_heap, start_gc_policy
from icws_fast.gateway.identity import key_file, load_or_create_identity
from icws_fast.gateway.logs import setup_logging
from icws_fast.gateway.server import Gateway
from icws_fast.ic.identity import Ed25519Identity

log = logging.getLogger("icws_fast.gateway")
# Start-up errors that mean the replica could not be reached at the configured URL.
_UNREACHABLE = (TransportError, AgentTimeout)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one flag per :class:`GatewayConfig` field that has one."""
    return cliconfig.build_parser(GatewayConfig, prog="icws-gateway", description="IC WebSocket gateway")


async def _serve(config: GatewayConfig, identity: Ed25519Identity, *, worker: int | None = None) -> int:
    """Run a gateway until SIGTERM/SIGINT, then drain; ``worker``: its index under a supervisor, which announces
    the principal and the addresses itself (the worker's own metrics address is a Unix socket)."""
    if worker is None:
        print(f"gateway principal: {identity.sender}", flush=True)
    if config.opentelemetry_collector_endpoint:
        from icws_fast.gateway.tracing import setup_tracing  # noqa: PLC0415 - the otel extra is optional

        setup_tracing(config.opentelemetry_collector_endpoint, str(identity.sender))
    # Handlers first: a signal that arrives while starting up must still end in a drain, not a traceback.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gateway = Gateway(config, identity)
    try:
        await gateway.start()
    except Exception as exc:
        # Start-up failures are the user's to fix (replica unreachable, port taken): one sentence, no traceback.
        hint = "; check --ic-network-url and that the replica is running" if isinstance(exc, _UNREACHABLE) else ""
        who = "icws-gateway" if worker is None else f"icws-gateway worker {worker}"
        print(f"{who}: error: the gateway failed to start: {exc}{hint}", file=sys.stderr, flush=True)
        log.debug("start-up failure", exc_info=exc)  # the details, for the log file
        with contextlib.suppress(Exception):
            await gateway.agent.close()
        return 1
    # Before the first client: the start-up objects are out of the full collections' walk, and so will be what
    # outlives each full collection; an audit now and then finds the cycles formed among them (see heap.py).
    start_gc_policy()
    audit = loop.create_task(audit_periodically())
    if worker is None:
        scheme = "ws" if config.tls_certificate_pem_path is None else "wss"
        print(
            f"listening on {scheme}://{config.host}:{gateway.port}"
            f" (metrics on {config.metrics_host}:{gateway.metrics_port})",
            flush=True,
        )
    await stop.wait()
    log.info("signal received: draining")
    audit.cancel()
    await gateway.drain()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the gateway until SIGTERM/SIGINT (with ``--workers N``, a supervisor of N gateways); the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    config = cliconfig.config_from_argv(GatewayConfig, build_parser(), argv)
    if config.workers > 1:
        from icws_fast.gateway.supervisor import supervise  # noqa: PLC0415 - only a supervisor needs it

        return supervise(config, argv)
    return run(config)


def run(config: GatewayConfig, *, worker: int | None = None) -> int:
    """Run one gateway process: logging, identity, the event loop; ``worker``: its index under a supervisor."""
    try:
        setup_command_logging(config, None if worker is None else f"worker {worker}")
        identity = load_or_create_identity(key_file(config.data_dir, worker or 0))
    except ConfigError as exc:
        print(f"icws-gateway: error: {exc.problem}", file=sys.stderr)
        return 1
    keep_freed_heap()
    return run_loop(_serve(config, identity, worker=worker))


def setup_command_logging(config: GatewayConfig, process: str | None) -> None:
    """The command's logging (stdout and ``data_dir/traces``); ``process`` names it among workers (see
    :func:`~icws_fast.gateway.logs.setup_logging`). An unwritable directory raises :class:`ConfigError`."""
    try:
        setup_logging(
            stdout_spec=config.log_level,
            file_spec=config.log_file_level,
            log_format=config.log_format,
            traces_dir=config.data_dir / "traces",
            process=process,
        )
    except OSError as exc:
        raise ConfigError(
            "data_dir",
            f"cannot create {exc.filename or config.data_dir / 'traces'}: {exc.strerror};"
            " point --data-dir at a writable directory",
        ) from None


def run_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on uvloop (asyncio's loop where uvloop is missing); its result."""
    try:
        import uvloop  # noqa: PLC0415 - not installed on Windows
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return asyncio.run(main)
    return uvloop.run(main)


if __name__ == "__main__":
    sys.exit(main())
