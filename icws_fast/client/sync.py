"""The blocking IC WebSocket client: a plain socket, wsproto framing and one reader thread.

``ws = SyncIcWebSocket.connect(gateway_url, canister_id, ic_url)``; ``ws.send(value)``,
``ws.recv(timeout=None)``, ``for value in ws``, ``ws.close()``. It shares the sans-IO core with the
asyncio client. A reader thread handles every frame as it arrives (verification, acks, keep-alives,
timeouts), so the connection stays healthy while the application is busy elsewhere.

Under gevent (Locust) nothing special is needed: after ``gevent.monkey.patch_all()`` (Locust does
it) the socket, ``select``, the thread and the locks used here are all cooperative, so thousands
of connections live in one process. No asyncio loop is involved, which is why this flavour does
not reuse the asyncio agent: it reads the root key with one blocking ``/api/v2/status`` request.
"""

from __future__ import annotations

import contextlib
import functools
import select
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Final

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import ProtocolError as WsprotoError

from icws_fast.client._common import (
    CLEAN_CLOSE_CODES,
    CLOSE_ABNORMAL,
    CLOSE_TIMEOUT_S,
    DEFAULT_MAX_QUEUE,
    DEFAULT_RECONNECT_BACKOFF,
    ClientBase,
    ReconnectingBase,
    gateway_url_parts,
    make_protocol,
)
from icws_fast.errors import AgentError, ConnectionClosed, IcwsError, ProtocolError, TransportError
from icws_fast.ic.agent import MAINNET_ROOT_KEY, is_mainnet_url, root_key_from_status
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

_READ_SIZE: Final = 65536
_MAX_STATUS_SIZE: Final = 1 << 20


def fetch_root_key(ic_url: str, timeout_s: float = 10.0) -> bytes:
    """The root key for ``ic_url``: built in for mainnet, else the ``root_key`` of its ``/api/v2/status``.

    Raises :class:`~icws_fast.errors.TransportError` when the replica cannot be reached and
    :class:`~icws_fast.errors.AgentError` when its answer carries no DER BLS root key (the checks
    of :func:`~icws_fast.ic.agent.root_key_from_status`, shared with the asyncio agent).
    """
    if is_mainnet_url(ic_url):
        return MAINNET_ROOT_KEY
    url = ic_url.rstrip("/") + "/api/v2/status"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            body = response.read(_MAX_STATUS_SIZE + 1)
    except (OSError, urllib.error.URLError, ValueError) as exc:
        raise TransportError(f"cannot read {url}: {exc}") from exc
    if len(body) > _MAX_STATUS_SIZE:
        raise AgentError(f"the status of {ic_url} is larger than {_MAX_STATUS_SIZE} bytes")
    return root_key_from_status(body, ic_url)


def _open_socket(
    gateway_url: str, timeout_s: float, ssl_context: ssl.SSLContext | None
) -> tuple[socket.socket, str, str]:
    """A connected (TLS for ``wss``, with ``ssl_context`` or the default one) socket, the Host header and the target."""
    parts = gateway_url_parts(gateway_url)
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    sock = socket.create_connection((parts.hostname, port), timeout=timeout_s)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if secure:
            context = ssl_context or ssl.create_default_context()
            sock = context.wrap_socket(sock, server_hostname=parts.hostname)
    except BaseException:
        sock.close()
        raise
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return sock, parts.netloc, target


