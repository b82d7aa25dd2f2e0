"""The client side of one IC WebSocket connection, as a sans-IO state machine.

A :class:`ClientProtocol` is fed what arrives from the gateway (binary frames), what the
application wants to send, and the passing of time; it answers with *events* for the I/O
layer: frames to send, the connection being open, application messages, errors, and a
request to close the WebSocket with a code and reason. It owns no socket and reads no
clock: every entry point takes ``now_ns`` (nanoseconds since the Unix epoch, the clock the
IC's certificates and ingress expiries use).

Behaviour follows the official JS SDK (``ic-websocket-js`` 0.5, ``src/ic-websocket.ts``):

* The gateway's first frame is its handshake (its principal); the client answers with a
  signed ``call`` of ``ws_open`` (random 64-bit client nonce) and starts the open timeout.
* Every canister message is verified before anything else is done with it
  (:class:`~icws_fast.protocol.certified.BatchVerifier`, as the gateway does: certificate
  signature with the root key and delegation covering the canister, certificate age, tree
  root == ``certified_data``, tree leaf at ``["websocket", key]`` == sha256(content)), then
  its client key and sequence number
  (incoming numbers start at 1 and must increase by exactly one).
* The first message must be the canister's ``OpenMessage`` for this client key; then the
  connection is open. An ``AckMessage`` acknowledges the client's messages up to a sequence
  number and is answered with a ``KeepAliveMessage``; a ``CloseMessage`` closes (code 4001
  for ``ClosedByApplication``, 4000 otherwise).
* Outgoing messages are numbered from 1 (service messages share the counter) and each must
  be acknowledged within ``ack_interval_ms`` + the 30 s latency bound, else the connection
  closes with 4000 "Ack message timeout"; no ``OpenMessage`` within twice the latency bound
  closes with 4000 "Open connection timeout".

Any failure is reported as an :class:`ErrorOccurred` event followed by :class:`CloseConnection`;
nothing the network sends makes a method raise. The decoders raise only the project's errors;
anything else (a bug) is caught by :meth:`ClientProtocol.receive_frame`'s last-resort guard and
reported as an :class:`~icws_fast.errors.InternalError` whose cause is the exception.
"""

from __future__ import annotations

import enum
import secrets
from collections import deque
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from icws_fast.errors import CandidError, IcwsError, InternalError, ProtocolError, SequenceError
from icws_fast.ic import candid
from icws_fast.ic.certificate import MAX_CERTIFICATE_AGE_NS
from icws_fast.ic.envelope import build_envelope, call_content, default_ingress_expiry
from icws_fast.ic.identity import Identity
from icws_fast.ic.principal import Principal
from icws_fast.protocol.certified import BatchVerifier, check_message
from icws_fast.protocol.types import (
    COMMUNICATION_LATENCY_BOUND_MS,
    DEFAULT_SEND_ACK_INTERVAL_MS,
    AckMessage,
    ClientKey,
    CloseMessage,
    CloseMessageReason,
    KeepAliveMessage,
    OpenMessage,
    WebsocketMessage,
    decode_canister_to_client,
    decode_handshake,
    decode_service_message,
    decode_websocket_message,
    encode_client_request,
    encode_service_message,
    encode_ws_message_args,
    encode_ws_open_args,
    truncate_reason,
)

_NS_PER_MS: Final = 1_000_000
DEFAULT_MAX_CERTIFICATE_AGE_S: Final = MAX_CERTIFICATE_AGE_NS // 1_000_000_000
# Opening takes a client -> canister message and a canister -> client message.
DEFAULT_OPEN_TIMEOUT_MS: Final = 2 * COMMUNICATION_LATENCY_BOUND_MS
DEFAULT_MESSAGE_TYPE: Final = "record { text : text; timestamp : nat64 }"

# Close codes and reasons, identical to the JS SDK's so gateways and logs read the same.
CLOSE_NORMAL: Final = 1000
CLOSE_ERROR: Final = 4000
CLOSE_BY_APPLICATION: Final = 4001
REASON_RECEIVE_ERROR: Final = "Error receiving message"
REASON_SERVICE_ERROR: Final = "Service message error"
REASON_ACK_ERROR: Final = "Ack message error"
REASON_ACK_TIMEOUT: Final = "Ack message timeout"
REASON_OPEN_TIMEOUT: Final = "Open connection timeout"
REASON_HANDSHAKE_ERROR: Final = "Handshake message error"
REASON_CANISTER_CLOSE: Final = "Received close message from canister"
REASON_CLOSED_BY_APPLICATION: Final = "ClosedByApplication"


