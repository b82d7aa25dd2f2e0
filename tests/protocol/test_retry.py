"""The retry policy of relays and ws_close, given outcomes and times (sans-IO, jitter drawn from a fixed source)."""

from __future__ import annotations

import pytest

from icws_fast.errors import HttpStatusError, ProtocolError, RejectCode, RejectError, TransportError
from icws_fast.protocol.relay import relay_outcome
from icws_fast.protocol.retry import WS_CLOSE_WINDOW_S, Backoff, Retry
from icws_fast.protocol.types import DEFAULT_SEND_ACK_INTERVAL_MS

TRANSIENT = relay_outcome(HttpStatusError(503, "unavailable"))
BACKOFF = Backoff(first_s=0.1, factor=2.0, max_s=1.0, jitter=0.5)


def test_transient_failures_back_off_exponentially_up_to_the_cap() -> None:
    retry = Retry(deadline=100.0, backoff=BACKOFF, random=lambda: 0.0)  # no jitter drawn
    now, waits = 0.0, []
    for _ in range(6):
        at = retry.next_attempt(TRANSIENT, now)
        assert at is not None
        waits.append(round(at - now, 9))
        now = at
    assert waits == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_jitter_shortens_each_wait_by_up_to_its_fraction() -> None:
    draws = iter([0.0, 0.5, 0.999])
    retry = Retry(deadline=100.0, backoff=BACKOFF, random=lambda: next(draws))
    assert retry.next_attempt(TRANSIENT, 0.0) == pytest.approx(0.1)
    assert retry.next_attempt(TRANSIENT, 0.0) == pytest.approx(0.2 * 0.75)
    assert retry.next_attempt(TRANSIENT, 0.0) == pytest.approx(0.4 * (1 - 0.5 * 0.999))


@pytest.mark.parametrize(
    "error",
    [
        TransportError("connection refused"),
        HttpStatusError(429, "slow down"),
        HttpStatusError(500, "oops"),
        RejectError(RejectCode.SYS_TRANSIENT, "busy"),
        RejectError(RejectCode.SYS_UNKNOWN, "unknown"),
    ],
)
def test_every_retryable_outcome_is_tried_again(error: Exception) -> None:
    assert Retry(deadline=10.0, random=lambda: 0.5).next_attempt(relay_outcome(error), 0.0) is not None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "error",
    [
        None,
        RejectError(RejectCode.CANISTER_REJECT, "no"),
        RejectError(RejectCode.DESTINATION_INVALID, "no such canister"),
        RejectError(RejectCode.SYS_FATAL, "fatal"),
        ProtocolError("invalid sequence number"),
        HttpStatusError(400, "bad request"),
    ],
    ids=["accepted", "canister_reject", "destination_invalid", "sys_fatal", "canister_err", "http_400"],
)
def test_a_verdict_stops_at_once(error: Exception | None) -> None:
    retry = Retry(deadline=10.0, random=lambda: 0.5)
    assert retry.next_attempt(relay_outcome(error), 0.0) is None  # type: ignore[arg-type]
    assert retry.failures == 0


def test_gives_up_when_the_next_attempt_would_start_past_the_deadline() -> None:
    retry = Retry(deadline=1.0, backoff=BACKOFF, random=lambda: 0.0)
    assert retry.next_attempt(TRANSIENT, 0.85) == pytest.approx(0.95)
    assert retry.next_attempt(TRANSIENT, 0.95) is None  # 0.95 + 0.2 is past 1.0
    # An envelope that already expired is not tried again at all.
    assert Retry(deadline=5.0, random=lambda: 0.0).next_attempt(TRANSIENT, 5.0) is None


def test_ws_close_window_outlasts_the_cdk_acknowledgement_and_keep_alive() -> None:
    assert WS_CLOSE_WINDOW_S > DEFAULT_SEND_ACK_INTERVAL_MS / 1000


@pytest.mark.parametrize(
    "kw", [{"first_s": 0}, {"first_s": 3.0, "max_s": 2.0}, {"factor": 0.5}, {"jitter": 1.0}, {"jitter": -0.1}]
)
def test_a_nonsensical_backoff_is_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="back-off needs"):
        Backoff(**kw)
