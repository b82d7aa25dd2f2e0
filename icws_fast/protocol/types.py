"""IC WebSocket message types and their codecs (ic-websocket CDK / gateway / SDK 0.4-0.5 wire format).

Two encodings meet here:

* **Candid** for what goes to and from the canister: the arguments and results of ``ws_open``, ``ws_message``,
  ``ws_close`` and ``ws_get_messages`` (the interface :data:`WS_TYPES_DID`), and the service messages the CDK
  and the client exchange inside :class:`WebsocketMessage` content (:data:`SERVICE_MESSAGES_DID`).
* **CBOR** for what travels on the WebSocket: the gateway handshake, the client's request wrapping a signed
  envelope, the certified canister-to-client message, and the :class:`WebsocketMessage` that the canister
  certifies. Maps are keyed by the Rust field names in declaration order (as serde writes them) and
  principals are byte strings, so the bytes match the official gateway and CDK.

Every ``decode_*`` function takes hostile bytes and raises only
:class:`~icws_fast.errors.ProtocolDecodeError` (a :class:`~icws_fast.errors.ProtocolError` and a
:class:`~icws_fast.errors.DecodeError`); ``decode_get_messages_result`` and ``decode_unit_result`` also raise
plain :class:`~icws_fast.errors.ProtocolError` when the canister answers ``Err``.
"""

from __future__ import annotations

import enum
import functools
import itertools
from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple, TypeAlias

from icws_fast import _ext
from icws_fast.errors import DecodeError, ProtocolDecodeError, ProtocolError
from icws_fast.ic import candid, cbor
from icws_fast.ic.cbor import SELF_DESCRIBE_PREFIX
from icws_fast.ic.principal import Principal

__all__ = [
    "COMMUNICATION_LATENCY_BOUND_MS",
    "DEFAULT_SEND_ACK_INTERVAL_MS",
    "LABEL_WEBSOCKET",
    "MAX_NAT64",
    "SERVICE_MESSAGES_DID",
    "WS_CANDID_TYPES",
    "WS_TYPES_DID",
    "AckMessage",
    "CanisterOutputCertifiedMessages",
    "CanisterOutputMessage",
    "CanisterToClientMessage",
    "ClientKey",
    "CloseMessage",
    "CloseMessageReason",
    "KeepAliveMessage",
    "OpenMessage",
    "PolledBatch",
    "ServiceMessage",
    "WebsocketMessage",
    "decode_canister_to_client",
    "decode_client_request",
    "decode_get_messages_args",
    "decode_get_messages_result",
    "decode_handshake",
    "decode_polled_batch",
    "decode_service_message",
    "decode_unit_result",
    "decode_websocket_message",
    "decode_ws_close_args",
    "decode_ws_message_args",
    "decode_ws_open_args",
    "encode_canister_to_client",
    "encode_client_request",
    "encode_get_messages_args",
    "encode_get_messages_result",
    "encode_handshake",
    "encode_service_message",
    "encode_unit_result",
    "encode_websocket_message",
    "encode_ws_close_args",
    "encode_ws_message_args",
    "encode_ws_open_args",
    "message_key",
    "parse_message_nonce",
    "route_key",
]

MAX_NAT64: Final = (1 << 64) - 1
LABEL_WEBSOCKET: Final = b"websocket"
"""Label of the CDK's certified message map in the canister's certified data."""
COMMUNICATION_LATENCY_BOUND_MS: Final = 30_000
"""The latency between a client and its canister that the Rust CDK and the JS SDK assume."""
DEFAULT_SEND_ACK_INTERVAL_MS: Final = 300_000
"""How often a canister acknowledges its clients' messages (the Rust CDK's default); clients expect acks as often."""
CLIENT_KEEP_ALIVE_TIMEOUT_MS: Final = 2 * COMMUNICATION_LATENCY_BOUND_MS
"""How long a canister (the Rust CDK's default) waits for a client's keep-alive after an acknowledgement."""
MAX_CLOSE_REASON: Final = 123
"""The longest WebSocket close reason, in bytes (a close frame's 125-byte payload minus the 2-byte code)."""
_NONCE_DIGITS: Final = 20
# The deepest legitimate frame is a ClientRequest whose envelope carries a delegation chain with targets
# (request > envelope > sender_delegation > item > delegation > targets > principal): 7 levels.
_MAX_FRAME_DEPTH: Final = 16

