"""The supervisor of ``icws-gateway --workers N``: N gateway processes on one port, seen from outside as one.

Each worker (:mod:`icws_fast.gateway.worker`) is a full gateway with its own identity, listening with
``SO_REUSEPORT`` on the same port: the kernel spreads new connections over the workers, and each one polls its
canisters for its own clients (the canister keeps one queue per gateway principal). The supervisor

- holds the WebSocket port bound (not listening) for its whole life, so port 0 names one port for every worker
  and no other program takes it while a worker restarts;
- starts the workers, and restarts one that dies, after a back-off that grows while it keeps dying (its
  clients reconnect, to the others);
- on SIGTERM/SIGINT, forwards SIGTERM to every worker, which drains within ``--drain-timeout``, kills those
  still running a few seconds past that bound, and exits 0 when every worker drained cleanly;
- serves ``/metrics``, ``/health`` and ``/ready`` on ``--prometheus-endpoint`` for the whole, from what each
  worker serves on a Unix socket in a private directory.

``/metrics`` is every worker's metrics, each sample labelled ``worker="<index>"`` (so ``process_*`` stays per
process, gauges stay what each worker reads at the scrape, and a restarted worker's counters are a counter
reset of its own series, which ``rate()`` handles), plus the supervisor's ``process_*`` as
``worker="supervisor"`` and ``worker_restarts_total``. ``/health`` is 200 while at least one worker answers its
``/health``; ``/ready`` is 200 while the supervisor is not draining and at least one worker is ready: a load
balancer may send clients as long as one worker can take them (the kernel only hands connections to workers
that listen).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from icws_fast.cliconfig import show_address
from icws_fast.errors import ConfigError
from icws_fast.gateway.cli import run_loop, setup_command_logging
from icws_fast.gateway.config import GatewayConfig
from icws_fast.gateway.identity import key_file, load_or_create_identity
from icws_fast.ic.principal import Principal
from icws_fast.protocol.retry import Backoff

__all__ = ["RESTART_BACKOFF", "SupervisorMetrics", "supervise"]

log = logging.getLogger("icws_fast.gateway.supervisor")

#: Waits before restarting a worker that died: 0.5 s, doubling while it keeps dying, at most 30 s.
RESTART_BACKOFF: Final = Backoff(first_s=0.5, factor=2.0, max_s=30.0, jitter=0.5)
# A worker that ran this long before dying was healthy: its restart waits the shortest time again.
_STABLE_AFTER_S: Final = 30.0
# How long a worker's /health, /ready or /metrics may take before it counts as not answering.
_ASK_TIMEOUT_S: Final = 2.0
# Past --drain-timeout, what a worker may take to stop its pollers and servers before it is killed.
_STOP_MARGIN_S: Final = 5.0
_START_POLL_S: Final = 0.05


class SupervisorMetrics:
    """The supervisor's own metrics (the workers' come from the workers)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.worker_restarts = Counter(
            "worker_restarts", "Workers restarted after they died, by worker index", ["worker"], registry=self.registry
        )
        self.process = ProcessCollector(registry=None)


@dataclass
class _Worker:
    """One worker slot: its index, identity and socket stay; its process changes at each restart."""

    index: int
    principal: Principal
    socket: Path
    client: aiohttp.ClientSession
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    failures: int = 0  # deaths in a row, each within _STABLE_AFTER_S of its start
    exit_codes: list[int] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def ask(self, path: str) -> str | None:
        """The body of the worker's 200 answer to GET ``path``; None when it does not answer, or not with 200."""
        if not self.running:
            return None
        try:
            async with self.client.get(f"http://worker{path}") as response:
                return await response.text() if response.status == 200 else None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, UnicodeDecodeError):
            return None

    async def answers_ok(self, path: str) -> bool:
        return await self.ask(path) is not None


def describe_status(code: int) -> str:
    """An exit status as people say it: ``status 1`` or ``signal SIGKILL``."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
        return f"signal {-code}"
    return f"status {code}"


def _reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound (not listening) to ``host:port`` with ``SO_REUSEPORT``: the port the workers share."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
        0
    ]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def merge_metrics(texts: Iterable[tuple[str, str]], extra: Iterable[tuple[str, Iterable[Metric]]] = ()) -> list[Metric]:
    """The families of several processes as one list, each sample labelled ``worker`` with its process's name.

    ``texts`` are (name, Prometheus text exposition) pairs, ``extra`` (name, families) pairs collected in this
    process. Families keep the order they first appear in; a text that does not parse is left out (and logged).
    """
    merged: dict[str, Metric] = {}

    def add(name: str, families: Iterable[Metric]) -> None:
        for family in families:
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
            # A sample's own ``worker`` label (worker_restarts_total's) names the worker it is about: it stays.
            into.samples.extend(s._replace(labels={"worker": name, **s.labels}) for s in family.samples)

    for name, text in texts:
        try:
            parsed = list(text_string_to_metric_families(text))
        except ValueError as exc:
            log.warning("the metrics of worker %s do not parse, left out of this scrape: %s", name, exc)
            continue
        add(name, parsed)
    for name, families in extra:
        add(name, families)
    return list(merged.values())


class _Families:
    """A collector of families already collected, for :func:`generate_latest`."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


