"""The scenarios of the official CDK's integration tests, against the Motoko CDK canister on the devnet.

The facts and expected outcomes come from omnia-network/ic-websocket-cdk-rs
(``src/ic-websocket-cdk/src/tests/integration_tests``: ws_open, ws_message, ws_get_messages,
ws_close, send, close, multiple gateways), which the Motoko CDK runs against this same canister.
Here a client and a gateway are identities calling the canister through the devnet's HTTP
interface (an in-process devnet on a loopback port, a fresh one per test); every batch of
``ws_get_messages`` is checked against the devnet's certificate, as a gateway's client would.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from icws_fast.devnet.server import Devnet
from icws_fast.devnet.wasm import WasmCanister
from icws_fast.ic.agent import Agent
from icws_fast.ic.identity import Ed25519Identity
from icws_fast.ic.principal import Principal
from icws_fast.protocol import types as t
from icws_fast.protocol.certified import BatchVerifier, check_message
from tests.wasm.motoko_stack import INIT_ARG, MAX_MESSAGES_PER_BATCH, app_message, decode_reply, encode_args
from tests.wasm.wasm_canisters import MOTOKO_CDK_CANISTER


@pytest.fixture
def devnet_canisters() -> dict[str, Any]:
    return {"mo": WasmCanister(MOTOKO_CDK_CANISTER, INIT_ARG)}


class Actor:
    """One identity calling the canister (a client or a gateway)."""

    def __init__(self, devnet: Devnet, identity: Ed25519Identity | None = None) -> None:
        self.devnet = devnet
        self.identity = identity or Ed25519Identity.generate()
        self.agent = Agent(devnet.url, self.identity, root_key=devnet.root_key_der)
        self.canister_id = devnet.canister_ids["mo"]
        self.verifier = BatchVerifier(devnet.root_key_der)

    @property
    def principal(self) -> Principal:
        return self.identity.sender

    async def call(self, method: str, *values: Any) -> Any:
        return decode_reply(method, await self.agent.call(self.canister_id, method, encode_args(method, *values)))

    async def raw_call(self, method: str, arg: bytes) -> Any:
        return decode_reply(method, await self.agent.call(self.canister_id, method, arg))

    async def messages(self, nonce: int) -> t.CanisterOutputCertifiedMessages:
        """A verified ``ws_get_messages`` batch from ``nonce``."""
        reply = await self.agent.query(self.canister_id, "ws_get_messages", t.encode_get_messages_args(nonce))
        batch = t.decode_get_messages_result(reply)
        if not batch.messages:
            return batch  # an empty batch carries no certificate
        hashes = self.verifier.verify(batch.cert, batch.tree, self.canister_id, time.time_ns())
        for message in batch.messages:
            check_message(hashes, message.key.encode(), message.content)
        return batch


async def open_client(client: Actor, gateway: Actor, nonce: int | None = None) -> t.ClientKey:
    nonce = secrets.randbits(64) if nonce is None else nonce
    assert await client.raw_call("ws_open", t.encode_ws_open_args(nonce, gateway.principal)) == {"Ok": None}
    return t.ClientKey(client.principal, nonce)


def ws_message(key: t.ClientKey, sequence_num: int, content: bytes, *, service: bool = False) -> bytes:
    return t.encode_ws_message_args(t.WebsocketMessage(key, sequence_num, time.time_ns(), service, content))


def service_content(message: t.CanisterOutputMessage) -> t.ServiceMessage:
    decoded = t.decode_websocket_message(message.content)
    assert decoded.is_service_message
    return t.decode_service_message(decoded.content)


@pytest.fixture
async def actors(devnet: Devnet) -> Any:
    client, client2, gateway, gateway2 = (Actor(devnet) for _ in range(4))
    yield client, client2, gateway, gateway2
    for actor in (client, client2, gateway, gateway2):
        await actor.agent.close()


async def test_ws_open(actors: Any, devnet: Devnet) -> None:
    client, _, gateway, _ = actors
    anonymous = Actor(devnet)
    anonymous.agent = Agent(devnet.url, root_key=devnet.root_key_der)
    try:
        result = await anonymous.raw_call("ws_open", t.encode_ws_open_args(1, gateway.principal))
    finally:
        await anonymous.agent.close()
    assert result == {"Err": "Anonymous principal is not allowed"}
    key = await open_client(client, gateway)
    # The open message is the first message of the gateway's queue, for that client.
    batch = await gateway.messages(0)
    assert batch.messages[0].client_key == key
    assert service_content(batch.messages[0]) == t.OpenMessage(key)
    # (The Rust CDK also refuses a registered gateway opening a connection for itself; the Motoko CDK
    # 0.4.1 does not check that, so the scenario is left out.)
    # The same key twice is refused; another nonce opens a second connection.
    result = await client.raw_call("ws_open", t.encode_ws_open_args(key.client_nonce, gateway.principal))
    assert result == {"Err": f"Client with key {key} already has an open connection"}
    other = await open_client(client, gateway)
    assert [m.client_key for m in (await gateway.messages(0)).messages] == [key, other]


async def test_ws_message(actors: Any) -> None:
    client, client2, gateway, _ = actors
    key = await open_client(client, gateway)
    hello = app_message("hello")
    # A client without a connection, and a message naming another key, are refused.
    result = await client2.raw_call("ws_message", ws_message(t.ClientKey(client2.principal, 0), 1, hello))
    assert "Err" in result and str(client2.principal) in result["Err"]
    result = await client.raw_call(
        "ws_message", ws_message(t.ClientKey(client.principal, key.client_nonce + 1), 1, hello)
    )
    assert "Err" in result
    # In sequence: accepted.
    assert await client.raw_call("ws_message", ws_message(key, 1, hello)) == {"Ok": None}
    keep_alive = t.encode_service_message(t.KeepAliveMessage(0))
    assert await client.raw_call("ws_message", ws_message(key, 2, keep_alive, service=True)) == {"Ok": None}
    # A service message a client may not send (an ack) is refused.
    ack = t.encode_service_message(t.AckMessage(0))
    assert "Err" in await client.raw_call("ws_message", ws_message(key, 3, ack, service=True))


async def test_ws_message_with_a_wrong_sequence_number_closes_the_client(actors: Any) -> None:
    client, _, gateway, _ = actors
    key = await open_client(client, gateway)
    result = await client.raw_call("ws_message", ws_message(key, 2, app_message("skipped 1")))
    assert "Err" in result and "2" in result["Err"] and "1" in result["Err"]
    batch = await gateway.messages(1)  # after the open message
    assert service_content(batch.messages[0]) == t.CloseMessage(t.CloseMessageReason.WrongSequenceNumber)
    # The client is gone: the gateway's ws_close for it fails.
    assert "Err" in await gateway.raw_call("ws_close", t.encode_ws_close_args(key))


async def test_ws_get_messages_in_batches(actors: Any) -> None:
    client, _, gateway, _ = actors
    key = await open_client(client, gateway)
    contents = [app_message(f"message {index}") for index in range(7)]
    assert await gateway.call("send", client.principal, contents) == {"Ok": None}
    received: list[bytes] = []
    nonce = 0
    while True:
        batch = await gateway.messages(nonce)
        assert len(batch.messages) <= MAX_MESSAGES_PER_BATCH
        for message in batch.messages:
            assert message.key == t.message_key(gateway.principal, nonce)
            nonce += 1
            decoded = t.decode_websocket_message(message.content)
            assert decoded.client_key == key
            if not decoded.is_service_message:
                received.append(decoded.content)
        if batch.is_end_of_queue:
            break
    assert received == contents
    # Sequence numbers of the canister's messages: open message 1, then one per message.
    assert nonce == 1 + len(contents)
    # Past the end: an empty batch.
    assert (await gateway.messages(nonce)).messages == []


async def test_ws_close(actors: Any) -> None:
    client, client2, gateway, _ = actors
    key = await open_client(client, gateway)
    # Only the client's gateway may close it.
    assert "Err" in await client2.raw_call("ws_close", t.encode_ws_close_args(key))
    assert await gateway.raw_call("ws_close", t.encode_ws_close_args(key)) == {"Ok": None}
    assert "Err" in await gateway.raw_call("ws_close", t.encode_ws_close_args(key))
    # The canister cannot send to it any more.
    assert "Err" in await gateway.call("send", client.principal, [app_message("gone")])


async def test_close_from_the_canister(actors: Any) -> None:
    client, _, gateway, _ = actors
    await open_client(client, gateway)
    assert await gateway.call("close", client.principal) == {"Ok": None}
    batch = await gateway.messages(1)
    assert service_content(batch.messages[0]) == t.CloseMessage(t.CloseMessageReason.ClosedByApplication)
    assert "Err" in await gateway.call("close", client.principal)


async def test_multiple_gateways(actors: Any) -> None:
    client, client2, gateway, gateway2 = actors
    key = await open_client(client, gateway)
    key2 = await open_client(client2, gateway2)
    assert await gateway.call("send", client2.principal, [app_message("to two")]) == {"Ok": None}
    first, second = await gateway.messages(0), await gateway2.messages(0)
    assert [m.client_key for m in first.messages] == [key]
    assert [m.client_key for m in second.messages] == [key2, key2]
    assert t.decode_websocket_message(second.messages[1].content).content == app_message("to two")
    # A gateway cannot close another gateway's client.
    assert "Err" in await gateway.raw_call("ws_close", t.encode_ws_close_args(key2))


async def test_wipe_resets_the_canister(actors: Any) -> None:
    client, _, gateway, _ = actors
    await open_client(client, gateway)
    assert await gateway.call("wipe", 10, 60_001) is None
    assert "Err" in await gateway.call("send", client.principal, [app_message("after wipe")])
    assert (await gateway.messages(0)).messages == []


async def test_state_persists_across_a_devnet_restart(tmp_path: Path) -> None:
    canisters: dict[str, Any] = {"mo": WasmCanister(MOTOKO_CDK_CANISTER, INIT_ARG)}
    async with Devnet("127.0.0.1:0", canisters, round_ms=10, state_dir=tmp_path) as devnet:
        client, gateway = Actor(devnet), Actor(devnet)
        key = await open_client(client, gateway)
        await client.agent.close()
        await gateway.agent.close()
    async with Devnet("127.0.0.1:0", canisters, round_ms=10, state_dir=tmp_path) as devnet:
        again = Actor(devnet, gateway.identity)
        try:
            batch = await again.messages(0)
            assert service_content(batch.messages[0]) == t.OpenMessage(key)
            assert await again.call("send", client.principal, [app_message("resumed")]) == {"Ok": None}
        finally:
            await again.agent.close()


async def test_restart_with_another_module_upgrades_the_canister(tmp_path: Path) -> None:
    """An upgrade of a Motoko canister with enhanced orthogonal persistence (main memory carried over).

    The CDK's state is not a ``stable`` variable of the test canister, so connections do not survive
    an upgrade (as on the IC); the upgraded canister serves new ones.
    """
    newer = tmp_path / "newer.wasm"
    newer.write_bytes(MOTOKO_CDK_CANISTER.read_bytes() + b"\x00\x04\x03new")  # one more custom section
    state_dir = tmp_path / "state"
    async with Devnet("127.0.0.1:0", {"mo": WasmCanister(MOTOKO_CDK_CANISTER, INIT_ARG)}, state_dir=state_dir) as old:
        client, gateway = Actor(old), Actor(old)
        await open_client(client, gateway)
        await client.agent.close()
        await gateway.agent.close()
    async with Devnet("127.0.0.1:0", {"mo": WasmCanister(newer, INIT_ARG)}, state_dir=state_dir) as devnet:
        host = devnet.replica.hosts[devnet.canister_ids["mo"]]
        assert host.module_hash != old.replica.hosts[old.canister_ids["mo"]].module_hash
        client2, gateway2 = Actor(devnet), Actor(devnet, gateway.identity)
        try:
            assert "Err" in await gateway2.call("send", client.principal, [app_message("lost")])
            key = await open_client(client2, gateway2)
            batch = await gateway2.messages(0)
            assert service_content(batch.messages[-1]) == t.OpenMessage(key)
        finally:
            await client2.agent.close()
            await gateway2.agent.close()