WS_TYPES_DID: Final = """\
type ClientPrincipal = principal;
type GatewayPrincipal = principal;
type ClientKey = record { client_principal : ClientPrincipal; client_nonce : nat64 };
type WebsocketMessage = record {
  client_key : ClientKey;
  sequence_num : nat64;
  timestamp : nat64;
  is_service_message : bool;
  content : blob;
};
type CanisterOutputMessage = record { client_key : ClientKey; key : text; content : blob };
type CanisterOutputCertifiedMessages = record {
  messages : vec CanisterOutputMessage;
  cert : blob;
  tree : blob;
  is_end_of_queue : bool;
};
type CanisterWsOpenArguments = record { client_nonce : nat64; gateway_principal : GatewayPrincipal };
type CanisterWsOpenResult = variant { Ok : null; Err : text };
type CanisterWsCloseArguments = record { client_key : ClientKey };
type CanisterWsCloseResult = variant { Ok : null; Err : text };
type CanisterWsMessageArguments = record { msg : WebsocketMessage };
type CanisterWsMessageResult = variant { Ok : null; Err : text };
type CanisterWsGetMessagesArguments = record { nonce : nat64 };
type CanisterWsGetMessagesResult = variant { Ok : CanisterOutputCertifiedMessages; Err : text };
"""
"""The type definitions of the CDK's ``ws_types.did``; a canister's ``CANDID`` text starts with them."""

SERVICE_MESSAGES_DID: Final = """\
type CanisterOpenMessageContent = record { client_key : ClientKey };
type CanisterAckMessageContent = record { last_incoming_sequence_num : nat64 };
type ClientKeepAliveMessageContent = record { last_incoming_sequence_num : nat64 };
type CloseMessageReason = variant { WrongSequenceNumber; InvalidServiceMessage; KeepAliveTimeout; ClosedByApplication };
type CanisterCloseMessageContent = record { reason : CloseMessageReason };
type WebsocketServiceMessageContent = variant {
  OpenMessage : CanisterOpenMessageContent;
  AckMessage : CanisterAckMessageContent;
  KeepAliveMessage : ClientKeepAliveMessageContent;
  CloseMessage : CanisterCloseMessageContent;
};
"""
"""The service-message types of the CDK's ``service_messages.did`` (they build on :data:`WS_TYPES_DID`)."""

# CDKs before 0.3.1 have no ``is_end_of_queue``; reading it as ``opt bool`` accepts both (Candid turns a missing
# field into an absent opt), as the official gateway does.
_GATEWAY_DID: Final = """\
type GatewayOutputCertifiedMessages = record {
  messages : vec CanisterOutputMessage;
  cert : blob;
  tree : blob;
  is_end_of_queue : opt bool;
};
type GatewayWsGetMessagesResult = variant { Ok : GatewayOutputCertifiedMessages; Err : text };
"""

WS_CANDID_TYPES: Final[dict[str, candid.Type]] = candid.parse_did(WS_TYPES_DID + SERVICE_MESSAGES_DID).types
"""The named types of :data:`WS_TYPES_DID` and :data:`SERVICE_MESSAGES_DID`, parsed."""

