"""The gateway end to end: raw clients over real sockets, the gateway, a devnet hosting the demo canisters."""

from __future__ import annotations

import asyncio
import ssl

import aiohttp
import pytest

from icws_fast.cdk.api import Canister
from icws_fast.devnet import Devnet
from icws_fast.gateway.server import Gateway
from icws_fast.ic import candid
from icws_fast.ic.agent import Agent
from icws_fast.ic.principal import Principal
from icws_fast.protocol import session as s
from icws_fast.protocol.types import (
    AckMessage,
    ClientKey,
    CloseMessage,
    CloseMessageReason,
    OpenMessage,
    decode_service_message,
)
from tests.gateway.gw_canisters import ACK_INTERVAL_MS, CANISTERS
from tests.gateway.gw_harness import start_gateway
from tests.gateway.gw_rawclient import RawClient, message_request, open_request
from tests.tls import self_signed

pytestmark = pytest.mark.slow


@pytest.fixture
def devnet_canisters() -> dict[str, type[Canister]]:
    return CANISTERS


def ws_url(gateway: Gateway, scheme: str = "ws") -> str:
    return f"{scheme}://127.0.0.1:{gateway.port}"


def metric(gateway: Gateway, name: str, **labels: str) -> float:
    value = gateway.metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


async def eventually(predicate, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def open_client(gateway: Gateway, canister_id: Principal, **kw: object) -> RawClient:
    client = await RawClient.connect(ws_url(gateway, "wss" if kw.get("ssl_context") else "ws"), **kw)  # type: ignore[arg-type]
    first = await client.open(canister_id)
    assert first.is_service_message and first.sequence_num == 1
    assert decode_service_message(first.content) == OpenMessage(client.key)
    return client


async def test_open_registers_and_polls(devnet, gateway):
    client = await open_client(gateway, devnet.canister_ids["echo"])
    assert metric(gateway, "active_pollers") == 1
    assert metric(gateway, "clients_connected") == 1
    assert metric(
        gateway, "relayed_envelopes_to_ic_total", canister_id=str(devnet.canister_ids["echo"]), outcome="accepted"
    )
    client.close()
    await eventually(lambda: metric(gateway, "active_pollers") == 0)
    await eventually(lambda: metric(gateway, "ws_close_calls_total", outcome="ok") == 1)


async def test_echo_round_trip(devnet, gateway):
    client = await open_client(gateway, devnet.canister_ids["echo"])
    for i in range(3):
        client.send_app(b"hello %d" % i)
    for i in range(3):
        msg = await client.recv_message()
        assert not msg.is_service_message and msg.content == b"hello %d" % i and msg.sequence_num == i + 2
    client.close()


async def test_many_clients_on_several_canisters_keep_order(devnet, gateway):
    canisters = [devnet.canister_ids["echo"], devnet.canister_ids["echo2"]]
    clients = await asyncio.gather(*(open_client(gateway, canisters[i % 2]) for i in range(16)))
    assert metric(gateway, "active_pollers") == 2
    for n, client in enumerate(clients):
        for i in range(5):
            client.send_app(b"%d:%d" % (n, i))
    for n, client in enumerate(clients):
        got = [(await client.recv_app_message()).content for _ in range(5)]
        assert got == [b"%d:%d" % (n, i) for i in range(5)]
    for client in clients:
        client.close()
    await eventually(lambda: metric(gateway, "ws_close_calls_total", outcome="ok") == len(clients))
    await eventually(lambda: metric(gateway, "active_pollers") == 0)


async def burst(devnet: Devnet, n: int, size: int) -> None:
    async with Agent(devnet.url, root_key=devnet.root_key_der) as agent:
        arg = candid.encode(candid.parse_args("(nat32, nat32)"), [n, size])
        await agent.call(devnet.canister_ids["burst"], "burst", arg)


async def test_burst_to_many_clients_nothing_lost_or_repeated(devnet, gateway):
    clients = await asyncio.gather(*(open_client(gateway, devnet.canister_ids["burst"]) for _ in range(8)))
    await burst(devnet, 230, 64)
    for client in clients:
        got = [int.from_bytes((await client.recv_message()).content[:4], "big") for _ in range(230)]
        assert got == list(range(230))
        assert client.last_incoming == 231
    assert metric(gateway, "dropped_messages_total", reason="invalid_certificate") == 0
    for client in clients:
        client.close()


async def test_keep_alive_cycles(devnet, gateway):
    """Short ack cycles: the answering client stays, the silent one is closed by the canister."""
    loyal = await open_client(gateway, devnet.canister_ids["echo"])
    silent = await open_client(gateway, devnet.canister_ids["echo"])
    acks = 0
    while acks < 2:
        msg = await loyal.recv_message(timeout=ACK_INTERVAL_MS / 1000 * 5)
        assert msg.is_service_message
        assert isinstance(decode_service_message(msg.content), AckMessage)
        # The CDK (like the Rust one) expires a client whose last keep-alive is older than the timeout
        # when its check timer fires, timeout after the ack: a keep-alive landing within the timer's
        # lateness of the ack would count as missing. Real clients answer later than that; so does this one.
        await asyncio.sleep(0.2)
        loyal.send_keep_alive()
        acks += 1
    seen = []
    while True:
        msg = await silent.recv_message(timeout=ACK_INTERVAL_MS / 1000 * 5)
        seen.append(decode_service_message(msg.content))
        if isinstance(seen[-1], CloseMessage):
            break
    assert seen[-1] == CloseMessage(CloseMessageReason.KeepAliveTimeout)
    loyal.send_app(b"still here")
    assert (await loyal.recv_app_message()).content == b"still here"
    loyal.close()
    silent.close()


async def test_slow_consumer_is_closed_and_others_keep_their_service(devnet):
    gateway = await start_gateway(devnet.url, max_send_buffer=1024 * 1024)
    try:
        reader = await open_client(gateway, devnet.canister_ids["burst"])
        stuck = await open_client(gateway, devnet.canister_ids["burst"])
        stuck.transport.underlying_transport.pause_reading()
        await burst(devnet, 300, 40_000)
        got = [int.from_bytes((await reader.recv_app_message()).content[:4], "big") for _ in range(300)]
        assert got == list(range(300))
        assert metric(gateway, "errors_total", kind="slow_consumer") == 1
        stuck.transport.underlying_transport.resume_reading()
        assert (await stuck.wait_closed()).code in (s.CLOSE_POLICY_VIOLATION, 1006)
        reader.close()
    finally:
        await gateway.drain()


async def test_a_canister_that_keeps_trapping_closes_its_clients_after_the_grace(devnet):
    # One CANISTER_ERROR (a stopped or upgrading canister) backs off; one that lasts past the grace closes.
    gateway = await start_gateway(devnet.url, canister_error_grace_s=0.5)
    try:
        client = await open_client(gateway, devnet.canister_ids["flaky"])
        async with Agent(devnet.url, root_key=devnet.root_key_der) as agent:
            await agent.call(devnet.canister_ids["flaky"], "fail", candid.encode([], []))
        closed = await client.wait_closed()
        assert closed.code == s.CLOSE_INTERNAL_ERROR and "ws_get_messages" in closed.reason
        assert "CANISTER_ERROR" in closed.reason
        assert metric(gateway, "errors_total", kind="poll_reject") >= 1
        assert metric(gateway, "active_pollers") == 0
    finally:
        await gateway.drain()


async def call(devnet: Devnet, canister: str, method: str, signature: str, *args: object) -> None:
    async with Agent(devnet.url, root_key=devnet.root_key_der) as agent:
        arg = candid.encode(candid.parse_args(signature), list(args))
        await agent.call(devnet.canister_ids[canister], method, arg)


@pytest.mark.parametrize("part", ["cert", "tree", "content"])
async def test_tampered_batches_are_polled_again_not_relayed(devnet, gateway, part):
    client = await open_client(gateway, devnet.canister_ids["corrupt"])
    await call(devnet, "corrupt", "corrupt", "(text)", part)
    await call(devnet, "corrupt", "ping", "(blob)", b"spoilt")
    await eventually(lambda: metric(gateway, "dropped_messages_total", reason="invalid_certificate") >= 1)
    await eventually(lambda: metric(gateway, "errors_total", kind="poll_invalid_batch") >= 2)
    # Polled again and again, the tampered batch is counted (per message) and logged once.
    assert metric(gateway, "dropped_messages_total", reason="invalid_certificate") == 1
    await call(devnet, "corrupt", "corrupt", "(text)", "")
    await call(devnet, "corrupt", "ping", "(blob)", b"good")
    # Once the batch verifies it is delivered: neither skipped nor out of order.
    msg = await client.recv_message()
    assert msg.content == b"spoilt" and msg.sequence_num == 2
    msg = await client.recv_message()
    assert msg.content == b"good" and msg.sequence_num == 3
    client.close()


async def test_wrong_root_key_relays_nothing(devnet):
    other = Devnet(address="127.0.0.1:0", canisters={}, root_key_seed=b"\x01" * 32)
    gateway = await start_gateway(devnet.url, root_key_der=other.root_key_der)
    try:
        client = await RawClient.connect(ws_url(gateway))
        await client.handshake()
        client.send(open_request(client.identity, devnet.canister_ids["echo"], gateway.principal, 1))
        await eventually(lambda: metric(gateway, "dropped_messages_total", reason="invalid_certificate") >= 1)
        assert client.listener.inbox.empty()
    finally:
        await gateway.drain()


async def test_replayed_ws_open_does_not_take_over_the_session(devnet, gateway):
    victim = await RawClient.connect(ws_url(gateway))
    await victim.handshake()
    frame = open_request(victim.identity, devnet.canister_ids["echo"], gateway.principal, 77)
    victim.send(frame)
    await victim.recv_message()
    victim.canister_id, victim.key = devnet.canister_ids["echo"], ClientKey(victim.identity.sender, 77)
    replayer = await RawClient.connect(ws_url(gateway))
    await replayer.handshake()
    replayer.send(frame)
    closed = await replayer.wait_closed()
    assert closed.code == s.CLOSE_POLICY_VIOLATION and "already connected" in closed.reason
    victim.send_app(b"still mine")
    assert (await victim.recv_app_message()).content == b"still mine"
    assert metric(gateway, "ws_close_calls_total", outcome="ok") == 0
    victim.close()


async def test_attacker_beside_a_good_client(devnet, gateway):
    good = await open_client(gateway, devnet.canister_ids["echo"])
    for junk in (b"\x00" * 50, b"\xa1\x68envelope\xa0"):
        attacker = await RawClient.connect(ws_url(gateway))
        await attacker.handshake()
        attacker.send(junk)
        assert (await attacker.wait_closed()).code == s.CLOSE_POLICY_VIOLATION
    # An attacker that opens a real session then replays the good client's envelope is refused.
    attacker = await open_client(gateway, devnet.canister_ids["echo"])
    good.send_app(b"mine")
    attacker.send(message_request(good.identity, good.canister_id, good.key, 99, b"x"))
    assert (await attacker.wait_closed()).code == s.CLOSE_POLICY_VIOLATION
    assert (await good.recv_app_message()).content == b"mine"
    good.close()


async def test_client_that_dies_is_closed_at_the_canister(devnet, gateway):
    client = await open_client(gateway, devnet.canister_ids["echo"])
    client.abort()
    await eventually(lambda: metric(gateway, "ws_close_calls_total", outcome="ok") == 1)
    assert metric(gateway, "clients_connected") == 0


async def test_poller_stops_and_restarts_without_misrouting(devnet, gateway):
    canister = devnet.canister_ids["echo"]
    first = await open_client(gateway, canister)
    first.close()
    await eventually(lambda: metric(gateway, "active_pollers") == 0)
    # The new poller starts over at nonce 0 (as the Rust gateway): it sees the first client's old
    # messages again but routes none of them; the new client gets only its own, from sequence 1.
    second = await open_client(gateway, canister)
    assert metric(gateway, "active_pollers") == 1
    assert metric(gateway, "dropped_messages_total", reason="unknown_client") >= 1
    second.close()


async def test_unknown_canister_is_reported_to_the_client(devnet, gateway):
    client = await RawClient.connect(ws_url(gateway))
    await client.handshake()
    unknown = Principal.from_text("aaaaa-aa")
    client.send(open_request(client.identity, unknown, gateway.principal, 1))
    closed = await client.wait_closed()
    # Either the ws_open call or the first poll fails first; both carry the replica's reason.
    assert closed.code == s.CLOSE_INTERNAL_ERROR and "not found" in closed.reason
    good = await open_client(gateway, devnet.canister_ids["echo"])
    good.close()


async def test_drain_closes_sessions_and_calls_ws_close(devnet):
    gateway = await start_gateway(devnet.url)
    clients = [await open_client(gateway, devnet.canister_ids["echo"]) for _ in range(5)]
    await gateway.drain()
    for client in clients:
        closed = await client.wait_closed()
        assert closed.code == s.CLOSE_GOING_AWAY
    assert metric(gateway, "ws_close_calls_total", outcome="ok") == 5
    with pytest.raises(OSError):
        await RawClient.connect(ws_url(gateway))


async def test_ready_turns_unready_on_drain(devnet):
    gateway = await start_gateway(devnet.url)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{gateway.metrics_port}/ready") as resp:
            assert resp.status == 200
        gateway._accepting = False
        async with http.get(f"http://127.0.0.1:{gateway.metrics_port}/ready") as resp:
            assert resp.status == 503
    await gateway.drain()


async def test_devnet_restart_under_load(devnet, gateway):
    clients = [await open_client(gateway, devnet.canister_ids["burst"]) for _ in range(4)]
    await burst(devnet, 120, 32)
    await devnet.stop()
    await asyncio.sleep(0.3)
    await devnet.start()
    await burst(devnet, 120, 32)
    # Sessions survive a replica blip: the poller backs off and resumes with the same nonce.
    for client in clients:
        got = [int.from_bytes((await client.recv_app_message()).content[:4], "big") for _ in range(240)]
        assert got == list(range(120)) * 2
    newcomer = await open_client(gateway, devnet.canister_ids["echo"])
    for client in [*clients, newcomer]:
        assert client.listener.closed is None
        client.close()


async def test_tls(devnet, tmp_path):
    tls = self_signed(tmp_path)
    gateway = await start_gateway(
        devnet.url, tls_certificate_pem_path=tls.cert_path, tls_certificate_key_pem_path=tls.key_path
    )
    try:
        client = await open_client(gateway, devnet.canister_ids["echo"], ssl_context=tls.client_context())
        assert client.transport.is_secure
        client.close()
        with pytest.raises(ssl.SSLCertVerificationError):
            await RawClient.connect(ws_url(gateway, "wss"), ssl_context=ssl.create_default_context())
    finally:
        await gateway.drain()


async def test_each_session_end_is_one_log_line(devnet, gateway, caplog):
    canister = devnet.canister_ids["echo"]
    with caplog.at_level("INFO", logger="icws_fast.gateway.server"):
        leaving = await open_client(gateway, canister)
        leaving.close()  # the client closes (1000)
        refused = await RawClient.connect(ws_url(gateway))
        await refused.handshake()
        refused.send(b"garbage")  # the gateway closes (1008)
        closed = await refused.wait_closed()
        await eventually(lambda: len([r for r in caplog.records if "session ended" in r.getMessage()]) == 2)
    lines = [r.getMessage() for r in caplog.records if "session ended" in r.getMessage()]
    lines.sort(key=lambda line: "no ws_open" in line)  # the client that left first
    assert lines[0].startswith(f"session ended: client key {leaving.key}, canister {canister}, peer 127.0.0.1,")
    assert lines[0].endswith("close code 1000, reason ''")
    assert lines[1].startswith("session ended: client key none (no ws_open), canister none, peer 127.0.0.1,")
    assert lines[1].endswith(f"close code {s.CLOSE_POLICY_VIOLATION}, reason {closed.reason!r}")
