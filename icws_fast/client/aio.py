"""The asyncio IC WebSocket client, over picows.

``ws = await IcWebSocket.connect(gateway_url, canister_id, ic_url)`` returns once the canister has
confirmed the connection (its verified ``OpenMessage``); then ``await ws.send(value)``,
``await ws.recv()``, ``async for value in ws`` and ``await ws.close()``. Every frame is handled on
the event loop as it arrives: verification, acks and keep-alives do not wait for ``recv()``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import ssl
from collections import deque
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any

from picows import WSCloseCode, WSError, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from icws_fast.client._common import (
    CLEAN_CLOSE_CODES,
    CLOSE_ABNORMAL,
    CLOSE_TIMEOUT_S,
    DEFAULT_MAX_QUEUE,
    DEFAULT_RECONNECT_BACKOFF,
    MAX_MESSAGE_SIZE,
    ClientBase,
    ReconnectingBase,
    gateway_url_parts,
    log,
    make_protocol,
)
from icws_fast.errors import ConnectionClosed, IcwsError
from icws_fast.ic.agent import Agent
from icws_fast.ic.identity import Identity
from icws_fast.ic.principal import Principal
from icws_fast.protocol.client import (
    CLOSE_NORMAL,
    DEFAULT_MAX_CERTIFICATE_AGE_S,
    DEFAULT_MESSAGE_TYPE,
    DEFAULT_OPEN_TIMEOUT_MS,
    ClientProtocol,
)
from icws_fast.protocol.retry import Backoff
from icws_fast.protocol.types import DEFAULT_SEND_ACK_INTERVAL_MS

# RFC 6455 section 7.1.5: the code a close frame without a status code reads as.
_CLOSE_NO_STATUS = 1005


class _Listener(WSListener):
    """Hands picows frames to the owning :class:`IcWebSocket`, which reassembles the messages."""

    def __init__(self, owner: IcWebSocket) -> None:
        super().__init__()
        self._owner = owner

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._owner._on_connected(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type in (WSMsgType.BINARY, WSMsgType.TEXT, WSMsgType.CONTINUATION):
            # Text frames go the same way as binary ones: they fail CBOR decoding in the protocol,
            # as they do in the JS SDK. A stray continuation just starts a message that then fails.
            self._owner._on_frame(frame.get_payload_as_bytes(), frame.fin)
        elif msg_type == WSMsgType.CLOSE:
            self._owner._on_peer_close(frame.get_close_code(), frame.get_close_message() or b"")

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._owner._on_disconnected()

    def pause_writing(self) -> None:
        self._owner._writable.clear()

    def resume_writing(self) -> None:
        self._owner._writable.set()


class IcWebSocket(ClientBase):
    """An IC WebSocket connection to a canister through a gateway, for asyncio (see the module docstring).

    Build it with :meth:`connect`. Application messages are Candid values of ``message_type``
    (records are dicts, see :mod:`icws_fast.ic.candid`). Callbacks are described in
    :class:`~icws_fast.client._common.ClientBase`; a callback may be a coroutine function, whose
    coroutine then runs as a task.
    """

    def __init__(self, protocol: ClientProtocol, **callbacks: Any) -> None:
        super().__init__(protocol, **callbacks)
        self._loop = asyncio.get_running_loop()
        self._transport: WSTransport | None = None
        self._messages: deque[Any] = deque()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._open = self._loop.create_future()
        self._disconnected = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline_ns: int | None = None
        self._close_fallback: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reading_paused = False

    @classmethod
    async def connect(  # noqa: PLR0917 (the positional order is the documented API)
        cls,
        gateway_url: str,
        canister_id: Principal | str,
        ic_url: str,
        identity: Identity | None = None,
        message_type: str = DEFAULT_MESSAGE_TYPE,
        ack_interval_ms: int = DEFAULT_SEND_ACK_INTERVAL_MS,
        max_certificate_age_s: float = DEFAULT_MAX_CERTIFICATE_AGE_S,
        *,
        root_key_der: bytes | None = None,
        open_timeout_s: float = DEFAULT_OPEN_TIMEOUT_MS / 1000,
        on_open: Callable[[], Any] | None = None,
        on_message: Callable[[Any], Any] | None = None,
        on_close: Callable[[int, str], Any] | None = None,
        on_error: Callable[[IcwsError], Any] | None = None,
        max_queue: int | None = DEFAULT_MAX_QUEUE,
        ssl_context: ssl.SSLContext | None = None,
    ) -> IcWebSocket:
        """Open a connection and wait until the canister confirms it.

        ``ic_url`` is the replica the certificates come from: the root key is built in for mainnet
        URLs and fetched from ``/api/v2/status`` otherwise (as the JS SDK does), unless
        ``root_key_der`` is given. ``identity`` defaults to a fresh random Ed25519 identity.
        ``ack_interval_ms`` must equal the canister's send-ack interval. The gateway's handshake must
        arrive within ``open_timeout_s`` of the WebSocket upgrade, and the canister's OpenMessage
        within ``open_timeout_s`` of the handshake (the JS SDK's 60 s), else
        :class:`~icws_fast.errors.ConnectionClosed` (code 4000, "Open connection timeout") is raised;
        any other failure to open raises it too, with the cause chained, except a failure to read the
        root key (:class:`~icws_fast.errors.AgentError`). ``ssl_context`` replaces the default TLS
        context for ``wss://`` URLs (e.g. to trust a development gateway's own CA);
        ``max_queue`` bounds the messages waiting for :meth:`recv` (see ``ClientBase``).
        """
        if root_key_der is None:
            async with Agent(ic_url) as agent:
                root_key_der = await agent.fetch_root_key()
        protocol = make_protocol(
            canister_id=canister_id,
            identity=identity,
            root_key_der=root_key_der,
            message_type=message_type,
            ack_interval_ms=ack_interval_ms,
            max_certificate_age_s=max_certificate_age_s,
            open_timeout_s=open_timeout_s,
        )
        ws = cls(
            protocol, on_open=on_open, on_message=on_message, on_close=on_close, on_error=on_error, max_queue=max_queue
        )
        await ws._start(gateway_url, open_timeout_s, ssl_context)
        return ws

    async def _start(self, gateway_url: str, open_timeout_s: float, ssl_context: ssl.SSLContext | None) -> None:
        gateway_url_parts(gateway_url)
        try:
            await ws_connect(
                lambda: _Listener(self),
                gateway_url,
                ssl_context=ssl_context,
                websocket_handshake_timeout=open_timeout_s,
                max_frame_size=MAX_MESSAGE_SIZE,
            )
        except (OSError, asyncio.TimeoutError, ValueError) as exc:
            raise ConnectionClosed(CLOSE_ABNORMAL, f"cannot connect to {gateway_url}: {exc}") from exc
        except (WSError, RuntimeError) as exc:  # a refused upgrade: picows raises WSError (older ones RuntimeError)
            raise ConnectionClosed(CLOSE_ABNORMAL, f"WebSocket upgrade with {gateway_url} failed: {exc}") from exc
        try:
            await self._open
        except BaseException:
            # Cancelled (or failed) while opening: do not leave the socket behind.
            if self._transport is not None:
                self._transport.disconnect(graceful=False)
            raise

    # ---- the application's side ----------------------------------------------------------

    async def send(self, value: Any) -> None:
        """Send one application message (a value of the connection's Candid type).

        Raises :class:`~icws_fast.errors.ConnectionClosed` once the connection is closed and
        :class:`~icws_fast.errors.CandidError` when ``value`` does not fit the type. Waits while
        the socket's write buffer is full.
        """
        if not self._writable.is_set():
            await self._writable.wait()
        if self.close_code is not None:
            raise self._closed_error()
        self._handle(self._protocol.send(value, self.now_ns()))
        self._schedule()

    async def recv(self) -> Any:
        """The next application message; raises :class:`~icws_fast.errors.ConnectionClosed` once closed.

        Messages that arrived before the close are still returned first.
        """
        while not self._messages:
            if self.close_code is not None:
                raise self._closed_error()
            self._readable.clear()
            await self._readable.wait()
        value = self._messages.popleft()
        if self._reading_paused and not self._queue_full(2 * len(self._messages)):
            # Resume at half the limit, so a reader keeping up does not toggle reading per message.
            self._reading_paused = False
            if self._transport is not None:
                self._transport.underlying_transport.resume_reading()
        return value

    def __aiter__(self) -> IcWebSocket:
        return self

    async def __anext__(self) -> Any:
        """Iteration ends at a normal close (1000, 1001, 4001); other closes raise ``ConnectionClosed``."""
        try:
            return await self.recv()
        except ConnectionClosed as exc:
            if exc.code in CLEAN_CLOSE_CODES:
                raise StopAsyncIteration from None
            raise

    async def close(self) -> None:
        """Close the connection (code 1000) and wait until the socket is down."""
        if self.close_code is None:
            self._handle(self._protocol.close())
        if self._transport is not None:
            try:
                await asyncio.wait_for(self._disconnected.wait(), CLOSE_TIMEOUT_S)
            except asyncio.TimeoutError:
                self._transport.disconnect(graceful=False)

    async def __aenter__(self) -> IcWebSocket:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # ---- the transport's side ------------------------------------------------------------

    def _on_connected(self, transport: WSTransport) -> None:
        # Runs before ws_connect() returns, and the gateway's handshake may follow at once.
        self._transport = transport
        self._protocol.connection_made(self.now_ns())
        self._schedule()

    def _on_frame(self, payload: bytes, fin: bool) -> None:
        if self._receive_chunk(payload, fin):
            self._schedule()

    def _on_peer_close(self, code: WSCloseCode | None, message: bytes) -> None:
        assert self._transport is not None
        if self.close_code is None:
            # Echo the peer's close frame, as RFC 6455 asks; a frame without a code reads as 1005.
            echoed = WSCloseCode.NO_INFO if code is None else code
            self._transport.send_close(echoed, message)
            received = _CLOSE_NO_STATUS if echoed == WSCloseCode.NO_INFO else echoed.value
            self._finish(received, message.decode("utf-8", "replace"))
        self._transport.disconnect()

    def _on_disconnected(self) -> None:
        self._cancel_timers()
        self._finish(CLOSE_ABNORMAL, "")
        self._writable.set()  # wake a blocked send(): it raises ConnectionClosed
        self._disconnected.set()

    def _schedule(self) -> None:
        """Arm the timer for the protocol's next deadline (open or ack timeout)."""
        deadline = self._protocol.next_deadline_ns if self.close_code is None else None
        if deadline == self._timer_deadline_ns:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_deadline_ns = deadline
        if deadline is not None:
            self._timer = self._loop.call_later(max(0.0, (deadline - self.now_ns()) / 1e9), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_deadline_ns = None
        self._handle(self._protocol.tick(self.now_ns()))
        self._schedule()

    def _cancel_timers(self) -> None:
        for handle in (self._timer, self._close_fallback):
            if handle is not None:
                handle.cancel()
        self._timer = self._close_fallback = None

    # ---- ClientBase hooks ----------------------------------------------------------------

    def _send_frame(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.send(WSMsgType.BINARY, data)

    def _close_transport(self, code: int, reason: str) -> None:
        assert self._transport is not None
        self._transport.send_close(WSCloseCode(code), reason.encode())
        # The gateway answers with its close frame and we disconnect then; this is for one that does not.
        self._close_fallback = self._loop.call_later(CLOSE_TIMEOUT_S, self._transport.disconnect)

    def _deliver(self, value: Any) -> None:
        self._messages.append(value)
        self._readable.set()
        if not self._reading_paused and self._queue_full(len(self._messages)) and self._transport is not None:
            self._reading_paused = True
            self._transport.underlying_transport.pause_reading()

    def _opened(self) -> None:
        if not self._open.done():
            self._open.set_result(None)

    def _wake_closed(self) -> None:
        self._readable.set()
        if not self._open.done():
            self._open.set_exception(self._closed_error())

    def _run_callback(self, fn: Callable[..., Any], *args: Any) -> None:
        result = fn(*args)
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(self._callback_done)

    def _callback_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("IC WebSocket callback task failed", exc_info=task.exception())


class ReconnectingIcWebSocket(ReconnectingBase[IcWebSocket]):
    """An :class:`IcWebSocket` that opens a new session through the same gateway URL when its session ends.

    Behind a load balancer the same URL reaches another gateway, so a gateway that dies or drains costs its
    clients a reconnect, not their connection. Build it with :meth:`connect`; use it as an
    :class:`IcWebSocket` (``send``, ``recv``, ``async for``, ``close``, ``async with``). What a reconnect
    loses, and the callbacks, are described in :class:`~icws_fast.client._common.ReconnectingBase`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Use :meth:`connect` (the arguments are ``ReconnectingBase``'s)."""
        super().__init__(*args, **kwargs)
        self._reconnecting: asyncio.Task[None] | None = None
        self._switched = asyncio.Event()  # set (and replaced) when a session opens or the client closes for good

    @classmethod
    async def connect(  # noqa: PLR0917 (the positional order is IcWebSocket.connect's)
        cls,
        gateway_url: str,
        canister_id: Principal | str,
        ic_url: str,
        identity: Identity | None = None,
        message_type: str = DEFAULT_MESSAGE_TYPE,
        ack_interval_ms: int = DEFAULT_SEND_ACK_INTERVAL_MS,
        max_certificate_age_s: float = DEFAULT_MAX_CERTIFICATE_AGE_S,
        *,
        root_key_der: bytes | None = None,
        open_timeout_s: float = DEFAULT_OPEN_TIMEOUT_MS / 1000,
        on_open: Callable[[], Any] | None = None,
        on_message: Callable[[Any], Any] | None = None,
        on_close: Callable[[int, str], Any] | None = None,
        on_error: Callable[[IcwsError], Any] | None = None,
        on_reconnect: Callable[[int, str], Any] | None = None,
        max_queue: int | None = DEFAULT_MAX_QUEUE,
        ssl_context: ssl.SSLContext | None = None,
        backoff: Backoff = DEFAULT_RECONNECT_BACKOFF,
        max_attempts: int | None = None,
    ) -> ReconnectingIcWebSocket:
        """Open the first session as :meth:`IcWebSocket.connect` does (same arguments, same errors).

        The root key is read once and ``identity`` (default: a fresh Ed25519 identity) kept for every session.
        ``backoff`` spaces the attempts after a session ends; ``max_attempts`` bounds the failed ones in a row
        (None: no bound). ``on_reconnect(code, reason)`` is told how the session a new one replaces ended.
        """
        if root_key_der is None:
            async with Agent(ic_url) as agent:
                root_key_der = await agent.fetch_root_key()
        ws = cls._create(
            gateway_url,
            canister_id,
            identity,
            root_key_der,
            message_type=message_type,
            ack_interval_ms=ack_interval_ms,
            max_certificate_age_s=max_certificate_age_s,
            open_timeout_s=open_timeout_s,
            ssl_context=ssl_context,
            backoff=backoff,
            max_attempts=max_attempts,
            max_queue=max_queue,
            on_open=on_open,
            on_message=on_message,
            on_close=on_close,
            on_error=on_error,
            on_reconnect=on_reconnect,
        )
        await ws._open_session()
        return ws

    # ---- the application's side ----------------------------------------------------------

    async def send(self, value: Any) -> None:
        """Send one application message in the current session; during a reconnect, in the next one.

        Raises :class:`~icws_fast.errors.ConnectionClosed` once the client is closed for good, and
        :class:`~icws_fast.errors.CandidError` when ``value`` does not fit the type.
        """
        while True:
            session = self.session
            if not session.is_open:
                await self._next_session(session)
                continue
            try:
                await session.send(value)
                return
            except ConnectionClosed:
                continue  # the session ended before the message went out: it goes in the next one

    async def recv(self) -> Any:
        """The next application message: the current session's, then (all taken) the next session's.

        Raises :class:`~icws_fast.errors.ConnectionClosed` after the final close (and its last messages).
        """
        while True:
            session = self.session
            try:
                return await session.recv()
            except ConnectionClosed:
                await self._next_session(session)

    def __aiter__(self) -> ReconnectingIcWebSocket:
        return self

    async def __anext__(self) -> Any:
        """Iteration goes on across reconnects; the final close ends it as for :class:`IcWebSocket`."""
        try:
            return await self.recv()
        except ConnectionClosed as exc:
            if exc.code in CLEAN_CLOSE_CODES:
                raise StopAsyncIteration from None
            raise

    async def close(self) -> None:
        """Close for good (code 1000): end the current session, or stop the reconnect under way."""
        self._closing = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        session = self._session
        if session is not None and session.close_code is None:
            await session.close()  # its on_close ends the client with 1000
        self._finish(CLOSE_NORMAL, "")

    async def __aenter__(self) -> ReconnectingIcWebSocket:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # ---- sessions ------------------------------------------------------------------------

    async def _open_session(self) -> None:
        """Open one session; raises ``ConnectionClosed`` as :meth:`IcWebSocket.connect` when it cannot."""
        session = IcWebSocket(
            self._new_protocol(), on_message=self.on_message, on_error=self.on_error, max_queue=self.max_queue
        )
        session.on_open = functools.partial(self._session_opened, session)
        session.on_close = functools.partial(self._session_closed, session)
        await session._start(self._gateway_url, self._open_timeout_s, self._ssl_context)

    def _session_opened(self, session: IcWebSocket) -> None:
        if not self._adopt(session):
            self._spawn(session.close())  # opened as close() was called

    def _session_closed(self, session: IcWebSocket, code: int, reason: str) -> None:
        delay = self._lose(session, code, reason)
        if delay is not None:
            self._reconnecting = self._spawn(self._reconnect(delay))

    async def _reconnect(self, delay: float) -> None:
        while True:
            await asyncio.sleep(delay)
            try:
                await self._open_session()
                return
            except ConnectionClosed as exc:
                next_delay = self._give_up(exc)
            if next_delay is None:
                return
            delay = next_delay

    async def _next_session(self, old: IcWebSocket) -> None:
        """Until a session other than ``old`` opened; ``ConnectionClosed`` once the client is closed for good."""
        while self._session is old and self.close_code is None:
            await self._switched.wait()
        if self.close_code is not None:
            raise self._closed_error()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        task.add_done_callback(_log_failure)
        return task

    def _wake(self) -> None:
        switched, self._switched = self._switched, asyncio.Event()
        switched.set()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("IC WebSocket reconnection failed", exc_info=task.exception())
