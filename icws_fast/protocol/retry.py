"""When to try a call to the IC again: capped, jittered exponential back-off up to a deadline (sans-IO).

A :class:`Retry` follows one operation (the relay of one envelope, one ``ws_close``). The I/O layer
reports each attempt's :class:`~icws_fast.protocol.relay.RelayOutcome` with the time, and
:meth:`Retry.next_attempt` answers when to try again, or None: stop, because the IC gave its verdict
(accepted, or a definitive rejection) or because the next attempt would start past the deadline. It
reads no clock; times are seconds on any monotonic scale. Randomness for the jitter is drawn from the
``random`` callable it is given, so a test can fix it.

Resubmitting is safe for the relay and for ``ws_close``: the IC deduplicates a call by its request id
while its envelope has not expired, so the same bytes run at most once.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from icws_fast.protocol.relay import RelayOutcome
from icws_fast.protocol.types import CLIENT_KEEP_ALIVE_TIMEOUT_MS, DEFAULT_SEND_ACK_INTERVAL_MS

WS_CLOSE_WINDOW_S: Final = (DEFAULT_SEND_ACK_INTERVAL_MS + CLIENT_KEEP_ALIVE_TIMEOUT_MS) / 1000
"""How long ``ws_close`` for a departed client is worth retrying: by then a canister with the CDK's defaults
has acknowledged, waited for the keep-alive that never came, and dropped the client itself."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between attempts: ``first_s``, growing by ``factor``, at most ``max_s``; each shortened by up to
    ``jitter`` of itself at random, so that clients failed by one outage do not all come back at once."""

    first_s: float = 0.05
    factor: float = 2.0
    max_s: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not (0 < self.first_s <= self.max_s and self.factor >= 1 and 0 <= self.jitter < 1):
            raise ValueError(f"back-off needs 0 < first_s <= max_s, factor >= 1 and 0 <= jitter < 1: {self}")

    def delay(self, failures: int, draw: float) -> float:
        """The wait after the ``failures``-th failure in a row (1: the first), ``draw`` uniform in [0, 1)."""
        base = min(self.max_s, self.first_s * self.factor ** min(failures - 1, 64))
        return base * (1 - self.jitter * draw)


DEFAULT_BACKOFF: Final = Backoff()


class Retry:
    """The attempts of one operation until ``deadline`` (sans-IO; see the module docstring)."""

    __slots__ = ("_random", "backoff", "deadline", "failures")

    def __init__(
        self, deadline: float, backoff: Backoff = DEFAULT_BACKOFF, *, random: Callable[[], float] = _random.random
    ) -> None:
        self.deadline = deadline
        self.backoff = backoff
        self.failures = 0
        self._random = random

    def next_attempt(self, outcome: RelayOutcome, now: float) -> float | None:
        """When to try again after an attempt ended with ``outcome`` at ``now``; None: stop here.

        Only a retryable outcome (:attr:`RelayOutcome.retryable`) is tried again, and only when the next
        attempt would start before the deadline.
        """
        if not outcome.retryable:
            return None
        self.failures += 1
        at = now + self.backoff.delay(self.failures, self._random())
        return at if at < self.deadline else None