_DID: Final = WS_TYPES_DID + SERVICE_MESSAGES_DID + _GATEWAY_DID
_OPEN_ARGS: Final = candid.parse_args("(CanisterWsOpenArguments)", _DID)
_CLOSE_ARGS: Final = candid.parse_args("(CanisterWsCloseArguments)", _DID)
# What the JS SDK sends to ws_message: the app message travels in ``msg.content``, the second argument is
# ``opt null`` set to null. Candid's opt rule lets the canister read it as its ``opt AppMessage``.
_MESSAGE_ARGS: Final = candid.parse_args("(CanisterWsMessageArguments, opt null)", _DID)
_GET_MESSAGES_ARGS: Final = candid.parse_args("(CanisterWsGetMessagesArguments)", _DID)
_GET_MESSAGES_RESULT: Final = candid.parse_args("(CanisterWsGetMessagesResult)", _DID)
_GATEWAY_GET_MESSAGES_RESULT: Final = candid.parse_args("(GatewayWsGetMessagesResult)", _DID)
_UNIT_RESULT: Final = candid.parse_args("(CanisterWsOpenResult)", _DID)
_SERVICE_MESSAGE: Final = candid.parse_args("(WebsocketServiceMessageContent)", _DID)


class ClientKey(NamedTuple):
    """Identifies one connection: the client's principal and the nonce it chose for ``ws_open``."""

    client_principal: Principal
    client_nonce: int

    def __str__(self) -> str:
        # Same text as the Rust CDK's Display, which appears in its error messages.
        return f"{self.client_principal}_{self.client_nonce}"

    def to_candid(self) -> dict[str, Any]:
        """The Candid value of type ``ClientKey``."""
        return {"client_principal": self.client_principal, "client_nonce": self.client_nonce}

    @classmethod
    def from_candid(cls, value: Mapping[str, Any]) -> ClientKey:
        """From a decoded Candid ``ClientKey`` value (already type-checked by the decoder)."""
        return cls(value["client_principal"], value["client_nonce"])


class WebsocketMessage(NamedTuple):
    """A message of either direction; ``content`` is the Candid app message or a Candid service message."""

    client_key: ClientKey
    sequence_num: int
    timestamp: int
    is_service_message: bool
    content: bytes

    def to_candid(self) -> dict[str, Any]:
        """The Candid value of type ``WebsocketMessage``."""
        return {
            "client_key": self.client_key.to_candid(),
            "sequence_num": self.sequence_num,
            "timestamp": self.timestamp,
            "is_service_message": self.is_service_message,
            "content": self.content,
        }

    @classmethod
    def from_candid(cls, value: Mapping[str, Any]) -> WebsocketMessage:
        """From a decoded Candid ``WebsocketMessage`` value."""
        return cls(
            ClientKey.from_candid(value["client_key"]),
            value["sequence_num"],
            value["timestamp"],
            value["is_service_message"],
            value["content"],
        )


class CanisterOutputMessage(NamedTuple):
    """One queued message as ``ws_get_messages`` returns it; ``content`` is a CBOR :class:`WebsocketMessage`."""

    client_key: ClientKey
    key: str
    content: bytes

    def to_candid(self) -> dict[str, Any]:
        return {"client_key": self.client_key.to_candid(), "key": self.key, "content": self.content}


class CanisterOutputCertifiedMessages(NamedTuple):
    """A ``ws_get_messages`` batch: the messages, the canister's data certificate and the CBOR witness tree."""

    messages: list[CanisterOutputMessage]
    cert: bytes
    tree: bytes
    is_end_of_queue: bool

    def to_candid(self) -> dict[str, Any]:
        return {
            "messages": [m.to_candid() for m in self.messages],
            "cert": self.cert,
            "tree": self.tree,
            "is_end_of_queue": self.is_end_of_queue,
        }


class PolledBatch(NamedTuple):
    """A ``ws_get_messages`` reply as the gateway's poller reads it: flat lists, no object per message.

    Message *i* goes to the client whose :func:`route_key` is ``route_keys[i]``; ``keys[i]`` is its key in the
    certified message map (UTF-8) and ``contents[i]`` its content. ``first_nonce`` and ``last_nonce`` are the
    nonces of the first and the last message's keys (0 when there are none) and ``consecutive`` says whether the
    keys' nonces count up by one from the first to the last.
    """

    route_keys: list[bytes]
    keys: list[bytes]
    contents: list[bytes]
    first_nonce: int
    last_nonce: int
    consecutive: bool
    cert: bytes
    tree: bytes
    is_end_of_queue: bool