class ClientState(enum.Enum):
    """Where a client connection is in the protocol."""

    HANDSHAKE = "handshake"  # waiting for the gateway's handshake frame
    OPENING = "opening"  # ws_open sent, waiting for the canister's OpenMessage
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class SendToGateway:
    """Send ``data`` to the gateway as one binary frame."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Opened:
    """The canister confirmed the connection: the application may send (``on_open``)."""


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A verified application message from the canister, decoded with the application's Candid type."""

    value: Any
    sequence_num: int
    timestamp_ns: int


@dataclass(frozen=True, slots=True)
class ErrorOccurred:
    """Something failed (``on_error``); a :class:`CloseConnection` follows."""

    error: IcwsError


@dataclass(frozen=True, slots=True)
class CloseConnection:
    """Close the WebSocket with ``code`` and ``reason``; the protocol is now closed."""

    code: int
    reason: str


ClientEvent: TypeAlias = SendToGateway | Opened | MessageReceived | ErrorOccurred | CloseConnection


class _AckTracker:
    """The client's sent messages awaiting the canister's acknowledgement.

    As in the JS SDK, one deadline covers the queue: it starts with the first unacknowledged
    message and restarts at every ack, because the canister acks every ack interval; an
    ack that leaves messages older than the expiry unacknowledged is a timeout too.
    """

    __slots__ = ("_deadline_ns", "_expiry_ns", "_pending")

    def __init__(self, expiry_ns: int) -> None:
        self._expiry_ns = expiry_ns
        self._pending: deque[tuple[int, int]] = deque()  # (sequence number, sent at)
        self._deadline_ns: int | None = None

    @property
    def deadline_ns(self) -> int | None:
        return self._deadline_ns

    def add(self, sequence_num: int, now_ns: int) -> None:
        self._pending.append((sequence_num, now_ns))
        if self._deadline_ns is None:
            self._deadline_ns = now_ns + self._expiry_ns

    def ack(self, last_sequence_num: int, now_ns: int) -> list[int]:
        """Drop the messages up to ``last_sequence_num``; the still pending ones that expired.

        Raises :class:`ProtocolError` when the canister acknowledges a message never sent.
        """
        pending = self._pending
        if pending and last_sequence_num > pending[-1][0]:
            raise ProtocolError(
                f"the canister acknowledged sequence number {last_sequence_num}, "
                f"beyond the last one sent ({pending[-1][0]})"
            )
        while pending and pending[0][0] <= last_sequence_num:
            pending.popleft()
        expired = [seq for seq, sent_ns in pending if now_ns - sent_ns >= self._expiry_ns]
        self._deadline_ns = now_ns + self._expiry_ns if pending else None
        return expired

    def expired(self, now_ns: int) -> list[int] | None:
        """All pending sequence numbers when the deadline has passed, else None."""
        if self._deadline_ns is None or now_ns < self._deadline_ns:
            return None
        return [seq for seq, _ in self._pending]

    def clear(self) -> None:
        self._pending.clear()
        self._deadline_ns = None


