"""Debian's HAProxy with ``deploy/haproxy/haproxy.cfg``, as shipped, in front of three gateway processes.

Everything runs on loopback on free ports: an ``icws-devnet``, three ``icws-gateway`` processes (each its own
identity, ``--trusted-proxies 127.0.0.1``) and ``haproxy`` (the config's addresses set through its environment
variables). A few hundred reconnecting Python clients and a few ic-websocket-js clients (the Node harness of
tests/interop) open sessions with the ``test`` canister through HAProxy and exchange messages.

- Failover: one gateway is killed (SIGKILL). Its clients reconnect through HAProxy to the two others; the clients
  of those are untouched (one session each, nothing lost, nothing twice, no error); every session received
  exactly what the canister queued for it, in order, except the killed sessions, which may end early but have no
  gap. The sessions were spread over the three gateways (their ``clients_connected``).
- Drain: one gateway is stopped (SIGTERM): HAProxy takes it out, its clients come back on the others, and
  sessions opened afterwards go to the others only.
- Not ready: a gateway whose IC status checks fail answers 503 on ``/ready``; HAProxy's check takes it out, new
  sessions go to the other, and its own sessions go on untouched.
- Per-IP limit: behind HAProxy the gateway counts connections by the client address HAProxy puts in
  ``X-Forwarded-For``, and an address the client writes there itself does not count.

``haproxy`` comes from Debian (``.ci/run`` installs it); without it the tests skip, except in CI where they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import shutil
import signal
import socket
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, RejectConnection, Request

from icws_fast.client import ReconnectingIcWebSocket
from icws_fast.errors import IcwsError
from icws_fast.protocol.retry import Backoff
from tests.faults.proxy import FaultProxy
from tests.faults.verifying import wait_for
from tests.interop import conftest as interop
from tests.interop.ws_stack import HERE as INTEROP
from tests.processes import REPO, Child, DevnetProcess, GatewayProcess, free_port

pytestmark = pytest.mark.slow
#: The interop tests' ``node`` fixture, here ``node_with_harness``: the ``node`` executable with the harness's npm
#: packages installed (it skips the test without Node).
node_with_harness = interop.node

CONFIG: Final = REPO / "deploy" / "haproxy" / "haproxy.cfg"
PY_CLIENTS: Final = 200
JS_CLIENTS: Final = 6
DRAIN_CLIENTS: Final = 45
#: Clients opening at once: a connect storm on a busy 2-core machine would only test the open timeout.
OPENING_AT_ONCE: Final = 40
MESSAGES: Final = 2
TIMEOUT_S: Final = 60.0
#: Reconnect quickly (the clients of a killed gateway come back within a second or two) but spread out.
BACKOFF: Final = Backoff(first_s=0.3, factor=2.0, max_s=2.0, jitter=0.9)
GATEWAY_ARGS: Final = ["--trusted-proxies", "127.0.0.1", "--max-clients-per-ip", "1000", "--polling-interval", "20"]


def haproxy_path() -> str:
    path = shutil.which("haproxy")
    if path is None:
        message = "haproxy is not installed: apt-get install --no-install-recommends haproxy (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@dataclass
class Balancer:
    """A running ``haproxy`` with the shipped config: its WebSocket URL and its statistics."""

    child: Child
    url: str  # ws://127.0.0.1:PORT
    stats: str  # http://127.0.0.1:PORT/stats;csv

    def servers(self) -> dict[str, dict[str, str]]:
        """The backend's servers (``gw1``...) as the statistics show them: ``status``, ``check_status``..."""
        with urllib.request.urlopen(self.stats, timeout=10) as resp:
            text = resp.read().decode().removeprefix("# ")
        return {
            row["svname"]: row
            for row in csv.DictReader(io.StringIO(text))
            if row["pxname"] == "icws_gateways" and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def wait_for_status(self, expected: dict[str, str], timeout_s: float = TIMEOUT_S) -> None:
        """Until each named server has the status given (``UP``, ``DOWN``), as the health checks found."""
        deadline = time.monotonic() + timeout_s
        seen: dict[str, str] = {}
        while time.monotonic() < deadline:
            if self.child.returncode is not None:
                raise self.child.failure("exited")
            with contextlib.suppress(OSError):  # not listening yet
                seen = {name: row["status"] for name, row in self.servers().items()}
                if all(seen.get(name) == status for name, status in expected.items()):
                    return
            time.sleep(0.1)
        raise self.child.failure(f"did not report {expected} within {timeout_s:g} s (last: {seen})")


@contextlib.contextmanager
def running_haproxy(gateways: list[tuple[str, int]], *, check_interval: str = "300ms") -> Iterator[Balancer]:
    """``haproxy`` in the foreground with the shipped config; ``gateways`` are (``HOST:PORT``, health port) pairs,
    up to three (the config's servers; the ones not given point at a closed port and stay down)."""
    port, stats = free_port(), free_port()
    env = {
        "ICWS_HAPROXY_BIND": f"127.0.0.1:{port}",
        "ICWS_HAPROXY_STATS": f"127.0.0.1:{stats}",
        "ICWS_HAPROXY_CHECK_INTERVAL": check_interval,
    }
    for n in range(1, 4):
        address, health = gateways[n - 1] if n <= len(gateways) else (f"127.0.0.1:{free_port()}", free_port())
        env[f"ICWS_GATEWAY_{n}"] = address
        env[f"ICWS_GATEWAY_{n}_HEALTH_PORT"] = str(health)
    with Child("haproxy", [haproxy_path(), "-db", "-f", str(CONFIG)], env=env) as child:
        balancer = Balancer(child, f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{stats}/stats;csv")
        balancer.wait_for_status({f"gw{n}": "UP" if n <= len(gateways) else "DOWN" for n in range(1, 4)})
        yield balancer


def health_port(gateway: GatewayProcess) -> int:
    return int(gateway.metrics_url.rsplit(":", 1)[1])


@dataclass
class Stack:
    devnet: DevnetProcess
    gateways: list[GatewayProcess]
    balancer: Balancer

    def gateway_named(self, principal: str) -> int:
        return next(n for n, gateway in enumerate(self.gateways) if gateway.principal == principal)


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevnetProcess]:
    with DevnetProcess(state_dir=tmp_path_factory.mktemp("devnet")) as devnet:
        yield devnet


@pytest.fixture
def stack(devnet: DevnetProcess, tmp_path: Path) -> Iterator[Stack]:
    haproxy_path()
    with contextlib.ExitStack() as stop:
        gateways = [
            stop.enter_context(GatewayProcess(devnet.url, tmp_path / f"gw{n}", extra_args=GATEWAY_ARGS))
            for n in range(1, 4)
        ]
        addresses = [(gateway.address, health_port(gateway)) for gateway in gateways]
        balancer = stop.enter_context(running_haproxy(addresses))
        yield Stack(devnet, gateways, balancer)


# -- the clients ---------------------------------------------------------------------------------------------------


@dataclass
class Session:
    """One session of a client: the gateway serving it, the texts expected (in order) and received."""

    gateway: str = ""
    expected: list[str] = field(default_factory=lambda: ["ping"])
    received: list[str] = field(default_factory=list)
    ended: int | None = None  # its close code, once replaced


class TrackedClient:
    """A reconnecting client of the ``test`` canister through HAProxy that records every session."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sessions: list[Session] = []
        self.errors: list[IcwsError] = []
        self._ws: ReconnectingIcWebSocket | None = None

    @property
    def ws(self) -> ReconnectingIcWebSocket:
        assert self._ws is not None
        return self._ws

    async def open(self, stack: Stack) -> None:
        devnet = stack.devnet
        self._ws = await ReconnectingIcWebSocket.connect(
            stack.balancer.url,
            devnet.canister_ids["test"],
            devnet.url,
            root_key_der=devnet.root_key_der,
            backoff=BACKOFF,
            on_open=self._opened,
            on_message=self._message,
            on_reconnect=self._reconnected,
            on_error=self.errors.append,
        )
        self.sessions[0].gateway = str(self.ws.gateway_principal)  # on_open ran before connect() returned

    def _opened(self) -> None:
        # The first session's on_open runs inside connect(); later ones once self.ws is set.
        self.sessions.append(Session(str(self.ws.gateway_principal) if self._ws is not None else ""))

    def _message(self, value: Any) -> None:
        self.sessions[-1].received.append(value["text"])

    def _reconnected(self, code: int, reason: str) -> None:
        self.sessions[-1].ended = code

    @property
    def gateway(self) -> str:
        return self.sessions[-1].gateway

    async def send(self, count: int) -> None:
        """``count`` messages in the current (open) session; their echoes are expected in it."""
        assert self.ws.is_open, f"{self.name}: no open session"
        session = self.sessions[-1]
        for i in range(count):
            text = f"{self.name}.{len(self.sessions)}.{len(session.expected)}.{i}"
            session.expected.append(f"{text} ping")
            await self.ws.send({"text": text, "timestamp": 0})

    @property
    def settled(self) -> bool:
        session = self.sessions[-1]
        return self.ws.is_open and len(session.received) >= len(session.expected)

    def check(self, *, lost: str | None = None) -> None:
        """Every session got exactly what it expected, in order; a session on the gateway ``lost`` (a principal)
        may have ended early (its messages a prefix of the expected ones), and only such a session may end."""
        state = f"client {self.name}: sessions {[(s.gateway[:5], s.ended, s.received) for s in self.sessions]}"
        assert not self.errors, f"{state}; errors {self.errors}"
        for n, session in enumerate(self.sessions):
            last = n == len(self.sessions) - 1
            if last:
                assert session.received == session.expected, state
                assert session.gateway != lost, state
            else:
                assert session.gateway == lost and session.ended is not None, state
                assert session.received == session.expected[: len(session.received)], state
        assert self.ws.reconnects == len(self.sessions) - 1, state


async def open_clients(stack: Stack, names: list[str]) -> list[TrackedClient]:
    """Open a client per name, ``OPENING_AT_ONCE`` at a time."""
    gate = asyncio.Semaphore(OPENING_AT_ONCE)

    async def one(name: str) -> TrackedClient:
        client = TrackedClient(name)
        async with gate:
            await client.open(stack)
        return client

    return await asyncio.gather(*(one(name) for name in names))


async def exchange(clients: list[TrackedClient]) -> None:
    """Each client sends ``MESSAGES`` in its session; until all of them have every echo (and their greeting)."""
    await asyncio.gather(*(client.send(MESSAGES) for client in clients))
    assert await wait_for(lambda: all(client.settled for client in clients), TIMEOUT_S), [
        client.name for client in clients if not client.settled
    ][:5]


async def connected(gateway: GatewayProcess) -> int:
    return int(await gateway.metric("clients_connected"))


async def _sum_connected(gateways: list[GatewayProcess]) -> int:
    return sum([await connected(gateway) for gateway in gateways])


async def wait_for_async(value: Callable[[], Awaitable[int]], expected: int, timeout_s: float = TIMEOUT_S) -> bool:
    """Poll ``value()`` until it is ``expected`` or ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    while await value() != expected:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


# -- the tests -----------------------------------------------------------------------------------------------------


@pytest.mark.interop
async def test_a_killed_gateways_clients_reconnect_to_the_others(stack: Stack, node_with_harness: str) -> None:
    devnet = stack.devnet
    config = {"ic_url": devnet.url, "canisters": devnet.info["canisters"], "gateway_url": stack.balancer.url}
    config["clients"] = JS_CLIENTS
    command = [node_with_harness, str(INTEROP / "check_ic_websocket.mjs"), "behind-load-balancer", json.dumps(config)]
    async with Child("check_ic_websocket.mjs behind-load-balancer", command, cwd=INTEROP, stdin=True) as js:
        clients = await open_clients(stack, [f"py{n}" for n in range(PY_CLIENTS)])
        js_gateways = (await js.wait_for_line_async("connected ", TIMEOUT_S)).split()[1:]
        await exchange(clients)

        # Spread: every gateway serves a fair share, and each counts exactly the sessions the clients see on it.
        principals = [gateway.principal for gateway in stack.gateways]
        on = Counter(client.gateway for client in clients) + Counter(js_gateways)
        counted = [await connected(gateway) for gateway in stack.gateways]
        assert counted == [on[p] for p in principals], (counted, on)
        total = PY_CLIENTS + JS_CLIENTS
        assert min(counted) >= total // 5, f"sessions per gateway {counted}: not spread by leastconn"

        victim = stack.gateways[2]
        await victim.stop_async(signal.SIGKILL)
        js.send_line(f"killed {victim.principal}", last=True)
        # The killed gateway's clients reconnect through HAProxy (the others never close), then all talk again.
        moved = [client for client in clients if client.gateway == victim.principal]
        assert await wait_for(
            lambda: all(client.ws.is_open and client.gateway != victim.principal for client in clients), TIMEOUT_S
        ), [client.name for client in moved if client.gateway == victim.principal][:5]
        await exchange(clients)
        for client in clients:
            client.check(lost=victim.principal)
        assert {len(client.sessions) for client in moved} == {2}
        assert {client.sessions[0].ended for client in moved} == {1006}
        assert all(len(client.sessions) == 1 for client in clients if client not in moved)

        after = (await js.wait_for_line_async("after ", TIMEOUT_S)).split()[1:]
        assert after == ["reconnected" if p == victim.principal else "untouched" for p in js_gateways]
        assert await js.wait_async(TIMEOUT_S) == 0 and "ok behind-load-balancer" in js.output.splitlines()
        # The JS clients closed: what the two survivors count is the Python clients.
        survivors = stack.gateways[:2]
        assert await wait_for_async(lambda: _sum_connected(survivors), PY_CLIENTS)
        await asyncio.to_thread(stack.balancer.wait_for_status, {"gw1": "UP", "gw2": "UP", "gw3": "DOWN"})
        await asyncio.gather(*(client.ws.close() for client in clients))


async def test_a_drained_gateway_gets_no_new_sessions(stack: Stack) -> None:
    clients = await open_clients(stack, [f"d{n}" for n in range(DRAIN_CLIENTS)])
    await exchange(clients)
    drained = stack.gateways[1]
    moved = [client for client in clients if client.gateway == drained.principal]
    assert moved, "no session on the gateway to drain"
    assert await drained.stop_async(signal.SIGTERM) == 0
    # Its clients were closed with 1001 and come back on the others; HAProxy has taken it out.
    assert await wait_for(lambda: all(c.ws.is_open and c.gateway != drained.principal for c in clients), TIMEOUT_S)
    await asyncio.to_thread(stack.balancer.wait_for_status, {"gw1": "UP", "gw2": "DOWN", "gw3": "UP"})
    later = await open_clients(stack, [f"late{n}" for n in range(DRAIN_CLIENTS // 3)])
    assert all(client.gateway != drained.principal for client in later)
    await exchange(clients + later)
    for client in clients + later:
        client.check(lost=drained.principal)
    assert {client.sessions[0].ended for client in moved} == {1001}
    await asyncio.gather(*(client.ws.close() for client in clients + later))


async def test_a_gateway_that_is_not_ready_gets_no_new_sessions_and_keeps_its_own(
    devnet: DevnetProcess, tmp_path: Path
) -> None:
    """A gateway whose IC status checks fail says 503 on /ready: HAProxy sends new sessions elsewhere, and the
    sessions it has go on (its polls still reach the IC: only the status endpoint fails, through a proxy)."""
    haproxy_path()
    async with FaultProxy(devnet.url) as proxy, contextlib.AsyncExitStack() as stop:
        steady = GatewayProcess(devnet.url, tmp_path / "gw1", extra_args=GATEWAY_ARGS)
        flaky = GatewayProcess(proxy.url, tmp_path / "gw2", extra_args=GATEWAY_ARGS)
        for gateway in (steady, flaky):
            await stop.enter_async_context(gateway)
        # Entered on a thread: this loop serves the proxy that the flaky gateway's checks go through.
        addresses = [(gateway.address, health_port(gateway)) for gateway in (steady, flaky)]
        balancer = await asyncio.to_thread(stop.enter_context, running_haproxy(addresses))
        stack = Stack(devnet, [steady, flaky], balancer)
        clients = await open_clients(stack, [f"r{n}" for n in range(DRAIN_CLIENTS)])
        await exchange(clients)
        kept = [client for client in clients if client.gateway == flaky.principal]
        assert kept, "no session on the gateway to make not ready"

        proxy.fault("status", endpoint="status", status=503)
        await asyncio.to_thread(balancer.wait_for_status, {"gw1": "UP", "gw2": "DOWN"})
        assert balancer.servers()["gw2"]["check_status"] == "L7STS"  # it answered its check, with a 503
        later = await open_clients(stack, [f"after{n}" for n in range(DRAIN_CLIENTS // 3)])
        assert all(client.gateway == steady.principal for client in later)
        await exchange(clients + later)
        for client in clients + later:
            client.check()  # one session each, everything delivered: the kept ones too
        assert await connected(flaky) == len(kept)

        proxy.clear()
        await asyncio.to_thread(balancer.wait_for_status, {"gw1": "UP", "gw2": "UP"})
        await asyncio.gather(*(client.ws.close() for client in clients + later))


# -- the per-IP limit behind HAProxy -------------------------------------------------------------------------------


def upgrade(port: int, source: str, forwarded_for: str | None = None) -> tuple[socket.socket, int | None]:
    """A WebSocket upgrade through HAProxy from the loopback address ``source``: the socket, and None when the
    gateway accepted (its handshake came) or the close code it refused with."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S, source_address=(source, 0))
    ws = WSConnection(ConnectionType.CLIENT)
    headers = [] if forwarded_for is None else [(b"X-Forwarded-For", forwarded_for.encode())]
    sock.sendall(ws.send(Request(host=f"127.0.0.1:{port}", target="/", extra_headers=headers)))
    while True:
        data = sock.recv(65536)
        assert data, "HAProxy closed the connection without an answer"
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, RejectConnection):
                raise AssertionError(f"the upgrade was refused with HTTP {event.status_code}")
            if isinstance(event, BytesMessage):
                return sock, None  # the gateway's handshake: admitted
            if isinstance(event, CloseConnection):
                return sock, event.code
            assert isinstance(event, AcceptConnection), event


def test_the_per_ip_limit_counts_the_clients_behind_haproxy(devnet: DevnetProcess, tmp_path: Path) -> None:
    args = ["--trusted-proxies", "127.0.0.1", "--max-clients-per-ip", "2"]
    with contextlib.ExitStack() as stop:
        gateway = stop.enter_context(GatewayProcess(devnet.url, tmp_path / "gw", extra_args=args))
        balancer = stop.enter_context(running_haproxy([(gateway.address, health_port(gateway))]))
        port = int(balancer.url.rsplit(":", 1)[1])

        def admitted(source: str, forwarded_for: str | None = None) -> int | None:
            sock, refused = upgrade(port, source, forwarded_for)
            stop.callback(sock.close)
            return refused

        # Two clients behind one address are admitted, a third is refused: HAProxy's own address is not counted,
        # or the other address's clients below would be refused too.
        assert [admitted("127.0.0.2"), admitted("127.0.0.2"), admitted("127.0.0.2")] == [None, None, 1013]
        assert [admitted("127.0.0.3"), admitted("127.0.0.3")] == [None, None]
        # A client naming another address itself is still counted as what HAProxy saw.
        assert admitted("127.0.0.3", forwarded_for="127.0.0.9") == 1013
        assert admitted("127.0.0.4", forwarded_for="127.0.0.2") is None
