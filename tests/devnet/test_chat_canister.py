"""The ``chat`` demo canister on an in-process devnet: broadcast with ids and senders, the bounded history, limits.

Driven by signed envelopes as a gateway and its clients send them (:mod:`tests.cdk.ws_actors`); every polled
message is verified as a client verifies it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from icws_fast.devnet import Devnet
from icws_fast.devnet.canisters.chat import CHAT_MESSAGE_DID, HISTORY_LENGTH, MAX_TEXT_LENGTH, decode_chat_message
from icws_fast.devnet.canisters.pingpong import decode_app_message, encode_app_message
from icws_fast.errors import RejectError
from icws_fast.ic import candid
from icws_fast.protocol import types as t
from tests.cdk.ws_actors import WsClient, WsGateway

pytestmark = pytest.mark.timeout(120)

_NO_ARGS = candid.encode(candid.parse_args("()"), [])
_HISTORY = candid.parse_args("(vec ChatMessage)", CHAT_MESSAGE_DID)


@pytest_asyncio.fixture
async def gateway(devnet: Devnet) -> AsyncIterator[WsGateway]:
    gw = WsGateway(devnet, devnet.canister_ids["chat"])
    yield gw
    await gw.close()


@pytest_asyncio.fixture
async def clients(devnet: Devnet, gateway: WsGateway) -> AsyncIterator[list[WsClient]]:
    """Three clients of ``chat``, opened (their open messages polled away)."""
    opened = [WsClient(devnet, devnet.canister_ids["chat"], gateway.principal) for _ in range(3)]
    try:
        for client in opened:
            assert await client.open() == {"Ok": None}
        assert len(await gateway.poll()) == len(opened)
        yield opened
    finally:
        for client in opened:
            await client.close()


async def history(gateway: WsGateway) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = candid.decode(
        await gateway.agent.query(gateway.canister_id, "history", _NO_ARGS), _HISTORY
    )[0]
    return messages


async def test_broadcast_carries_an_id_and_the_sender(gateway: WsGateway, clients: list[WsClient]) -> None:
    for n, sender in enumerate([clients[0], clients[1], clients[0]]):
        assert await sender.send(encode_app_message(f"message {n}", 42)) == {"Ok": None}
    received = await gateway.poll()
    assert len(received) == 3 * len(clients)
    for client in clients:
        mine = [decode_chat_message(m.content) for m in received if m.client_key == client.key]
        assert [(m["id"], m["text"], m["sender"]) for m in mine] == [
            (1, "message 0", clients[0].principal),
            (2, "message 1", clients[1].principal),
            (3, "message 2", clients[0].principal),
        ]
        # The canister's time, not the sender's 42; and an AppMessage client still reads the message.
        assert all(m["timestamp"] > 42 for m in mine)
        assert [decode_app_message(m.content)[0] for m in received if m.client_key == client.key] == [
            "message 0",
            "message 1",
            "message 2",
        ]
    assert [m["id"] for m in await history(gateway)] == [1, 2, 3]


async def test_history_keeps_the_latest_messages_and_is_not_pushed_on_open(
    devnet: Devnet, gateway: WsGateway, clients: list[WsClient]
) -> None:
    assert await history(gateway) == []
    total = HISTORY_LENGTH + 3
    for n in range(total):
        assert await clients[n % 2].send(encode_app_message(f"line {n}", 0)) == {"Ok": None}
    await gateway.poll_until(total * len(clients))

    kept = await history(gateway)
    assert [m["id"] for m in kept] == list(range(total - HISTORY_LENGTH + 1, total + 1))
    assert [m["text"] for m in kept] == [f"line {n}" for n in range(total - HISTORY_LENGTH, total)]
    assert [m["sender"] for m in kept] == [clients[n % 2].principal for n in range(total - HISTORY_LENGTH, total)]

    # A late joiner receives its open message only: the history is for the clients that ask.
    late = WsClient(devnet, devnet.canister_ids["chat"], gateway.principal)
    try:
        assert await late.open() == {"Ok": None}
        (opened,) = await gateway.poll()
        assert opened.is_service_message
        assert t.decode_service_message(opened.content) == t.OpenMessage(late.key)
    finally:
        await late.close()


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"garbage", "cannot decode the app message"),
        (encode_app_message("x" * (MAX_TEXT_LENGTH + 1), 0), f"more than the {MAX_TEXT_LENGTH} the chat accepts"),
    ],
)
async def test_refused_messages_reach_nobody(
    gateway: WsGateway, clients: list[WsClient], content: bytes, error: str
) -> None:
    with pytest.raises(RejectError, match=error) as rejected:
        await clients[0].send(content)
    assert rejected.value.reject_code == 5  # CANISTER_ERROR: the canister trapped
    # The longest text allowed goes through, with the first id: the refused message took none.
    assert await clients[1].send(encode_app_message("y" * MAX_TEXT_LENGTH, 0)) == {"Ok": None}
    received = await gateway.poll()
    assert {(m.client_key, decode_chat_message(m.content)["id"]) for m in received} == {(c.key, 1) for c in clients}
    assert [m["text"] for m in await history(gateway)] == ["y" * MAX_TEXT_LENGTH]
