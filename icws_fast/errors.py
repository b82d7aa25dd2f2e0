"""The one error hierarchy of icws_fast.

Every exception raised on purpose by the package derives from :class:`IcwsError`.
Decoders fed hostile bytes raise only subclasses of :class:`DecodeError`, so
callers can catch exactly what the network can cause.
"""

from __future__ import annotations

import enum


class IcwsError(Exception):
    """Base class of every icws_fast error."""


class DecodeError(IcwsError, ValueError):
    """Bytes or text could not be decoded (malformed, truncated, over a limit)."""


class CborError(DecodeError):
    """Malformed or over-limit CBOR."""


class CandidError(DecodeError):
    """Malformed Candid bytes, a value that does not fit its type, or a bad type expression."""


class InvalidPrincipal(DecodeError):
    """A principal's text or bytes are not valid."""


class HashTreeError(DecodeError):
    """A hash tree is malformed, or a lookup hit a node where the path cannot continue."""


class CertificateError(IcwsError):
    """A certificate failed verification; ``reason`` names the check that failed."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class EnvelopeError(IcwsError):
    """An envelope is malformed or fails the checks the IC applies (signature, expiry, sender...)."""


class SignatureError(EnvelopeError):
    """A signature does not verify, or a key is malformed."""


class AgentError(IcwsError):
    """An error talking to a replica (transport, HTTP status, malformed answer)."""


class TransportError(AgentError):
    """The replica could not be reached or the connection broke; retrying may help."""


class RejectCode(enum.IntEnum):
    """The IC's reject codes (interface specification), as :class:`RejectError` carries them."""

    SYS_FATAL = 1
    SYS_TRANSIENT = 2
    DESTINATION_INVALID = 3
    CANISTER_REJECT = 4
    CANISTER_ERROR = 5
    SYS_UNKNOWN = 6


class RejectError(AgentError):
    """The IC rejected a call or query; carries the reject code, message and error code."""

    def __init__(self, reject_code: int, reject_message: str, error_code: str | None = None) -> None:
        self.reject_code = reject_code
        self.reject_message = reject_message
        self.error_code = error_code
        super().__init__(f"reject code {reject_code}: {reject_message}" + (f" ({error_code})" if error_code else ""))


class AgentTimeout(AgentError):
    """A request to the replica did not finish in time."""


class ProtocolError(IcwsError):
    """A peer broke the IC WebSocket protocol (bad message, sequence number, state)."""


class SequenceError(ProtocolError):
    """A canister message came out of sequence: after a gap (messages lost), or a duplicate or reordered one.

    ``expected`` is the sequence number the client waited for, ``received`` the one that came.
    """

    def __init__(self, expected: int, received: int) -> None:
        self.expected = expected
        self.received = received
        if received > expected:
            what = f"{received - expected} message{'s' if received - expected > 1 else ''} lost"
        else:
            what = "a duplicate, or out of order"
        super().__init__(f"received sequence number {received}, expected {expected} ({what})")


class ProtocolDecodeError(ProtocolError, DecodeError):
    """A message of the IC WebSocket protocol is malformed (bad CBOR or Candid, wrong shape or field type)."""


class ConnectionClosed(IcwsError):
    """The IC WebSocket connection is closed; ``code`` and ``reason`` are those it closed with."""

    def __init__(self, code: int, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"connection closed with code {code}" + (f": {reason}" if reason else ""))


class HttpStatusError(AgentError):
    """A replica answered with an HTTP error status; carries the status and the start of its text body."""

    def __init__(self, status: int, text: str) -> None:
        self.status = status
        self.text = text
        super().__init__(f"HTTP {status}: {text}" if text else f"HTTP {status}")


class CallPending(AgentError):
    """A relayed call was accepted but its outcome is not certified yet, and only its sender may poll for it."""

    def __init__(self, request_id: bytes) -> None:
        self.request_id = request_id
        super().__init__(f"call 0x{request_id.hex()} accepted; its outcome can only be read by its sender")


class CdkError(IcwsError):
    """The canister-side IC WebSocket CDK refused an operation (unknown client, gateway...).

    The message is the Rust CDK's error text, which the ``ws_*`` methods return as ``Err``.
    """


class ConfigError(IcwsError, ValueError):
    """A configuration value is refused; ``field`` names it, ``problem`` says what is wrong with it."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class InternalError(IcwsError):
    """An unexpected exception (a bug in icws_fast) while handling input; the exception is chained as the cause.

    The sans-IO state machines turn one into a clean close instead of letting it escape into the I/O layer,
    which logs it with its traceback: please report it.
    """
