"""The poller's state machine on batches signed as the IC signs them: every guarantee of its docstring.

A model canister queue (:class:`Queue`) answers polls honestly or through a fault (tampered certificate or
content, stale replay, reordered, gapped, empty but "not end of queue", transport and reject errors). The
recipients are the client keys themselves, so a delivery is checked against the queue message by message.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icws_fast.errors import AgentTimeout, HttpStatusError, RejectCode, RejectError, TransportError
from icws_fast.ic import bls, cbor, hashtree
from icws_fast.ic.certificate import sign_certificate
from icws_fast.ic.principal import Principal
from icws_fast.ic.request_id import leb128
from icws_fast.protocol.certified import BatchVerifier
from icws_fast.protocol.poller import GAP_CONFIRMATIONS, MAX_CLOSE_REASON_BYTES, PollState, Step
from icws_fast.protocol.types import (
    CanisterOutputCertifiedMessages,
    CanisterOutputMessage,
    ClientKey,
    encode_get_messages_result,
    message_key,
    parse_message_nonce,
    route_key,
)

NS = 1_000_000_000
NOW_NS = 1_700_000_000 * NS
ROOT_SK = bls.generate_secret_key(b"poller-root")
ROOT_DER = bls.der_encode_public_key(bls.public_key(ROOT_SK))
OTHER_SK = bls.generate_secret_key(b"poller-other-root")
CANISTER = Principal.from_text("bnz7o-iuaaa-aaaaa-qaaaa-cai")
GATEWAY = Principal.from_text("bkyz2-fmaaa-aaaaa-qaaaq-cai")
CLIENTS = [ClientKey(Principal.self_authenticating(bytes([i]) * 32), i) for i in range(3)]
INTERVAL = 0.1
MAX_BATCH = 4


class Queue:
    """A canister's certified outgoing queue for one gateway: ``messages[n]`` has nonce ``base + n``."""

    def __init__(self, count: int, *, base: int = 0, clients: list[ClientKey] = CLIENTS, tag: bytes = b"") -> None:
        self.base = base
        self.messages = [
            CanisterOutputMessage(
                clients[n % len(clients)], message_key(GATEWAY, base + n), tag + b"message %d" % (base + n)
            )
            for n in range(count)
        ]
        mapping = {b"websocket": {m.key.encode(): hashlib.sha256(m.content).digest() for m in self.messages}}
        self.mapping = mapping
        root = hashtree.reconstruct(hashtree.build(mapping))
        self.round = 0
        # One certificate per replica round (the same certified data, a later time), and one a forger signed.
        self.certs = [self._signed(root, NOW_NS - 60 * NS + r * NS, ROOT_SK) for r in range(12)]
        self.forged = self._signed(root, NOW_NS, OTHER_SK)

    @staticmethod
    def _signed(certified_data: bytes, time_ns: int, sk: bytes) -> bytes:
        state = {b"time": leb128(time_ns), b"canister": {CANISTER.bytes: {b"certified_data": certified_data}}}
        return sign_certificate(hashtree.build(state), sk)

    def window(self, nonce: int) -> tuple[list[CanisterOutputMessage], bool]:
        """The messages an honest ``ws_get_messages(nonce)`` returns (as the CDK: from the queue's start at least)."""
        start = min(max(nonce - self.base, 0), len(self.messages))
        end = min(start + MAX_BATCH, len(self.messages))
        return self.messages[start:end], end == len(self.messages)

    def reply(
        self,
        messages: list[CanisterOutputMessage],
        end: bool,
        *,
        cert: bytes | None = None,
        witness: list[CanisterOutputMessage] | None = None,
    ) -> bytes:
        """A reply with ``messages``, certified by ``cert`` and a witness of ``witness`` (default: the messages)."""
        if not messages:
            return encode_get_messages_result(CanisterOutputCertifiedMessages([], b"", b"", end))
        if cert is None:
            cert = self.certs[min(self.round, len(self.certs) - 1)]
            self.round += 1
        covered = messages if witness is None else witness
        tree = cbor.encode(hashtree.witness(self.mapping, [[b"websocket", m.key.encode()] for m in covered]))
        return encode_get_messages_result(CanisterOutputCertifiedMessages(messages, cert, tree, end))

    def honest(self, nonce: int) -> bytes:
        return self.reply(*self.window(nonce))


