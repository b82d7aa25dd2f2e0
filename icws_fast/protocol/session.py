"""The gateway side of one IC WebSocket connection, as a sans-IO state machine.

A :class:`GatewaySession` is fed what arrives on the WebSocket (frames, the
outcome of relays, the passing of time) and answers with *actions* for the I/O
layer to carry out: send a frame, relay an envelope to the IC, register the client
with its canister's poller, close the connection, call ``ws_close``. It owns no
socket and reads no clock; times are passed in, in seconds on any monotonic scale.

States follow the Rust gateway (``client_session.rs``): ``INIT`` until the first
client frame, which must be a signed ``call`` of ``ws_open`` naming this gateway;
``SETUP`` while that call is relayed and the canister's first message is awaited;
``OPEN`` once a canister message has been delivered; ``CLOSED`` for good. A frame in
``SETUP`` is a protocol violation (a client waits for the canister's OpenMessage
before it sends), as in the Rust gateway.

Every frame is hostile input: anything malformed ends in a :class:`Close` action,
never in an exception escaping :meth:`GatewaySession.receive`. The decoders raise only the
project's errors (a policy-violation close); should anything else escape them (a bug), the
last-resort guard of :meth:`GatewaySession.receive` closes with 1011 and emits
:class:`ReportError` for the I/O layer to log and count.

A client envelope is decoded once, here: :class:`Relay` carries the parsed
:class:`~icws_fast.ic.envelope.Envelope` with its raw bytes (relayed unchanged), and the
relay's :class:`~icws_fast.protocol.relay.RelayOutcome` comes back typed.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from typing import Final

from icws_fast import _ext
from icws_fast.errors import CborError, IcwsError, InternalError
from icws_fast.ic import cbor
from icws_fast.ic.cbor import SELF_DESCRIBE_PREFIX, read_head
from icws_fast.ic.envelope import Envelope, parse_envelope, verify_envelope
from icws_fast.ic.principal import Principal
from icws_fast.protocol.relay import RelayOutcome
from icws_fast.protocol.types import (
    ClientKey,
    decode_ws_open_args,
    encode_handshake,
    truncate_reason,
)

# WebSocket close codes (RFC 6455 section 7.4.1) the gateway uses, with what they mean here.
CLOSE_GOING_AWAY: Final = 1001  # the gateway is draining
CLOSE_UNSUPPORTED_DATA: Final = 1003  # a text or fragmented frame
CLOSE_POLICY_VIOLATION: Final = 1008  # the IC WebSocket protocol was broken, or a limit was hit
CLOSE_MESSAGE_TOO_BIG: Final = 1009  # a frame over the size limit (picows sends it)
CLOSE_INTERNAL_ERROR: Final = 1011  # the replica or the canister failed
CLOSE_TRY_AGAIN_LATER: Final = 1013  # connection limits
# Envelopes nest a few levels (delegations are the deepest); anything deeper is an attack.
_ENVELOPE_MAX_DEPTH: Final = 32
_ENVELOPE_LABEL: Final = b"envelope"
_NOT_A_CLIENT_REQUEST: Final = "a ClientRequest must be a CBOR map with the single key 'envelope'"


class SessionState(enum.Enum):
    """Where a session is in the protocol."""

    INIT = "init"
    SETUP = "setup"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class SendToClient:
    """Send ``data`` to the client as one binary frame."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Register:
    """Route the canister's messages for ``client_key`` to this session (starts the poller if needed).

    Emitted *before* the ``ws_open`` relay, so the canister's OpenMessage cannot be polled
    and dropped in the window between the call being certified and the registration.
    """

    canister_id: Principal
    client_key: ClientKey


@dataclass(frozen=True, slots=True)
class Relay:
    """Submit the client's signed ``call`` to the IC: ``envelope`` parsed, ``envelope_bytes`` as the client sent them.

    The agent relays ``envelope_bytes`` unchanged and reads what it needs (request id,
    sender, expiry) from ``envelope``, without decoding it again. Relays of one session must
    run one at a time and in order: the CDK rejects a ``ws_message`` whose sequence number is
    not the next one, so a later call must not overtake an earlier one. ``is_open`` marks the
    ``ws_open`` call, whose result decides the session (see :meth:`GatewaySession.relay_result`).
    """

    canister_id: Principal
    envelope: Envelope
    envelope_bytes: bytes
    is_open: bool


@dataclass(frozen=True, slots=True)
class Close:
    """Close the WebSocket with ``code`` and ``reason``."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Unregister:
    """Stop routing the canister's messages to this session and call ``ws_close`` for its client key."""

    canister_id: Principal
    client_key: ClientKey


@dataclass(frozen=True, slots=True)
class ReportError:
    """Log ``error`` with the session's client key and count it: a bug surfaced while handling a client frame.

    A :class:`Close` with 1011 follows. ``error.__cause__`` is the unexpected exception, with its traceback.
    """

    error: InternalError