class CanisterToClientMessage(NamedTuple):
    """What the gateway sends the client for each polled message: the message and its batch's certification."""

    key: str
    content: bytes
    cert: bytes
    tree: bytes


class CloseMessageReason(enum.Enum):
    """Why the canister closes a connection (the Candid variant ``CloseMessageReason``)."""

    WrongSequenceNumber = "WrongSequenceNumber"
    InvalidServiceMessage = "InvalidServiceMessage"
    KeepAliveTimeout = "KeepAliveTimeout"
    ClosedByApplication = "ClosedByApplication"


class OpenMessage(NamedTuple):
    """Canister -> client, first message of a connection."""

    client_key: ClientKey


class AckMessage(NamedTuple):
    """Canister -> client, periodic: the client's messages up to this sequence number arrived."""

    last_incoming_sequence_num: int


class KeepAliveMessage(NamedTuple):
    """Client -> canister, the answer to an :class:`AckMessage`."""

    last_incoming_sequence_num: int


class CloseMessage(NamedTuple):
    """Canister -> client: the canister removed the client."""

    reason: CloseMessageReason


ServiceMessage: TypeAlias = OpenMessage | AckMessage | KeepAliveMessage | CloseMessage


# ---------------------------------------------------------------------------------------------------------------
# Strict field readers for decoded CBOR


def _cbor_decode(data: bytes | bytearray | memoryview, what: str) -> Any:
    try:
        return cbor.decode(data, max_depth=_MAX_FRAME_DEPTH)
    except DecodeError as exc:
        raise ProtocolDecodeError(f"{what}: {exc}") from exc


def _map(obj: Any, what: str, fields: tuple[str, ...]) -> dict[Any, Any]:
    """``obj`` must be a map with exactly ``fields`` as keys (the official encoders write no others)."""
    if not isinstance(obj, dict):
        raise ProtocolDecodeError(f"{what}: expected a CBOR map, got {type(obj).__name__}")
    if obj.keys() != set(fields):
        missing = sorted(set(fields) - obj.keys())
        extra = sorted(repr(k) for k in obj.keys() - set(fields))
        raise ProtocolDecodeError(f"{what}: missing fields {missing}, unexpected fields {extra}")
    return obj


def _u64(obj: Any, what: str) -> int:
    if type(obj) is not int or not 0 <= obj <= MAX_NAT64:
        raise ProtocolDecodeError(f"{what}: expected an unsigned 64-bit integer")
    return obj


def _bytes(obj: Any, what: str) -> bytes:
    if type(obj) is not bytes:
        raise ProtocolDecodeError(f"{what}: expected a byte string")
    return obj


def _text(obj: Any, what: str) -> str:
    if type(obj) is not str:
        raise ProtocolDecodeError(f"{what}: expected a text string")
    return obj


def _principal(obj: Any, what: str) -> Principal:
    try:
        return Principal.from_bytes(_bytes(obj, what))
    except DecodeError as exc:
        raise ProtocolDecodeError(f"{what}: {exc}") from exc


def _check_u64(value: int, what: str) -> None:
    """Encoders refuse values the decoders on the other side would reject."""
    if not 0 <= value <= MAX_NAT64:
        raise ValueError(f"{what} out of nat64 range: {value}")


# ---------------------------------------------------------------------------------------------------------------
# CBOR messages on the WebSocket


def _cbor_field(name: str) -> bytes:
    return cbor.encode(name, self_describe=False)


_SEQUENCE_NUM_FIELD: Final = _cbor_field("sequence_num")
_TIMESTAMP_FIELD: Final = _cbor_field("timestamp")
_IS_SERVICE_FIELD: Final = {
    flag: _cbor_field("is_service_message") + cbor.encode(flag, self_describe=False) for flag in (False, True)
}
_CONTENT_FIELD: Final = _cbor_field("content")