class SyncIcWebSocket(ClientBase):
    """A blocking IC WebSocket connection (see the module docstring); build it with :meth:`connect`.

    Callbacks (see :class:`~icws_fast.client._common.ClientBase`) run on the reader thread.
    """

    def __init__(self, protocol: ClientProtocol, sock: socket.socket, ws: WSConnection, **callbacks: Any) -> None:
        super().__init__(protocol, **callbacks)
        self._sock = sock
        self._ws = ws
        # One re-entrant lock guards the protocol, wsproto and socket writes, so frames leave in
        # sequence-number order whichever thread produced them; callbacks may call send().
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._messages: deque[Any] = deque()
        self._opened_flag = False
        self._close_deadline: float | None = None
        self._events_pending = False  # _process_events stopped early on a full queue
        self._reader = threading.Thread(target=self._read_loop, name="icws-client-reader", daemon=True)

    @classmethod
    def connect(  # noqa: PLR0917 (the positional order is the documented API)
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
    ) -> SyncIcWebSocket:
        """Open a connection and block until the canister confirms it; the arguments are those of
        :meth:`icws_fast.client.IcWebSocket.connect`."""
        if root_key_der is None:
            root_key_der = fetch_root_key(ic_url, open_timeout_s)
        protocol = make_protocol(
            canister_id=canister_id,
            identity=identity,
            root_key_der=root_key_der,
            message_type=message_type,
            ack_interval_ms=ack_interval_ms,
            max_certificate_age_s=max_certificate_age_s,
            open_timeout_s=open_timeout_s,
        )
        client = cls._connected(
            protocol,
            gateway_url,
            open_timeout_s,
            ssl_context,
            on_open=on_open,
            on_message=on_message,
            on_close=on_close,
            on_error=on_error,
            max_queue=max_queue,
        )
        client._start(open_timeout_s)
        return client

    @classmethod
    def _connected(
        cls,
        protocol: ClientProtocol,
        gateway_url: str,
        open_timeout_s: float,
        ssl_context: ssl.SSLContext | None,
        **options: Any,
    ) -> SyncIcWebSocket:
        """A client past the WebSocket upgrade, not started (:meth:`_start` opens the session)."""
        deadline = time.monotonic() + open_timeout_s
        try:
            sock, host, target = _open_socket(gateway_url, open_timeout_s, ssl_context)
        except OSError as exc:
            raise ConnectionClosed(CLOSE_ABNORMAL, f"cannot connect to {gateway_url}: {exc}") from exc
        try:
            ws = cls._upgrade(sock, host, target, deadline)
        except BaseException:
            sock.close()
            raise
        return cls(protocol, sock, ws, **options)

    @staticmethod
    def _upgrade(sock: socket.socket, host: str, target: str, deadline: float) -> WSConnection:
        """The WebSocket opening handshake, within ``deadline``."""
        ws = WSConnection(ConnectionType.CLIENT)
        try:
            sock.sendall(ws.send(Request(host=host, target=target)))
            while True:
                sock.settimeout(max(0.0, deadline - time.monotonic()))
                data = sock.recv(_READ_SIZE)
                ws.receive_data(data or None)
                for event in ws.events():
                    if isinstance(event, AcceptConnection):
                        sock.settimeout(None)
                        return ws
                    if isinstance(event, RejectConnection):
                        raise ConnectionClosed(CLOSE_ABNORMAL, f"the gateway refused the upgrade ({event.status_code})")
                if not data:
                    raise ConnectionClosed(CLOSE_ABNORMAL, "the gateway closed the connection during the upgrade")
        except (OSError, WsprotoError) as exc:
            raise ConnectionClosed(CLOSE_ABNORMAL, f"WebSocket upgrade failed: {exc}") from exc

    def _start(self, open_timeout_s: float) -> None:
        with self._lock:
            self._protocol.connection_made(self.now_ns())
        self._reader.start()
        with self._changed:
            # The protocol's timers close the connection when the handshake or the OpenMessage is late
            # (open_timeout_s each); this bound only covers a reader thread that never gets to run.
            opened = self._changed.wait_for(
                lambda: self._opened_flag or self.close_code is not None, 2 * open_timeout_s + CLOSE_TIMEOUT_S
            )
            if self._opened_flag:  # even if it closed since: recv() returns what came and then raises
                return
        if not opened:
            self._abort()
        raise self._closed_error()

    # ---- the application's side ----------------------------------------------------------

    def send(self, value: Any) -> None:
        """Send one application message; raises ``ConnectionClosed`` once closed, ``CandidError`` if it does not fit."""
        with self._lock:
            if self.close_code is None:
                self._handle(self._protocol.send(value, self.now_ns()))
            if self.close_code is not None:
                raise self._closed_error()

    def recv(self, timeout: float | None = None) -> Any:
        """The next application message.

        Raises ``TimeoutError`` after ``timeout`` seconds without one, ``ConnectionClosed`` once closed.
        """
        with self._changed:
            if not self._changed.wait_for(lambda: self._messages or self.close_code is not None, timeout):
                raise TimeoutError(f"no message within {timeout} s")
            if self._messages:
                value = self._messages.popleft()
                self._changed.notify_all()  # the reader may be waiting for room in the queue
                return value
            raise self._closed_error()

    def __iter__(self) -> Iterator[Any]:
        """Messages until the connection closes; a normal close (1000, 1001, 4001) ends the loop quietly."""
        while True:
            try:
                yield self.recv()
            except ConnectionClosed as exc:
                if exc.code in CLEAN_CLOSE_CODES:
                    return
                raise

    def close(self) -> None:
        """Close the connection (code 1000) and wait until the socket is down."""
        with self._lock:
            if self.close_code is None:
                self._handle(self._protocol.close())
        if threading.current_thread() is not self._reader:
            self._reader.join(CLOSE_TIMEOUT_S)
            if self._reader.is_alive():
                self._abort()
                self._reader.join()

    def __enter__(self) -> SyncIcWebSocket:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---- the reader thread ---------------------------------------------------------------

    def _read_loop(self) -> None:
        try:
            while True:
                # Frames that came in with the upgrade response (the gateway's handshake) are already buffered.
                self._process_events()
                with self._changed:
                    # Back-pressure: while the application has max_queue messages to take, read no further.
                    self._changed.wait_for(
                        lambda: self.close_code is not None or not self._queue_full(len(self._messages))
                    )
                if self._events_pending:
                    continue  # parsed frames are still buffered: handle them before reading more
                if self._ws.state is ConnectionState.CLOSED:
                    break
                timeout = self._wait_timeout()
                if timeout is not None and timeout <= 0:
                    if not self._on_deadline():
                        break
                    continue
                pending = isinstance(self._sock, ssl.SSLSocket) and self._sock.pending()
                if not pending and not select.select([self._sock], [], [], timeout)[0]:
                    continue
                data = self._sock.recv(_READ_SIZE)
                with self._lock:
                    self._ws.receive_data(data or None)
                if not data:
                    self._process_events()  # the close frame, if one came before the end of the stream
                    break
        except (OSError, WsprotoError) as exc:
            with self._lock:
                if self.close_code is None:
                    self.error = ProtocolError(f"the connection to the gateway broke: {exc}")
                    self._callback(self.on_error, self.error)
        finally:
            with self._lock:
                self._finish(CLOSE_ABNORMAL, "")
            self._sock.close()

    def _process_events(self) -> None:
        """Handle what wsproto parsed: reassembled messages go to the protocol, control frames are answered."""
        with self._lock:
            self._events_pending = False
            for event in self._ws.events():
                if isinstance(event, (BytesMessage, TextMessage)):
                    # Text goes the same way as binary: it fails CBOR decoding in the protocol.
                    chunk = event.data.encode() if isinstance(event.data, str) else bytes(event.data)
                    if not self._receive_chunk(chunk, event.message_finished):
                        return
                elif isinstance(event, Ping):
                    self._write(self._ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    if self._ws.state is ConnectionState.REMOTE_CLOSING:
                        self._write(self._ws.send(event.response()))
                    self._finish(event.code, event.reason or "")
                if self.close_code is None and self._queue_full(len(self._messages)):
                    # The queue is full: leave the remaining bytes unparsed in wsproto's buffer for later.
                    self._events_pending = True
                    return

    def _wait_timeout(self) -> float | None:
        """Seconds until the next protocol deadline or the close-handshake deadline; None for none."""
        with self._lock:
            if self._close_deadline is not None:
                return self._close_deadline - time.monotonic()
            deadline_ns = self._protocol.next_deadline_ns
        return None if deadline_ns is None else (deadline_ns - self.now_ns()) / 1e9

    def _on_deadline(self) -> bool:
        """Handle a passed deadline; False when the reader should stop (the close frame went unanswered)."""
        with self._lock:
            if self._close_deadline is not None:
                return False
            self._handle(self._protocol.tick(self.now_ns()))
            return True

    def _write(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as exc:
            self.error = ProtocolError(f"writing to the gateway failed: {exc}")
            self._finish(CLOSE_ABNORMAL, "")
            self._abort()

    def _abort(self) -> None:
        """Tear the socket down so the reader thread wakes up and ends."""
        with contextlib.suppress(OSError):  # already down
            self._sock.shutdown(socket.SHUT_RDWR)

    # ---- ClientBase hooks (called with the lock held) --------------------------------------

    def _send_frame(self, data: bytes) -> None:
        self._write(self._ws.send(Message(data=data)))

    def _close_transport(self, code: int, reason: str) -> None:
        if self._ws.state is ConnectionState.OPEN:
            self._write(self._ws.send(CloseConnection(code=code, reason=reason)))
            self._close_deadline = time.monotonic() + CLOSE_TIMEOUT_S

    def _deliver(self, value: Any) -> None:
        self._messages.append(value)
        self._changed.notify_all()

    def _opened(self) -> None:
        self._opened_flag = True
        self._changed.notify_all()

    def _wake_closed(self) -> None:
        self._changed.notify_all()


class ReconnectingSyncIcWebSocket(ReconnectingBase[SyncIcWebSocket]):
    """A :class:`SyncIcWebSocket` that opens a new session through the same gateway URL when its session ends.

    The blocking twin of :class:`~icws_fast.client.ReconnectingIcWebSocket` (same arguments, same behaviour,
    described in :class:`~icws_fast.client._common.ReconnectingBase`); use it as a :class:`SyncIcWebSocket`.
    Callbacks run on the reader thread of the session they concern; the attempts run on a thread of their own.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Use :meth:`connect` (the arguments are ``ReconnectingBase``'s)."""
        super().__init__(*args, **kwargs)
        # Taken inside a session's lock (its callbacks), never the other way round: no session call holds it.
        self._changed = threading.Condition(threading.RLock())

    @classmethod
    def connect(  # noqa: PLR0917 (the positional order is SyncIcWebSocket.connect's)
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
    ) -> ReconnectingSyncIcWebSocket:
        """Open the first session, blocking; the arguments are those of
        :meth:`icws_fast.client.ReconnectingIcWebSocket.connect`."""
        if root_key_der is None:
            root_key_der = fetch_root_key(ic_url, open_timeout_s)
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
        ws._open_session()
        return ws

    # ---- the application's side ----------------------------------------------------------

    def send(self, value: Any) -> None:
        """Send one application message in the current session; during a reconnect, in the next one.

        Raises ``ConnectionClosed`` once the client is closed for good, ``CandidError`` if ``value`` does not fit.
        """
        while True:
            session = self.session
            if not session.is_open:
                self._next_session(session, None)
                continue
            try:
                session.send(value)
                return
            except ConnectionClosed:
                continue  # the session ended before the message went out: it goes in the next one

    def recv(self, timeout: float | None = None) -> Any:
        """The next application message: the current session's, then (all taken) the next session's.

        Raises ``TimeoutError`` after ``timeout`` seconds without one, ``ConnectionClosed`` after the final close.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            session = self.session
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return session.recv(left)
            except ConnectionClosed:
                self._next_session(session, deadline)

    def __iter__(self) -> Iterator[Any]:
        """Messages across reconnects; the final close ends the loop as for :class:`SyncIcWebSocket`."""
        while True:
            try:
                yield self.recv()
            except ConnectionClosed as exc:
                if exc.code in CLEAN_CLOSE_CODES:
                    return
                raise

    def close(self) -> None:
        """Close for good (code 1000): end the current session, or stop reconnecting."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()  # an attempt waiting out its back-off stops
            session = self._session
        if session is not None and session.close_code is None:
            session.close()  # its on_close ends the client with 1000
        with self._changed:
            self._finish(CLOSE_NORMAL, "")

    def __enter__(self) -> ReconnectingSyncIcWebSocket:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---- sessions ------------------------------------------------------------------------

    def _open_session(self) -> None:
        """Open one session; raises ``ConnectionClosed`` as :meth:`SyncIcWebSocket.connect` when it cannot."""
        session = SyncIcWebSocket._connected(
            self._new_protocol(),
            self._gateway_url,
            self._open_timeout_s,
            self._ssl_context,
            on_message=self.on_message,
            on_error=self.on_error,
            max_queue=self.max_queue,
        )
        session.on_open = functools.partial(self._session_opened, session)
        session.on_close = functools.partial(self._session_closed, session)
        session._start(self._open_timeout_s)

    def _session_opened(self, session: SyncIcWebSocket) -> None:
        with self._changed:
            adopted = self._adopt(session)
        if not adopted:
            session.close()  # opened as close() was called; on the reader thread, close() does not wait

    def _session_closed(self, session: SyncIcWebSocket, code: int, reason: str) -> None:
        with self._changed:
            delay = self._lose(session, code, reason)
        if delay is not None:
            threading.Thread(target=self._reconnect, args=(delay,), name="icws-client-reconnect", daemon=True).start()

    def _reconnect(self, delay: float) -> None:
        while True:
            with self._changed:
                if self._changed.wait_for(lambda: self._closing, delay):
                    return
            try:
                self._open_session()
                return
            except ConnectionClosed as exc:
                with self._changed:
                    next_delay = self._give_up(exc)
            if next_delay is None:
                return
            delay = next_delay

    def _next_session(self, old: SyncIcWebSocket, deadline: float | None) -> None:
        """Until a session other than ``old`` opened; ``ConnectionClosed`` once closed for good, ``TimeoutError``
        at ``deadline`` (``time.monotonic()``)."""
        with self._changed:
            while self._session is old and self.close_code is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError("no message in time: the client is reconnecting")
                self._changed.wait(left)
            if self.close_code is not None:
                raise self._closed_error()

    def _wake(self) -> None:
        self._changed.notify_all()  # called with the condition's lock held