class Harness:
    """A PollState with the clients as recipients, fed by a function of the polled nonce; records deliveries."""

    def __init__(self, *, joined: list[ClientKey] = CLIENTS, pipeline_depth: int = 1, seed: int = 0) -> None:
        self.routes = {route_key(key): key for key in joined}
        self.state: PollState[ClientKey] = PollState(
            CANISTER,
            self.routes,
            BatchVerifier(ROOT_DER),
            interval_s=INTERVAL,
            max_backoff_s=1.0,
            pipeline_depth=pipeline_depth,
            resync_after_s=1.0,
            rng=random.Random(seed),
        )
        self.now = 0.0
        self.delivered: dict[ClientKey, list[int]] = {key: [] for key in CLIENTS}
        self.steps: list[Step[ClientKey]] = []
        for key in joined:
            self.state.client_joined(route_key(key), self.now)

    def step(self, answer: Callable[[int], bytes | Exception]) -> Step[ClientKey] | None:
        """Advance the clock to the next poll if idle, issue the polls, answer the oldest one."""
        state = self.state
        if not state.in_flight:
            self.now = max(self.now, state.wake_at)
        state.polls(self.now)
        if not state.in_flight:
            return None
        nonce = state.in_flight[0]
        outcome = answer(nonce)
        if isinstance(outcome, Exception):
            step = state.on_error(nonce, outcome, self.now)
        else:
            step = state.on_reply(nonce, outcome, self.now, NOW_NS)
        for recipient, (keys, _contents) in step.shares.items():
            self.delivered[recipient].extend(parse_message_nonce(k.decode()) for k in keys)
        self.steps.append(step)
        return step

    def expected_deliveries(self, queue: Queue, up_to: int) -> dict[ClientKey, list[int]]:
        want: dict[ClientKey, list[int]] = {key: [] for key in CLIENTS}
        for n, message in enumerate(queue.messages):
            if queue.base + n < up_to and route_key(message.client_key) in self.routes:
                want[message.client_key].append(queue.base + n)
        return want


def drain(h: Harness, queue: Queue, steps: int = 50) -> None:
    for _ in range(steps):
        h.step(queue.honest)


# -- unit tests ------------------------------------------------------------------------------------------------


def test_honest_polls_deliver_everything_once_in_order() -> None:
    queue = Queue(10)
    h = Harness()
    drain(h, queue)
    assert h.state.expected == 10
    assert h.delivered == h.expected_deliveries(queue, 10)
    # One write per client per batch: a recipient appears once in a step's shares.
    assert all(len(keys) == len(set(keys)) for s in h.steps for keys, _ in s.shares.values())


def test_an_invalid_batch_is_polled_again_counted_and_logged_once() -> None:
    queue = Queue(3)
    h = Harness()
    forged = queue.reply(*queue.window(0), cert=queue.forged)
    steps = [h.step(lambda _n: forged) for _ in range(3)]
    assert all(s is not None and not s.shares and s.error == "poll_invalid_batch" for s in steps)
    assert [s.log is not None for s in steps if s] == [True, False, False]
    assert steps[0] is not None and steps[0].dropped == {"invalid_certificate": 3}
    assert "0..2" in (steps[0].log or "") and CANISTER.to_text() in (steps[0].log or "")
    assert h.state.expected == 0  # not skipped
    drain(h, queue)
    assert h.delivered == h.expected_deliveries(queue, 3)


def test_tampered_content_is_never_delivered() -> None:
    queue = Queue(3)
    messages, end = queue.window(0)
    tampered = [messages[0]._replace(content=b"forged"), *messages[1:]]
    h = Harness()
    step = h.step(lambda _n: queue.reply(tampered, end))
    assert step is not None and not step.shares and step.error == "poll_invalid_batch"
    drain(h, queue)
    assert h.delivered == h.expected_deliveries(queue, 3)


