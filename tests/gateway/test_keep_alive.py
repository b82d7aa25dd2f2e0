"""The gateway's keep-alive: a silent client is pinged, one that does not answer is closed, pings are answered.

One sweep over the connections does this for all of them (no timer or task per connection), and closes those
whose ``ws_open`` is late, so these tests drive real clients through a gateway with a short ``ping_interval_s``
and watch the frames on the wire.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from icws_fast.gateway.server import Gateway
from icws_fast.protocol import session as s
from tests.gateway.gw_harness import start_offline_gateway

INTERVAL_S = 0.2


class PingWatcher(WSListener):  # type: ignore[misc]
    """A client that records the control frames it gets and answers pings only when told to."""

    def __init__(self) -> None:
        super().__init__()
        self.answer_pings = True
        self.pings = 0
        self.pongs: list[bytes] = []
        self.events: asyncio.Queue[str] = asyncio.Queue()
        self.closed: tuple[int, str] | None = None

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.PING:
            self.pings += 1
            self.events.put_nowait("ping")
            if self.answer_pings:
                transport.send_pong(frame.get_payload_as_bytes())
        elif frame.msg_type == WSMsgType.PONG:
            self.pongs.append(frame.get_payload_as_bytes())
            self.events.put_nowait("pong")
        elif frame.msg_type == WSMsgType.CLOSE:
            self.closed = (frame.get_close_code().value, frame.get_close_message().decode())
            self.events.put_nowait("close")
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.events.put_nowait("disconnected")

    async def next_event(self, timeout: float = 10.0) -> str:
        return await asyncio.wait_for(self.events.get(), timeout)


async def connect(gateway: Gateway) -> tuple[WSTransport, PingWatcher]:
    # The client answers pings itself (or not): auto-pong off, and no pings of its own.
    transport, watcher = await ws_connect(
        PingWatcher, f"ws://127.0.0.1:{gateway.port}", enable_auto_pong=False, use_aiofastnet=False
    )
    return transport, watcher


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    gw = await start_offline_gateway(ping_interval_s=INTERVAL_S, open_timeout_s=60)
    try:
        yield gw
    finally:
        await gw.drain()


async def test_a_silent_client_that_answers_is_pinged_again_and_kept(gateway: Gateway) -> None:
    transport, watcher = await connect(gateway)
    for _ in range(3):
        assert await watcher.next_event() == "ping"
    assert watcher.closed is None and not transport.is_disconnected
    assert len(gateway.connections) == 1
    transport.disconnect()


async def test_a_client_that_does_not_answer_is_closed_with_1001(gateway: Gateway) -> None:
    _, watcher = await connect(gateway)
    watcher.answer_pings = False
    assert await watcher.next_event() == "ping"
    assert await watcher.next_event() == "close"
    assert watcher.closed == (s.CLOSE_GOING_AWAY, f"no pong within {INTERVAL_S:g} s of a ping")
    assert watcher.pings == 1
    assert gateway.metrics.closed_connections.labels(str(s.CLOSE_GOING_AWAY))._value.get() == 1


async def test_a_client_ping_is_answered_with_its_payload_and_counts_as_activity(gateway: Gateway) -> None:
    transport, watcher = await connect(gateway)
    # A client that pings more often than the interval is never silent: the gateway answers and never pings.
    for i in range(8):
        transport.send_ping(b"are you there %d" % i)
        assert await watcher.next_event() == "pong"
        await asyncio.sleep(INTERVAL_S / 4)
    assert watcher.pongs == [b"are you there %d" % i for i in range(8)]
    assert watcher.pings == 0
    transport.disconnect()


async def test_no_pings_when_the_interval_is_0() -> None:
    gw = await start_offline_gateway(ping_interval_s=0, open_timeout_s=60)
    try:
        transport, watcher = await connect(gw)
        # Silent for many would-be intervals, answered only by the gateway's handshake message (a binary frame).
        with pytest.raises(TimeoutError):
            await watcher.next_event(timeout=5 * INTERVAL_S)
        assert watcher.pings == 0 and not transport.is_disconnected
        transport.disconnect()
    finally:
        await gw.drain()


async def test_a_late_ws_open_is_closed_by_the_sweep_even_without_pings() -> None:
    gw = await start_offline_gateway(ping_interval_s=0, open_timeout_s=INTERVAL_S)
    try:
        _, watcher = await connect(gw)
        assert await watcher.next_event() == "close"
        assert watcher.closed == (s.CLOSE_POLICY_VIOLATION, "no ws_open message in time")
        assert watcher.pings == 0
    finally:
        await gw.drain()
