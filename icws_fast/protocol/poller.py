"""The poller of one canister as a sans-IO state machine: given replies, errors and the time, it says what to do.

No sockets, no clocks: the driver (:mod:`icws_fast.gateway.poller`) asks :meth:`PollState.polls` which
``ws_get_messages`` nonces to query now, awaits them in the order given, feeds each outcome back
(:meth:`PollState.on_reply` / :meth:`PollState.on_error`, with the monotonic time and the wall clock) and acts
on the :class:`Step` it gets: the messages to hand each recipient, or the reason the canister's sessions end.
:attr:`PollState.wake_at` says when to ask again while nothing is in flight.

Guarantees (each tested in ``tests/protocol/test_poller.py``, and end to end in ``tests/faults``):

* **At most once, in order, nothing skipped.** ``expected`` is the nonce of the next message to hand out;
  a batch is delivered only when it starts exactly at ``expected`` and its nonces are consecutive, and then
  ``expected`` moves past it. Any other batch (stale: below ``expected``, e.g. a replayed reply; gapped or
  reordered) is not delivered and ``expected`` is polled again after a back-off. The first batch of a new
  poller may start anywhere above ``expected`` (the canister may have dropped acknowledged messages), as in
  the Rust gateway, unless its witness certifies the message just before it (then it was cut short).
* **A batch that does not verify is neither delivered nor skipped**: certificate (signature, delegation,
  time), witness tree, or the content hash of a message that would be delivered. The same nonce is polled
  again with back-off (another replica or boundary node may answer honestly). It is counted per message
  (``dropped_messages{reason="invalid_certificate"}``) and logged once per nonce range and reason.
* **An empty reply ends the queue**, whatever its ``is_end_of_queue`` says: the next poll waits for the
  polling interval (no re-poll storm driven by a canister).
* **Transient failures back off**: transport errors, time-outs, HTTP statuses, unreadable replies and the
  reject codes a retry may cure (:data:`POLL_RETRYABLE_REJECT_CODES`: transient, unknown, and a canister
  that is stopped, upgrading, frozen or trapping, for at most ``canister_error_grace_s`` in a row) wait
  ``min(max_backoff, interval * 2**(n-1))`` times a jitter in [0.5, 1) drawn from the injected RNG after the
  *n*-th failure in a row. Only a permanent canister error (any other reject code: destination invalid, i.e.
  canister or method missing, fatal, canister reject; or an ``Err`` reply) ends the canister's
  sessions, with a close reason (at most 123 bytes) that names the canister and the code.

Resynchronisation, when the canister's queue really moved (certified by the subnet, not claimed by one node):

* **Forward** (the canister deleted messages before they were polled, e.g. after a long outage): a batch
  that starts above ``expected`` is never accepted when its witness certifies the message just before it (a
  batch cut short on the way: the canister still holds that message); otherwise it is accepted only after
  :data:`GAP_CONFIRMATIONS` verified replies in a row start at that same nonce, each with a certificate newer
  than the one before (so from distinct replica rounds, not one reply replayed); the messages in between are
  gone from the canister and are counted as ``dropped_messages{reason="gap"}``.
* **Backwards** (reinstall, state rollback: nonces restart below ``expected``). A canister in that state
  answers a poll at ``expected`` with nothing (the Rust gateway then stalls: new clients never get their
  open message). The rule: the poller notes ``expected`` when a client joins (:meth:`PollState.client_joined`);
  the canister can queue that client's messages only after it joined, hence at or above that nonce. When a
  client has waited ``resync_after_s`` for its first message while the queue looks empty, the poller probes
  once from nonce 0 (walking forward while below ``expected``, delivering nothing). A verified probe batch
  holding a message *for that client* at a nonce below the one noted is proof that the queue went
  backwards: the poller resynchronises to the start of that batch (the start of the new queue) and delivers
  it. Nothing forgeable triggers it: the message must verify under the IC root key, and no earlier state of
  the canister can hold it there. A probe that proves nothing changes nothing.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Generic, TypedDict, TypeVar

from icws_fast import _ext
from icws_fast.errors import (
    AgentTimeout,
    CertificateError,
    HttpStatusError,
    ProtocolDecodeError,
    ProtocolError,
    RejectCode,
    RejectError,
)
from icws_fast.ic.principal import Principal
from icws_fast.protocol.certified import BatchVerifier, check_messages_pure
from icws_fast.protocol.relay import RETRYABLE_REJECT_CODES
from icws_fast.protocol.types import PolledBatch, decode_polled_batch

R = TypeVar("R")

#: Reject codes of a ``ws_get_messages`` poll after which polling goes on with back-off. Beyond the relay's
#: (:data:`RETRYABLE_REJECT_CODES`), ``CANISTER_ERROR``: a query rejected so comes from a canister that is
#: stopped or stopping (an upgrade: IC0508), frozen for cycles, or trapping — states a canister leaves, so
#: one such answer must not close every session of the canister; only ``canister_error_grace_s`` of them in a
#: row does.
POLL_RETRYABLE_REJECT_CODES: Final = RETRYABLE_REJECT_CODES | {RejectCode.CANISTER_ERROR}

#: Verified replies in a row, each certified later than the one before, that must agree on a forward gap.
GAP_CONFIRMATIONS: Final = 3
#: The longest WebSocket close reason (RFC 6455: a control frame's 125 bytes less the 2-byte code).
MAX_CLOSE_REASON_BYTES: Final = 123


def close_reason(text: str) -> str:
    """``text`` cut to a WebSocket close reason (at most 123 bytes of UTF-8, never half a character)."""
    return text.encode()[:MAX_CLOSE_REASON_BYTES].decode(errors="ignore")


class PollOptions(TypedDict, total=False):
    """The optional keyword arguments of :class:`PollState` (for layers that pass them through)."""

    max_backoff_s: float
    pipeline_depth: int
    resync_after_s: float
    canister_error_grace_s: float
    start_nonce: int
    rng: random.Random | None


@dataclass(frozen=True, slots=True)
class Step(Generic[R]):
    """What the driver does after one poll outcome.

    ``shares``: each recipient's (message keys, contents), in canister order, to encode with ``cert`` and ``tree``
    and write in one go. ``close``: the canister failed for good; end its sessions with this reason.
    ``error``: an ``errors_total`` kind to count; ``dropped``: ``dropped_messages_total`` reasons and counts;
    ``log``: a warning to log (once per incident); ``polled``: messages the reply held.
    """

    shares: Mapping[R, tuple[list[bytes], list[bytes]]] = field(default_factory=dict)
    cert: bytes = b""
    tree: bytes = b""
    polled: int = 0
    close: str | None = None
    error: str | None = None
    dropped: Mapping[str, int] = field(default_factory=dict)
    log: str | None = None


@dataclass(slots=True)
class _Joined:
    nonce: int  # ``expected`` when the client joined: its messages can only be queued at or above it
    since: float
    probed: bool = False


class PollState(Generic[R]):
    """The poll loop of one canister; see the module docstring.

    ``routes``: the live map of the clients' route keys (:func:`~icws_fast.protocol.types.route_key`, the bytes a
    reply names each message's client by) to their recipients.
    """

    def __init__(
        self,
        canister_id: Principal,
        routes: Mapping[bytes, R],
        verifier: BatchVerifier | None,
        *,
        interval_s: float,
        max_backoff_s: float = 5.0,
        pipeline_depth: int = 1,
        resync_after_s: float = 2.0,
        canister_error_grace_s: float = 60.0,
        start_nonce: int = 0,
        rng: random.Random | None = None,
    ) -> None:
        """``verifier`` None skips certificate checks (tests of the bare relay only); ``rng`` draws the jitter."""
        self.canister_id = canister_id
        self.routes = routes
        self.verifier = verifier
        self.interval_s = interval_s
        self.max_backoff_s = max_backoff_s
        self.pipeline_depth = max(1, pipeline_depth)
        self.resync_after_s = resync_after_s
        self.canister_error_grace_s = canister_error_grace_s
        self.rng = rng if rng is not None else random.Random()
        self.label = canister_id.to_text()
        #: The nonce of the next message to hand out.
        self.expected = start_nonce
        #: False until a first batch was delivered (it may start anywhere at or above ``expected``).
        self.synced = False
        #: Nonces queried and not yet answered, in the order the driver must feed their outcomes back.
        self.in_flight: list[int] = []
        #: When :meth:`polls` has something to poll again, while nothing is in flight.
        self.wake_at = 0.0
        self._issued: dict[int, float] = {}
        self._stride = 0  # the size of the last full batch: the nonce step of speculative polls
        self._failures = 0  # transient failures in a row
        self._canister_error_since: float | None = None  # the first of the CANISTER_ERROR rejects in a row
        self._idle = False  # the last reply at ``expected`` was the end of the queue
        self._probe: int | None = None  # the nonce a backwards-resync probe is reading, while one runs
        self._joined: dict[bytes, _Joined] = {}  # by route key
        self._gap: tuple[int, int, int] | None = None  # (first nonce, certificate time, confirmations)
        self._reported: tuple[int, str] | None = None  # the last (nonce, reason) logged, to log each once

    # -- inputs from the gateway ---------------------------------------------------------------------------------

    def client_joined(self, route_key: bytes, now: float) -> None:
        """A client (by route key) registered with this canister: its messages are queued at or above ``expected``."""
        self._joined[route_key] = _Joined(self.expected, now)

    def client_left(self, route_key: bytes) -> None:
        self._joined.pop(route_key, None)

    # -- what to poll --------------------------------------------------------------------------------------------

    def polls(self, now: float) -> list[int]:
        """The nonces to query now, in order (append to :attr:`in_flight`); empty while waiting or answering."""
        if not self.in_flight:
            if now < self.wake_at:
                return []
            if self._probe is None and self._idle and self._probe_due(now):
                self._probe = 0
            nonce = self.expected if self._probe is None else self._probe
            self._issue(nonce, now)
            if self._probe is not None:
                return [nonce]
            issued = [nonce]
        elif self._probe is not None:
            return []
        else:
            issued = []
        while self._stride and len(self.in_flight) < self.pipeline_depth:
            nonce = self.in_flight[-1] + self._stride
            self._issue(nonce, now)
            issued.append(nonce)
        return issued

    def _issue(self, nonce: int, now: float) -> None:
        self.in_flight.append(nonce)
        self._issued[nonce] = now

    def _probe_due(self, now: float) -> bool:
        """A joined client waits for its first message past ``resync_after_s`` and was not probed for yet."""
        due = [j for j in self._joined.values() if not j.probed and now - j.since >= self.resync_after_s]
        for joined in due:
            joined.probed = True
        return bool(due)

    # -- outcomes ------------------------------------------------------------------------------------------------

    def on_error(self, nonce: int, error: Exception, now: float) -> Step[R]:
        """The poll of ``nonce`` (``in_flight[0]``) failed with ``error`` (an agent error or a time-out)."""
        self._take(nonce)
        if isinstance(error, RejectError) and error.reject_code not in POLL_RETRYABLE_REJECT_CODES:
            return self._fail(f"rejected ws_get_messages ({_reject_name(error.reject_code)}): {error.reject_message}")
        if isinstance(error, RejectError) and error.reject_code == RejectCode.CANISTER_ERROR:
            if self._canister_error_since is None:
                self._canister_error_since = now
            elif now - self._canister_error_since >= self.canister_error_grace_s:
                return self._fail(
                    f"ws_get_messages failed for {now - self._canister_error_since:.0f} s (CANISTER_ERROR): "
                    f"{error.reject_message}"
                )
        if isinstance(error, RejectError):
            kind = "poll_reject"
        elif isinstance(error, HttpStatusError):
            kind = "poll_status"
        elif isinstance(error, (AgentTimeout, TimeoutError)):
            kind = "poll_timeout"
        else:
            kind = "poll_transport"
        return self._back_off(now, kind, f"polling {self.label} at nonce {nonce} failed ({error or kind})")

    def on_reply(self, nonce: int, reply: bytes, now: float, wall_ns: int) -> Step[R]:
        """The poll of ``nonce`` (``in_flight[0]``) answered ``reply``; ``wall_ns``: the wall clock (certificates)."""
        started = self._take(nonce)
        try:
            batch = decode_polled_batch(reply)
        except ProtocolDecodeError as exc:
            return self._back_off(now, "poll_decode", f"undecodable ws_get_messages reply from {self.label}: {exc}")
        except ProtocolError as exc:
            return self._fail(str(exc))
        if self._probe is not None:
            return self._probed(batch, now=now, wall_ns=wall_ns)
        count = len(batch.keys)
        if not count:
            return self._end_of_queue(started)
        first, last = batch.first_nonce, batch.last_nonce
        if not batch.consecutive:
            return self._back_off(
                now, "poll_nonce_gap", f"{self.label} returned non-consecutive nonces {first}..{last}", nonce=first
            )
        if first < self.expected:
            return self._back_off(
                now,
                "poll_stale_batch",
                f"{self.label} returned nonces {first}..{last}, below the expected {self.expected}",
                nonce=first,
            )
        try:
            hashes = self._verify(batch.cert, batch.tree, wall_ns)
            if first > self.expected and (
                _certifies(hashes, batch.keys[0], first - 1)
                or (self.synced and not self._gap_confirmed(first, batch.cert))
            ):
                return self._back_off(
                    now,
                    "poll_nonce_gap",
                    f"{self.label} returned nonces {first}..{last}, above the expected {self.expected}",
                    nonce=first,
                )
            shares = self._shares(batch, hashes)
        except CertificateError as exc:
            return self._invalid(now, first, last, exc)
        dropped: dict[str, int] = {}
        log = None
        if first > self.expected and self.synced:
            dropped["gap"] = first - self.expected
            log = f"{self.label} no longer holds nonces {self.expected}..{first - 1} (confirmed); skipping them"
        unrouted = count - sum(len(keys) for keys, _ in shares.values())
        if unrouted:
            dropped["unknown_client"] = unrouted
        self.expected = last + 1
        self.synced = True
        self._failures = 0
        self._canister_error_since = None
        self._gap = None
        self._reported = None
        if batch.is_end_of_queue:
            self._end_of_queue(started)
        else:
            self._idle = False
            self._stride = count
            self._drop_speculation()
        return Step(shares, batch.cert, batch.tree, count, dropped=dropped, log=log)

    # -- internals -----------------------------------------------------------------------------------------------

    def _take(self, nonce: int) -> float:
        if not self.in_flight or self.in_flight[0] != nonce:
            raise ValueError(f"poll outcome for nonce {nonce}, but the oldest poll in flight is {self.in_flight[:1]}")
        del self.in_flight[0]
        return self._issued.pop(nonce)

    def _drop_speculation(self) -> None:
        """Forget polls in flight that no longer start where the next batch must (the driver cancels them)."""
        if self.in_flight and self.in_flight[0] != self.expected:
            for nonce in self.in_flight:
                self._issued.pop(nonce, None)
            self.in_flight.clear()

    def _cancel_all(self) -> None:
        for nonce in self.in_flight:
            self._issued.pop(nonce, None)
        self.in_flight.clear()
        self._stride = 0

    def _end_of_queue(self, started: float) -> Step[R]:
        self._cancel_all()
        self._idle = True
        self._failures = 0
        self._canister_error_since = None
        self.wake_at = started + self.interval_s
        return Step()

    def _back_off(self, now: float, kind: str, message: str, *, nonce: int | None = None) -> Step[R]:
        """Poll ``expected`` again after a jittered, capped back-off; log ``message`` once per incident."""
        self._cancel_all()
        self._probe = None
        self._failures += 1
        base = min(self.max_backoff_s, self.interval_s * 2 ** min(self._failures - 1, 32))
        self.wake_at = now + base * (0.5 + 0.5 * self.rng.random())
        return Step(error=kind, log=self._once(nonce if nonce is not None else self.expected, kind, message))

    def _once(self, nonce: int, reason: str, message: str) -> str | None:
        if self._reported == (nonce, reason):
            return None
        self._reported = (nonce, reason)
        return message

    def _invalid(self, now: float, first: int, last: int, exc: CertificateError) -> Step[R]:
        message = f"batch {first}..{last} from {self.label} does not verify ({exc.reason}: {exc}); polling it again"
        step = self._back_off(now, "poll_invalid_batch", message, nonce=first)
        if step.log is None:  # the same batch failing again: counted and logged once
            return step
        return Step(error=step.error, log=step.log, dropped={"invalid_certificate": last - first + 1})

    def _fail(self, cause: str) -> Step[R]:
        self._cancel_all()
        return Step(close=close_reason(f"canister {self.label}: {cause}"))

    def _verify(self, cert: bytes, tree: bytes, wall_ns: int) -> Mapping[bytes, bytes] | None:
        if self.verifier is None:
            return None
        return self.verifier.verify(cert, tree, self.canister_id, wall_ns)

    def _gap_confirmed(self, first: int, cert: bytes) -> bool:
        """Count one more confirmation of a forward gap to ``first``; True once there are enough."""
        cert_time = (
            self.verifier.certificate_time(cert, self.canister_id)
            if self.verifier is not None
            else (self._gap[1] + 1 if self._gap is not None else 0)
        )
        gap = self._gap
        if gap is not None and gap[0] == first:
            if cert_time > gap[1]:  # a later replica round agrees (a replayed reply does not count)
                gap = (first, cert_time, gap[2] + 1)
        else:
            gap = (first, cert_time, 1)
        self._gap = gap
        return gap[2] >= GAP_CONFIRMATIONS

    def _shares(
        self, batch: PolledBatch, hashes: Mapping[bytes, bytes] | None
    ) -> dict[R, tuple[list[bytes], list[bytes]]]:
        """Each routed recipient's (keys, contents) in batch order; raises unless every one of them is certified."""
        shares, reached = route_shares(self.routes, batch.route_keys, batch.keys, batch.contents, hashes)
        joined = self._joined
        if joined:  # a client whose first message is here no longer waits for it
            for route in reached:
                joined.pop(route, None)
        return shares

    def _probed(self, batch: PolledBatch, *, now: float, wall_ns: int) -> Step[R]:
        """A probe from below ``expected`` answered: resynchronise on proof that the queue went backwards."""
        self._probe = None
        self._cancel_all()
        if not batch.keys or not batch.consecutive:
            return Step()
        try:
            self._verify(batch.cert, batch.tree, wall_ns)
        except CertificateError:
            return Step()
        first = batch.first_nonce
        for nonce, route in enumerate(batch.route_keys, first):
            joined = self._joined.get(route)
            if joined is not None and nonce < joined.nonce:
                log = (
                    f"the message queue of {self.label} went backwards (nonce {nonce} for a client that joined at "
                    f"{joined.nonce}); resynchronising from nonce {first}"
                )
                # Start over as a new poller: the next poll, at the start of the new queue, is delivered.
                self.expected = first
                self.synced = False
                self._idle = False
                self._gap = None
                self._reported = None
                self.wake_at = now
                for entry in self._joined.values():
                    entry.nonce = min(entry.nonce, first)
                return Step(error="poll_resync", log=log)
        if not batch.is_end_of_queue and batch.last_nonce + 1 < self.expected:
            self._probe = batch.last_nonce + 1  # the client's message may lie further on: read on
        return Step()


