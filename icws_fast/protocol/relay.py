"""The outcome of relaying a client's envelope to the IC, typed for the session and for retry decisions.

The gateway submits a client's signed ``call`` (:meth:`icws_fast.ic.agent.Agent.submit_signed`) and reads
the canister's ``CanisterWs*Result``; :func:`relay_outcome` sorts what that raised into a
:class:`RelayOutcome`: accepted, or why not, and whether trying the same envelope again may succeed (the IC
deduplicates a call by its request id, so resubmitting the same bytes is safe until the envelope expires).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from icws_fast.errors import (
    AgentError,
    CallPending,
    CertificateError,
    EnvelopeError,
    HttpStatusError,
    IcwsError,
    ProtocolError,
    RejectCode,
    RejectError,
)

#: Reject codes after which the same call may succeed: the IC says so (``SYS_TRANSIENT``), or it does not
#: know whether the call ran (``SYS_UNKNOWN``; a resubmission is deduplicated by its request id). The others
#: are verdicts (interface spec, "Reject codes"): ``SYS_FATAL``, ``DESTINATION_INVALID``, ``CANISTER_REJECT``
#: and ``CANISTER_ERROR`` answer the same call the same way however often it is sent.
RETRYABLE_REJECT_CODES: Final = frozenset({RejectCode.SYS_TRANSIENT, RejectCode.SYS_UNKNOWN})


class RelayStatus(enum.Enum):
    """What became of a relayed envelope."""

    ACCEPTED = "accepted"  # the canister replied Ok
    PENDING = "pending"  # the IC accepted the call; its outcome is readable by its sender only
    REJECTED = "rejected"  # the IC or the canister rejected the call (``reject_code``)
    CANISTER_ERROR = "canister_error"  # the canister replied Err, or a reply that is no CanisterWs result
    INVALID = "invalid"  # the envelope cannot be relayed, or the replica refused it (HTTP 4xx)
    TRANSIENT = "transient"  # no verdict: transport, time-out, HTTP 429/5xx, unreadable or unverifiable answer


@dataclass(frozen=True, slots=True)
class RelayOutcome:
    """One relay's outcome: ``status``, the cause in words, and the IC's reject and error codes if it rejected."""

    status: RelayStatus
    message: str = ""
    reject_code: int | None = None
    error_code: str | None = None

    @property
    def accepted(self) -> bool:
        """The IC took the call (the canister replied Ok, or the outcome is the sender's to read)."""
        return self.status is RelayStatus.ACCEPTED or self.status is RelayStatus.PENDING

    @property
    def retryable(self) -> bool:
        """Submitting the same envelope again may succeed; any other failure is definitive."""
        if self.status is RelayStatus.TRANSIENT:
            return True
        return self.status is RelayStatus.REJECTED and self.reject_code in RETRYABLE_REJECT_CODES

    def __str__(self) -> str:
        if self.status is RelayStatus.REJECTED:
            return f"rejected (code {self.reject_code}): {self.message}"
        return f"{self.status.value}: {self.message}" if self.message else self.status.value


def relay_outcome(error: IcwsError | None) -> RelayOutcome:
    """The outcome of a relay that raised ``error`` (None: the canister replied Ok)."""
    if error is None:
        return RelayOutcome(RelayStatus.ACCEPTED)
    message = str(error) or type(error).__name__
    if isinstance(error, CallPending):
        # Accepted: the canister's verdict reaches the client through its queue (a failed ws_message closes it).
        return RelayOutcome(RelayStatus.PENDING, message)
    if isinstance(error, RejectError):
        return RelayOutcome(RelayStatus.REJECTED, error.reject_message, error.reject_code, error.error_code)
    if isinstance(error, ProtocolError):
        # The canister's Err text, or a reply that does not decode as its result type.
        return RelayOutcome(RelayStatus.CANISTER_ERROR, message)
    if isinstance(error, EnvelopeError):
        return RelayOutcome(RelayStatus.INVALID, message)
    if isinstance(error, HttpStatusError):
        # 408 and 429: the replica or a boundary node did not take the request now; 5xx: it failed. Any other
        # 4xx is its verdict on these bytes, which a resubmission does not change.
        transient = error.status in (408, 429) or error.status >= 500
        return RelayOutcome(RelayStatus.TRANSIENT if transient else RelayStatus.INVALID, message)
    if isinstance(error, (AgentError, CertificateError)):
        # Transport, time-out, or a malformed or unverifiable answer: that may come from one faulty node,
        # and another replica or boundary node may answer honestly.
        return RelayOutcome(RelayStatus.TRANSIENT, message)
    return RelayOutcome(RelayStatus.INVALID, message)
