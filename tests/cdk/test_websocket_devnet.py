"""The IC WebSocket CDK over real HTTP: the demo canisters on an in-process devnet, driven by signed envelopes.

The scenarios of the Rust CDK's integration tests (open, message, get_messages, close, send, close by the canister,
multiple gateways) plus the rejections; every polled message is verified as a client verifies it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from icws_fast.devnet import Devnet
from icws_fast.devnet.canisters.pingpong import decode_app_message, encode_app_message
from icws_fast.errors import RejectError
from icws_fast.ic import candid
from icws_fast.ic.agent import Agent
from icws_fast.ic.envelope import build_envelope, call_content, parse_envelope
from icws_fast.ic.identity import AnonymousIdentity, Ed25519Identity
from icws_fast.ic.principal import Principal
from icws_fast.protocol import types as t
from tests.cdk.ws_actors import WsClient, WsGateway

pytestmark = pytest.mark.timeout(60)


@pytest_asyncio.fixture
async def gateway(devnet: Devnet) -> AsyncIterator[WsGateway]:
    gw = WsGateway(devnet, devnet.canister_ids["test"])
    yield gw
    await gw.close()


@pytest_asyncio.fixture
async def client(devnet: Devnet, gateway: WsGateway) -> AsyncIterator[WsClient]:
    c = WsClient(devnet, devnet.canister_ids["test"], gateway.principal)
    yield c
    await c.close()


def _service(ws: t.WebsocketMessage) -> t.ServiceMessage:
    assert ws.is_service_message
    return t.decode_service_message(ws.content)


async def test_open_message_poll_and_close(gateway: WsGateway, client: WsClient) -> None:
    assert await client.open() == {"Ok": None}
    opened, ping = await gateway.poll()
    assert _service(opened) == t.OpenMessage(client.key)
    assert decode_app_message(ping.content)[0] == "ping"
    assert [opened.sequence_num, ping.sequence_num] == [1, 2]

    for text in ("hello", "again"):
        assert await client.send(encode_app_message(text, 0)) == {"Ok": None}
    replies = await gateway.poll()
    assert [decode_app_message(m.content)[0] for m in replies] == ["hello ping", "again ping"]
    assert [m.sequence_num for m in replies] == [3, 4]
    assert all(m.client_key == client.key for m in replies)

    assert await gateway.ws_close(client.key) == {"Ok": None}
    assert await client.send(encode_app_message("late", 0)) == {
        "Err": f"Client with principal {client.principal} doesn't have an open connection"
    }
    assert await gateway.ws_close(client.key) == {
        "Err": f"Client with key {client.key} doesn't have an open connection"
    }


async def test_open_rejections(devnet: Devnet, gateway: WsGateway, client: WsClient) -> None:
    canister = devnet.canister_ids["test"]
    async with Agent(devnet.url, AnonymousIdentity(), root_key=devnet.root_key_der) as anonymous:
        content = call_content(Principal.anonymous(), canister, "ws_open", t.encode_ws_open_args(0, gateway.principal))
        envelope = t.decode_client_request(t.encode_client_request(build_envelope(AnonymousIdentity(), content)))
        reply = await anonymous.submit_signed(canister, parse_envelope(envelope), envelope)
    with pytest.raises(t.ProtocolError, match=r"^Anonymous principal is not allowed$"):
        t.decode_unit_result(reply)

    assert await client.open() == {"Ok": None}
    assert await client.open() == {"Err": f"Client with key {client.key} already has an open connection"}


async def test_message_rejections(devnet: Devnet, gateway: WsGateway, client: WsClient) -> None:
    assert await client.send(b"x") == {
        "Err": f"Client with principal {client.principal} doesn't have an open connection"
    }
    client.sequence_num = 0
    await client.open()
    await gateway.poll()

    # Garbage instead of an AppMessage: the test canister traps, the call is rejected with CANISTER_ERROR.
    with pytest.raises(RejectError) as rejected:
        await client.send(b"garbage")
    assert rejected.value.reject_code == 5
    # As after a rollback on the IC, the trapped message was not counted: the client's next number is wrong.
    assert await client.send(encode_app_message("x", 0)) == {"Err": "Expected incoming sequence number 1 but got 2"}
    (closed,) = await gateway.poll()
    assert _service(closed) == t.CloseMessage(t.CloseMessageReason.WrongSequenceNumber)
    assert await client.send(encode_app_message("x", 0)) == {
        "Err": f"Client with principal {client.principal} doesn't have an open connection"
    }


async def test_get_messages_and_close_callers(devnet: Devnet, gateway: WsGateway, client: WsClient) -> None:
    canister = devnet.canister_ids["test"]
    await client.open()
    empty = t.CanisterOutputCertifiedMessages([], b"", b"", True)
    # Only the client's gateway sees its queue; anyone else polls an empty one.
    for identity in (AnonymousIdentity(), client.identity, Ed25519Identity.generate()):
        async with Agent(devnet.url, identity, root_key=devnet.root_key_der) as agent:
            reply = await agent.query(canister, "ws_get_messages", t.encode_get_messages_args(0))
            assert t.decode_get_messages_result(reply) == empty
    assert len(await gateway.poll()) == 2

    # ws_close by the client itself, or by an unknown gateway, is refused.
    stranger = WsGateway(devnet, canister)
    try:
        for closer in (client.agent, stranger.agent):
            reply = await closer.call(canister, "ws_close", t.encode_ws_close_args(client.key))
            with pytest.raises(t.ProtocolError, match="is not registered"):
                t.decode_unit_result(reply)
    finally:
        await stranger.close()


async def test_send_and_close_by_the_canister(devnet: Devnet, gateway: WsGateway, client: WsClient) -> None:
    canister = devnet.canister_ids["test"]
    await client.open()
    await gateway.poll()
    send_args = "(ClientPrincipal, blob)"
    arg_types = candid.parse_args(send_args, t.WS_TYPES_DID)
    reply = await gateway.agent.call(canister, "send", candid.encode(arg_types, [client.principal, b"raw bytes"]))
    t.decode_unit_result(reply)
    close_types = candid.parse_args("(ClientPrincipal)", t.WS_TYPES_DID)
    t.decode_unit_result(await gateway.agent.call(canister, "close", candid.encode(close_types, [client.principal])))
    raw, closed = await gateway.poll()
    assert raw.content == b"raw bytes" and not raw.is_service_message
    assert _service(closed) == t.CloseMessage(t.CloseMessageReason.ClosedByApplication)
    with pytest.raises(t.ProtocolError, match="doesn't have an open connection"):
        t.decode_unit_result(
            await gateway.agent.call(canister, "send", candid.encode(arg_types, [client.principal, b"x"]))
        )


async def test_reopen_replaces_the_key(devnet: Devnet, gateway: WsGateway, client: WsClient) -> None:
    await client.open()
    first_key = client.key
    client.key = t.ClientKey(client.principal, first_key.client_nonce + 1)
    assert await client.open() == {"Ok": None}
    messages = await gateway.poll()
    assert [_service(m) for m in messages if m.is_service_message] == [
        t.OpenMessage(first_key),
        t.OpenMessage(client.key),
    ]
    assert await gateway.ws_close(first_key) == {"Err": f"Client with key {first_key} doesn't have an open connection"}


async def test_multiple_gateways(devnet: Devnet) -> None:
    canister = devnet.canister_ids["test"]
    gateways = [WsGateway(devnet, canister) for _ in range(2)]
    clients = [WsClient(devnet, canister, gw.principal, nonce=i) for i, gw in enumerate(gateways) for _ in range(2)]
    try:
        for c in clients:
            assert await c.open() == {"Ok": None}
            assert await c.send(encode_app_message(f"from {c.principal}", 0)) == {"Ok": None}
        for gw in gateways:
            messages = await gw.poll()
            mine = {c.key for c in clients if c.gateway == gw.principal}
            assert {m.client_key for m in messages} == mine
            assert len(messages) == 3 * len(mine)
        # A gateway cannot close another gateway's client.
        other = next(c for c in clients if c.gateway == gateways[1].principal)
        reply = await gateways[0].ws_close(other.key)
        assert reply == {"Err": f"Client with key {other.key} was not registered to gateway {gateways[0].principal}"}
    finally:
        for actor in (*clients, *gateways):
            await actor.close()


async def test_firehose_rounds(devnet: Devnet) -> None:
    canister = devnet.canister_ids["firehose"]
    gw = WsGateway(devnet, canister)
    c = WsClient(devnet, canister, gw.principal)
    config = candid.parse_args("(record { messages_per_round : nat32; payload_size : nat32; interval_ms : nat64 })")
    try:
        await c.open()
        await gw.agent.call(
            canister,
            "configure",
            candid.encode(config, [{"messages_per_round": 20, "payload_size": 64, "interval_ms": 20}]),
        )
        messages = await gw.poll_until(61)  # open + at least three rounds
        app = [m for m in messages if not m.is_service_message]
        assert len(app) >= 60
        (sent,) = candid.decode(
            await gw.agent.query(canister, "sent", candid.encode([], [])), [candid.parse_type("nat64")]
        )
        assert sent >= len(app) and sent % 20 == 0
        assert all(decode_app_message(m.content)[0] == "x" * 64 for m in app)
        assert [m.sequence_num for m in messages] == list(range(1, len(messages) + 1))
        await gw.agent.call(
            canister,
            "configure",
            candid.encode(config, [{"messages_per_round": 0, "payload_size": 0, "interval_ms": 1}]),
        )
    finally:
        await c.close()
        await gw.close()


async def test_firehose_refuses_rounds_over_the_memory_budget(devnet: Devnet) -> None:
    canister = devnet.canister_ids["firehose"]
    config = candid.parse_args("(record { messages_per_round : nat32; payload_size : nat32; interval_ms : nat64 })")
    async with Agent(devnet.url, Ed25519Identity.generate(), root_key=devnet.root_key_der) as agent:
        # Each value is within its own limit; together they would queue 200 GB per client and round.
        with pytest.raises(RejectError, match=r"messages_per_round \* payload_size"):
            await agent.call(
                canister,
                "configure",
                candid.encode(
                    config, [{"messages_per_round": 100_000, "payload_size": 2 * 1024 * 1024, "interval_ms": 1}]
                ),
            )
        (current,) = candid.decode(await agent.query(canister, "config", candid.encode([], [])), config)
        assert current["messages_per_round"] == 0


async def test_a_client_cannot_speak_for_another(devnet: Devnet, gateway: WsGateway, client: WsClient) -> None:
    canister = devnet.canister_ids["test"]
    mallory = WsClient(devnet, canister, gateway.principal)
    try:
        await client.open()
        await mallory.open()
        # Mallory signs a message carrying the victim's client key: the caller does not match the key.
        mallory.key = client.key
        assert await mallory.send(encode_app_message("forged", 0)) == {
            "Err": f"Client with principal {client.principal} has a different key than the one used in the message"
        }
        # The victim's sequence is untouched.
        assert await client.send(encode_app_message("mine", 0)) == {"Ok": None}
        texts = [decode_app_message(m.content)[0] for m in await gateway.poll() if not m.is_service_message]
        assert "forged ping" not in texts and "mine ping" in texts
    finally:
        await mallory.close()