@functools.lru_cache(maxsize=4096)
def _websocket_message_head(client_key: ClientKey) -> bytes:
    """Tag, 5-entry map header and the ``client_key`` entry: the part that is the same for every message."""
    one_entry = cbor.encode(
        {
            "client_key": {
                "client_principal": client_key.client_principal.bytes,
                "client_nonce": client_key.client_nonce,
            }
        }
    )
    prefix = len(SELF_DESCRIBE_PREFIX)
    return SELF_DESCRIBE_PREFIX + b"\xa5" + one_entry[prefix + 1 :]


def encode_websocket_message(msg: WebsocketMessage) -> bytes:
    """CBOR of ``msg`` with the self-describe tag, byte for byte as the Rust CDK certifies it.

    The canister encodes every message it sends, so the constant parts are spliced rather than re-encoded.
    """
    _check_u64(msg.client_key.client_nonce, "client_nonce")
    _check_u64(msg.sequence_num, "sequence_num")
    _check_u64(msg.timestamp, "timestamp")
    return b"".join(
        (
            _websocket_message_head(msg.client_key),
            _SEQUENCE_NUM_FIELD,
            cbor.encode(msg.sequence_num, self_describe=False),
            _TIMESTAMP_FIELD,
            cbor.encode(msg.timestamp, self_describe=False),
            _IS_SERVICE_FIELD[bool(msg.is_service_message)],
            _CONTENT_FIELD,
            cbor.encode(msg.content, self_describe=False),
        )
    )


def decode_websocket_message(data: bytes | bytearray | memoryview) -> WebsocketMessage:
    """Parse the ``content`` of a certified canister message (or a client's message in CBOR form)."""
    what = "WebsocketMessage"
    obj = _map(
        _cbor_decode(data, what),
        what,
        ("client_key", "sequence_num", "timestamp", "is_service_message", "content"),
    )
    key = _map(obj["client_key"], "WebsocketMessage.client_key", ("client_principal", "client_nonce"))
    is_service = obj["is_service_message"]
    if type(is_service) is not bool:
        raise ProtocolDecodeError("WebsocketMessage.is_service_message: expected a boolean")
    return WebsocketMessage(
        ClientKey(
            _principal(key["client_principal"], "ClientKey.client_principal"),
            _u64(key["client_nonce"], "ClientKey.client_nonce"),
        ),
        _u64(obj["sequence_num"], "WebsocketMessage.sequence_num"),
        _u64(obj["timestamp"], "WebsocketMessage.timestamp"),
        is_service,
        _bytes(obj["content"], "WebsocketMessage.content"),
    )


def encode_handshake(gateway_principal: Principal) -> bytes:
    """The gateway's first frame: ``{gateway_principal}`` with the self-describe tag, as the Rust gateway sends."""
    return cbor.encode({"gateway_principal": gateway_principal.bytes})


def decode_handshake(data: bytes | bytearray | memoryview) -> Principal:
    """The gateway principal from the handshake frame."""
    obj = _map(_cbor_decode(data, "GatewayHandshakeMessage"), "GatewayHandshakeMessage", ("gateway_principal",))
    return _principal(obj["gateway_principal"], "GatewayHandshakeMessage.gateway_principal")


_CLIENT_REQUEST_HEAD: Final = cbor.encode({"envelope": {}})[:-1]  # tag, map(1), "envelope"; the value follows


def encode_client_request(envelope: bytes | Mapping[str, Any]) -> bytes:
    """``{envelope: <envelope map>}`` with the self-describe tag, as the JS SDK's agent sends it.

    ``envelope`` is either the envelope's CBOR (as :func:`icws_fast.ic.envelope.build_envelope` returns it; it is
    embedded as a map, not as a byte string) or the envelope map itself.
    """
    if isinstance(envelope, Mapping):
        return cbor.encode({"envelope": dict(envelope)})
    raw = bytes(envelope)
    if raw.startswith(SELF_DESCRIBE_PREFIX):
        raw = raw[len(SELF_DESCRIBE_PREFIX) :]
    # Splicing keeps the envelope's bytes intact instead of decoding and re-encoding them.
    return _CLIENT_REQUEST_HEAD + raw