def route_shares_pure(
    routes: Mapping[bytes, R],
    route_keys: Sequence[bytes],
    keys: Sequence[bytes],
    contents: Sequence[bytes],
    hashes: Mapping[bytes, bytes] | None,
) -> tuple[dict[R, tuple[list[bytes], list[bytes]]], list[bytes]]:
    """Share out the messages ``(route_keys[i], keys[i], contents[i])`` of one batch to their recipients.

    ``routes`` maps a route key to its recipient; a message whose route key has none is left out. The result:
    each recipient's (keys, contents) in batch order, and the route keys that reached a recipient (the first of
    each, in the order of the recipients). Raises :class:`~icws_fast.errors.CertificateError` unless ``hashes``
    (a :meth:`~icws_fast.protocol.certified.BatchVerifier.verify` result; None: no checks) certifies every
    message that reached a recipient, as :func:`~icws_fast.protocol.certified.check_messages` does each share.
    """
    shares: dict[R, tuple[list[bytes], list[bytes]]] = {}
    reached: list[bytes] = []
    for route, key, content in zip(route_keys, keys, contents, strict=True):
        recipient = routes.get(route)
        if recipient is None:
            continue
        share = shares.get(recipient)
        if share is None:
            share = shares[recipient] = ([], [])
            reached.append(route)
        share[0].append(key)
        share[1].append(content)
    if hashes is not None:
        for share_keys, share_contents in shares.values():
            check_messages_pure(hashes, share_keys, share_contents)
    return shares, reached


# The compiled twin (icws_fast/_ext/_wsbatch.pyx: the routing, the content hashes and the shares in one pass
# without the interpreter) takes over unless ICWS_FAST_PURE=1.
route_shares = _ext.twin("_wsbatch", route_shares_pure)


def _certifies(hashes: Mapping[bytes, bytes] | None, key: bytes, nonce: int) -> bool:
    """The witness certifies a message at ``nonce`` (``key``: a message key of the same queue).

    The CDK's witness covers exactly the batch's keys: one that also holds the key before the batch's first
    belongs to a batch cut short at the front on the way, whose missing message the canister still holds.
    """
    if hashes is None or nonce < 0:
        return False
    prefix, _, digits = key.rpartition(b"_")
    return b"%s_%0*d" % (prefix, len(digits), nonce) in hashes


def _reject_name(code: int) -> str:
    try:
        return RejectCode(code).name
    except ValueError:
        return f"reject code {code}"
