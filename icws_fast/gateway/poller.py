"""One poller per canister: ``ws_get_messages`` in a loop, each batch checked once and fanned out.

Nonce discipline (what makes "nothing lost, nothing repeated" hold): the poller asks for the
messages from ``nonce`` on and moves ``nonce`` past the last message of a batch only after the
batch has been handed to the sessions. A timeout, a transport error or an unreadable reply
re-polls with the same nonce, so the canister returns the same messages again and none is
skipped; a message is never handed out twice because the nonce only grows. The first batch
after start may begin anywhere (the canister may have dropped acknowledged messages), as
in the Rust gateway; later batches must continue where the previous one ended.

Each batch is verified once (:class:`~icws_fast.protocol.certified.BatchVerifier`, the verifier
the client uses too): the certificate against the IC root key for this canister, the witness
tree against the canister's certified data in it, and each message's content hash against the
tree. A batch whose certificate or tree fails is dropped (and counted) instead of relayed: a
client would reject it anyway, and the gateway must not relay what it cannot vouch for. The
nonce still moves past it, or the poller would fetch it forever.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Protocol

from icws_fast.errors import (
    AgentError,
    AgentTimeout,
    CertificateError,
    IcwsError,
    ProtocolDecodeError,
    ProtocolError,
    RejectError,
)
from icws_fast.gateway import fanout
from icws_fast.gateway.metrics import GatewayMetrics
from icws_fast.gateway.tracing import span
from icws_fast.ic.principal import Principal
from icws_fast.protocol.certified import BatchVerifier, check_message
from icws_fast.protocol.types import (
    CanisterOutputMessage,
    ClientKey,
    decode_get_messages_result,
    encode_get_messages_args,
    parse_message_nonce,
)

log = logging.getLogger(__name__)


class PollingAgent(Protocol):
    """What the poller needs from :class:`icws_fast.ic.agent.Agent`."""

    async def query(self, canister_id: Principal, method: str, arg: bytes) -> bytes: ...


class Recipient(Protocol):
    """A client connection the poller delivers to."""

    def deliver(self, frames: bytes, count: int) -> None:
        """Send ``count`` CanisterToClientMessages, its share of one batch, as WebSocket frames (never blocks).

        ``frames`` are complete binary frames (:func:`icws_fast.gateway.fanout.encode_frames`), written to the
        socket as they are. A recipient gets one call per batch, and judges there whether its client keeps
        up (the backlog left from the earlier batches), since one batch may legitimately be larger than any
        per-client limit.
        """


def _consume(task: asyncio.Task[bytes]) -> None:
    if not task.cancelled():
        task.exception()


class CanisterFailure(IcwsError):
    """The canister answered the poll with an error: its clients cannot be served any more."""


class CanisterPoller:
    """Polls one canister and delivers each message to the session registered for its client key."""

    def __init__(
        self,
        agent: PollingAgent,
        canister_id: Principal,
        routes: dict[ClientKey, Recipient],
        *,
        metrics: GatewayMetrics,
        root_key_der: bytes | None,
        interval_s: float,
        poll_timeout_s: float = 5.0,
        max_backoff_s: float = 5.0,
        pipeline_depth: int = 1,
        start_nonce: int = 0,
    ) -> None:
        """``routes`` is the live client-key -> recipient map of this canister, owned by the gateway.

        ``root_key_der`` None skips certificate checks (only for tests of the bare relay).
        ``pipeline_depth`` bounds the polls in flight while the canister has a backlog (1: one at a time,
        as the Rust gateway polls).
        """
        self.agent = agent
        self.canister_id = canister_id
        self.routes = routes
        self.metrics = metrics
        self.verifier = None if root_key_der is None else BatchVerifier(root_key_der)
        self.interval_s = interval_s
        self.poll_timeout_s = poll_timeout_s
        self.max_backoff_s = max_backoff_s
        self.pipeline_depth = max(1, pipeline_depth)
        self.nonce = start_nonce
        self._first_batch = True
        self._label = canister_id.to_text()

    async def _query(self, nonce: int) -> bytes:
        with span("poll", canister_id=self._label, nonce=nonce):
            async with asyncio.timeout(self.poll_timeout_s):
                return await self.agent.query(self.canister_id, "ws_get_messages", encode_get_messages_args(nonce))

    async def run(self) -> None:
        """Poll until cancelled; raises :class:`CanisterFailure` when the canister answers with an error.

        While the canister's queue has a backlog (a poll came back full), up to ``pipeline_depth``
        polls are in flight, for the nonces the following batches will start at, so the replica's
        round trip is not paid once per batch. Results are consumed strictly in nonce order, and a
        speculative poll whose nonce is not where the previous batch actually ended is dropped
        (with everything after it) and the poll is re-issued at the right nonce.
        """
        loop = asyncio.get_running_loop()
        backoff = 0.0
        stride = 0  # the size of the last full batch; 0 while there is no backlog to speculate on
        in_flight: collections.deque[tuple[int, float, asyncio.Task[bytes]]] = collections.deque()
        try:
            while True:
                if in_flight and in_flight[0][0] != self.nonce:
                    self._cancel(in_flight)
                if not in_flight:
                    in_flight.append((self.nonce, loop.time(), loop.create_task(self._query(self.nonce))))
                while stride and len(in_flight) < self.pipeline_depth:
                    nonce = in_flight[-1][0] + stride
                    in_flight.append((nonce, loop.time(), loop.create_task(self._query(nonce))))
                _, started, task = in_flight[0]
                try:
                    reply = await task
                except (TimeoutError, AgentTimeout):
                    # As the Rust gateway: a timed-out poll is repeated at once with the same nonce.
                    self.metrics.errors.labels("poll_timeout").inc()
                    self._cancel(in_flight)
                    stride = 0
                    continue
                except RejectError as exc:
                    raise CanisterFailure(f"canister rejected ws_get_messages: {exc.reject_message}") from exc
                except AgentError as exc:
                    self._cancel(in_flight)
                    stride = 0
                    backoff = min(self.max_backoff_s, max(self.interval_s, backoff * 2))
                    self.metrics.errors.labels("poll_transport").inc()
                    log.warning("polling %s failed (%s); retrying in %.2fs", self._label, exc, backoff)
                    await asyncio.sleep(backoff)
                    continue
                in_flight.popleft()
                self.metrics.poller_duration.observe(loop.time() - started)
                try:
                    with span("poll_reply", canister_id=self._label) as reply_span:
                        end_of_queue, count = self._handle_reply(reply)
                        reply_span.set_attribute("messages", count)
                except ProtocolDecodeError as exc:
                    self._cancel(in_flight)
                    stride = 0
                    backoff = min(self.max_backoff_s, max(self.interval_s, backoff * 2))
                    self.metrics.errors.labels("poll_decode").inc()
                    log.warning("undecodable ws_get_messages reply from %s (%s); retrying", self._label, exc)
                    await asyncio.sleep(backoff)
                    continue
                backoff = 0.0
                if not end_of_queue:
                    stride = count
                    # The next result may be ready already; let the loop write to clients and read their
                    # frames between two batches rather than after the whole backlog.
                    await asyncio.sleep(0)
                    continue
                self._cancel(in_flight)
                stride = 0
                await asyncio.sleep(max(0.0, self.interval_s - (loop.time() - started)))
        finally:
            self._cancel(in_flight)

    @staticmethod
    def _cancel(in_flight: collections.deque[tuple[int, float, asyncio.Task[bytes]]]) -> None:
        """Drop the polls in flight; their results, if any arrive, are no longer wanted."""
        for _, _, task in in_flight:
            task.cancel()
            # A cancelled poll may still finish with an error nobody awaits; reading it keeps asyncio quiet.
            task.add_done_callback(_consume)
        in_flight.clear()

    def _handle_reply(self, reply: bytes) -> tuple[bool, int]:
        """Deliver one poll's messages; returns whether the canister's queue is drained, and how many came."""
        try:
            batch = decode_get_messages_result(reply)
        except ProtocolDecodeError:
            raise
        except ProtocolError as exc:
            raise CanisterFailure(str(exc)) from exc
        messages = batch.messages
        if not messages:
            return batch.is_end_of_queue, 0
        nonces = [parse_message_nonce(m.key) for m in messages]
        if any(b != a + 1 for a, b in itertools.pairwise(nonces)) or (
            not self._first_batch and nonces[0] != self.nonce
        ):
            self.metrics.errors.labels("poll_nonce_gap").inc()
            log.warning("%s returned non-consecutive message nonces %d..%d", self._label, nonces[0], nonces[-1])
        self.metrics.polled_messages.labels(self._label).inc(len(messages))
        self._deliver(messages, batch.cert, batch.tree)
        self._first_batch = False
        self.nonce = nonces[-1] + 1
        return batch.is_end_of_queue, len(messages)

    def _deliver(self, messages: Sequence[CanisterOutputMessage], cert: bytes, tree: bytes) -> None:
        hashes: Mapping[bytes, bytes] | None = None
        if self.verifier is not None:
            try:
                hashes = self.verifier.verify(cert, tree, self.canister_id, time.time_ns())
            except CertificateError as exc:
                self.metrics.dropped_messages.labels("invalid_certificate").inc()
                log.error("dropping a batch from %s: %s", self._label, exc)
                return
        routes = self.routes
        # Each recipient's (keys, contents), in batch order: one encode and one write per client per batch.
        shares: dict[Recipient, tuple[list[bytes], list[bytes]]] = {}
        for message in messages:
            recipient = routes.get(message.client_key)
            if recipient is None:
                self.metrics.dropped_messages.labels("unknown_client").inc()
                continue
            label = message.key.encode()
            content = message.content
            if hashes is not None:
                try:
                    check_message(hashes, label, content)
                except CertificateError:
                    self.metrics.dropped_messages.labels("invalid_certificate").inc()
                    continue
            share = shares.get(recipient)
            if share is None:
                share = shares[recipient] = ([], [])
            share[0].append(label)
            share[1].append(content)
        if not shares:
            return
        suffix = fanout.batch_suffix(cert, tree)
        sent = 0
        sent_bytes = 0
        for recipient, (keys, contents) in shares.items():
            frames = fanout.encode_frames(keys, contents, suffix)
            recipient.deliver(frames, len(keys))
            sent += len(keys)
            sent_bytes += len(frames)
        self.metrics.messages_to_clients.labels(self._label).inc(sent)
        self.metrics.bytes_to_clients.labels(self._label).inc(sent_bytes)