def decode_client_request(data: bytes | bytearray | memoryview) -> bytes:
    """The envelope of a client's request, re-encoded as self-describing CBOR.

    The result is what :func:`icws_fast.ic.envelope.parse_envelope` and the replica's ``call`` endpoint take.
    Only the outer shape is checked here (a map holding a ``content`` map); the envelope's own checks belong to
    ``parse_envelope`` / ``verify_envelope``.
    """
    obj = _map(_cbor_decode(data, "ClientRequest"), "ClientRequest", ("envelope",))
    envelope = obj["envelope"]
    if not isinstance(envelope, dict) or not isinstance(envelope.get("content"), dict):
        raise ProtocolDecodeError("ClientRequest.envelope: expected a map with a content map")
    return cbor.encode(envelope)


def encode_canister_to_client(key: str, content: bytes, cert: bytes, tree: bytes) -> bytes:
    """``{key, content, cert, tree}`` without the self-describe tag, as the Rust gateway relays a message."""
    return cbor.encode({"key": key, "content": content, "cert": cert, "tree": tree}, self_describe=False)


def decode_canister_to_client(data: bytes | bytearray | memoryview) -> CanisterToClientMessage:
    """Parse a relayed canister message (the client then verifies ``cert`` / ``tree`` and decodes ``content``)."""
    what = "CanisterToClientMessage"
    obj = _map(_cbor_decode(data, what), what, ("key", "content", "cert", "tree"))
    return CanisterToClientMessage(
        _text(obj["key"], f"{what}.key"),
        _bytes(obj["content"], f"{what}.content"),
        _bytes(obj["cert"], f"{what}.cert"),
        _bytes(obj["tree"], f"{what}.tree"),
    )


# ---------------------------------------------------------------------------------------------------------------
# Message keys of the certified map


def message_key(gateway_principal: Principal, nonce: int) -> str:
    """``"<gateway principal>_<nonce, 20 digits>"``: the zero padding makes keys sort in send order."""
    _check_u64(nonce, "nonce")
    return f"{gateway_principal.to_text()}_{nonce:0{_NONCE_DIGITS}d}"


def route_key(client_key: ClientKey) -> bytes:
    """``client_key`` as the bytes the gateway routes by: the principal's bytes, then the nonce, 8 bytes little-endian.

    That is the client key's Candid value in a ``ws_get_messages`` reply, so the poller takes it as one slice
    of the reply (:func:`decode_polled_batch`) instead of building an object per message. A principal is at most
    29 bytes and the nonce always the last 8, so distinct client keys give distinct bytes.
    """
    return client_key.client_principal.bytes + client_key.client_nonce.to_bytes(8, "little")


def parse_message_nonce(key: str) -> int:
    """The nonce after the last ``_`` of a message key (what the gateway checks for consecutive batches)."""
    if not isinstance(key, str):
        raise ProtocolDecodeError("message key must be text")
    _, sep, digits = key.rpartition("_")
    # ASCII digits only: str.isdigit() would also accept other scripts' digits, which int() converts.
    if not sep or not 1 <= len(digits) <= _NONCE_DIGITS or not digits.isascii() or not digits.isdigit():
        raise ProtocolDecodeError(f"message key {key[:100]!r} does not end in _<nonce>")
    nonce = int(digits)
    if nonce > MAX_NAT64:
        raise ProtocolDecodeError(f"message key {key[:100]!r}: nonce out of nat64 range")
    return nonce


# ---------------------------------------------------------------------------------------------------------------
# Candid: service messages and the ws_* methods' arguments and results