class Supervisor:
    """Runs the workers of one ``icws-gateway --workers N`` until SIGTERM/SIGINT (see the module docstring)."""

    def __init__(self, config: GatewayConfig, argv: list[str], principals: list[Principal]) -> None:
        self.config = config
        self._argv = argv
        self._principals = principals
        self.metrics = SupervisorMetrics()
        for index in range(len(principals)):
            # At zero from the start, so that rate() and increase() see the first restart.
            self.metrics.worker_restarts.labels(str(index))
        self._workers: list[_Worker] = []
        self._draining = False
        self._stop = asyncio.Event()
        self._worker_argv: list[str] = []

    async def run(self) -> int:
        """Start the workers, serve, drain on a signal; the exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        # Private: the workers' sockets answer anyone who can reach them. Made afresh at every start.
        sockets_dir = Path(tempfile.mkdtemp(prefix="icws-gateway-"))
        runner: web.AppRunner | None = None
        reserved: socket.socket | None = None
        try:
            cfg = self.config
            try:
                reserved = _reserve_port(cfg.host, cfg.port)
                if cfg.metrics_host is not None:
                    runner, metrics_port = await self._serve_http(cfg.metrics_host, cfg.metrics_port)
            except OSError as exc:
                print(f"icws-gateway: error: cannot listen: {exc}", file=sys.stderr, flush=True)
                return 1
            port = reserved.getsockname()[1]
            # The last --gateway-address wins: every worker listens on the port held here.
            self._worker_argv = [*self._argv, "--gateway-address", show_address((cfg.host, port))]
            timeout = aiohttp.ClientTimeout(total=_ASK_TIMEOUT_S)
            for index, principal in enumerate(self._principals):
                path = sockets_dir / f"worker_{index}.sock"
                client = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path)), timeout=timeout)
                self._workers.append(_Worker(index, principal, path, client))
            for worker in self._workers:
                await self._spawn(worker)
            failed = await self._wait_started()
            if failed is not None:
                assert failed.process is not None and failed.process.returncode is not None
                print(
                    f"icws-gateway: error: worker {failed.index} exited with"
                    f" {describe_status(failed.process.returncode)} while starting (its error is above)",
                    file=sys.stderr,
                    flush=True,
                )
                await self._stop_workers()
                return 1
            if not self._stop.is_set():
                scheme = "ws" if cfg.tls_certificate_pem_path is None else "wss"
                metrics = "none" if runner is None else f"{cfg.metrics_host}:{metrics_port}"
                print(
                    f"listening on {scheme}://{cfg.host}:{port} (metrics on {metrics})"
                    f" with {len(self._workers)} workers",
                    flush=True,
                )
            watchers = [loop.create_task(self._watch(worker)) for worker in self._workers]
            await self._stop.wait()
            log.info("signal received: draining %d workers", len(self._workers))
            clean = await self._stop_workers()
            await asyncio.gather(*watchers)
            return 0 if clean else 1
        finally:
            if runner is not None:
                await runner.cleanup()
            for worker in self._workers:
                await worker.client.close()
            if reserved is not None:
                reserved.close()
            shutil.rmtree(sockets_dir, ignore_errors=True)

    # the workers -----------------------------------------------------------------------------

    async def _spawn(self, worker: _Worker) -> None:
        worker.socket.unlink(missing_ok=True)  # a dead worker's socket file
        worker.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "icws_fast.gateway.worker",
            str(worker.index),
            str(worker.socket),
            str(os.getpid()),
            *self._worker_argv,
        )
        worker.started_at = asyncio.get_running_loop().time()
        print(f"worker {worker.index} started: pid {worker.process.pid}, principal {worker.principal}", flush=True)

    async def _wait_started(self) -> _Worker | None:
        """Wait until every worker answers ``/health`` (or a signal comes); the first worker that exited instead."""
        pending = list(self._workers)
        while pending and not self._stop.is_set():
            for worker in list(pending):
                if not worker.running:
                    return worker
                if await worker.answers_ok("/health"):
                    pending.remove(worker)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), _START_POLL_S)
        return None

    async def _watch(self, worker: _Worker) -> None:
        """Restart ``worker`` whenever it dies, until the drain."""
        loop = asyncio.get_running_loop()
        while True:
            process = worker.process
            assert process is not None
            code = await process.wait()
            if self._draining:
                return
            lived = loop.time() - worker.started_at
            worker.failures = 1 if lived >= _STABLE_AFTER_S else worker.failures + 1
            delay = RESTART_BACKOFF.delay(worker.failures, random.random())
            log.error(
                "worker %d (pid %d) exited with %s after %.1f s; restarting it in %.1f s",
                worker.index,
                process.pid,
                describe_status(code),
                lived,
                delay,
            )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            if self._draining or self._stop.is_set():
                return
            await self._spawn(worker)
            self.metrics.worker_restarts.labels(str(worker.index)).inc()
            if self._draining:  # the signal came while it was starting: it drains with the others
                await self._signal(worker, signal.SIGTERM)

    async def _signal(self, worker: _Worker, sig: int) -> None:
        if worker.process is not None and worker.running:
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(sig)

    async def _stop_workers(self) -> bool:
        """SIGTERM to every worker, SIGKILL to those still running past the drain bound; True if all exited 0."""
        self._draining = True
        running = [w for w in self._workers if w.running]
        for worker in running:
            await self._signal(worker, signal.SIGTERM)
        bound = self.config.drain_timeout_s + _STOP_MARGIN_S
        if running:
            waits = [asyncio.ensure_future(w.process.wait()) for w in running if w.process is not None]
            await asyncio.wait(waits, timeout=bound)
        clean = True
        for worker in running:
            assert worker.process is not None
            if worker.running:
                log.error(
                    "worker %d (pid %d) still runs %.0f s after SIGTERM: killing it",
                    worker.index,
                    worker.process.pid,
                    bound,
                )
                await self._signal(worker, signal.SIGKILL)
                await worker.process.wait()
            code = worker.process.returncode
            assert code is not None
            if code != 0:
                clean = False
                log.error("worker %d (pid %d) ended with %s", worker.index, worker.process.pid, describe_status(code))
        return clean

    # /metrics, /health, /ready ---------------------------------------------------------------

    async def _serve_http(self, host: str, port: int) -> tuple[web.AppRunner, int]:
        app = web.Application()
        app.router.add_get("/metrics", self._serve_metrics)
        app.router.add_get("/health", self._serve_health)
        app.router.add_get("/ready", self._serve_ready)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError:
            await runner.cleanup()
            raise
        return runner, int(runner.addresses[0][1])

    async def _any_worker(self, path: str) -> bool:
        """Whether some worker answers 200 to ``path``: at the first that does (a stuck one must not delay a
        probe while another answers), else after every worker failed or timed out."""
        asks = [asyncio.ensure_future(worker.answers_ok(path)) for worker in self._workers]
        try:
            for answer in asyncio.as_completed(asks):
                if await answer:
                    return True
            return False
        finally:
            for ask in asks:
                ask.cancel()

    async def _serve_health(self, _request: web.Request) -> web.Response:
        if await self._any_worker("/health"):
            return web.Response(text="ok\n")
        return web.Response(status=503, text="no worker is healthy\n")

    async def _serve_ready(self, _request: web.Request) -> web.Response:
        if not self._draining and await self._any_worker("/ready"):
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")

    async def _serve_metrics(self, _request: web.Request) -> web.Response:
        answers = await asyncio.gather(*(worker.ask("/metrics") for worker in self._workers))
        texts = [(str(w.index), text) for w, text in zip(self._workers, answers, strict=True) if text is not None]
        own = [*self.metrics.process.collect(), *self.metrics.registry.collect()]
        families = merge_metrics(texts, [("supervisor", own)])
        body = generate_latest(_Families(families))
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def supervise(config: GatewayConfig, argv: list[str]) -> int:
    """Run ``config.workers`` gateways under a supervisor until SIGTERM/SIGINT; the exit code.

    ``argv`` are the command's flags, given to each worker as they are. The identities are loaded (or created)
    here first, so a bad data directory is reported once, before any worker starts.
    """
    try:
        setup_command_logging(config, "supervisor")
        principals = [load_or_create_identity(key_file(config.data_dir, i)).sender for i in range(config.workers)]
    except ConfigError as exc:
        print(f"icws-gateway: error: {exc.problem}", file=sys.stderr)
        return 1
    return run_loop(Supervisor(config, argv, principals).run())
