"""The gateway: picows WebSocket server, per-canister pollers, relays to the IC, drain.

Threading model: everything runs on one event loop (uvloop when available). A connection
is a :class:`ClientConnection` (a picows listener) driving a sans-IO
:class:`~icws_fast.protocol.session.GatewaySession`; frames are handled in the picows
callback without a task. A connection gets at most one task, and only while it has
envelopes to relay (they must reach the IC one at a time, in order) and a call slot to relay
them with: until then it waits as an entry in the gateway's queue of calls. Canister messages are
written straight into the client's transport by the canister's poller; the transport's
write buffer is the per-client send queue, and a client whose buffer grows past
``max_send_buffer`` is closed as a slow consumer instead of growing the gateway's memory. A
connection owns no timer and, while idle, no task: one sweep over all connections closes those whose
``ws_open`` is late and pings the silent ones.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Coroutine, Iterable
from typing import Any

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

from icws_fast.errors import AgentError, IcwsError
from icws_fast.gateway.config import POLL_CONNECTIONS, GatewayConfig
from icws_fast.gateway.fanout import Recipient
from icws_fast.gateway.forwarded import client_address
from icws_fast.gateway.metrics import GatewayMetrics, HealthServer
from icws_fast.gateway.poller import CanisterFailure, CanisterPoller
from icws_fast.gateway.slots import CallSlots
from icws_fast.gateway.tracing import NO_SPAN, TraceSpan, span, span_context, start_span
from icws_fast.ic.agent import Agent
from icws_fast.ic.identity import Identity
from icws_fast.ic.principal import Principal
from icws_fast.protocol import session as proto
from icws_fast.protocol.relay import RelayOutcome, relay_outcome
from icws_fast.protocol.retry import Retry
from icws_fast.protocol.types import ClientKey, decode_unit_result, encode_ws_close_args, route_key, truncate_reason

log = logging.getLogger(__name__)
# Connections the timer sweep visits between two yields to the loop (~1 ms of work).
_SWEEP_SLICE = 2000
# Looked up once: deliver() compares every recipient's session state with it, once per batch.
_CLOSED = proto.SessionState.CLOSED


class ClientConnection(WSListener):
    """One client WebSocket: feeds frames to its session and carries out the session's actions.

    A gateway holds thousands of idle connections, so one costs as little as it can: slots, no per-connection
    dict, no timer, and what only some connections need (the relay queue and its task, a tracing span) made
    when needed and dropped when done.
    """

    __slots__ = (
        "_close_code",
        "_close_reason",
        "_counted",
        "_opened",
        "_pinged_at",
        "_relay_task",
        "_relays",
        "_waiting",
        "connected_at",
        "gateway",
        "last_heard",
        "peer_ip",
        "session",
        "trace_span",
        "transport",
    )

    def __init__(self, gateway: Gateway) -> None:
        super().__init__()
        self.gateway = gateway
        self.peer_ip = ""
        self.transport: WSTransport | None = None
        self.session: proto.GatewaySession | None = None
        self.connected_at = 0.0
        # Loop time of the last frame from the client, and of the ping sent since (None: none unanswered).
        self.last_heard = 0.0
        self._pinged_at: float | None = None
        self._opened = False
        self._counted = False
        # Envelopes waiting to be relayed (a list: there is seldom more than one, and a deque costs 600 bytes), and
        # the task relaying them; None while there are none. Until a call slot is free there is no task: the
        # connection waits in the gateway's queue of calls (_waiting).
        self._relays: list[proto.Relay] | None = None
        self._relay_task: asyncio.Task[None] | None = None
        self._waiting = False
        self.trace_span: TraceSpan = NO_SPAN
        # How the session ended, for its one log line: the first close frame sent or received.
        self._close_code: int | None = None
        self._close_reason = ""

    # picows callbacks -------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        gw = self.gateway
        self.transport = transport
        self.connected_at = self.last_heard = gw.loop.time()
        refusal = gw.admit(self)
        # picows keeps the upgrade's request and response for the connection's life; their headers (2 KiB a
        # connection from a bare client, more from a browser) are read by nothing after admit().
        transport.request.headers.clear()
        transport.response.headers.clear()
        if refusal is not None:
            gw.metrics.errors.labels("connection_refused").inc()
            self._send_close(proto.CLOSE_TRY_AGAIN_LATER, refusal)
            return
        self._counted = True
        self.trace_span = start_span("client_session")
        gw.metrics.clients_connected.inc()
        self.session = proto.GatewaySession(
            gw.principal,
            now=self.connected_at,
            open_timeout_s=gw.config.open_timeout_s,
            allowed_canisters=gw.config.allowed_canisters,
        )
        self._apply(self.session.handshake())

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        session = self.session
        if session is None:
            return
        self.last_heard = self.gateway.loop.time()
        msg_type = frame.msg_type
        if msg_type is WSMsgType.BINARY and frame.fin:
            self._apply(session.receive(frame.get_payload_as_bytes(), now_ns=time.time_ns()))
        elif msg_type is WSMsgType.TEXT and frame.fin:
            self._apply(session.receive(b"", binary=False))
        elif msg_type is WSMsgType.CLOSE:
            # Answer the client's close handshake, then let the transport go.
            if self._close_code is None:
                self._close_code = frame.get_close_code().value
                self._close_reason = (frame.get_close_message() or b"").decode("utf-8", "replace")
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code())
            transport.disconnect()
        elif msg_type is WSMsgType.PING:
            # Answered here rather than by picows, which would not show it: a client that pings is not silent.
            transport.send_pong(frame.get_payload_as_bytes())
        elif msg_type in (WSMsgType.BINARY, WSMsgType.TEXT, WSMsgType.CONTINUATION):
            self._apply(session.close(proto.CLOSE_UNSUPPORTED_DATA, "fragmented messages are not supported"))
        # A PONG needs nothing beyond last_heard.

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        gw = self.gateway
        if self._relays:
            # What is not yet on its way to the IC is dropped. A connection still waiting for a call slot keeps its
            # first envelope, as a task would have taken it already: it goes out, and the ws_close after it.
            del self._relays[1 if self._waiting else 0 :]
        if self._counted:
            self._counted = False
            gw.metrics.clients_connected.dec()
            gw.metrics.connection_duration.observe(gw.loop.time() - self.connected_at)
            self.trace_span.end()
        gw.release(self)
        if self.session is not None:
            self._log_end(self.session)
            self._apply(self.session.connection_lost())

    def _log_end(self, session: proto.GatewaySession) -> None:
        """The one line a session leaves in the log when it ends."""
        code = 1006 if self._close_code is None else self._close_code  # 1006: gone without a close frame
        log.info(
            "session ended: client key %s, canister %s, peer %s, close code %d, reason %r",
            "none (no ws_open)" if session.client_key is None else session.client_key,
            "none" if session.canister_id is None else session.canister_id,
            self.peer_ip,
            code,
            self._close_reason,
        )

    # what the poller calls ---------------------------------------------------------------

    def deliver(self, frames: bytes, count: int) -> None:
        """Write this client's ``count`` messages of one batch, or close the client if it does not keep up.

        A client that has not drained what the earlier batches left beyond ``max_send_buffer`` is closed.
        So memory per client stays below that limit plus one batch, and a client that keeps up is never
        cut off by one large batch. ``frames`` are complete WebSocket frames (picows has no call that
        writes several frames at once), so they go to the socket directly, in one write.
        """
        transport = self.transport
        session = self.session
        if transport is None or session is None or session.state is _CLOSED:
            return
        if transport.is_close_frame_sent or transport.is_disconnected:
            return  # the client started the close handshake: nothing may follow our close frame
        socket = transport.underlying_transport
        buffered = socket.get_write_buffer_size()
        if buffered:
            # Only a backlog is worth a sample or a look at the limit (positive: an empty buffer is within it);
            # a client that keeps up, the usual case once per message at K=100, costs nothing here.
            gateway = self.gateway
            gateway.metrics.send_queue_bytes.observe(buffered)
            limit = gateway.config.max_send_buffer
            if buffered > limit:
                gateway.metrics.errors.labels("slow_consumer").inc()
                self._apply(
                    session.close(
                        proto.CLOSE_POLICY_VIOLATION, f"slow consumer: {buffered} bytes unread, limit {limit}"
                    )
                )
                return
        socket.write(frames)
        if not self._opened:
            self._opened = True
            session.delivered()
            self.gateway.metrics.connection_opening_time.observe(self.gateway.loop.time() - self.connected_at)

    def check_timers(self, now: float, ping_interval: float) -> None:
        """What the gateway's sweep asks of each connection: close one whose ``ws_open`` is late; ping a client
        silent for ``ping_interval`` seconds (0: never), close one whose pong is ``ping_interval`` seconds late."""
        transport = self.transport
        session = self.session
        if transport is None or session is None or transport.is_close_frame_sent or transport.is_disconnected:
            return
        if session.state is proto.SessionState.INIT:
            self._apply(session.tick(now))
        if ping_interval > 0:
            self._keep_alive(transport, now, ping_interval)

    def _keep_alive(self, transport: WSTransport, now: float, interval: float) -> None:
        if transport.is_close_frame_sent:
            return  # closed by the open timeout just now
        pinged_at = self._pinged_at
        if pinged_at is not None and self.last_heard < pinged_at:
            if now - pinged_at >= interval:
                self.close(proto.CLOSE_GOING_AWAY, f"no pong within {interval:g} s of a ping")
        elif now - self.last_heard >= interval:
            transport.send_ping()
            self._pinged_at = now
        else:
            self._pinged_at = None

    def close(self, code: int, reason: str) -> None:
        """Close from the gateway's side (drain, canister failure, no pong)."""
        if self.session is not None:
            self._apply(self.session.close(code, reason))
        elif self.transport is not None:
            self._send_close(code, reason)

    # carrying out actions ----------------------------------------------------------------

    def _apply(self, actions: Iterable[proto.Action]) -> None:
        gw = self.gateway
        for action in actions:
            if isinstance(action, proto.SendToClient):
                if self.transport is not None:
                    self.transport.send(WSMsgType.BINARY, action.data)
            elif isinstance(action, proto.Relay):
                self._queue_relay(action)
            elif isinstance(action, proto.Register):
                if self.trace_span is not NO_SPAN:  # the texts cost a few allocations per session: only if traced
                    self.trace_span.set_attributes(
                        {"canister_id": action.canister_id.to_text(), "client_key": str(action.client_key)}
                    )
                if not gw.register(action.canister_id, action.client_key, self):
                    gw.metrics.errors.labels("duplicate_client_key").inc()
                    assert self.session is not None
                    self._apply(
                        self.session.close(proto.CLOSE_POLICY_VIOLATION, "this client key is already connected")
                    )
            elif isinstance(action, proto.Close):
                self._send_close(action.code, action.reason)
            elif isinstance(action, proto.Unregister):
                gw.unregister(action.canister_id, action.client_key, self, after=self._relay_in_flight())
            elif isinstance(action, proto.ReportError):
                gw.metrics.errors.labels("session_internal_error").inc()
                key = self.session.client_key if self.session is not None else None
                log.error(
                    "closing the connection from %s (client key %s): %s",
                    self.peer_ip,
                    "not known before ws_open" if key is None else key,
                    action.error,
                    exc_info=action.error.__cause__,
                )

    def _queue_relay(self, relay: proto.Relay) -> None:
        if self.session is None or self.session.state is proto.SessionState.CLOSED:
            return  # closed by an earlier action of the same batch (a refused registration)
        relays = self._relays
        if relays is None:
            relays = self._relays = []
        elif len(relays) >= self.gateway.config.max_pending_relays:
            self._apply(self.session.close(proto.CLOSE_POLICY_VIOLATION, "too many requests waiting for the IC"))
            return
        relays.append(relay)
        if self._relay_task is None and not self._waiting:
            self._waiting = True
            self.gateway.call_slots.start_or_queue(self._start_relays)

    def _start_relays(self) -> bool:
        """The gateway's call slots hand this connection a slot: start the task relaying its envelopes with it.

        False (the slot goes on) when there is nothing left to relay, or the task was started meanwhile.
        """
        if not self._waiting:
            return False  # started by _relay_in_flight
        self._waiting = False
        if not self._relays:
            self._relays = None
            return False
        self._relay_task = self.gateway.loop.create_task(
            self._run_relays(holding_slot=True), context=span_context(self.trace_span)
        )
        return True

    def _relay_in_flight(self) -> asyncio.Task[None] | None:
        """The task relaying this connection's envelopes, which its ``ws_close`` must wait for; a connection
        still waiting for a call slot gets its task now (it waits for the slot as any other call)."""
        if self._waiting:
            self._waiting = False  # its entry in the queue of calls is skipped (see _start_relays)
            self._relay_task = self.gateway.loop.create_task(
                self._run_relays(holding_slot=False), context=span_context(self.trace_span)
            )
        return self._relay_task

    async def _run_relays(self, *, holding_slot: bool) -> None:
        """Relay queued envelopes one at a time: a later call must not overtake an earlier one.

        ``holding_slot``: the task was given a call slot, for its first call.
        """
        try:
            while self._relays:
                relay = self._relays.pop(0)
                # The slot passes to the first call, which gives it back however it ends: from here on it is not
                # this task's to give (given twice, the cap would grow by one).
                handed, holding_slot = holding_slot, False
                outcome = await self._relay_until_verdict(relay, holding_slot=handed)
                session = self.session
                if session is None:
                    continue
                if not outcome.accepted and session.state is not proto.SessionState.CLOSED:
                    # The close reason is cut to 123 bytes; the whole cause goes to the log.
                    log.warning(
                        "relay of %s for client key %s on %s failed: %s",
                        "ws_open" if relay.is_open else "ws_message",
                        session.client_key,
                        relay.canister_id,
                        outcome,
                    )
                self._apply(session.relay_result(relay, outcome))
        finally:
            if holding_slot:
                self.gateway.call_slots.give()  # the connection went away before its first call
            self._relay_task = None
            self._relays = None  # an idle session keeps no queue

    async def _relay_until_verdict(self, relay: proto.Relay, *, holding_slot: bool) -> RelayOutcome:
        """Relay ``relay``, resubmitting the same bytes after transient failures until the IC gives a verdict,
        the envelope expires, or the session closes (nobody is left to relay for).

        ``holding_slot``: a call slot is held already, for the first attempt."""
        gw = self.gateway
        loop = gw.loop
        # The envelope's expiry (wall clock) on the loop's clock: the IC refuses the envelope after it.
        expiry = loop.time() + (relay.envelope.ingress_expiry - time.time_ns()) / 1e9
        retry = Retry(expiry, gw.config.retry_backoff)
        while True:
            outcome = await gw.relay(relay, holding_slot=holding_slot)
            holding_slot = False
            at = retry.next_attempt(outcome, loop.time())
            if at is None:
                return outcome
            log.debug(
                "relay for client key %s failed (%s); again in %.2fs", self._client_key(), outcome, at - loop.time()
            )
            await asyncio.sleep(at - loop.time())
            if self.session is None or self.session.state is proto.SessionState.CLOSED:
                return outcome

    def _client_key(self) -> ClientKey | None:
        return None if self.session is None else self.session.client_key

    def _send_close(self, code: int, reason: str) -> None:
        """Send a close frame and make sure the transport goes away even if the client never answers."""
        transport = self.transport
        if transport is None or transport.is_disconnected:
            return
        self.gateway.metrics.closed_connections.labels(str(code)).inc()
        if self._close_code is None:
            self._close_code, self._close_reason = code, reason
        if not transport.is_close_frame_sent:
            transport.send_close(WSCloseCode(code), truncate_reason(reason).encode())
        self.gateway.loop.call_later(self.gateway.config.close_timeout_s, transport.disconnect, False)


