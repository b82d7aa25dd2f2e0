"""A client and a gateway speaking the IC WebSocket protocol to a devnet canister over real HTTP.

:class:`WsClient` signs its own ``ws_open`` / ``ws_message`` calls (Ed25519) and hands the envelopes through the
gateway's wire format (``ClientRequest`` CBOR, decoded as a gateway does) before they are submitted unchanged.
:class:`WsGateway` polls ``ws_get_messages`` with its own identity, verifies every message as a client would
(:func:`cdk_harness.verify_messages`) and relays it through the ``CanisterToClientMessage`` CBOR frame.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

from icws_fast.devnet import Devnet
from icws_fast.errors import ProtocolDecodeError, ProtocolError
from icws_fast.ic.agent import Agent
from icws_fast.ic.envelope import build_envelope, call_content, parse_envelope
from icws_fast.ic.identity import Ed25519Identity, Identity
from icws_fast.ic.principal import Principal
from icws_fast.protocol import types as t
from tests.cdk.cdk_harness import verify_messages


class WsGateway:
    """Polls one canister as a gateway; keeps the next nonce like the official poller."""

    def __init__(self, devnet: Devnet, canister_id: Principal, identity: Identity | None = None) -> None:
        self.devnet = devnet
        self.canister_id = canister_id
        self.identity = identity if identity is not None else Ed25519Identity.generate()
        self.agent = Agent(devnet.url, self.identity, root_key=devnet.root_key_der)
        self.next_nonce = 0

    @property
    def principal(self) -> Principal:
        return self.identity.sender

    async def close(self) -> None:
        await self.agent.close()

    async def get_messages(self, nonce: int) -> t.CanisterOutputCertifiedMessages:
        """One ``ws_get_messages`` query, every message verified."""
        reply = await self.agent.query(self.canister_id, "ws_get_messages", t.encode_get_messages_args(nonce))
        batch = t.decode_get_messages_result(reply)
        verify_messages(batch, self.devnet.root_key_der, self.canister_id, time.time_ns())
        return batch

    async def poll(self) -> list[t.WebsocketMessage]:
        """Everything queued from ``next_nonce`` on (following ``is_end_of_queue``), relayed and decoded."""
        out: list[t.WebsocketMessage] = []
        while True:
            batch = await self.get_messages(self.next_nonce)
            for message in batch.messages:
                nonce = t.parse_message_nonce(message.key)
                assert nonce == self.next_nonce, "nonces of a gateway's queue are consecutive"
                self.next_nonce = nonce + 1
                frame = t.encode_canister_to_client(message.key, message.content, batch.cert, batch.tree)
                relayed = t.decode_canister_to_client(frame)
                out.append(t.decode_websocket_message(relayed.content))
            if batch.is_end_of_queue:
                return out

    async def poll_until(self, count: int, timeout_s: float = 10.0) -> list[t.WebsocketMessage]:
        """Poll until at least ``count`` new messages arrived (timer-driven messages come in later rounds)."""
        deadline = time.monotonic() + timeout_s
        out: list[t.WebsocketMessage] = []
        while len(out) < count:
            assert time.monotonic() < deadline, f"only {len(out)} of {count} messages arrived"
            out += await self.poll()
            if len(out) < count:
                await asyncio.sleep(0.02)
        return out

    async def ws_close(self, client_key: t.ClientKey) -> Any:
        reply = await self.agent.call(self.canister_id, "ws_close", t.encode_ws_close_args(client_key))
        return _unit(reply)


class WsClient:
    """One client connection: its identity, nonce and sequence numbers."""

    def __init__(self, devnet: Devnet, canister_id: Principal, gateway: Principal, nonce: int = 1) -> None:
        self.canister_id = canister_id
        self.gateway = gateway
        self.identity: Identity = Ed25519Identity.generate()
        self.agent = Agent(devnet.url, self.identity, root_key=devnet.root_key_der)
        self.key = t.ClientKey(self.identity.sender, nonce)
        self.sequence_num = 0

    @property
    def principal(self) -> Principal:
        return self.identity.sender

    async def close(self) -> None:
        await self.agent.close()

    async def submit(self, method: str, arg: bytes) -> Any:
        """Sign a call, pass it through the ClientRequest frame as a gateway would, submit it; the unit result."""
        # A fresh nonce, as the JS SDK adds: identical content would be the same request id, i.e. a replay.
        content = call_content(self.identity.sender, self.canister_id, method, arg, nonce=secrets.token_bytes(8))
        frame = t.encode_client_request(build_envelope(self.identity, content))
        envelope = t.decode_client_request(frame)
        return _unit(await self.agent.submit_signed(self.canister_id, parse_envelope(envelope), envelope))

    async def open(self) -> Any:
        return await self.submit("ws_open", t.encode_ws_open_args(self.key.client_nonce, self.gateway))

    async def send(self, content: bytes, *, service: bool = False, sequence_num: int | None = None) -> Any:
        """``ws_message`` with the next sequence number (or the one given, to test rejections)."""
        if sequence_num is None:
            self.sequence_num += 1
            sequence_num = self.sequence_num
        msg = t.WebsocketMessage(self.key, sequence_num, time.time_ns(), service, content)
        return await self.submit("ws_message", t.encode_ws_message_args(msg))


def _unit(reply: bytes) -> dict[str, Any]:
    """A ``variant { Ok : null; Err : text }`` reply as a dict, so tests can compare error texts."""
    try:
        t.decode_unit_result(reply)
    except ProtocolDecodeError:
        raise
    except ProtocolError as exc:
        return {"Err": str(exc)}
    return {"Ok": None}