class ClientProtocol:
    """One client connection to a canister through a gateway (see the module docstring).

    ``root_key_der`` is the IC root key certificates must chain to (the Agent's, fetched from
    the replica for a local network). ``message_type`` is the application's Candid type (text):
    :meth:`send` encodes one value of it, received application messages are decoded with it.
    ``client_nonce`` is random unless given (tests pin it).
    """

    def __init__(
        self,
        canister_id: Principal,
        identity: Identity,
        root_key_der: bytes,
        message_type: str = DEFAULT_MESSAGE_TYPE,
        *,
        ack_interval_ms: int = DEFAULT_SEND_ACK_INTERVAL_MS,
        max_certificate_age_s: float = DEFAULT_MAX_CERTIFICATE_AGE_S,
        open_timeout_ms: int = DEFAULT_OPEN_TIMEOUT_MS,
        client_nonce: int | None = None,
    ) -> None:
        if identity.sender.is_anonymous:
            raise ValueError("the CDK rejects the anonymous principal: give a signing identity")
        self.canister_id = canister_id
        self.identity = identity
        self.message_type = candid.parse_type(message_type)
        nonce = secrets.randbits(64) if client_nonce is None else client_nonce
        self.client_key = ClientKey(identity.sender, nonce)
        self.gateway_principal: Principal | None = None
        self._open_timeout_ns = open_timeout_ms * _NS_PER_MS
        self._open_deadline_ns: int | None = None
        self._acks = _AckTracker((ack_interval_ms + COMMUNICATION_LATENCY_BOUND_MS) * _NS_PER_MS)
        self._state = ClientState.HANDSHAKE
        self._incoming_sequence_num = 1  # the next one expected from the canister
        self._outgoing_sequence_num = 0  # the last one sent
        # The messages of a batch share its certificate and tree: the verifier checks them once per batch.
        self._verifier = BatchVerifier(root_key_der, max_age_ns=int(max_certificate_age_s * 1_000_000_000))

    @property
    def root_key_der(self) -> bytes:
        """The IC root key (DER) every canister message must be certified under."""
        return self._verifier.root_key_der

    @property
    def state(self) -> ClientState:
        return self._state

    @property
    def is_open(self) -> bool:
        return self._state is ClientState.OPEN

    @property
    def next_deadline_ns(self) -> int | None:
        """When :meth:`tick` has something to check next (open or ack timeout); None when nothing is due."""
        if self._state in (ClientState.HANDSHAKE, ClientState.OPENING):
            return self._open_deadline_ns
        if self._state is ClientState.OPEN:
            return self._acks.deadline_ns
        return None

    # ---- input from the gateway -------------------------------------------------------

    def connection_made(self, now_ns: int) -> None:
        """The WebSocket to the gateway is up: the handshake must arrive within the open timeout.

        (The JS SDK has no handshake timer of its own; without one a silent gateway would hang
        the client forever.) The timer restarts when the handshake arrives and ``ws_open`` is sent.
        """
        if self._state is ClientState.HANDSHAKE:
            self._open_deadline_ns = now_ns + self._open_timeout_ns

    def receive_frame(self, data: bytes, now_ns: int) -> list[ClientEvent]:
        """Handle one binary frame from the gateway."""
        if self._state is ClientState.CLOSED:
            return []
        try:
            if self._state is ClientState.HANDSHAKE:
                return self._handle_handshake(data, now_ns)
            return self._handle_canister_message(data, now_ns)
        except IcwsError as exc:
            return self._fail(exc, REASON_RECEIVE_ERROR)
        except Exception as exc:
            # The last-resort guard: the decoders raise only IcwsError, so this is a bug. It must end this
            # connection cleanly, reported with its traceback (InternalError chains it), never escape.
            error = InternalError(f"unexpected {type(exc).__name__} handling a gateway frame: {exc}")
            error.__cause__ = exc
            return self._fail(error, REASON_RECEIVE_ERROR)

    def _handle_handshake(self, data: bytes, now_ns: int) -> list[ClientEvent]:
        self.gateway_principal = decode_handshake(data)
        arg = encode_ws_open_args(self.client_key.client_nonce, self.gateway_principal)
        try:
            frame = self._call("ws_open", arg, now_ns)
        except IcwsError as exc:
            return self._fail(exc, REASON_HANDSHAKE_ERROR)
        self._state = ClientState.OPENING
        self._open_deadline_ns = now_ns + self._open_timeout_ns
        return [SendToGateway(frame)]

    def _handle_canister_message(self, data: bytes, now_ns: int) -> list[ClientEvent]:
        incoming = decode_canister_to_client(data)
        hashes = self._verifier.verify(incoming.cert, incoming.tree, self.canister_id, now_ns)
        check_message(hashes, incoming.key.encode(), incoming.content)
        message = decode_websocket_message(incoming.content)
        if message.client_key != self.client_key:
            raise ProtocolError(f"message {incoming.key!r} is addressed to another client: {message.client_key}")
        if message.sequence_num != self._incoming_sequence_num:
            raise SequenceError(self._incoming_sequence_num, message.sequence_num)
        self._incoming_sequence_num += 1
        if message.is_service_message:
            try:
                return self._handle_service_message(message, now_ns)
            except IcwsError as exc:
                return self._fail(exc, REASON_SERVICE_ERROR)
        if self._state is not ClientState.OPEN:
            raise ProtocolError("an application message arrived before the canister's OpenMessage")
        try:
            (value,) = candid.decode(message.content, [self.message_type])
        except CandidError as exc:
            # Not this connection's message type: the reason names the field (the error says it all).
            return self._fail(exc, truncate_reason(f"{REASON_RECEIVE_ERROR}: {exc}"))
        return [MessageReceived(value, message.sequence_num, message.timestamp)]

    def _handle_service_message(self, message: WebsocketMessage, now_ns: int) -> list[ClientEvent]:
        service = decode_service_message(message.content)
        if self._state is ClientState.OPENING:
            if not isinstance(service, OpenMessage):
                raise ProtocolError(f"expected the canister's OpenMessage first, got {type(service).__name__}")
            if service.client_key != self.client_key:
                raise ProtocolError(f"the OpenMessage names another client key: {service.client_key}")
            self._state = ClientState.OPEN
            self._open_deadline_ns = None
            return [Opened()]
        if isinstance(service, AckMessage):
            return self._handle_ack(service.last_incoming_sequence_num, now_ns)
        if isinstance(service, CloseMessage):
            if service.reason is CloseMessageReason.ClosedByApplication:
                return self._close(CLOSE_BY_APPLICATION, REASON_CLOSED_BY_APPLICATION)
            error = ProtocolError(f"the canister closed the connection: {service.reason.value}")
            return self._fail(error, REASON_CANISTER_CLOSE)
        raise ProtocolError(f"unexpected service message {type(service).__name__} from the canister")

    def _handle_ack(self, last_sequence_num: int, now_ns: int) -> list[ClientEvent]:
        try:
            expired = self._acks.ack(last_sequence_num, now_ns)
        except ProtocolError as exc:
            return self._fail(exc, REASON_ACK_ERROR)
        if expired:
            return self._ack_timeout(expired)
        keep_alive = encode_service_message(KeepAliveMessage(self._incoming_sequence_num - 1))
        return [SendToGateway(self._ws_message(keep_alive, True, now_ns))]

    # ---- input from the application and the clock ---------------------------------------

    def send(self, value: Any, now_ns: int) -> list[ClientEvent]:
        """Encode ``value`` with the application's Candid type and sign a ``ws_message`` carrying it.

        Raises :class:`ProtocolError` unless the connection is open, and
        :class:`~icws_fast.errors.CandidError` when ``value`` does not fit the type.
        """
        if self._state is not ClientState.OPEN:
            raise ProtocolError(f"the connection is not open (state {self._state.value})")
        content = candid.encode([self.message_type], [value])
        return [SendToGateway(self._ws_message(content, False, now_ns))]

    def tick(self, now_ns: int) -> list[ClientEvent]:
        """Check the open and ack timeouts; call it at :attr:`next_deadline_ns`."""
        if self._state in (ClientState.HANDSHAKE, ClientState.OPENING):
            if self._open_deadline_ns is not None and now_ns >= self._open_deadline_ns:
                awaited = "gateway handshake" if self._state is ClientState.HANDSHAKE else "OpenMessage"
                return self._fail(ProtocolError(f"no {awaited} in time"), REASON_OPEN_TIMEOUT)
        elif self._state is ClientState.OPEN:
            expired = self._acks.expired(now_ns)
            if expired is not None:
                return self._ack_timeout(expired)
        return []

    def close(self) -> list[ClientEvent]:
        """The application closes the connection (code 1000)."""
        if self._state is ClientState.CLOSED:
            return []
        return self._close(CLOSE_NORMAL, "")

    def connection_lost(self) -> None:
        """The WebSocket closed under us: nothing more to send or check."""
        self._state = ClientState.CLOSED
        self._acks.clear()

    # ---- helpers ---------------------------------------------------------------------

    def _ws_message(self, content: bytes, is_service_message: bool, now_ns: int) -> bytes:
        self._outgoing_sequence_num += 1
        msg = WebsocketMessage(self.client_key, self._outgoing_sequence_num, now_ns, is_service_message, content)
        frame = self._call("ws_message", encode_ws_message_args(msg), now_ns)
        self._acks.add(self._outgoing_sequence_num, now_ns)
        return frame

    def _call(self, method_name: str, arg: bytes, now_ns: int) -> bytes:
        content = call_content(
            self.identity.sender,
            self.canister_id,
            method_name,
            arg,
            ingress_expiry_ns=default_ingress_expiry(now_ns),
            nonce=secrets.token_bytes(16),  # distinct request ids for otherwise identical calls
        )
        return encode_client_request(build_envelope(self.identity, content))

    def _ack_timeout(self, expired: list[int]) -> list[ClientEvent]:
        return self._fail(ProtocolError(f"no ack from the canister for sequence numbers {expired}"), REASON_ACK_TIMEOUT)

    def _fail(self, error: IcwsError, reason: str) -> list[ClientEvent]:
        return [ErrorOccurred(error), *self._close(CLOSE_ERROR, reason)]

    def _close(self, code: int, reason: str) -> list[ClientEvent]:
        self.connection_lost()
        return [CloseConnection(code, reason)]