def test_back_off_is_capped_and_jittered_from_the_rng() -> None:
    waits = []
    for seed in (1, 1, 2):
        h = Harness(seed=seed)
        delays = []
        for _ in range(8):
            h.step(lambda _n: TransportError("connection refused"))
            delays.append(h.state.wake_at - h.now)
        waits.append(delays)
    assert waits[0] == waits[1] != waits[2]  # deterministic for a seed
    for delays in waits:
        assert all(d >= 0.5 * INTERVAL for d in delays) and max(delays) <= 1.0
        assert delays[-1] >= 0.5  # grown to the cap's range


@pytest.mark.parametrize(
    "error",
    [
        TransportError("reset"),
        AgentTimeout("slow"),
        TimeoutError(),
        HttpStatusError(503, "overloaded"),
        HttpStatusError(429, "slow down"),
        RejectError(RejectCode.SYS_TRANSIENT, "busy"),
        RejectError(RejectCode.SYS_UNKNOWN, "unknown"),
        # A stopped (upgrading), frozen or trapping canister: a state it leaves again.
        RejectError(RejectCode.CANISTER_ERROR, "Canister is stopped", "IC0508"),
    ],
)
def test_transient_failures_retry_the_same_nonce(error: Exception) -> None:
    queue = Queue(2)
    h = Harness()
    step = h.step(lambda _n: error)
    assert step is not None and step.close is None and step.error is not None and step.error.startswith("poll_")
    assert h.state.wake_at > h.now
    drain(h, queue)
    assert h.delivered == h.expected_deliveries(queue, 2)


@pytest.mark.parametrize(
    "code",
    [RejectCode.DESTINATION_INVALID, RejectCode.SYS_FATAL, RejectCode.CANISTER_REJECT],
)
def test_a_permanent_reject_ends_the_sessions_with_a_short_reason(code: RejectCode) -> None:
    h = Harness()
    step = h.step(lambda _n: RejectError(code, "Canister " + "x" * 300 + " not found", "IC0301"))
    assert step is not None and step.close is not None
    assert code.name in step.close and CANISTER.to_text() in step.close
    assert len(step.close.encode()) <= MAX_CLOSE_REASON_BYTES
    assert not h.state.in_flight


def test_a_canister_error_closes_the_sessions_only_when_it_outlasts_the_grace() -> None:
    # A canister stopped for an upgrade answers CANISTER_ERROR for a while, then serves again: no close.
    h = Harness()
    h.state.canister_error_grace_s = 10.0
    stopped = RejectError(RejectCode.CANISTER_ERROR, "Canister is stopped", "IC0508")
    for _ in range(5):
        step = h.step(lambda _n: stopped)
        assert step is not None and step.close is None
        h.now = max(h.now + 1.0, h.state.wake_at)
    queue = Queue(2)
    drain(h, queue)
    assert h.delivered == h.expected_deliveries(queue, 2)
    # One that keeps failing past the grace (counted from the first error in a row) closes with a reason.
    h = Harness()
    h.state.canister_error_grace_s = 10.0
    closes = []
    for _ in range(40):
        step = h.step(lambda _n: RejectError(RejectCode.CANISTER_ERROR, "trapped: broken", "IC0503"))
        if step is not None and step.close is not None:
            closes.append(step.close)
            break
        h.now = max(h.now + 1.0, h.state.wake_at)
    assert closes and "CANISTER_ERROR" in closes[0] and CANISTER.to_text() in closes[0]
    assert len(closes[0].encode()) <= MAX_CLOSE_REASON_BYTES
    assert h.now >= 10.0


def test_an_err_reply_ends_the_sessions() -> None:
    from icws_fast.ic import candid

    err = candid.encode(
        candid.parse_args(
            "(variant { Ok : record { messages : vec record { client_key : record { client_principal : principal;"
            " client_nonce : nat64 }; key : text; content : blob }; cert : blob; tree : blob;"
            " is_end_of_queue : bool }; Err : text })"
        ),
        [{"Err": "caller is not a gateway"}],
    )
    step = Harness().step(lambda _n: err)
    assert step is not None and step.close is not None and "caller is not a gateway" in step.close


