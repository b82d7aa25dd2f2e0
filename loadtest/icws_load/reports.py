"""The campaign's samples in Locust's stats, and the connection that produces them.

HTTP-style timings miss most of what goes wrong with a WebSocket, so every sample is a Locust request with a
request type saying what it measures; they all land in the console table, ``--csv`` and ``--html`` reports:

- ``icws``: operations, timed — ``open`` (TCP, upgrade, handshake and the canister's OpenMessage), ``echo``
  (send until the verified answer), ``chat`` (send until one's own broadcast comes back), ``close``, ``idle``
  (one untimed check of a long-lived session); a wait for a message that times out fails the operation named
  after what was awaited (``greeting``, ``echo``, ``chat``, ``firehose``);
- ``latency``: one sample per received message, named after the canister (``test``, ``chat``, ``firehose``):
  the time from the canister's ``timestamp`` (its clock when it sent the message; the devnet's clock is the
  host's) until the verified message reached the user;
- ``violation``: failures only, one per connection that the client closed because of it — ``sequence gap``
  (a message out of sequence: lost, duplicated or reordered), ``verification failure`` (certificate, tree or
  content did not verify), ``ack timeout`` (the canister acknowledged no message within the ack interval), and
  ``connection lost`` (any other close the user did not ask for, with its code and reason).
"""

from __future__ import annotations

import queue
import time
from typing import Any, Final

from locust.env import Environment

from icws_fast.client import ConnectionClosed, SyncIcWebSocket
from icws_fast.errors import CertificateError, HashTreeError, IcwsError, SequenceError, SignatureError
from icws_fast.protocol.client import REASON_ACK_TIMEOUT
from icws_load import targets

OPERATION: Final = "icws"
LATENCY: Final = "latency"
VIOLATION: Final = "violation"


def report(
    environment: Environment,
    request_type: str,
    name: str,
    response_time_ms: float,
    *,
    exception: BaseException | None = None,
    length: int = 0,
) -> None:
    """One sample in Locust's stats (a failure when ``exception`` is set)."""
    environment.events.request.fire(
        request_type=request_type,
        name=name,
        response_time=response_time_ms,
        response_length=length,
        exception=exception,
        context={},
    )


def violation_name(error: IcwsError | None, reason: str) -> str:
    """The ``violation`` a close the user did not ask for counts as."""
    if isinstance(error, (CertificateError, HashTreeError, SignatureError)):
        return "verification failure"
    if isinstance(error, SequenceError):
        return "sequence gap"
    if reason == REASON_ACK_TIMEOUT:
        return "ack timeout"
    return "connection lost"


class Session:
    """One verifying connection of one user (``SyncIcWebSocket``), reporting its open, messages and closes.

    Messages are taken as the client delivers them (``on_message``) and queued here, so a message's latency is
    measured when it arrived, not when the user got round to reading it.
    """

    def __init__(self, environment: Environment, canister: str) -> None:
        self.environment = environment
        self.canister = canister
        self.ws: SyncIcWebSocket | None = None
        #: Wall-clock time of the open: messages stamped earlier (a chat's history) give no latency sample.
        self.opened_ns = 0
        self._closing = False
        # A close the reader saw before connect() returned an open connection: (code, reason).
        self._lost_during_open: tuple[int, str] | None = None
        # The messages not read yet; None once the connection closed (put back by each reader, for the next).
        self._inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()

    @property
    def is_open(self) -> bool:
        return self.ws is not None and self.ws.is_open

    def open(self) -> bool:
        """Connect; reports ``open`` (a failure when it does not open) and returns whether it did."""
        self._closing = False
        self.ws = None  # a close of the previous connection must not be read as one of this one
        self._lost_during_open = None
        self._inbox = queue.Queue()
        start = time.perf_counter()
        self.opened_ns = time.time_ns()
        try:
            self.ws = SyncIcWebSocket.connect(
                targets.GATEWAY_URL,
                targets.canister_id(self.canister),
                targets.IC_URL,
                targets.identity(),
                root_key_der=targets.root_key(),
                on_message=self._on_message,
                on_close=self._on_close,
            )
        except IcwsError as exc:
            self.ws = None
            report(self.environment, OPERATION, "open", elapsed_ms(start), exception=exc)
            return False
        report(self.environment, OPERATION, "open", elapsed_ms(start))
        if self._lost_during_open is not None:
            self._report_lost(self.ws, *self._lost_during_open)
        return True

    def recv(
        self, name: str, timeout_s: float = targets.RECV_TIMEOUT_S, *, expected: bool = True
    ) -> dict[str, Any] | None:
        """The next message (an ``AppMessage``); ``name`` is what is awaited (``echo``, ``chat``...).

        None when none came within ``timeout_s`` (reported as a failed ``name`` operation when the message was
        ``expected``) or the connection closed (already reported by the close).
        """
        if self.ws is None:
            return None
        start = time.perf_counter()
        try:
            value = self._inbox.get(timeout=timeout_s)
        except queue.Empty:
            if expected:
                error = TimeoutError(f"no {name} message within {timeout_s:g} s")
                report(self.environment, OPERATION, name, elapsed_ms(start), exception=error)
            return None
        if value is None:
            self._inbox.put(None)
        return value

    def send(self, text: str) -> bool:
        """Send an ``AppMessage``; False when the connection has closed meanwhile (the close was reported)."""
        if self.ws is None:
            return False
        try:
            self.ws.send({"text": text, "timestamp": time.time_ns()})
        except ConnectionClosed:
            return False
        return True

    def close(self) -> None:
        """Close (code 1000); reports ``close`` when the connection was open."""
        ws, self.ws = self.ws, None
        if ws is None:
            return
        self._closing = True
        was_open = ws.is_open
        start = time.perf_counter()
        ws.close()
        if was_open:
            report(self.environment, OPERATION, "close", elapsed_ms(start))

    def _on_message(self, value: dict[str, Any]) -> None:
        # Runs on the client's reader (a greenlet under Locust) as each verified message arrives.
        if value["timestamp"] >= self.opened_ns:
            # A remote clock a little ahead of this host would give negative times: they count as zero.
            latency_ms = max(0.0, (time.time_ns() - value["timestamp"]) / 1e6)
            report(self.environment, LATENCY, self.canister, latency_ms, length=len(value["text"]))
        self._inbox.put(value)

    def _on_close(self, code: int, reason: str) -> None:
        # Runs on the client's reader for every close, ours included.
        self._inbox.put(None)
        if self._closing:
            return
        if self.ws is None:
            # Still inside connect(): the connection may have opened and closed at once (the greeting and a
            # close frame in one read). open() reports it once connect() returns; a failed open is its own report.
            self._lost_during_open = (code, reason)
            return
        self._report_lost(self.ws, code, reason)

    def _report_lost(self, ws: SyncIcWebSocket, code: int, reason: str) -> None:
        """A close the user did not ask for: one ``violation`` sample, classified by what closed it."""
        report(
            self.environment,
            VIOLATION,
            violation_name(ws.error, reason),
            0.0,
            exception=ConnectionClosed(code, f"{reason}: {ws.error}" if ws.error else reason),
        )


def elapsed_ms(start: float) -> float:
    """Milliseconds since ``start`` (a ``time.perf_counter()`` reading)."""
    return (time.perf_counter() - start) * 1000