Action = SendToClient | Register | Relay | Close | Unregister | ReportError


def envelope_span_pure(data: bytes) -> tuple[int, int]:
    """The (start, end) offsets of the ``envelope`` value in a ClientRequest ``{"envelope": ...}``.

    The gateway relays the client's envelope bytes unchanged, so it needs where they lie
    in the frame rather than a re-encoded copy. Only the one-entry map the clients send is
    accepted (optionally behind the self-describe tag); the value then runs to the end of
    the frame, so its span is known without walking it. Whether the value is a well-formed
    envelope is for the caller's decoder to say. Any other shape raises
    :class:`~icws_fast.errors.CborError`.
    """
    pos = 3 if data[:3] == SELF_DESCRIBE_PREFIX else 0
    major, count, pos = read_head(data, pos)
    if major != 5 or count != 1:
        raise CborError(_NOT_A_CLIENT_REQUEST)
    major, length, pos = read_head(data, pos)
    if major != 3 or data[pos : pos + length] != _ENVELOPE_LABEL:
        raise CborError(_NOT_A_CLIENT_REQUEST)
    pos += length
    if pos >= len(data):
        raise CborError("a ClientRequest has no envelope value")
    return pos, len(data)


# The compiled twin (icws_fast/_ext/_fanout.pyx) takes over unless ICWS_FAST_PURE=1.
envelope_span = _ext.twin("_fanout", envelope_span_pure)


@functools.lru_cache(maxsize=8)
def _handshake_frame(gateway_principal: Principal) -> bytes:
    """The handshake message of a gateway: the same bytes for every connection, so encoded once."""
    return encode_handshake(gateway_principal)