def test_an_empty_reply_ends_the_queue_even_if_not_marked() -> None:
    queue = Queue(0)
    h = Harness()
    empty_not_end = queue.reply([], False)
    starts = []
    for _ in range(5):
        h.step(lambda _n: empty_not_end)
        starts.append(h.state.wake_at)
    # One poll per interval, not a storm.
    assert all(b - a == pytest.approx(INTERVAL) for a, b in itertools.pairwise(starts))


def test_stale_reordered_and_gapped_batches_are_never_delivered() -> None:
    queue = Queue(8)
    h = Harness()
    h.step(queue.honest)  # 0..3
    assert h.state.expected == 4
    stale = queue.reply(*queue.window(0))
    messages, end = queue.window(4)
    reordered = queue.reply(messages[::-1], end)
    gapped = queue.reply(messages[1:], end, witness=messages)  # cut on the way: the witness still certifies 4
    for reply, kind in [(stale, "poll_stale_batch"), (reordered, "poll_nonce_gap")] + [(gapped, "poll_nonce_gap")] * (
        GAP_CONFIRMATIONS + 2
    ):
        step = h.step(lambda _n, r=reply: r)
        assert step is not None and not step.shares and step.error == kind
        assert h.state.expected == 4
    drain(h, queue)
    assert h.delivered == h.expected_deliveries(queue, 8)


def test_a_forward_gap_is_accepted_once_later_rounds_confirm_it() -> None:
    old = Queue(4)
    h = Harness()
    drain(h, old)
    assert h.state.expected == 4
    # The canister dropped 4..5 before they were polled (a long outage): its queue now starts at 6.
    pruned = Queue(4, base=6)
    steps = [h.step(pruned.honest) for _ in range(GAP_CONFIRMATIONS)]
    assert [bool(s and s.shares) for s in steps] == [False] * (GAP_CONFIRMATIONS - 1) + [True]
    assert steps[-1] is not None and steps[-1].dropped.get("gap") == 2
    # The same reply replayed never confirms: it carries one certificate.
    h2 = Harness()
    drain(h2, old)
    replayed = pruned.honest(4)
    assert not any((h2.step(lambda _n: replayed) or Step()).shares for _ in range(GAP_CONFIRMATIONS + 2))


def test_speculative_polls_while_there_is_a_backlog() -> None:
    queue = Queue(40)
    h = Harness(pipeline_depth=3)
    h.state.polls(0.0)
    h.step(queue.honest)  # a full batch: speculate on the next ones
    assert h.state.polls(h.now) == [4, 8, 12]
    drain(h, queue)
    assert h.delivered == h.expected_deliveries(queue, 40)


def test_a_queue_that_went_backwards_is_resynchronised_for_new_clients() -> None:
    old = Queue(12)
    h = Harness(joined=CLIENTS[:2])
    drain(h, old)
    assert h.state.expected == 12
    # Reinstalled: a new queue from 0; the newcomer's open message sits at nonce 1, below the poller's 12.
    newcomer = CLIENTS[2]
    new = Queue(3, clients=[CLIENTS[0], newcomer], tag=b"new ")
    h.routes[route_key(newcomer)] = newcomer
    h.state.client_joined(route_key(newcomer), h.now)
    resyncs = []
    for _ in range(40):
        step = h.step(new.honest)
        if step is not None and step.error == "poll_resync":
            resyncs.append(step)
    assert len(resyncs) == 1 and "went backwards" in (resyncs[0].log or "")
    assert h.delivered[newcomer] == [1]
    assert h.state.expected == 3


def test_a_probe_that_proves_nothing_changes_nothing() -> None:
    queue = Queue(6, clients=CLIENTS[:2])
    h = Harness(joined=CLIENTS[:2])
    drain(h, queue)
    # A client whose ws_open never reached the canister: one probe, no resync, no probe storm.
    h.state.client_joined(route_key(CLIENTS[2]), h.now)
    polled = []
    for _ in range(40):
        h.step(lambda n: (polled.append(n), queue.honest(n))[1])
    assert polled.count(0) == 1
    assert h.state.expected == 6 and all(s.error != "poll_resync" for s in h.steps)


