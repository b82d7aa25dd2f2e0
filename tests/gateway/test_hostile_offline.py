"""Hostile clients against a gateway, up to the point where the IC would be needed.

Each attacker must be closed with a clear code (or cut off), the gateway must stay up, and a
well-behaved client connecting beside the attacker must still get its handshake.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from picows import WSMsgType

from icws_fast.gateway.server import Gateway
from icws_fast.ic.identity import Ed25519Identity
from icws_fast.ic.principal import Principal
from icws_fast.protocol import session as s
from icws_fast.protocol.types import encode_ws_open_args
from tests.gateway.gw_harness import start_offline_gateway
from tests.gateway.gw_rawclient import Closed, RawClient, open_request, signed_request

CANISTER = Principal.from_text("rrkah-fqaaa-aaaaa-aaaaq-cai")


def url(gateway: Gateway) -> str:
    return f"ws://127.0.0.1:{gateway.port}"


async def assert_still_serving(gateway: Gateway) -> None:
    client = await RawClient.connect(url(gateway))
    assert await client.handshake() == gateway.principal
    client.close()


async def attack(gateway: Gateway, frame: bytes, msg_type: WSMsgType = WSMsgType.BINARY) -> Closed:
    client = await RawClient.connect(url(gateway))
    await client.handshake()
    client.send(frame, msg_type)
    closed = await client.wait_closed()
    await assert_still_serving(gateway)
    return closed


@pytest.mark.parametrize(
    "frame",
    [b"", b"\x00" * 100, b"\xff\xfe\xfd", b"\xa1\x68envelope" + b"\x9f" * 5000, b"\xd9\xd9\xf7\xa1\x68envelope\xa0"],
)
async def test_garbage_bytes(offline_gateway, frame):
    assert (await attack(offline_gateway, frame)).code == s.CLOSE_POLICY_VIOLATION


async def test_text_frame(offline_gateway):
    assert (await attack(offline_gateway, b"hello", WSMsgType.TEXT)).code == s.CLOSE_UNSUPPORTED_DATA


async def test_first_message_not_ws_open(offline_gateway):
    identity = Ed25519Identity.generate()
    frame = signed_request(identity, CANISTER, "ws_message", encode_ws_open_args(1, offline_gateway.principal))
    closed = await attack(offline_gateway, frame)
    assert closed.code == s.CLOSE_POLICY_VIOLATION and "ws_open" in closed.reason


async def test_query_envelope(offline_gateway):
    identity = Ed25519Identity.generate()
    arg = encode_ws_open_args(1, offline_gateway.principal)
    closed = await attack(offline_gateway, signed_request(identity, CANISTER, "ws_open", arg, request_type="query"))
    assert closed.code == s.CLOSE_POLICY_VIOLATION and "call" in closed.reason


async def test_open_for_another_gateway(offline_gateway):
    identity = Ed25519Identity.generate()
    frame = open_request(identity, CANISTER, Ed25519Identity.generate().sender, 1)
    assert "gateway principal" in (await attack(offline_gateway, frame)).reason


async def test_oversized_frame(offline_gateway):
    closed = await attack(offline_gateway, b"\x00" * (offline_gateway.config.max_message_size + 1))
    assert closed.code in (s.CLOSE_MESSAGE_TOO_BIG, 1006)


async def test_idle_connection_is_closed_after_the_open_timeout(offline_gateway):
    client = await RawClient.connect(url(offline_gateway))
    await client.handshake()
    closed = await client.wait_closed(timeout=5)
    assert closed.code == s.CLOSE_POLICY_VIOLATION and "in time" in closed.reason


async def test_fragmented_message(offline_gateway):
    client = await RawClient.connect(url(offline_gateway))
    await client.handshake()
    client.transport.send(WSMsgType.BINARY, b"\xa1", fin=False)
    client.transport.send(WSMsgType.CONTINUATION, b"\x00", fin=True)
    assert (await client.wait_closed()).code == s.CLOSE_UNSUPPORTED_DATA


async def test_connection_flood_from_one_address():
    gateway = await start_offline_gateway(max_clients_per_ip=5)
    try:
        clients = [await RawClient.connect(url(gateway)) for _ in range(5)]
        for client in clients:
            await client.handshake()
        extra = await RawClient.connect(url(gateway))
        closed = await extra.wait_closed()
        assert closed.code == s.CLOSE_TRY_AGAIN_LATER
        clients.pop().close()
        await asyncio.sleep(0.05)
        replacement = await RawClient.connect(url(gateway))
        assert await replacement.handshake() == gateway.principal
    finally:
        await gateway.drain()


async def test_max_clients():
    gateway = await start_offline_gateway(max_clients=3)
    try:
        clients = [await RawClient.connect(url(gateway)) for _ in range(3)]
        for client in clients:
            await client.handshake()
        extra = await RawClient.connect(url(gateway))
        assert (await extra.wait_closed()).code == s.CLOSE_TRY_AGAIN_LATER
    finally:
        await gateway.drain()


async def test_many_raw_tcp_garbage_connections(offline_gateway):
    """Bytes that are not even an HTTP upgrade: the socket is dropped, the gateway carries on."""
    for payload in (b"GET / HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x00\xff" + b"\x00" * 300, b"nonsense\r\n\r\n"):
        reader, writer = await asyncio.open_connection("127.0.0.1", offline_gateway.port)
        writer.write(payload)
        await writer.drain()
        await asyncio.wait_for(reader.read(), 10)
        writer.close()
    await assert_still_serving(offline_gateway)


async def test_health_ready_and_metrics(offline_gateway):
    base = f"http://127.0.0.1:{offline_gateway.metrics_port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/health") as resp:
            assert resp.status == 200
        async with http.get(f"{base}/ready") as resp:
            assert resp.status == 200
        client = await RawClient.connect(url(offline_gateway))
        await client.handshake()
        async with http.get(f"{base}/metrics") as resp:
            text = await resp.text()
        assert "clients_connected 1.0" in text
        assert "active_pollers 0.0" in text
        client.close()


async def test_silent_tcp_connection_is_dropped_after_the_handshake_timeout():
    gateway = await start_offline_gateway(handshake_timeout_s=0.3)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the gateway, nothing sent
        writer.close()
        await assert_still_serving(gateway)
    finally:
        await gateway.drain()


async def test_a_bug_in_decoding_costs_one_connection_and_is_reported(
    offline_gateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    """The session's last-resort guard: 1011, a log line with the traceback, a metric; the gateway serves on."""

    def broken(_: bytes) -> tuple[int, int]:
        raise KeyError("a bug")

    monkeypatch.setattr(s, "envelope_span", broken)
    closed = await attack(offline_gateway, b"\xa0")
    assert (closed.code, closed.reason) == (s.CLOSE_INTERNAL_ERROR, "internal error")
    registry = offline_gateway.metrics.registry
    assert registry.get_sample_value("errors_total", {"kind": "session_internal_error"}) == 1
    (record,) = [r for r in caplog.records if "unexpected KeyError" in r.getMessage()]
    assert record.exc_info is not None and isinstance(record.exc_info[1], KeyError)
