"""The official Motoko CDK test canister (wasm64) on the devnet, through ``icws-gateway``, with our Python client.

Everything real: the devnet and two gateways are processes, the client verifies every certificate
(the canister's ``ws_get_messages`` replies carry the devnet's data certificate, which the canister
obtained through ``ic0.data_certificate_copy``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from icws_fast.client import IcWebSocket
from icws_fast.errors import ConnectionClosed
from icws_fast.ic.agent import Agent
from icws_fast.ic.identity import Ed25519Identity
from icws_fast.protocol import types as t
from tests.wasm.motoko_stack import (
    APP_MESSAGE,
    SEND_ACK_INTERVAL_MS,
    MotokoStack,
    app_message,
    call,
    motoko_stack,
)

pytestmark = pytest.mark.slow

TIMEOUT_S = 30


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotokoStack]:
    with motoko_stack(tmp_path_factory.mktemp("motoko")) as running:
        yield running


async def connect(stack: MotokoStack, gateway: int = 0) -> IcWebSocket:
    return await asyncio.wait_for(
        IcWebSocket.connect(
            stack.gateways[gateway],
            stack.canister_id,
            stack.devnet.url,
            message_type=APP_MESSAGE,
            ack_interval_ms=SEND_ACK_INTERVAL_MS,
            root_key_der=stack.devnet.root_key_der,
        ),
        TIMEOUT_S,
    )


async def send_from_canister(stack: MotokoStack, ws: IcWebSocket, *texts: str) -> None:
    async with Agent(stack.devnet.url, root_key=stack.devnet.root_key_der) as agent:
        result = await call(agent, stack.canister_id, "send", ws.principal, [app_message(text) for text in texts])
    assert result == {"Ok": None}


async def recv(ws: IcWebSocket) -> object:
    return await asyncio.wait_for(ws.recv(), TIMEOUT_S)


async def test_messages_both_ways(stack: MotokoStack) -> None:
    ws = await connect(stack)
    try:
        await send_from_canister(stack, ws, "hello", "world")
        assert await recv(ws) == {"text": "hello"}
        assert await recv(ws) == {"text": "world"}
        # The canister accepts the client's messages (a rejected one would close the connection)...
        for index in range(5):
            await ws.send({"text": f"from client {index}"})
        await send_from_canister(stack, ws, "still open")
        assert await recv(ws) == {"text": "still open"}
        assert ws.is_open
    finally:
        await ws.close()


async def test_backlog_arrives_in_small_batches_in_order(stack: MotokoStack) -> None:
    ws = await connect(stack)
    try:
        texts = [f"message {index}" for index in range(11)]  # four batches of at most 3
        await send_from_canister(stack, ws, *texts)
        assert [await recv(ws) for _ in texts] == [{"text": text} for text in texts]
    finally:
        await ws.close()


async def test_close_from_the_canister(stack: MotokoStack) -> None:
    ws = await connect(stack)
    async with Agent(stack.devnet.url, root_key=stack.devnet.root_key_der) as agent:
        assert await call(agent, stack.canister_id, "close", ws.principal) == {"Ok": None}
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        # The canister forgot the client: sending to it fails.
        result = await call(agent, stack.canister_id, "send", ws.principal, [app_message("late")])
        assert "Err" in result


async def test_close_from_the_client(stack: MotokoStack) -> None:
    ws = await connect(stack)
    await ws.close()
    # The gateway calls ws_close for the client; the canister then refuses to send to it.
    async with Agent(stack.devnet.url, root_key=stack.devnet.root_key_der) as agent:
        for _ in range(100):
            result = await call(agent, stack.canister_id, "send", ws.principal, [app_message("gone?")])
            if "Err" in result:
                break
            await asyncio.sleep(0.1)
        assert "Err" in result, result


async def test_clients_on_several_gateways(stack: MotokoStack) -> None:
    first, second = await connect(stack, 0), await connect(stack, 1)
    try:
        await send_from_canister(stack, first, "to the first")
        await send_from_canister(stack, second, "to the second")
        assert await recv(first) == {"text": "to the first"}
        assert await recv(second) == {"text": "to the second"}
    finally:
        await first.close()
        await second.close()


async def test_ack_and_keep_alive_cycle(stack: MotokoStack) -> None:
    """One full cycle (about two minutes: the CDK's ack interval cannot be below its 60 s keep-alive timeout).

    The canister acks every client after ``SEND_ACK_INTERVAL_MS`` (its global timer, which Motoko runs
    as self-calls) and closes those that did not answer with a keep-alive within 60 s. Our client
    answers through the gateway; a silent connection, opened behind a gateway identity that only
    reads its queue, does not.
    """
    ws = await connect(stack)
    devnet = stack.devnet
    silent_client, fake_gateway = Ed25519Identity.generate(), Ed25519Identity.generate()
    async with (
        Agent(devnet.url, silent_client, root_key=devnet.root_key_der) as client_agent,
        Agent(devnet.url, fake_gateway, root_key=devnet.root_key_der) as gateway_agent,
    ):
        opened = await client_agent.call(stack.canister_id, "ws_open", t.encode_ws_open_args(1, fake_gateway.sender))
        t.decode_unit_result(opened)
        await ws.send({"text": "to be acknowledged"})
        closed = t.CloseMessage(t.CloseMessageReason.KeepAliveTimeout)
        deadline = asyncio.get_running_loop().time() + 2 * SEND_ACK_INTERVAL_MS / 1000 + 30
        while True:
            reply = await gateway_agent.query(stack.canister_id, "ws_get_messages", t.encode_get_messages_args(0))
            queue = [
                t.decode_service_message(t.decode_websocket_message(message.content).content)
                for message in t.decode_get_messages_result(reply).messages
            ]
            if closed in queue:
                break
            assert asyncio.get_running_loop().time() < deadline, queue
            await asyncio.sleep(1)
        assert t.AckMessage(0) in queue
        result = await call(gateway_agent, stack.canister_id, "send", silent_client.sender, [app_message("x")])
        assert "Err" in result
    # Our client answered its ack with a keep-alive: it is still connected.
    await send_from_canister(stack, ws, "after the cycle")
    assert await recv(ws) == {"text": "after the cycle"}
    await ws.close()
