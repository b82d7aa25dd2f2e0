"""The asyncio client over real loopback sockets, against a gateway that certifies for real (fake_gateway)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from icws_fast.client import IcWebSocket
from icws_fast.errors import CertificateError, ConfigError, ConnectionClosed, IcwsError, ProtocolError
from icws_fast.protocol.types import KeepAliveMessage
from tests.client.fake_gateway import FLOOD, FakeGateway
from tests.client.icws_sim import CANISTER_ID, GATEWAY, ROOT_KEY_DER


@pytest.fixture
def gateway(request: pytest.FixtureRequest) -> Iterator[FakeGateway]:
    with FakeGateway(getattr(request, "param", "echo")) as gw:
        yield gw


async def eventually(predicate: Callable[[], object], timeout_s: float = 10.0) -> None:
    """Wait for ``predicate()`` without blocking the event loop the client runs on."""
    for _ in range(int(timeout_s / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


async def connect(gw: FakeGateway, **kw: Any) -> IcWebSocket:
    kw.setdefault("root_key_der", ROOT_KEY_DER)
    return await IcWebSocket.connect(gw.url, CANISTER_ID.to_text(), gw.ic_url, **kw)


async def test_echo_with_the_root_key_from_the_replica(gateway: FakeGateway) -> None:
    ws = await IcWebSocket.connect(gateway.url, CANISTER_ID, gateway.ic_url)  # fetches /api/v2/status
    assert ws.is_open
    assert ws.gateway_principal == GATEWAY  # from the handshake
    first = await ws.recv()
    assert first["text"] == "ping"
    await ws.send({"text": "hello", "timestamp": 1})
    assert (await ws.recv())["text"] == "hello ping"
    await ws.close()
    assert ws.close_code == 1000 and not ws.is_open
    await eventually(lambda: gateway.closes)
    assert gateway.closes[0][0] == 1000
    # ws_open, then the application message, both signed by the client's random Ed25519 identity.
    assert [r.method for r in gateway.received] == ["ws_open", "ws_message"]
    assert gateway.received[0].envelope.sender == ws.principal
    with pytest.raises(ConnectionClosed):
        await ws.send({"text": "late", "timestamp": 0})
    with pytest.raises(ConnectionClosed):
        await ws.recv()


async def test_callbacks(gateway: FakeGateway) -> None:
    seen: list[Any] = []
    got_answer = asyncio.Event()

    async def on_message(value: Any) -> None:  # coroutine callbacks run as tasks
        seen.append(("message", value["text"]))
        if value["text"] == "hi ping":
            got_answer.set()

    ws = await connect(
        gateway,
        on_open=lambda: seen.append(("open",)),
        on_message=on_message,
        on_close=lambda code, reason: seen.append(("close", code)),
        on_error=lambda error: seen.append(("error", error)),
    )
    await ws.send({"text": "hi", "timestamp": 0})
    await asyncio.wait_for(got_answer.wait(), 10)
    await ws.close()
    assert seen == [("open",), ("message", "ping"), ("message", "hi ping"), ("close", 1000)]


async def test_a_failing_callback_does_not_break_the_connection(gateway: FakeGateway) -> None:
    def boom() -> None:
        raise RuntimeError("application bug")

    ws = await connect(gateway, on_open=boom)
    assert (await ws.recv())["text"] == "ping"
    await ws.close()


@pytest.mark.parametrize("gateway", ["ack"], indirect=True)
async def test_ack_is_answered_with_a_keep_alive(gateway: FakeGateway) -> None:
    async with await connect(gateway) as ws:
        await ws.recv()
        await ws.send({"text": "a", "timestamp": 0})
        assert (await ws.recv())["text"] == "a ping"
        await eventually(lambda: len(gateway.received) == 3)
    keep_alive = gateway.received[2]
    assert keep_alive.message.sequence_num == 2
    # open (1), ping (2), the answer (3) and the ack (4) were received
    assert keep_alive.service == KeepAliveMessage(4)


@pytest.mark.parametrize("gateway", ["close_by_app"], indirect=True)
async def test_iteration_ends_when_the_canister_closes(gateway: FakeGateway) -> None:
    ws = await connect(gateway)
    assert [value["text"] async for value in ws] == ["ping"]
    assert ws.close_code == 4001 and ws.close_reason == "ClosedByApplication"
    assert ws.error is None


@pytest.mark.parametrize("gateway", ["bad_cert"], indirect=True)
async def test_forged_message_closes_with_4000(gateway: FakeGateway) -> None:
    errors: list[IcwsError] = []
    ws = await connect(gateway, on_error=errors.append)
    assert (await ws.recv())["text"] == "ping"
    with pytest.raises(ConnectionClosed) as info:
        await ws.recv()
    assert info.value.code == 4000 and info.value.reason == "Error receiving message"
    assert isinstance(info.value.__cause__, CertificateError)
    assert len(errors) == 1 and isinstance(errors[0], CertificateError)
    await eventually(lambda: gateway.closes)
    assert gateway.closes[0][0] == 4000
    with pytest.raises(ConnectionClosed):
        async for _ in ws:
            pass


@pytest.mark.parametrize("gateway", ["text_frame"], indirect=True)
async def test_text_frame_is_an_error(gateway: FakeGateway) -> None:
    ws = await connect(gateway)
    await ws.recv()
    with pytest.raises(ConnectionClosed) as info:
        await ws.recv()
    assert info.value.code == 4000


@pytest.mark.parametrize("gateway", ["too_big"], indirect=True)
async def test_message_over_the_size_limit_closes_with_1009(gateway: FakeGateway) -> None:
    ws = await connect(gateway)
    assert (await ws.recv())["text"] == "ping"
    with pytest.raises(ConnectionClosed) as info:
        await ws.recv()
    assert info.value.code == 1009
    await eventually(lambda: gateway.closes)
    assert gateway.closes[0][0] == 1009


@pytest.mark.parametrize("gateway", ["drop"], indirect=True)
async def test_gateway_closing(gateway: FakeGateway) -> None:
    ws = await connect(gateway)
    assert [value["text"] async for value in ws] == ["ping"]
    assert ws.close_code == 1000


@pytest.mark.parametrize("gateway", ["silent", "no_open"], indirect=True)
async def test_open_timeout(gateway: FakeGateway) -> None:
    with pytest.raises(ConnectionClosed) as info:
        await connect(gateway, open_timeout_s=0.3)
    assert info.value.code == 4000 and info.value.reason == "Open connection timeout"
    assert isinstance(info.value.__cause__, ProtocolError)


async def test_nothing_listening() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionClosed) as info:
        await IcWebSocket.connect(f"ws://127.0.0.1:{port}/", CANISTER_ID, "http://x", root_key_der=ROOT_KEY_DER)
    assert info.value.code == 1006


@pytest.mark.parametrize("gateway", ["flood"], indirect=True)
async def test_back_pressure(gateway: FakeGateway) -> None:
    ws = await connect(gateway, max_queue=4)
    await eventually(lambda: ws._reading_paused)  # the queue fills up: reading from the gateway stops
    texts = [(await asyncio.wait_for(ws.recv(), 10))["text"] for _ in range(FLOOD + 1)]
    assert texts == ["ping"] + [str(i) for i in range(FLOOD)]
    assert not ws._reading_paused
    await ws.close()


async def test_tls_with_a_custom_ca() -> None:
    with FakeGateway(tls=True) as gw:
        ws = await connect(gw, ssl_context=gw.client_ssl)
        assert (await ws.recv())["text"] == "ping"
        await ws.send({"text": "secure", "timestamp": 0})
        assert (await ws.recv())["text"] == "secure ping"
        await ws.close()
        # Without the gateway's CA the certificate is refused.
        with pytest.raises(ConnectionClosed) as info:
            await connect(gw)
        assert info.value.code == 1006


@pytest.mark.parametrize("url", ["http://127.0.0.1:1/", "garbage", "ws://127.0.0.1:99999/"])
async def test_a_bad_gateway_url_is_the_projects_error(url: str) -> None:
    with pytest.raises(ConfigError, match="gateway_url: '") as info:
        await IcWebSocket.connect(url, CANISTER_ID, "http://x", root_key_der=ROOT_KEY_DER)
    assert url in str(info.value)


async def test_a_refused_upgrade_is_the_projects_error() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ConnectionClosed) as info:
            await IcWebSocket.connect(f"ws://127.0.0.1:{port}/", CANISTER_ID, "http://x", root_key_der=ROOT_KEY_DER)
    finally:
        server.close()
    assert info.value.code == 1006 and "upgrade" in info.value.reason
    assert not type(info.value.__cause__).__module__.startswith("icws_fast")  # picows' error, wrapped
