"""What a relay's failure means: accepted or not, and whether the same envelope may be tried again."""

from __future__ import annotations

import pytest

from icws_fast.errors import (
    AgentError,
    AgentTimeout,
    CallPending,
    CertificateError,
    EnvelopeError,
    HttpStatusError,
    IcwsError,
    ProtocolDecodeError,
    ProtocolError,
    RejectCode,
    RejectError,
    SignatureError,
    TransportError,
)
from icws_fast.ic.certificate import REASON_INVALID_SIGNATURE
from icws_fast.protocol.relay import RelayOutcome, RelayStatus, relay_outcome


@pytest.mark.parametrize(
    ("error", "status", "accepted", "retryable"),
    [
        (None, RelayStatus.ACCEPTED, True, False),
        (CallPending(b"\x01" * 32), RelayStatus.PENDING, True, False),
        (RejectError(RejectCode.SYS_TRANSIENT, "busy", "IC0201"), RelayStatus.REJECTED, False, True),
        (RejectError(RejectCode.SYS_UNKNOWN, "unknown"), RelayStatus.REJECTED, False, True),
        (RejectError(RejectCode.CANISTER_ERROR, "trapped", "IC0503"), RelayStatus.REJECTED, False, False),
        (RejectError(RejectCode.DESTINATION_INVALID, "no such canister"), RelayStatus.REJECTED, False, False),
        (ProtocolError("Client with key x already has an open connection"), RelayStatus.CANISTER_ERROR, False, False),
        (ProtocolDecodeError("not a CanisterWsOpenResult"), RelayStatus.CANISTER_ERROR, False, False),
        (EnvelopeError("the envelope calls another canister"), RelayStatus.INVALID, False, False),
        (SignatureError("sender_sig does not verify"), RelayStatus.INVALID, False, False),
        (HttpStatusError(400, "bad request"), RelayStatus.INVALID, False, False),
        (HttpStatusError(408, "request timeout"), RelayStatus.TRANSIENT, False, True),
        (HttpStatusError(413, "too large"), RelayStatus.INVALID, False, False),
        (HttpStatusError(429, "slow down"), RelayStatus.TRANSIENT, False, True),
        (RejectError(RejectCode.SYS_FATAL, "fatal"), RelayStatus.REJECTED, False, False),
        (RejectError(RejectCode.CANISTER_REJECT, "no", "IC0406"), RelayStatus.REJECTED, False, False),
        (HttpStatusError(503, "unavailable"), RelayStatus.TRANSIENT, False, True),
        (TransportError("connection refused"), RelayStatus.TRANSIENT, False, True),
        (AgentTimeout("no answer"), RelayStatus.TRANSIENT, False, True),
        (AgentError("malformed answer"), RelayStatus.TRANSIENT, False, True),
        (CertificateError(REASON_INVALID_SIGNATURE), RelayStatus.TRANSIENT, False, True),
        (IcwsError("something else"), RelayStatus.INVALID, False, False),
    ],
)
def test_outcome_of_each_failure(error: IcwsError | None, status: RelayStatus, accepted: bool, retryable: bool) -> None:
    outcome = relay_outcome(error)
    assert (outcome.status, outcome.accepted, outcome.retryable) == (status, accepted, retryable)


def test_a_rejection_carries_its_codes_and_reads_as_a_close_reason() -> None:
    outcome = relay_outcome(RejectError(RejectCode.CANISTER_REJECT, "no", "IC0406"))
    assert outcome == RelayOutcome(RelayStatus.REJECTED, "no", RejectCode.CANISTER_REJECT, "IC0406")
    assert str(outcome) == "rejected (code 4): no"
    assert str(relay_outcome(ProtocolError("Err text"))) == "canister_error: Err text"
    assert str(relay_outcome(None)) == "accepted"