def _candid_decode(data: bytes | bytearray | memoryview, types: Sequence[Any], what: str) -> Any:
    try:
        values = candid.decode(bytes(data), list(types))
    except DecodeError as exc:
        raise ProtocolDecodeError(f"{what}: {exc}") from exc
    return values[0]


def _service_message_value(msg: ServiceMessage) -> dict[str, Any]:
    if isinstance(msg, OpenMessage):
        return {"OpenMessage": {"client_key": msg.client_key.to_candid()}}
    if isinstance(msg, AckMessage):
        _check_u64(msg.last_incoming_sequence_num, "last_incoming_sequence_num")
        return {"AckMessage": {"last_incoming_sequence_num": msg.last_incoming_sequence_num}}
    if isinstance(msg, KeepAliveMessage):
        _check_u64(msg.last_incoming_sequence_num, "last_incoming_sequence_num")
        return {"KeepAliveMessage": {"last_incoming_sequence_num": msg.last_incoming_sequence_num}}
    if isinstance(msg, CloseMessage):
        return {"CloseMessage": {"reason": {CloseMessageReason(msg.reason).value: None}}}
    raise TypeError(f"not a service message: {type(msg).__name__}")


def encode_service_message(msg: ServiceMessage) -> bytes:
    """Candid ``(WebsocketServiceMessageContent)``, the ``content`` of a service :class:`WebsocketMessage`."""
    return candid.encode(_SERVICE_MESSAGE, [_service_message_value(msg)])


def decode_service_message(data: bytes | bytearray | memoryview) -> ServiceMessage:
    """Parse a service message (either direction); the caller decides which kinds it accepts."""
    value = _candid_decode(data, _SERVICE_MESSAGE, "WebsocketServiceMessageContent")
    ((tag, body),) = value.items()
    if tag == "OpenMessage":
        return OpenMessage(ClientKey.from_candid(body["client_key"]))
    if tag == "AckMessage":
        return AckMessage(body["last_incoming_sequence_num"])
    if tag == "KeepAliveMessage":
        return KeepAliveMessage(body["last_incoming_sequence_num"])
    ((reason, _),) = body["reason"].items()
    return CloseMessage(CloseMessageReason(reason))


def encode_ws_open_args(client_nonce: int, gateway_principal: Principal) -> bytes:
    """The argument of ``ws_open``."""
    return candid.encode(_OPEN_ARGS, [{"client_nonce": client_nonce, "gateway_principal": gateway_principal}])


def decode_ws_open_args(data: bytes | bytearray | memoryview) -> tuple[int, Principal]:
    """``(client_nonce, gateway_principal)`` from the argument of a ``ws_open`` call (the gateway reads it)."""
    value = _candid_decode(data, _OPEN_ARGS, "CanisterWsOpenArguments")
    return value["client_nonce"], value["gateway_principal"]


def encode_ws_message_args(msg: WebsocketMessage) -> bytes:
    """The arguments of ``ws_message`` as the JS SDK sends them: ``(record { msg }, null : opt null)``."""
    return candid.encode(_MESSAGE_ARGS, [{"msg": msg.to_candid()}, None])


def decode_ws_message_args(data: bytes | bytearray | memoryview) -> WebsocketMessage:
    """The :class:`WebsocketMessage` of a ``ws_message`` call (the second argument is ignored)."""
    value = _candid_decode(data, _MESSAGE_ARGS, "CanisterWsMessageArguments")
    return WebsocketMessage.from_candid(value["msg"])


def encode_ws_close_args(client_key: ClientKey) -> bytes:
    """The argument of ``ws_close`` (sent by the gateway when a client disconnects)."""
    return candid.encode(_CLOSE_ARGS, [{"client_key": client_key.to_candid()}])


def decode_ws_close_args(data: bytes | bytearray | memoryview) -> ClientKey:
    """The client key of a ``ws_close`` call."""
    value = _candid_decode(data, _CLOSE_ARGS, "CanisterWsCloseArguments")
    return ClientKey.from_candid(value["client_key"])


