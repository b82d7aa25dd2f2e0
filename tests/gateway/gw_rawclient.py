"""A minimal IC WebSocket client for the gateway tests, built from protocol.types + ic.envelope + picows.

It speaks the wire protocol byte by byte with no SDK logic in between, so a test can also send what
a well-behaved SDK never would (garbage, text frames, wrong envelopes) and see exactly what comes back.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
import time
from dataclasses import dataclass

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from icws_fast.ic.envelope import build_envelope, call_content
from icws_fast.ic.identity import Ed25519Identity, Identity
from icws_fast.ic.principal import Principal
from icws_fast.protocol.types import (
    ClientKey,
    KeepAliveMessage,
    WebsocketMessage,
    decode_canister_to_client,
    decode_handshake,
    decode_websocket_message,
    encode_client_request,
    encode_service_message,
    encode_ws_message_args,
    encode_ws_open_args,
)


def signed_request(identity: Identity, canister_id: Principal, method: str, arg: bytes, **kw: object) -> bytes:
    """A ClientRequest frame carrying ``identity``'s signed call of ``method``."""
    content = call_content(identity.sender, canister_id, method, arg, nonce=secrets.token_bytes(8), **kw)  # type: ignore[arg-type]
    return encode_client_request(build_envelope(identity, content))


def open_request(identity: Identity, canister_id: Principal, gateway: Principal, client_nonce: int) -> bytes:
    """The ClientRequest of a ``ws_open`` call."""
    return signed_request(identity, canister_id, "ws_open", encode_ws_open_args(client_nonce, gateway))


def message_request(
    identity: Identity, canister_id: Principal, key: ClientKey, seq: int, content: bytes, *, service: bool = False
) -> bytes:
    """The ClientRequest of a ``ws_message`` call with sequence number ``seq``."""
    msg = WebsocketMessage(key, seq, time.time_ns(), service, content)
    return signed_request(identity, canister_id, "ws_message", encode_ws_message_args(msg))


@dataclass
class Closed:
    """The close frame the gateway sent (code, reason), or code 1006 when the socket just went away."""

    code: int
    reason: str


class RawListener(WSListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[bytes | Closed] = asyncio.Queue()
        self.closed: Closed | None = None

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.BINARY:
            self.inbox.put_nowait(frame.get_payload_as_bytes())
        elif frame.msg_type == WSMsgType.CLOSE:
            code = frame.get_close_code()
            self.closed = Closed(int(code.value if hasattr(code, "value") else code), frame.get_close_reason() or "")
            self.inbox.put_nowait(self.closed)
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.closed is None:
            self.closed = Closed(1006, "")
            self.inbox.put_nowait(self.closed)


class RawClient:
    """One WebSocket to the gateway; ``recv()`` returns frames' bytes or a :class:`Closed`."""

    def __init__(self, transport: WSTransport, listener: RawListener) -> None:
        self.transport = transport
        self.listener = listener
        self.identity: Identity = Ed25519Identity.generate()
        self.gateway: Principal | None = None
        self.key: ClientKey | None = None
        self.canister_id: Principal | None = None
        self.next_seq = 1
        self.last_incoming = 0

    @classmethod
    async def connect(cls, url: str, *, ssl_context: ssl.SSLContext | None = None) -> RawClient:
        transport, listener = await ws_connect(RawListener, url, ssl_context=ssl_context, use_aiofastnet=False)
        return cls(transport, listener)

    async def recv(self, timeout: float = 10.0) -> bytes | Closed:
        return await asyncio.wait_for(self.listener.inbox.get(), timeout)

    async def recv_bytes(self, timeout: float = 10.0) -> bytes:
        item = await self.recv(timeout)
        assert isinstance(item, bytes), f"expected a message, got {item}"
        return item

    async def wait_closed(self, timeout: float = 10.0) -> Closed:
        while True:
            item = await self.recv(timeout)
            if isinstance(item, Closed):
                return item

    def send(self, data: bytes, msg_type: WSMsgType = WSMsgType.BINARY) -> None:
        self.transport.send(msg_type, data)

    async def handshake(self) -> Principal:
        self.gateway = decode_handshake(await self.recv_bytes())
        return self.gateway

    async def open(self, canister_id: Principal, timeout: float = 20.0) -> WebsocketMessage:
        """Handshake, ws_open, and the canister's OpenMessage (returned decoded)."""
        gateway = self.gateway or await self.handshake()
        nonce = secrets.randbits(63)
        self.canister_id = canister_id
        self.key = ClientKey(self.identity.sender, nonce)
        self.send(open_request(self.identity, canister_id, gateway, nonce))
        return await self.recv_message(timeout)

    async def recv_message(self, timeout: float = 20.0) -> WebsocketMessage:
        """The next canister message (its content decoded; certification is the SDK's job, not checked here)."""
        relayed = decode_canister_to_client(await self.recv_bytes(timeout))
        msg = decode_websocket_message(relayed.content)
        self.last_incoming = msg.sequence_num
        return msg

    async def recv_app_message(self, timeout: float = 20.0) -> WebsocketMessage:
        """The next application message, past the service messages (acks) the canister sends on its own cycle."""
        while (msg := await self.recv_message(timeout)).is_service_message:
            pass
        return msg

    def send_app(self, content: bytes) -> None:
        assert self.canister_id is not None and self.key is not None
        self.send(message_request(self.identity, self.canister_id, self.key, self.next_seq, content))
        self.next_seq += 1

    def send_keep_alive(self) -> None:
        assert self.canister_id is not None and self.key is not None
        body = encode_service_message(KeepAliveMessage(self.last_incoming))
        self.send(message_request(self.identity, self.canister_id, self.key, self.next_seq, body, service=True))
        self.next_seq += 1

    def close(self) -> None:
        if not self.transport.is_disconnected:
            self.transport.send_close(WSCloseCode.OK)
            self.transport.disconnect()

    def abort(self) -> None:
        self.transport.disconnect(False)
