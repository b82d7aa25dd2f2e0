"""The reconnecting clients against ``icws-devnet`` and ``icws-gateway`` processes: the gateway killed, drained,
restarted on its port; the canister closing the client; the attempts running out; ``close()`` during a reconnect.

The ``test`` canister greets every session with ``ping`` and echoes each message with `` ping`` appended; so the
messages of one session are its greeting and then the echoes of what was sent in it, and a new session shows
as a new greeting.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from icws_fast.client import ReconnectingIcWebSocket, ReconnectingSyncIcWebSocket
from icws_fast.errors import ConnectionClosed
from icws_fast.ic import candid
from icws_fast.ic.agent import Agent
from icws_fast.ic.identity import Ed25519Identity
from icws_fast.protocol.retry import Backoff
from tests.faults.verifying import wait_for
from tests.processes import DevnetProcess, GatewayProcess

pytestmark = pytest.mark.slow

FAST: Final = Backoff(first_s=0.05, factor=2.0, max_s=0.5, jitter=0.5)
TIMEOUT_S: Final = 30.0


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevnetProcess]:
    with DevnetProcess(state_dir=tmp_path_factory.mktemp("devnet")) as devnet:
        yield devnet


@pytest.fixture
def gateway(devnet: DevnetProcess, tmp_path: Path) -> Iterator[GatewayProcess]:
    with GatewayProcess(devnet.url, tmp_path / "gateway", extra_args=["--polling-interval", "20"]) as gateway:
        yield gateway


class Recorder:
    """What the callbacks saw, in order: ``open``, ``reconnect CODE``, every message's text, ``close CODE``."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.changed = threading.Event()

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_open": lambda: self._add("open"),
            "on_reconnect": lambda code, reason: self._add(f"reconnect {code}"),
            "on_message": lambda value: self._add(value["text"]),
            "on_close": lambda code, reason: self._add(f"close {code}"),
        }

    def _add(self, event: str) -> None:
        self.events.append(event)
        self.changed.set()

    def count(self, event: str) -> int:
        return self.events.count(event)


async def _connect(gateway: GatewayProcess, devnet: DevnetProcess, **options: Any) -> ReconnectingIcWebSocket:
    return await ReconnectingIcWebSocket.connect(
        gateway.url, devnet.canister_ids["test"], devnet.url, root_key_der=devnet.root_key_der, **options
    )


async def test_a_killed_gateway_restarted_on_its_port_gets_the_client_back(
    devnet: DevnetProcess, gateway: GatewayProcess
) -> None:
    seen = Recorder()
    ws = await _connect(gateway, devnet, backoff=FAST, **seen.callbacks())
    first_key = ws.client_key
    await ws.send({"text": "a", "timestamp": 0})
    assert await wait_for(lambda: "a ping" in seen.events, TIMEOUT_S)
    await gateway.stop_async(signal.SIGKILL)
    # The gateway is down: attempts fail (connection refused) and back off, the client stays usable.
    assert await wait_for(lambda: not ws.is_open, TIMEOUT_S)
    assert ws.close_code is None
    await gateway.start_async()
    await ws.send({"text": "b", "timestamp": 0})  # waits for the new session, then goes out in it
    assert await wait_for(lambda: "b ping" in seen.events, TIMEOUT_S), seen.events
    assert seen.events == ["open", "ping", "a ping", "reconnect 1006", "open", "ping", "b ping"]
    assert ws.reconnects == 1
    # A new session: same principal, new nonce.
    assert ws.client_key.client_principal == first_key.client_principal
    assert ws.client_key.client_nonce != first_key.client_nonce
    await ws.close()
    assert seen.events[-1] == "close 1000" and seen.count("close 1000") == 1
    assert not ws.is_open


