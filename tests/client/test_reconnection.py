"""When a reconnecting client tries again (sans-IO): not after the canister closed it, backed off, up to a bound."""

from __future__ import annotations

import pytest

from icws_fast.client._common import Reconnection
from icws_fast.errors import ConfigError
from icws_fast.protocol.retry import Backoff

BACKOFF = Backoff(first_s=0.5, factor=2.0, max_s=4.0, jitter=0.5)


def test_the_canister_closing_the_client_is_final() -> None:
    assert Reconnection(BACKOFF, None).lost(4001) is None


@pytest.mark.parametrize("code", [1000, 1001, 1006, 1008, 1011, 1013, 4000])
def test_every_other_end_is_followed_by_an_attempt(code: int) -> None:
    assert Reconnection(BACKOFF, None, random=lambda: 0.0).lost(code) == 0.5


def test_failed_attempts_back_off_and_run_out() -> None:
    reconnection = Reconnection(BACKOFF, 4, random=lambda: 0.0)
    assert reconnection.lost(1006) == 0.5
    assert [reconnection.failed() for _ in range(4)] == [1.0, 2.0, 4.0, None]
    # A session that opened and was lost again starts the count afresh.
    assert reconnection.lost(1006) == 0.5
    assert reconnection.failed() == 1.0


def test_without_a_bound_it_tries_for_ever_at_the_longest_wait() -> None:
    reconnection = Reconnection(BACKOFF, None, random=lambda: 0.0)
    reconnection.lost(1006)
    assert [reconnection.failed() for _ in range(100)][-1] == 4.0


def test_the_jitter_shortens_the_wait() -> None:
    assert Reconnection(BACKOFF, None, random=lambda: 0.999).lost(1001) == pytest.approx(0.25, abs=0.001)


def test_max_attempts_must_allow_one() -> None:
    with pytest.raises(ConfigError, match="max_attempts: at least 1 reconnection attempt"):
        Reconnection(BACKOFF, 0)