class GatewaySession:
    """One client connection as the gateway sees it (sans-IO)."""

    __slots__ = (
        "_open_deadline",
        "_registered",
        "_verify",
        "allowed_canisters",
        "canister_id",
        "client_key",
        "gateway_principal",
        "state",
    )

    def __init__(
        self,
        gateway_principal: Principal,
        *,
        now: float,
        open_timeout_s: float,
        allowed_canisters: frozenset[Principal] | None = None,
        verify_signatures: bool = True,
    ) -> None:
        """``open_timeout_s``: how long the client may take to send its ``ws_open``.

        ``allowed_canisters`` (None: any) limits the canisters clients may open sessions to.
        ``verify_signatures`` checks the ``ws_open`` envelope's signature and expiry here, so a
        forged or stale open costs the gateway no call to the IC.
        """
        self.gateway_principal = gateway_principal
        self.allowed_canisters = allowed_canisters
        self.state = SessionState.INIT
        self.canister_id: Principal | None = None
        self.client_key: ClientKey | None = None
        self._open_deadline: float | None = now + open_timeout_s
        self._verify = verify_signatures
        self._registered = False

    def handshake(self) -> list[Action]:
        """What to send as soon as the WebSocket is up: the GatewayHandshakeMessage."""
        return [SendToClient(_handshake_frame(self.gateway_principal))]

    def receive(self, data: bytes, *, binary: bool = True, now_ns: int | None = None) -> list[Action]:
        """Actions for one complete client message (``binary`` false: it came as a text frame).

        ``now_ns`` (wall clock, ns since the epoch) is the time the ``ws_open`` envelope's
        expiry is checked against; None leaves the choice to :func:`verify_envelope`.
        Never raises: whatever the frame holds, the answer is a list of actions.
        """
        if self.state is SessionState.CLOSED:
            return []
        try:
            if not binary:
                return self._fail(CLOSE_UNSUPPORTED_DATA, "text frames are not supported; send CBOR in binary frames")
            if self.state is SessionState.INIT:
                return self._receive_open(data, now_ns)
            if self.state is SessionState.SETUP:
                return self._fail(CLOSE_POLICY_VIOLATION, "client sent a message before the connection was open")
            return self._receive_message(data)
        except Exception as exc:
            # The last-resort guard (as websockets' parser has one): the decoders raise only IcwsError, so this
            # is a bug; it must cost this one connection, cleanly, and be reported, not crash the I/O layer.
            error = InternalError(f"unexpected {type(exc).__name__} handling a client frame: {exc}")
            error.__cause__ = exc
            return [ReportError(error), *self._fail(CLOSE_INTERNAL_ERROR, "internal error")]

    @staticmethod
    def _client_envelope(data: bytes) -> tuple[Envelope, bytes]:
        """The parsed envelope of a ClientRequest, and its raw bytes (relayed unchanged).

        Content fields this code does not know are accepted (``strict=False``): the request id and the
        signature cover them, and the IC, not the gateway, decides what they mean.
        """
        start, end = envelope_span(data)
        envelope_bytes = data[start:end]
        envelope = parse_envelope(cbor.decode(envelope_bytes, max_depth=_ENVELOPE_MAX_DEPTH), strict=False)
        return envelope, envelope_bytes

    @staticmethod
    def _refusal(envelope: Envelope, method_name: str, canister_id: Principal | None, sender: Principal) -> str | None:
        """Why ``envelope`` may not be relayed as this session's call of ``method_name``, or None.

        The IC re-checks the canister and the sender; checking them here keeps another client's or another
        canister's traffic from being relayed under this session's name.
        """
        if envelope.request_type != "call":
            return "the gateway relays call envelopes only"
        if envelope.method_name != method_name:
            return f"expected a call of {method_name}, not of {envelope.method_name!r:.40}"
        if envelope.canister_id != canister_id:
            return "the envelope is for another canister"
        if envelope.sender != sender:
            return "the envelope has another sender"
        return None

    def _receive_open(self, data: bytes, now_ns: int | None) -> list[Action]:
        try:
            envelope, envelope_bytes = self._client_envelope(data)
            canister_id, sender = envelope.canister_id, envelope.sender
            refusal = self._refusal(envelope, "ws_open", canister_id, sender)
            if refusal is not None:
                return self._fail(CLOSE_POLICY_VIOLATION, f"invalid ws_open: {refusal}")
            if canister_id is None or (
                self.allowed_canisters is not None and canister_id not in self.allowed_canisters
            ):
                return self._fail(CLOSE_POLICY_VIOLATION, "this gateway does not serve that canister")
            if sender.is_anonymous:
                return self._fail(CLOSE_POLICY_VIOLATION, "ws_open needs a non-anonymous sender")
            nonce, gateway = decode_ws_open_args(envelope.arg or b"")
            if gateway != self.gateway_principal:
                return self._fail(CLOSE_POLICY_VIOLATION, "ws_open names another gateway principal")
            if self._verify:
                verify_envelope(envelope, now_ns=now_ns, effective_canister_id=canister_id)
        except IcwsError as exc:
            return self._fail(CLOSE_POLICY_VIOLATION, f"invalid ws_open: {exc}")
        self.canister_id = canister_id
        self.client_key = ClientKey(sender, nonce)
        self.state = SessionState.SETUP
        self._open_deadline = None
        self._registered = True
        return [Register(canister_id, self.client_key), Relay(canister_id, envelope, envelope_bytes, True)]

    def _receive_message(self, data: bytes) -> list[Action]:
        assert self.canister_id is not None and self.client_key is not None
        try:
            envelope, envelope_bytes = self._client_envelope(data)
        except IcwsError as exc:
            return self._fail(CLOSE_POLICY_VIOLATION, f"invalid client request: {exc}")
        refusal = self._refusal(envelope, "ws_message", self.canister_id, self.client_key.client_principal)
        if refusal is not None:
            return self._fail(CLOSE_POLICY_VIOLATION, refusal)
        return [Relay(self.canister_id, envelope, envelope_bytes, False)]

    def relay_result(self, relay: Relay, outcome: RelayOutcome) -> list[Action]:
        """The final outcome of ``relay`` (after any retries): unless the IC accepted the call, the session
        closes (1011) with the outcome as the reason, cut to what a close frame carries."""
        if outcome.accepted or self.state is SessionState.CLOSED:
            return []
        method = "ws_open" if relay.is_open else "ws_message"
        return self._fail(CLOSE_INTERNAL_ERROR, f"{method} failed: {outcome}")

    def delivered(self) -> None:
        """A canister message was sent to the client: a session in ``SETUP`` is now ``OPEN``."""
        if self.state is SessionState.SETUP:
            self.state = SessionState.OPEN

    def tick(self, now: float) -> list[Action]:
        """Time has passed: a client that has not sent its ``ws_open`` in time is closed."""
        if self._open_deadline is not None and now >= self._open_deadline and self.state is SessionState.INIT:
            return self._fail(CLOSE_POLICY_VIOLATION, "no ws_open message in time")
        return []

    def close(self, code: int, reason: str) -> list[Action]:
        """The gateway closes the session (drain, slow consumer, poller failure...)."""
        if self.state is SessionState.CLOSED:
            return []
        return self._fail(code, reason)

    def connection_lost(self) -> list[Action]:
        """The WebSocket is gone (either side closed it): clean up, calling ``ws_close`` if ``ws_open`` went out."""
        self.state = SessionState.CLOSED
        self._open_deadline = None
        return self._cleanup()

    def _fail(self, code: int, reason: str) -> list[Action]:
        self.state = SessionState.CLOSED
        self._open_deadline = None
        return [Close(code, truncate_reason(reason)), *self._cleanup()]

    def _cleanup(self) -> list[Action]:
        """The one Unregister for a session that registered; later calls return nothing."""
        if not self._registered or self.canister_id is None or self.client_key is None:
            return []
        self._registered = False
        return [Unregister(self.canister_id, self.client_key)]