async def test_iteration_goes_on_across_a_drain(devnet: DevnetProcess, gateway: GatewayProcess) -> None:
    """SIGTERM: the gateway closes its sessions with 1001; iteration does not end, the next session follows."""
    reconnected: list[int] = []
    ws = await _connect(gateway, devnet, backoff=FAST, on_reconnect=lambda code, reason: reconnected.append(code))
    assert (await asyncio.wait_for(ws.recv(), TIMEOUT_S))["text"] == "ping"
    await ws.send({"text": "before", "timestamp": 0})
    assert (await asyncio.wait_for(ws.recv(), TIMEOUT_S))["text"] == "before ping"
    await gateway.stop_async(signal.SIGTERM)
    await gateway.start_async()
    async for value in ws:
        assert value["text"] == "ping"  # the next session's greeting: iteration did not end at the 1001
        break
    assert reconnected == [1001]
    await ws.send({"text": "after", "timestamp": 0})
    assert (await asyncio.wait_for(ws.recv(), TIMEOUT_S))["text"] == "after ping"
    await ws.close()
    assert [value async for value in ws] == []  # the final close ends iteration quietly


async def test_the_canister_closing_the_client_is_final(devnet: DevnetProcess, gateway: GatewayProcess) -> None:
    seen = Recorder()
    ws = await _connect(gateway, devnet, backoff=FAST, **seen.callbacks())
    async with Agent(devnet.url, Ed25519Identity.generate(), root_key=devnet.root_key_der) as agent:
        arg = candid.encode(candid.parse_args("(principal)"), [ws.principal])
        await agent.call(devnet.canister_ids["test"], "close", arg)
    assert await wait_for(lambda: ws.close_code is not None, TIMEOUT_S)
    assert (ws.close_code, ws.close_reason, ws.reconnects) == (4001, "ClosedByApplication", 0)
    assert seen.events == ["open", "ping", "close 4001"]
    with pytest.raises(ConnectionClosed):
        await ws.send({"text": "late", "timestamp": 0})


async def test_the_attempts_run_out(devnet: DevnetProcess, gateway: GatewayProcess) -> None:
    """The gateway stays down: after ``max_attempts`` failed attempts the client closes with the last failure."""
    seen = Recorder()
    ws = await _connect(gateway, devnet, backoff=FAST, max_attempts=3, max_queue=None)
    ws.on_close = seen.callbacks()["on_close"]
    assert (await asyncio.wait_for(ws.recv(), TIMEOUT_S))["text"] == "ping"
    await gateway.stop_async(signal.SIGKILL)
    with pytest.raises(ConnectionClosed) as info:
        await asyncio.wait_for(ws.recv(), TIMEOUT_S)
    assert info.value.code == 1006 and "cannot connect" in info.value.reason
    assert seen.events == ["close 1006"] and ws.reconnects == 0


async def test_close_during_a_reconnect_stops_it(devnet: DevnetProcess, gateway: GatewayProcess) -> None:
    seen = Recorder()
    ws = await _connect(gateway, devnet, backoff=Backoff(first_s=0.5, max_s=0.5), **seen.callbacks())
    await gateway.stop_async(signal.SIGKILL)
    assert await wait_for(lambda: not ws.is_open, TIMEOUT_S)
    await ws.close()
    await gateway.start_async()
    await asyncio.sleep(1.0)  # twice the back-off: an attempt still going would have opened a session by now
    assert seen.events == ["open", "ping", "close 1000"]
    assert ws.reconnects == 0


def test_the_sync_client_reconnects_after_a_kill(devnet: DevnetProcess, gateway: GatewayProcess) -> None:
    reconnected: list[int] = []
    ws = ReconnectingSyncIcWebSocket.connect(
        gateway.url,
        devnet.canister_ids["test"],
        devnet.url,
        backoff=FAST,
        on_reconnect=lambda code, reason: reconnected.append(code),
    )
    assert ws.recv(TIMEOUT_S)["text"] == "ping"
    ws.send({"text": "a", "timestamp": 0})
    assert ws.recv(TIMEOUT_S)["text"] == "a ping"
    gateway.stop(signal.SIGKILL)
    with pytest.raises(TimeoutError):
        ws.recv(0.5)  # nothing to read while the gateway is down, and no error either
    gateway.start()
    ws.send({"text": "b", "timestamp": 0})
    assert [ws.recv(TIMEOUT_S)["text"] for _ in range(2)] == ["ping", "b ping"]
    assert reconnected == [1006] and ws.reconnects == 1
    ws.close()
    assert ws.close_code == 1000
    assert list(ws) == []