# -- random interleavings ---------------------------------------------------------------------------------------

FAULTS = ["honest", "forged", "content", "stale", "reordered", "gapped", "empty", "error", "reject"]


@settings(max_examples=60, deadline=None)
@given(
    faults=st.lists(st.sampled_from(FAULTS), max_size=40),
    depth=st.integers(1, 3),
    growth=st.lists(st.integers(0, 3), min_size=40, max_size=40),
)
def test_random_faults_never_lose_repeat_or_reorder(faults: list[str], depth: int, growth: list[int]) -> None:
    full = Queue(30)
    h = Harness(pipeline_depth=depth)
    visible = 2  # the canister queues more as the run goes on
    seen: list[bytes] = []

    def answer_with(fault: str) -> Callable[[int], bytes | Exception]:
        def answer(nonce: int) -> bytes | Exception:
            queue = full
            start = min(nonce, visible)
            messages = queue.messages[start : min(start + MAX_BATCH, visible)]
            end = start + len(messages) == visible
            if fault == "forged" and messages:
                return queue.reply(messages, end, cert=queue.forged)
            if fault == "content" and messages:
                return queue.reply([messages[0]._replace(content=b"x"), *messages[1:]], end)
            if fault == "stale" and seen:
                return seen[0]
            if fault == "reordered" and len(messages) > 1:
                return queue.reply(messages[::-1], end)
            if fault == "gapped" and len(messages) > 1:
                # Cut short on the way: the witness still certifies the first message.
                return queue.reply(messages[1:], end, witness=messages)
            if fault == "empty":
                return queue.reply([], False)
            if fault == "error":
                return TransportError("cut")
            if fault == "reject":
                return RejectError(RejectCode.SYS_TRANSIENT, "busy")
            reply = queue.reply(messages, end)
            if messages:
                seen.append(reply)
            return reply

        return answer

    for fault, more in zip(faults, growth, strict=False):
        visible = min(len(full.messages), visible + more)
        step = h.step(answer_with(fault))
        assert step is None or step.close is None
        for recipient, nonces in h.delivered.items():
            # Never twice, never out of order, never skipping: a prefix of the client's messages.
            assert nonces == h.expected_deliveries(full, h.state.expected)[recipient]
    visible = len(full.messages)
    for _ in range(60):
        h.step(answer_with("honest"))
    assert h.delivered == h.expected_deliveries(full, len(full.messages))


def test_a_poller_restarted_over_an_old_queue_serves_only_its_clients() -> None:
    # The canister's poll stopped when its last client left; a new poller starts over at 0 (as a new one does)
    # and walks the old messages without handing any to the one client it has now.
    queue = Queue(12)
    h = Harness(joined=CLIENTS[:1])
    drain(h, queue)
    assert h.state.expected == 12
    assert h.delivered == {CLIENTS[0]: list(range(0, 12, 3)), CLIENTS[1]: [], CLIENTS[2]: []}
    dropped = sum(s.dropped.get("unknown_client", 0) for s in h.steps)
    assert dropped == 8


_HONEST = Queue(6).honest(0)


@settings(max_examples=200, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=200),
        st.tuples(st.integers(0, len(_HONEST) - 1), st.integers(1, 255)).map(
            lambda flip: _HONEST[: flip[0]] + bytes([_HONEST[flip[0]] ^ flip[1]]) + _HONEST[flip[0] + 1 :]
        ),
    ),
    synced=st.booleans(),
)
def test_hostile_reply_bytes_get_a_step_never_an_exception(data: bytes, synced: bool) -> None:
    h = Harness()
    if synced:
        h.state.expected, h.state.synced = 2, True
    step = h.step(lambda _n: data)
    assert step is not None
    assert step.close is None or len(step.close.encode()) <= MAX_CLOSE_REASON_BYTES
    if step.error is not None:
        assert not step.shares and h.state.expected == (2 if synced else 0)  # nothing delivered, nothing skipped