class Gateway:
    """The gateway service: ``await start()``, serve, ``await drain()``."""

    def __init__(self, config: GatewayConfig, identity: Identity, agent: Agent | None = None) -> None:
        """Build the gateway inside the event loop it will run on.

        ``agent`` (default: one for ``config.ic_url``) must sign with ``identity``; the gateway closes it on drain.
        """
        self.config = config
        self.identity = identity
        self.principal: Principal = identity.sender
        self.agent = (
            agent
            if agent is not None
            else Agent(config.ic_url, identity, max_connections=config.max_concurrent_calls + POLL_CONNECTIONS)
        )
        self.metrics = GatewayMetrics()
        self.loop = asyncio.get_running_loop()
        self.connections: set[ClientConnection] = set()
        self.metrics.send_buffer_bytes.set_function(self._send_buffer_bytes)
        self._per_ip: collections.Counter[str] = collections.Counter()
        self._routes: dict[Principal, dict[bytes, Recipient]] = {}  # by canister, then by client route key
        self._pollers: dict[Principal, tuple[CanisterPoller, asyncio.Task[None]]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        # Relays and ws_close calls in flight at once (see GatewayConfig.max_concurrent_calls).
        self.call_slots = CallSlots(config.max_concurrent_calls)
        self._server: asyncio.Server | None = None
        self._health: HealthServer | None = None
        self._accepting = False
        self._ic_reachable = False
        self._ic_watch: asyncio.Task[None] | None = None
        self._sweep_task: asyncio.Task[None] | None = None
        self.port = 0
        self.metrics_port = 0
        # The root key polled batches are certified against: the config's, else the agent's (set by start()).
        self.root_key_der: bytes | None = config.root_key_der

    async def start(self) -> None:
        """Fetch what is needed from the replica, then listen for clients and for metrics scrapes."""
        try:
            agent_root_key: bytes = self.agent.root_key
        except AgentError:
            # Not mainnet and not given: trust the replica's status, as the Rust gateway does off mainnet.
            agent_root_key = await self.agent.fetch_root_key()
        if self.root_key_der is None:
            self.root_key_der = agent_root_key
        self._ic_reachable = True  # it just answered (or, with the root key given, is assumed to until checked)
        cfg = self.config
        self._server = await ws_create_server(
            self._listener_for,
            cfg.host,
            cfg.port,
            ssl=cfg.ssl_context(),
            websocket_handshake_timeout=cfg.handshake_timeout_s,
            max_frame_size=cfg.max_message_size,
            # Pings are the gateway's (see _sweep): picows's would cost every connection a task.
            enable_auto_ping=False,
            enable_auto_pong=False,
            # An adapter, not a Logger: given a Logger, picows makes a child Logger for every connection (a few
            # hundred bytes each, kept for the connection's life); an adapter it uses as it is.
            logger_name=logging.LoggerAdapter(logging.getLogger("icws_fast.gateway.ws")),
            read_buffer_init_size=cfg.read_buffer_size,
            backlog=cfg.listen_backlog,
            use_aiofastnet=False,
            reuse_port=cfg.reuse_port,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        if cfg.metrics_host is not None or cfg.metrics_socket is not None:
            self._health = HealthServer(self.metrics, lambda: self.ready)
            await self._health.start(cfg.metrics_host, cfg.metrics_port, path=cfg.metrics_socket)
            self.metrics_port = self._health.port
            self._ic_watch = self.loop.create_task(self._watch_ic())
        self._sweep_task = self.loop.create_task(self._sweep())
        self._accepting = True
        log.info("gateway %s listening on %s:%d", self.principal, cfg.host, self.port)

    @property
    def ready(self) -> bool:
        """What ``/ready`` says: accepting clients, the root key known and the IC answering its last check."""
        return self._accepting and self.root_key_der is not None and self._ic_reachable

    async def _watch_ic(self) -> None:
        """Ask the IC for its status every ``ready_check_interval_s``, for ``/ready``; say when that changes."""
        interval = self.config.ready_check_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                await self.agent.status(timeout_s=interval)
            except IcwsError as exc:
                if self._ic_reachable:
                    log.warning("the IC at %s does not answer (%s): /ready says not ready", self.config.ic_url, exc)
                self._ic_reachable = False
            else:
                if not self._ic_reachable:
                    log.info("the IC at %s answers again: /ready says ready", self.config.ic_url)
                self._ic_reachable = True

    def _send_buffer_bytes(self) -> float:
        """What every client's send buffer holds now; read at each scrape, so the hot path pays nothing for it."""
        return float(
            sum(c.transport.underlying_transport.get_write_buffer_size() for c in self.connections if c.transport)
        )

    async def _sweep(self) -> None:
        """Close the connections whose ``ws_open`` is late, ping the silent ones, close those whose pong is late.

        One sweep over the connections every quarter of the shorter of ``open_timeout_s`` and ``ping_interval_s``
        (so a close or a ping comes at most that much late), instead of a timer or a task per connection, which
        would cost each session about 2 KiB and a timer's set-up and cancel. It yields every ``_SWEEP_SLICE``
        connections, so it never holds the loop up for long.
        """
        cfg = self.config
        ping_interval = cfg.ping_interval_s
        period = min(cfg.open_timeout_s, ping_interval if ping_interval > 0 else cfg.open_timeout_s) / 4
        while True:
            await asyncio.sleep(period)
            now = self.loop.time()
            for i, conn in enumerate(list(self.connections)):
                conn.check_timers(now, ping_interval)
                if i % _SWEEP_SLICE == _SWEEP_SLICE - 1:
                    await asyncio.sleep(0)

    def _listener_for(self, request: WSUpgradeRequest) -> WSListener | None:
        return ClientConnection(self)

    # connection bookkeeping ------------------------------------------------------------

    def admit(self, conn: ClientConnection) -> str | None:
        """Count a new connection in, or say why it is refused.

        Its address is the TCP peer's, or, when the peer is one of ``trusted_proxies``, the client that the
        upgrade request's ``X-Forwarded-For`` names: the per-IP limit must count clients, not load balancers.
        """
        transport = conn.transport
        assert transport is not None
        peer = transport.underlying_transport.get_extra_info("peername")
        conn.peer_ip = str(peer[0]) if peer else ""
        if self.config.trusted_proxies:
            forwarded = transport.request.headers.getall("X-Forwarded-For", ())
            conn.peer_ip = client_address(conn.peer_ip, forwarded, self.config.trusted_proxies)
        if not self._accepting:
            return "gateway is shutting down"
        if len(self.connections) >= self.config.max_clients:
            return "too many clients"
        if self._per_ip[conn.peer_ip] >= self.config.max_clients_per_ip:
            return "too many connections from this address"
        self.connections.add(conn)
        self._per_ip[conn.peer_ip] += 1
        return None

    def release(self, conn: ClientConnection) -> None:
        """Forget a connection that went away (no-op for refused ones)."""
        if conn in self.connections:
            self.connections.discard(conn)
            self._per_ip[conn.peer_ip] -= 1
            if self._per_ip[conn.peer_ip] <= 0:
                del self._per_ip[conn.peer_ip]

    def register(self, canister_id: Principal, client_key: ClientKey, conn: Recipient) -> bool:
        """Route ``canister_id``'s messages for ``client_key`` to ``conn``; the first client starts the poller.

        False when another connection holds that client key: SDKs pick a fresh nonce per connection, so
        a second ``ws_open`` with the same key is a replayed envelope, and it must not take over (or,
        through ``ws_close``, end) the session of the client who signed it.
        """
        routes = self._routes.setdefault(canister_id, {})
        key = route_key(client_key)
        previous = routes.get(key)
        if previous is not None and previous is not conn:
            return False
        routes[key] = conn
        self.metrics.client_connected_count.labels(canister_id.to_text()).inc()
        if canister_id not in self._pollers:
            self._start_poller(canister_id, routes)
        self._pollers[canister_id][0].client_joined(key)
        return True

    def unregister(
        self, canister_id: Principal, client_key: ClientKey, conn: Recipient, *, after: asyncio.Task[None] | None
    ) -> None:
        """Stop routing to ``conn`` and call ``ws_close`` (after ``after``, the connection's relay in flight).

        Nothing happens unless ``conn`` holds the route: a refused duplicate must not close the original.
        """
        routes = self._routes.get(canister_id)
        key = route_key(client_key)
        if routes is None or routes.get(key) is not conn:
            return
        del routes[key]
        running = self._pollers.get(canister_id)
        if running is not None:
            running[0].client_left(key)
        if not routes:
            del self._routes[canister_id]
            self._stop_poller(canister_id)
        self._spawn(self._ws_close(canister_id, client_key, after))

    def _start_poller(self, canister_id: Principal, routes: dict[bytes, Recipient]) -> None:
        poller = CanisterPoller(
            self.agent,
            canister_id,
            routes,
            metrics=self.metrics,
            root_key_der=self.root_key_der if self.config.verify_certificates else None,
            interval_s=self.config.polling_interval_s,
            poll_timeout_s=self.config.poll_timeout_s,
            pipeline_depth=self.config.poll_pipeline_depth,
            canister_error_grace_s=self.config.canister_error_grace_s,
            # From 0, as the Rust gateway: the first batch may start anywhere, and a remembered nonce
            # would stall the poller on a canister reinstalled (its nonces reset) while it had no clients.
            start_nonce=0,
        )
        task = self.loop.create_task(self._run_poller(poller))
        self._pollers[canister_id] = (poller, task)
        self.metrics.active_pollers.inc()
        log.info("poller for %s started", canister_id)

    def _stop_poller(self, canister_id: Principal) -> None:
        running = self._pollers.pop(canister_id, None)
        if running is not None:
            running[1].cancel()
            self.metrics.active_pollers.dec()
            log.info("poller for %s stopped", canister_id)

    async def _run_poller(self, poller: CanisterPoller) -> None:
        try:
            await poller.run()
        except CanisterFailure as exc:
            log.error("poller for %s failed: %s", poller.canister_id, exc)
            self.metrics.errors.labels("canister").inc()
            self._fail_canister(poller.canister_id, str(exc))
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug must not leave clients waiting on a dead poller: close them and say so.
            log.exception("poller for %s crashed", poller.canister_id)
            self.metrics.errors.labels("poller_crash").inc()
            self._fail_canister(poller.canister_id, "gateway poller failure")

    def _fail_canister(self, canister_id: Principal, reason: str) -> None:
        if self._pollers.pop(canister_id, None) is not None:
            self.metrics.active_pollers.dec()
        for conn in list(self._routes.get(canister_id, {}).values()):
            if isinstance(conn, ClientConnection):
                conn.close(proto.CLOSE_INTERNAL_ERROR, reason)

    # calls to the IC ---------------------------------------------------------------------

    async def relay(self, relay: proto.Relay, *, holding_slot: bool = False) -> RelayOutcome:
        """Submit a client's envelope and read the canister's result; the outcome, typed.

        ``holding_slot``: the caller holds a call slot already, which this call uses and gives back.
        """
        label = relay.canister_id.to_text()
        error: IcwsError | None = None
        if not holding_slot:
            await self.call_slots.take()
        try:
            with span("relay", canister_id=label, method="ws_open" if relay.is_open else "ws_message"):
                reply = await self.agent.submit_signed(relay.canister_id, relay.envelope, relay.envelope_bytes)
                decode_unit_result(reply)
        except IcwsError as exc:
            error = exc
        finally:
            self.call_slots.give()
        outcome = relay_outcome(error)
        self.metrics.envelopes_to_ic.labels(label, outcome.status.value).inc()
        return outcome

    async def _ws_close(self, canister_id: Principal, client_key: ClientKey, after: asyncio.Task[None] | None) -> None:
        """Call ``ws_close`` for a departed client, again after transient failures until the canister answers or
        ``ws_close_window_s`` has passed (a drain cancels it at its own deadline)."""
        if after is not None and not after.done():
            # ws_close must not reach the canister before the client's ws_open (or last message) does.
            # asyncio.wait neither raises the relay's outcome nor cancels it if this task is cancelled.
            await asyncio.wait({after})
        retry = Retry(self.loop.time() + self.config.ws_close_window_s, self.config.retry_backoff)
        while True:
            outcome = await self._ws_close_once(canister_id, client_key)
            at = retry.next_attempt(outcome, self.loop.time())
            if at is None:
                break
            log.debug(
                "ws_close for %s on %s failed (%s); again in %.2fs",
                client_key,
                canister_id,
                outcome,
                at - self.loop.time(),
            )
            await asyncio.sleep(at - self.loop.time())
        if outcome.accepted:
            self.metrics.ws_close_calls.labels("ok").inc()
        elif outcome.retryable:
            self.metrics.ws_close_calls.labels("error").inc()
            log.warning("ws_close for client key %s on %s gave up: %s", client_key, canister_id, outcome)
        else:
            # Usual when the canister already dropped the client (its own close, keep-alive timeout).
            self.metrics.ws_close_calls.labels("error").inc()
            log.debug("ws_close for %s on %s: %s", client_key, canister_id, outcome)

    async def _ws_close_once(self, canister_id: Principal, client_key: ClientKey) -> RelayOutcome:
        """One ``ws_close`` call (a fresh envelope: the window outlasts any one envelope's expiry), typed."""
        error: IcwsError | None = None
        await self.call_slots.take()
        try:
            with span("ws_close", canister_id=canister_id.to_text()):
                arg = encode_ws_close_args(client_key)
                decode_unit_result(await self.agent.call(canister_id, "ws_close", arg))
        except IcwsError as exc:
            error = exc
        finally:
            self.call_slots.give()
        return relay_outcome(error)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # shutdown --------------------------------------------------------------------------------

    async def drain(self) -> None:
        """Stop accepting, close every session with 1001, call ``ws_close`` for each, stop everything."""
        self._accepting = False
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close(proto.CLOSE_GOING_AWAY, "gateway shutting down")
        deadline = self.loop.time() + self.config.drain_timeout_s
        while (self.connections or self._background) and self.loop.time() < deadline:
            pending = list(self._background)
            if pending:
                await asyncio.wait(pending, timeout=max(0.0, deadline - self.loop.time()))
            else:
                await asyncio.sleep(0.01)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.disconnect(False)
        for canister_id in list(self._pollers):
            self._stop_poller(canister_id)
        for task in list(self._background):
            task.cancel()
        if self._ic_watch is not None:
            self._ic_watch.cancel()
        if self._sweep_task is not None:
            self._sweep_task.cancel()
        if self._health is not None:
            await self._health.stop()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        await self.agent.close()
        log.info("gateway drained")