def encode_get_messages_args(nonce: int) -> bytes:
    """The argument of ``ws_get_messages``: the nonce of the first message the gateway wants."""
    return candid.encode(_GET_MESSAGES_ARGS, [{"nonce": nonce}])


def decode_get_messages_args(data: bytes | bytearray | memoryview) -> int:
    """The nonce of a ``ws_get_messages`` query."""
    value = _candid_decode(data, _GET_MESSAGES_ARGS, "CanisterWsGetMessagesArguments")
    nonce: int = value["nonce"]
    return nonce


def encode_get_messages_result(batch: CanisterOutputCertifiedMessages) -> bytes:
    """The ``Ok`` reply of ``ws_get_messages``."""
    return candid.encode(_GET_MESSAGES_RESULT, [{"Ok": batch.to_candid()}])


def decode_get_messages_result_pure(data: bytes | bytearray | memoryview) -> CanisterOutputCertifiedMessages:
    """Parse a ``ws_get_messages`` reply; an ``Err`` reply raises :class:`ProtocolError` with its text.

    A reply without ``is_end_of_queue`` (CDK < 0.3.1) reads as the end of the queue, as in the Rust gateway.
    """
    value = _candid_decode(data, _GATEWAY_GET_MESSAGES_RESULT, "CanisterWsGetMessagesResult")
    if "Err" in value:
        raise ProtocolError(f"ws_get_messages failed: {value['Err']}")
    ok = value["Ok"]
    messages = [
        CanisterOutputMessage(ClientKey.from_candid(m["client_key"]), m["key"], m["content"]) for m in ok["messages"]
    ]
    end = ok["is_end_of_queue"]
    return CanisterOutputCertifiedMessages(messages, ok["cert"], ok["tree"], True if end is None else end)


def decode_polled_batch_pure(data: bytes | bytearray | memoryview) -> PolledBatch:
    """A ``ws_get_messages`` reply read for the poller (:class:`PolledBatch`).

    Accepts and refuses exactly what :func:`decode_get_messages_result` does, and a message key whose nonce
    :func:`parse_message_nonce` cannot read raises its :class:`ProtocolDecodeError`.
    """
    batch = decode_get_messages_result_pure(data)
    messages = batch.messages
    nonces = [parse_message_nonce(m.key) for m in messages]
    return PolledBatch(
        [route_key(m.client_key) for m in messages],
        [m.key.encode() for m in messages],
        [m.content for m in messages],
        nonces[0] if nonces else 0,
        nonces[-1] if nonces else 0,
        all(b == a + 1 for a, b in itertools.pairwise(nonces)),
        batch.cert,
        batch.tree,
        batch.is_end_of_queue,
    )


def encode_unit_result(error: str | None = None) -> bytes:
    """``variant { Ok : null; Err : text }``, the result of ``ws_open`` / ``ws_message`` / ``ws_close``."""
    return candid.encode(_UNIT_RESULT, [{"Ok": None} if error is None else {"Err": error}])


def decode_unit_result(data: bytes | bytearray | memoryview) -> None:
    """Parse the result of ``ws_open`` / ``ws_message`` / ``ws_close``; ``Err`` raises :class:`ProtocolError`."""
    value = _candid_decode(data, _UNIT_RESULT, "CanisterWsResult")
    if "Err" in value:
        raise ProtocolError(value["Err"])


# The compiled twins (icws_fast/_ext/_wsbatch.pyx) take over unless ICWS_FAST_PURE=1.
decode_get_messages_result = _ext.twin("_wsbatch", decode_get_messages_result_pure)
decode_polled_batch = _ext.twin("_wsbatch", decode_polled_batch_pure)


def truncate_reason(reason: str) -> str:
    """``reason`` cut to what a close frame can carry (:data:`MAX_CLOSE_REASON`), on a UTF-8 character boundary."""
    raw = reason.encode("utf-8")
    if len(raw) <= MAX_CLOSE_REASON:
        return reason
    return raw[:MAX_CLOSE_REASON].decode("utf-8", "ignore")
