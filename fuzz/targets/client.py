"""The client's side of a connection: ``ClientProtocol.receive_frame`` fed the gateway's frames.

Input: a mode byte, then CBOR. Modes 0 and 1 take the frame as it comes: the gateway's
handshake (0), or a canister message while the client waits for its OpenMessage (1).
Modes 2 and 3 take a WebsocketMessage's content, which the target certifies under the
fuzz root key (directly, or through a subnet delegation when bit 2 of the mode byte is
set) and relays as the gateway would: the client's checks after verification then see
hostile content, first while opening (2), then on an open connection (3).
Whatever arrives, ``receive_frame`` must answer with events, never raise; an
``InternalError`` from its last-resort guard is a crash (the exception it wraps is raised again).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

from fuzz import fixtures
from fuzz.harness import Violation
from icws_fast.errors import InternalError
from icws_fast.ic import candid
from icws_fast.protocol.client import (
    DEFAULT_MESSAGE_TYPE,
    ClientProtocol,
    ClientState,
    CloseConnection,
    ErrorOccurred,
    MessageReceived,
    Opened,
    SendToGateway,
)
from icws_fast.protocol.types import (
    MAX_CLOSE_REASON,
    AckMessage,
    ClientKey,
    CloseMessage,
    CloseMessageReason,
    OpenMessage,
    WebsocketMessage,
    encode_canister_to_client,
    encode_handshake,
    encode_service_message,
    encode_websocket_message,
    message_key,
)

PREFIX = 1
_EVENTS = (SendToGateway, Opened, MessageReceived, ErrorOccurred, CloseConnection)
_KEY = ClientKey(fixtures.CLIENT.sender, fixtures.CLIENT_NONCE)
_HANDSHAKE = encode_handshake(fixtures.GATEWAY)


def relayed(nonce: int, content: bytes, *, delegated: bool = False) -> bytes:
    """The gateway's frame carrying ``content`` as the canister's message ``nonce``, certified."""
    key = message_key(fixtures.GATEWAY, nonce)
    cert, tree = fixtures.certify_message(key, content, delegated=delegated)
    return encode_canister_to_client(key, content, cert, tree)


def _content(sequence_num: int, body: bytes, *, service: bool = True) -> bytes:
    return encode_websocket_message(WebsocketMessage(_KEY, sequence_num, fixtures.NOW_NS, service, body))


@functools.lru_cache(maxsize=1)
def _open_frame() -> bytes:
    return relayed(0, _content(1, encode_service_message(OpenMessage(_KEY))))


def _client(state: ClientState) -> ClientProtocol:
    client = ClientProtocol(fixtures.CANISTER, fixtures.CLIENT, fixtures.ROOT_KEY_DER, client_nonce=_KEY.client_nonce)
    client.connection_made(fixtures.NOW_NS)
    if state is not ClientState.HANDSHAKE:
        client.receive_frame(_HANDSHAKE, fixtures.NOW_NS)
    if state is ClientState.OPEN:
        client.receive_frame(_open_frame(), fixtures.NOW_NS)
    if client.state is not state:
        raise Violation(f"a valid exchange left the client {client.state.value}, not {state.value}")
    return client


def one_input(data: bytes) -> None:
    if not data:
        return
    mode, body = data[0] % 4, data[1:]
    if mode == 0:
        events = _client(ClientState.HANDSHAKE).receive_frame(body, fixtures.NOW_NS)
    elif mode == 1:
        events = _client(ClientState.OPENING).receive_frame(body, fixtures.NOW_NS)
    else:
        state, nonce = (ClientState.OPENING, 0) if mode == 2 else (ClientState.OPEN, 1)
        frame = relayed(nonce, body, delegated=bool(data[0] & 4))
        events = _client(state).receive_frame(frame, fixtures.NOW_NS)
    for event in events:
        if isinstance(event, ErrorOccurred) and isinstance(event.error, InternalError):
            # receive_frame's last-resort guard caught a bug: raise it, so it is a crash where it happened.
            raise event.error.__cause__ or event.error
        if not isinstance(event, _EVENTS):
            raise Violation(f"receive_frame returned {event!r:.200}, which is no event")
        if isinstance(event, CloseConnection) and len(event.reason.encode()) > MAX_CLOSE_REASON:
            raise Violation(f"close reason of {len(event.reason.encode())} bytes: {event.reason!r:.200}")


def seeds() -> Iterator[bytes]:
    yield b"\x00" + _HANDSHAKE
    yield b"\x01" + _open_frame()
    for record in fixtures.records("certificates"):
        for item in record.get("ws_messages") or ([record["ws_message"]] if record.get("ws_message") else []):
            content, tree = bytes.fromhex(item["content_hex"]), bytes.fromhex(item["tree_cbor_hex"])
            yield b"\x01" + encode_canister_to_client(item["key"], content, bytes.fromhex(record["cbor_hex"]), tree)
    open_content = _content(1, encode_service_message(OpenMessage(_KEY)))
    yield b"\x02" + open_content
    yield b"\x06" + open_content
    app = candid.encode([candid.parse_type(DEFAULT_MESSAGE_TYPE)], [{"text": "hello", "timestamp": fixtures.NOW_NS}])
    for body, service in (
        (app, False),
        (encode_service_message(AckMessage(0)), True),
        (encode_service_message(CloseMessage(CloseMessageReason.ClosedByApplication)), True),
        (encode_service_message(CloseMessage(CloseMessageReason.KeepAliveTimeout)), True),
    ):
        yield b"\x03" + _content(2, body, service=service)
