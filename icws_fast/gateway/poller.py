"""One poller per canister: the asyncio driver of :class:`icws_fast.protocol.poller.PollState`.

The state machine decides what to poll, what to deliver and how long to wait (its docstring states the
guarantees: at most once, in canister order, nothing skipped; invalid, stale, gapped or reordered batches
never delivered; back-off on transient failures; resynchronisation when the canister's queue moved). This
module runs the polls (``ws_get_messages`` queries, up to ``pipeline_depth`` in flight while the canister
has a backlog), feeds their outcomes back with the time, and does the fan-out of each delivered batch:
verified once by the state machine, encoded once (:func:`icws_fast.gateway.fanout.batch_suffix`), spliced per
client and written with one call per client per batch. Metrics and logs follow the steps it gets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any, Protocol, Unpack

from icws_fast.errors import IcwsError
from icws_fast.gateway import fanout
from icws_fast.gateway.fanout import Recipient
from icws_fast.gateway.metrics import GatewayMetrics
from icws_fast.gateway.tracing import span
from icws_fast.ic.principal import Principal
from icws_fast.protocol.certified import BatchVerifier
from icws_fast.protocol.poller import PollOptions, PollState, Step
from icws_fast.protocol.types import encode_get_messages_args

log = logging.getLogger(__name__)


class PollingAgent(Protocol):
    """What the poller needs from :class:`icws_fast.ic.agent.Agent`."""

    async def query(self, canister_id: Principal, method: str, arg: bytes) -> bytes: ...


def _consume(task: asyncio.Task[bytes]) -> None:
    if not task.cancelled():
        task.exception()


async def _within(timeout_s: float, call: Coroutine[Any, Any, bytes]) -> bytes:
    """``await call``, raising :class:`TimeoutError` after ``timeout_s`` seconds, as ``asyncio.timeout`` does.

    A timer that cancels the current task, rather than ``asyncio.timeout``: its context manager cost about 10 µs
    per poll, this about 2. A cancellation from elsewhere (a poll no longer wanted, the poller stopped) stays a
    cancellation, also when it comes together with the time-out.
    """
    task = asyncio.current_task()
    assert task is not None, "a poll runs in its own task"
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    timer = asyncio.get_running_loop().call_later(timeout_s, expire)
    try:
        return await call
    except asyncio.CancelledError as exc:
        # uncancel() takes back the timer's cancel; 0 then means nobody else asked for one.
        if expired and task.uncancel() == 0:
            # No message, as asyncio.timeout's: the state machine's log line names the poll and the kind.
            raise TimeoutError from exc
        raise
    finally:
        timer.cancel()


class CanisterFailure(IcwsError):
    """The canister answered the poll with a permanent error; the message is the close reason for its clients."""


class CanisterPoller:
    """Polls one canister and delivers each message to the session registered for its client key."""

    def __init__(
        self,
        agent: PollingAgent,
        canister_id: Principal,
        routes: dict[bytes, Recipient],
        *,
        metrics: GatewayMetrics,
        root_key_der: bytes | None,
        interval_s: float,
        poll_timeout_s: float = 5.0,
        **options: Unpack[PollOptions],
    ) -> None:
        """``routes`` is the live map of this canister's clients to their recipients, owned by the gateway; its keys
        are the clients' :func:`~icws_fast.protocol.types.route_key`.

        ``root_key_der`` None skips certificate checks (only for tests of the bare relay). ``options``
        (``pipeline_depth``: the polls in flight while the canister has a backlog, 1 as the Rust gateway;
        back-off, resync and jitter) are :class:`~icws_fast.protocol.poller.PollState`'s.
        """
        self.agent = agent
        self.canister_id = canister_id
        self.routes = routes
        self.metrics = metrics
        self.poll_timeout_s = poll_timeout_s
        verifier = None if root_key_der is None else BatchVerifier(root_key_der)
        self.state: PollState[Recipient] = PollState(canister_id, routes, verifier, interval_s=interval_s, **options)
        self._label = label = canister_id.to_text()
        # This canister's counters, looked up once (labels() takes a lock and a dict look-up per call).
        self._polled = metrics.polled_messages.labels(label)
        self._messages_out = metrics.messages_to_clients.labels(label)
        self._bytes_out = metrics.bytes_to_clients.labels(label)

    @property
    def nonce(self) -> int:
        """The nonce of the next message to deliver."""
        return self.state.expected

    def client_joined(self, route_key: bytes) -> None:
        self.state.client_joined(route_key, time.monotonic())

    def client_left(self, route_key: bytes) -> None:
        self.state.client_left(route_key)

    async def _query(self, nonce: int) -> bytes:
        with span("poll", canister_id=self._label, nonce=nonce):
            query = self.agent.query(self.canister_id, "ws_get_messages", encode_get_messages_args(nonce))
            return await _within(self.poll_timeout_s, query)

    async def run(self) -> None:
        """Poll until cancelled; raises :class:`CanisterFailure` when the canister fails for good.

        The outcomes are fed back strictly in the order the state machine issued the polls; a poll it no
        longer wants (a speculative one whose nonce turned out wrong) is cancelled.
        """
        state = self.state
        tasks: dict[int, tuple[float, asyncio.Task[bytes]]] = {}  # nonce -> (start, query)
        try:
            while True:
                now = time.monotonic()
                for nonce in state.polls(now):
                    tasks[nonce] = (now, asyncio.create_task(self._query(nonce)))
                if not state.in_flight:
                    await asyncio.sleep(max(0.0, state.wake_at - now))
                    continue
                nonce = state.in_flight[0]
                started, task = tasks.pop(nonce)
                try:
                    reply = await task
                except (IcwsError, TimeoutError) as exc:
                    step = state.on_error(nonce, exc, time.monotonic())
                else:
                    done = time.monotonic()
                    self.metrics.poller_duration.observe(done - started)
                    with span("poll_reply", canister_id=self._label) as reply_span:
                        step = state.on_reply(nonce, reply, done, time.time_ns())
                        reply_span.set_attribute("messages", step.polled)
                for stale in [n for n in tasks if n not in state.in_flight]:
                    self._cancel(tasks.pop(stale)[1])
                self._apply(step)
                if step.shares:
                    # The next result may be ready already; let the loop write to clients and read their
                    # frames between two batches rather than after the whole backlog.
                    await asyncio.sleep(0)
        finally:
            for _, task in tasks.values():
                self._cancel(task)

    @staticmethod
    def _cancel(task: asyncio.Task[bytes]) -> None:
        task.cancel()
        # A cancelled poll may still finish with an error nobody awaits; reading it keeps asyncio quiet.
        task.add_done_callback(_consume)

    def _apply(self, step: Step[Recipient]) -> None:
        metrics = self.metrics
        if step.error is not None:
            metrics.errors.labels(step.error).inc()
        for reason, count in step.dropped.items():
            metrics.dropped_messages.labels(reason).inc(count)
        if step.log is not None:
            log.warning("%s", step.log)
        if step.close is not None:
            raise CanisterFailure(step.close)
        if step.polled:
            self._polled.inc(step.polled)
        if step.shares:
            self._deliver(step)

    def _deliver(self, step: Step[Recipient]) -> None:
        sent, sent_bytes = fanout.deliver_shares(step.shares, fanout.batch_suffix(step.cert, step.tree))
        # Once per batch, not per recipient.
        self._messages_out.inc(sent)
        self._bytes_out.inc(sent_bytes)
