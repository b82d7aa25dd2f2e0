"""The blocking client over real loopback sockets, against a gateway that certifies for real (fake_gateway)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from icws_fast.client import SyncIcWebSocket, fetch_root_key
from icws_fast.errors import (
    AgentError,
    CertificateError,
    ConfigError,
    ConnectionClosed,
    IcwsError,
    ProtocolError,
    TransportError,
)
from icws_fast.ic.agent import MAINNET_ROOT_KEY
from icws_fast.protocol.types import KeepAliveMessage
from tests.client.fake_gateway import FLOOD, FakeGateway
from tests.client.icws_sim import CANISTER_ID, ROOT_KEY_DER


@pytest.fixture
def gateway(request: pytest.FixtureRequest) -> Iterator[FakeGateway]:
    with FakeGateway(getattr(request, "param", "echo")) as gw:
        yield gw


def connect(gw: FakeGateway, **kw: Any) -> SyncIcWebSocket:
    kw.setdefault("root_key_der", ROOT_KEY_DER)
    return SyncIcWebSocket.connect(gw.url, CANISTER_ID.to_text(), gw.ic_url, **kw)


def test_fetch_root_key(gateway: FakeGateway) -> None:
    assert fetch_root_key(gateway.ic_url) == ROOT_KEY_DER
    assert fetch_root_key("https://icp-api.io") == MAINNET_ROOT_KEY  # never fetched for mainnet
    with pytest.raises(TransportError):
        fetch_root_key(gateway.ic_url + "/nowhere")
    gateway.status_root_key = ROOT_KEY_DER[:-1]  # the same checks as the asyncio agent's: DER BLS or refused
    with pytest.raises(AgentError, match="is not a DER BLS12-381 public key"):
        fetch_root_key(gateway.ic_url)


@pytest.mark.parametrize("gateway", ["too_big"], indirect=True)
def test_message_over_the_size_limit_closes_with_1009(gateway: FakeGateway) -> None:
    ws = connect(gateway)
    assert ws.recv(timeout=10)["text"] == "ping"
    with pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=10)
    assert info.value.code == 1009
    assert isinstance(ws.error, ProtocolError) and "exceeds" in str(ws.error)
    gateway.wait_for(lambda: gateway.closes)
    assert gateway.closes[0][0] == 1009


def test_echo(gateway: FakeGateway) -> None:
    ws = SyncIcWebSocket.connect(gateway.url, CANISTER_ID, gateway.ic_url)  # root key from /api/v2/status
    assert ws.is_open
    assert ws.recv(timeout=10)["text"] == "ping"
    for i in range(3):
        ws.send({"text": f"hello {i}", "timestamp": i})
        assert ws.recv(timeout=10)["text"] == f"hello {i} ping"
    with pytest.raises(TimeoutError):
        ws.recv(timeout=0.05)
    ws.close()
    assert ws.close_code == 1000 and not ws.is_open
    gateway.wait_for(lambda: gateway.closes)
    assert gateway.closes[0][0] == 1000
    assert [r.method for r in gateway.received] == ["ws_open"] + ["ws_message"] * 3
    assert [r.message.sequence_num for r in gateway.received[1:]] == [1, 2, 3]
    with pytest.raises(ConnectionClosed):
        ws.send({"text": "late", "timestamp": 0})


def test_callbacks_run_on_the_reader_thread(gateway: FakeGateway) -> None:
    seen: list[Any] = []
    answered = threading.Event()

    def on_message(value: Any) -> None:
        seen.append(("message", value["text"], threading.current_thread().name))
        if value["text"] == "hi ping":
            answered.set()

    with connect(
        gateway,
        on_open=lambda: seen.append(("open",)),
        on_message=on_message,
        on_close=lambda code, reason: seen.append(("close", code)),
    ) as ws:
        ws.send({"text": "hi", "timestamp": 0})
        assert answered.wait(10)
    assert seen == [
        ("open",),
        ("message", "ping", "icws-client-reader"),
        ("message", "hi ping", "icws-client-reader"),
        ("close", 1000),
    ]


@pytest.mark.parametrize("gateway", ["ack"], indirect=True)
def test_ack_is_answered_with_a_keep_alive(gateway: FakeGateway) -> None:
    with connect(gateway) as ws:
        ws.recv(timeout=10)
        ws.send({"text": "a", "timestamp": 0})
        assert ws.recv(timeout=10)["text"] == "a ping"
        gateway.wait_for(lambda: len(gateway.received) == 3)
    assert gateway.received[2].service == KeepAliveMessage(4)


@pytest.mark.parametrize("gateway", ["close_by_app"], indirect=True)
def test_iteration_ends_when_the_canister_closes(gateway: FakeGateway) -> None:
    ws = connect(gateway)
    assert [value["text"] for value in ws] == ["ping"]
    assert ws.close_code == 4001 and ws.error is None
    ws.close()


@pytest.mark.parametrize("gateway", ["bad_cert"], indirect=True)
def test_forged_message_closes_with_4000(gateway: FakeGateway) -> None:
    errors: list[IcwsError] = []
    ws = connect(gateway, on_error=errors.append)
    with pytest.raises(ConnectionClosed) as info:
        list(ws)
    assert info.value.code == 4000 and info.value.reason == "Error receiving message"
    assert isinstance(info.value.__cause__, CertificateError)
    assert len(errors) == 1
    gateway.wait_for(lambda: gateway.closes)
    assert gateway.closes[0][0] == 4000
    ws.close()


@pytest.mark.parametrize("gateway", ["silent", "no_open"], indirect=True)
def test_open_timeout(gateway: FakeGateway) -> None:
    with pytest.raises(ConnectionClosed) as info:
        connect(gateway, open_timeout_s=0.3)
    assert info.value.code == 4000 and info.value.reason == "Open connection timeout"
    assert isinstance(info.value.__cause__, ProtocolError)


@pytest.mark.parametrize("gateway", ["drop"], indirect=True)
def test_gateway_closing(gateway: FakeGateway) -> None:
    ws = connect(gateway)
    assert [value["text"] for value in ws] == ["ping"]
    assert ws.close_code == 1000
    ws.close()


def test_nothing_listening() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionClosed) as info:
        SyncIcWebSocket.connect(f"ws://127.0.0.1:{port}/", CANISTER_ID, "http://x", root_key_der=ROOT_KEY_DER)
    assert info.value.code == 1006


@pytest.mark.parametrize("gateway", ["flood"], indirect=True)
def test_back_pressure(gateway: FakeGateway) -> None:
    with connect(gateway, max_queue=4) as ws:
        gateway.wait_for(lambda: len(ws._messages) >= 4)
        time.sleep(0.05)
        assert len(ws._messages) == 4  # the reader waits for room instead of reading on
        texts = [ws.recv(timeout=10)["text"] for _ in range(FLOOD + 1)]
    assert texts == ["ping"] + [str(i) for i in range(FLOOD)]


def test_tls_with_a_custom_ca() -> None:
    with FakeGateway(tls=True) as gw:
        with connect(gw, ssl_context=gw.client_ssl) as ws:
            assert ws.recv(timeout=10)["text"] == "ping"
            ws.send({"text": "secure", "timestamp": 0})
            assert ws.recv(timeout=10)["text"] == "secure ping"
        with pytest.raises(ConnectionClosed) as info:
            connect(gw)
        assert info.value.code == 1006


@pytest.mark.parametrize("url", ["http://127.0.0.1:1/", "garbage", "ws://127.0.0.1:99999/"])
def test_a_bad_gateway_url_is_the_projects_error(url: str) -> None:
    with pytest.raises(ConfigError, match="gateway_url: '") as info:
        SyncIcWebSocket.connect(url, CANISTER_ID, "http://x", root_key_der=ROOT_KEY_DER)
    assert url in str(info.value)


def test_a_refused_upgrade_is_the_projects_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                while b"\r\n\r\n" not in conn.recv(4096):
                    pass
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")

        thread = threading.Thread(target=answer)
        thread.start()
        with pytest.raises(ConnectionClosed) as info:
            SyncIcWebSocket.connect(f"ws://127.0.0.1:{port}/", CANISTER_ID, "http://x", root_key_der=ROOT_KEY_DER)
        thread.join()
    assert info.value.code == 1006 and "200" in info.value.reason
