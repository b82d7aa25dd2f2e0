"""What the asyncio and the sync client share: options, the event dispatch, the close bookkeeping.

Both flavours drive the same sans-IO :class:`~icws_fast.protocol.client.ClientProtocol`; they differ
only in how bytes move (picows on an event loop, or a blocking socket) and in how waiting is done.
"""

from __future__ import annotations

import functools
import logging
import random as _random
import ssl
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any, Final, Generic, Self, TypeVar
from urllib.parse import SplitResult, urlsplit

from icws_fast.errors import ConfigError, ConnectionClosed, IcwsError, InternalError, ProtocolError
from icws_fast.ic.identity import Ed25519Identity, Identity
from icws_fast.ic.principal import Principal
from icws_fast.protocol.client import (
    CLOSE_BY_APPLICATION,
    CLOSE_NORMAL,
    ClientEvent,
    ClientProtocol,
    CloseConnection,
    ErrorOccurred,
    MessageReceived,
    Opened,
    SendToGateway,
)
from icws_fast.protocol.retry import Backoff
from icws_fast.protocol.types import ClientKey

log = logging.getLogger("icws_fast.client")

#: Close code of a connection that ended without a close frame (RFC 6455 section 7.1.5).
CLOSE_ABNORMAL: Final = 1006
#: Close code for a message over :data:`MAX_MESSAGE_SIZE` (RFC 6455 section 7.4.1).
CLOSE_MESSAGE_TOO_BIG: Final = 1009
#: Closes that end iteration quietly: normal closure, going away, the canister's ``ClosedByApplication``.
CLEAN_CLOSE_CODES: Final = frozenset({CLOSE_NORMAL, 1001, CLOSE_BY_APPLICATION})
#: The largest message the clients accept from a gateway (a batch certificate plus its tree is a few KiB).
MAX_MESSAGE_SIZE: Final = 4 * 1024 * 1024
#: How many received messages wait for ``recv()`` before the client stops reading from the gateway.
DEFAULT_MAX_QUEUE: Final = 1024
#: How long :meth:`close` waits for the gateway to answer the close frame.
CLOSE_TIMEOUT_S: Final = 5.0
#: Waits between reconnection attempts: from 0.5 s, doubling, at most 30 s, each shortened by up to half at random,
#: so that the clients of a gateway that went away do not all come back in the same instant.
DEFAULT_RECONNECT_BACKOFF: Final = Backoff(first_s=0.5, factor=2.0, max_s=30.0, jitter=0.5)


class Reconnection:
    """When a reconnecting client opens its next session (sans-IO; the clients do the waiting).

    :meth:`lost` answers the wait before the first attempt after a session ended, :meth:`failed` the wait
    after each failed attempt; None from either means: do not try (again). ``random`` draws the jitter.
    """

    __slots__ = ("_random", "backoff", "failures", "max_attempts")

    def __init__(
        self, backoff: Backoff, max_attempts: int | None, *, random: Callable[[], float] = _random.random
    ) -> None:
        if max_attempts is not None and max_attempts < 1:
            raise ConfigError("max_attempts", f"at least 1 reconnection attempt, or None for no limit: {max_attempts}")
        self.backoff = backoff
        self.max_attempts = max_attempts
        self.failures = 0
        self._random = random

    @staticmethod
    def reconnects_after(code: int) -> bool:
        """Whether a session that ended with ``code`` is followed by another: not after the canister closed it."""
        return code != CLOSE_BY_APPLICATION

    def lost(self, code: int) -> float | None:
        """A session ended with ``code``: the wait before the first attempt, or None not to reconnect."""
        if not self.reconnects_after(code):
            return None
        self.failures = 0
        return self.backoff.delay(1, self._random())

    def failed(self) -> float | None:
        """An attempt failed: the wait before the next one, or None once ``max_attempts`` failed in a row."""
        self.failures += 1
        if self.max_attempts is not None and self.failures >= self.max_attempts:
            return None
        return self.backoff.delay(self.failures + 1, self._random())


class MessageAssembler:
    """Joins the frames of one WebSocket message, within :data:`MAX_MESSAGE_SIZE`.

    Both flavours read frames their own way (picows frames, wsproto message chunks) and feed them here,
    so the size bound and the reassembly are the same in both.
    """

    __slots__ = ("_parts", "_size")

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, chunk: bytes, fin: bool) -> bytes | None:
        """The whole message once ``fin`` is set, else None (the chunk is kept).

        Raises :class:`~icws_fast.errors.ProtocolError` when the message grows over :data:`MAX_MESSAGE_SIZE`.
        """
        self._size += len(chunk)
        if self._size > MAX_MESSAGE_SIZE:
            raise ProtocolError(f"a message from the gateway exceeds {MAX_MESSAGE_SIZE} bytes")
        if not fin:
            self._parts.append(chunk)
            return None
        self._size = 0
        if not self._parts:
            return chunk  # the usual case: a message in one frame, not copied
        self._parts.append(chunk)
        message = b"".join(self._parts)
        self._parts.clear()
        return message


def gateway_url_parts(gateway_url: str) -> SplitResult:
    """``gateway_url`` split, or :class:`~icws_fast.errors.ConfigError` unless it is a ``ws://`` or ``wss://`` URL."""
    parts = urlsplit(gateway_url)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is no number or out of range
    except ValueError:
        raise ConfigError("gateway_url", f"{gateway_url!r} has an invalid port") from None
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ConfigError("gateway_url", f"{gateway_url!r} is not a ws:// or wss:// URL")
    return parts


def make_protocol(
    *,
    canister_id: Principal | str,
    identity: Identity | None,
    root_key_der: bytes,
    message_type: str,
    ack_interval_ms: int,
    max_certificate_age_s: float,
    open_timeout_s: float,
) -> ClientProtocol:
    """The sans-IO core for one connection; a fresh random Ed25519 identity when ``identity`` is None."""
    return ClientProtocol(
        canister_id if isinstance(canister_id, Principal) else Principal.from_text(canister_id),
        Ed25519Identity.generate() if identity is None else identity,
        root_key_der,
        message_type,
        ack_interval_ms=ack_interval_ms,
        max_certificate_age_s=max_certificate_age_s,
        open_timeout_ms=int(open_timeout_s * 1000),
    )


class ClientBase(ABC):
    """Event dispatch and close bookkeeping shared by :class:`IcWebSocket` and :class:`SyncIcWebSocket`.

    Callbacks (all optional, set as attributes or passed to ``connect``), as in the JS SDK:
    ``on_open()``, ``on_message(value)``, ``on_close(code, reason)``, ``on_error(error)``. An exception in
    a callback is logged and does not affect the connection. When ``on_message`` is set it receives
    the application messages; otherwise they are queued for ``recv()`` and iteration.

    At most ``max_queue`` messages (None: no limit) wait for ``recv()``; beyond that the client stops
    reading from the gateway until the application catches up (back-pressure, as the gateway's send
    buffer then fills). An application that stops reading for longer than the ack timeout loses the
    connection, since acks are not read either.
    """

    def __init__(
        self,
        protocol: ClientProtocol,
        *,
        on_open: Callable[[], Any] | None = None,
        on_message: Callable[[Any], Any] | None = None,
        on_close: Callable[[int, str], Any] | None = None,
        on_error: Callable[[IcwsError], Any] | None = None,
        max_queue: int | None = DEFAULT_MAX_QUEUE,
    ) -> None:
        self._protocol = protocol
        self._assembler = MessageAssembler()
        self.max_queue = max_queue
        self.on_open = on_open
        self.on_message = on_message
        self.on_close = on_close
        self.on_error = on_error
        #: The code and reason the connection closed with (None while it is not closed).
        self.close_code: int | None = None
        self.close_reason = ""
        #: The failure that closed the connection, if one did.
        self.error: IcwsError | None = None

    @property
    def canister_id(self) -> Principal:
        return self._protocol.canister_id

    @property
    def client_key(self) -> ClientKey:
        """This connection's client key (the identity's principal and the random client nonce)."""
        return self._protocol.client_key

    @property
    def principal(self) -> Principal:
        return self._protocol.client_key.client_principal

    @property
    def gateway_principal(self) -> Principal | None:
        return self._protocol.gateway_principal

    @property
    def is_open(self) -> bool:
        """True between the canister's OpenMessage and the close."""
        return self._protocol.is_open and self.close_code is None

    def _queue_full(self, queued: int) -> bool:
        return self.max_queue is not None and queued >= self.max_queue

    @staticmethod
    def now_ns() -> int:
        # Wall-clock time: certificates, ingress expiries and message timestamps are all Unix times.
        return time.time_ns()

    def _closed_error(self) -> ConnectionClosed:
        exc = ConnectionClosed(CLOSE_ABNORMAL if self.close_code is None else self.close_code, self.close_reason)
        exc.__cause__ = self.error
        return exc

    def _handle(self, events: Iterable[ClientEvent]) -> None:
        """Carry out the protocol's events in order."""
        for event in events:
            if isinstance(event, SendToGateway):
                self._send_frame(event.data)
            elif isinstance(event, MessageReceived):
                if self.on_message is None:
                    self._deliver(event.value)
                else:
                    self._callback(self.on_message, event.value)
            elif isinstance(event, Opened):
                self._opened()
                self._callback(self.on_open)
            elif isinstance(event, ErrorOccurred):
                if isinstance(event.error, InternalError):
                    # A bug in icws_fast, not something the gateway did: keep the traceback.
                    log.error(
                        "IC WebSocket to %s (client %s) failed: %s",
                        self.canister_id,
                        self.client_key,
                        event.error,
                        exc_info=event.error.__cause__,
                    )
                else:
                    log.warning(
                        "IC WebSocket to %s (client %s) failed: %s", self.canister_id, self.client_key, event.error
                    )
                self.error = event.error
                self._callback(self.on_error, event.error)
            elif isinstance(event, CloseConnection):
                self._close_transport(event.code, event.reason)
                self._finish(event.code, event.reason)

    def _finish(self, code: int, reason: str) -> None:
        """Record the close once, wake every waiter, tell ``on_close``."""
        if self.close_code is not None:
            return
        self._protocol.connection_lost()
        self.close_code = code
        self.close_reason = reason
        self._wake_closed()
        self._callback(self.on_close, code, reason)

    def _receive_chunk(self, chunk: bytes, fin: bool) -> bool:
        """Feed one frame (or wsproto chunk) of a gateway message; a whole message goes to the protocol.

        False when the message is over :data:`MAX_MESSAGE_SIZE`: the connection is then closing with 1009.
        """
        try:
            message = self._assembler.feed(chunk, fin)
        except ProtocolError as exc:
            self._fail_transport(exc, CLOSE_MESSAGE_TOO_BIG, "Message too big")
            return False
        if message is not None:
            self._handle(self._protocol.receive_frame(message, self.now_ns()))
        return True

    def _fail_transport(self, error: IcwsError, code: int, reason: str) -> None:
        """A failure below the IC WebSocket protocol (e.g. an oversized message): report it and close."""
        if self.close_code is not None:
            return  # frames still arriving after our close frame went out
        self.error = error
        self._callback(self.on_error, error)
        self._close_transport(code, reason)
        self._finish(code, reason)

    def _callback(self, fn: Callable[..., Any] | None, *args: Any) -> None:
        if fn is None:
            return
        try:
            self._run_callback(fn, *args)
        except Exception:
            log.exception("IC WebSocket callback %r failed", fn)

    def _run_callback(self, fn: Callable[..., Any], *args: Any) -> None:
        fn(*args)

    @abstractmethod
    def _send_frame(self, data: bytes) -> None:
        """Write one binary frame to the gateway."""

    @abstractmethod
    def _close_transport(self, code: int, reason: str) -> None:
        """Send a close frame with ``code`` and ``reason`` and let the transport shut down."""

    @abstractmethod
    def _deliver(self, value: Any) -> None:
        """Queue an application message for ``recv()``."""

    @abstractmethod
    def _opened(self) -> None:
        """Wake whoever waits for the connection to open."""

    @abstractmethod
    def _wake_closed(self) -> None:
        """Wake whoever waits for a message or the open: the connection is closed."""


SessionT = TypeVar("SessionT", bound=ClientBase)


class ReconnectingBase(ABC, Generic[SessionT]):
    """What :class:`~icws_fast.client.ReconnectingIcWebSocket` and
    :class:`~icws_fast.client.ReconnectingSyncIcWebSocket` share: the current session, the bookkeeping of a
    session lost and of one opened, the final close. The flavours do the waiting and the locking.

    A reconnecting client opens a new session whenever its session ends, except by :meth:`close` or by the
    canister (``ClosedByApplication``, 4001): after a gateway went away (1001 drain, 1006 dropped), refused it
    (1013) or failed (1011), and after a protocol error (4000). The protocol has no resume, so each session is new:
    a new client nonce (same identity, so the same principal), sequence numbers from 1 again, a new ``ws_open``.
    What the reconnect loses:

    - messages the canister sent to the old session after the last one received: they stay in the canister's
      queue for the old client key until it drops that client (``ws_close`` from a surviving gateway, else its
      keep-alive timeout) and are never delivered to the new session;
    - certainty about the messages this client sent in the old session that the canister had not acknowledged
      yet (acks come every ``ack_interval_ms``): each may or may not have reached the canister. None is sent
      again, since a resend could run twice; a message handed to :meth:`send` while no session is open waits for
      the next one instead, and is sent exactly once there;
    - whatever the canister kept for the old client key (subscriptions, rooms): the application sets it up
      again, in ``on_reconnect`` or ``on_open``.

    Messages of the old session that arrived are all still returned by ``recv()`` (and iteration), in order,
    before those of the new session; iteration goes on across reconnects and ends only at the final close. The
    first session is opened as the plain client's (failing ``connect`` if it cannot); later ones are attempted
    after ``backoff`` waits, at most ``max_attempts`` times in a row (None: until :meth:`close`); when the
    attempts run out, the client closes with the last failure's code. Callbacks: ``on_open()`` after every open
    (the first and each reconnect), preceded on a reconnect by ``on_reconnect(code, reason)`` with how the
    previous session ended; ``on_close(code, reason)`` only at the final close; ``on_message`` and ``on_error``
    as for the plain client (every session's errors are reported). ``reconnects`` counts the sessions reopened;
    ``client_key`` is the current session's.
    """

    def __init__(
        self,
        new_protocol: Callable[[], ClientProtocol],
        gateway_url: str,
        reconnection: Reconnection,
        *,
        open_timeout_s: float,
        ssl_context: ssl.SSLContext | None,
        max_queue: int | None,
        on_open: Callable[[], Any] | None = None,
        on_message: Callable[[Any], Any] | None = None,
        on_close: Callable[[int, str], Any] | None = None,
        on_error: Callable[[IcwsError], Any] | None = None,
        on_reconnect: Callable[[int, str], Any] | None = None,
    ) -> None:
        """Use the flavour's ``connect``: ``new_protocol()`` is each session's sans-IO core."""
        self._new_protocol = new_protocol
        self._gateway_url = gateway_url
        self._reconnection = reconnection
        self._open_timeout_s = open_timeout_s
        self._ssl_context = ssl_context
        self.max_queue = max_queue
        self.on_open = on_open
        self.on_message = on_message
        self.on_close = on_close
        self.on_error = on_error
        self.on_reconnect = on_reconnect
        #: How many times a new session replaced a lost one.
        self.reconnects = 0
        #: The code and reason of the final close (None / ``""`` while sessions go on).
        self.close_code: int | None = None
        self.close_reason = ""
        self._session: SessionT | None = None
        self._lost: tuple[int, str] | None = None  # how the session being replaced ended
        self._closing = False  # close() was called: no more sessions

    @classmethod
    def _create(
        cls,
        gateway_url: str,
        canister_id: Principal | str,
        identity: Identity | None,
        root_key_der: bytes,
        *,
        message_type: str,
        ack_interval_ms: int,
        max_certificate_age_s: float,
        open_timeout_s: float,
        ssl_context: ssl.SSLContext | None,
        backoff: Backoff,
        max_attempts: int | None,
        **options: Any,
    ) -> Self:
        """The client of the flavour's ``connect`` arguments, before its first session: every session gets the
        same identity (a fresh Ed25519 one when None) and root key. ``options``: callbacks and ``max_queue``."""
        new_protocol = functools.partial(
            make_protocol,
            canister_id=canister_id,
            identity=Ed25519Identity.generate() if identity is None else identity,
            root_key_der=root_key_der,
            message_type=message_type,
            ack_interval_ms=ack_interval_ms,
            max_certificate_age_s=max_certificate_age_s,
            open_timeout_s=open_timeout_s,
        )
        reconnection = Reconnection(backoff, max_attempts)
        return cls(
            new_protocol, gateway_url, reconnection, open_timeout_s=open_timeout_s, ssl_context=ssl_context, **options
        )

    @property
    def session(self) -> SessionT:
        """The current session (the last one opened; closed while a reconnect is under way)."""
        if self._session is None:
            raise RuntimeError(f"build a {type(self).__name__} with connect()")
        return self._session

    @property
    def canister_id(self) -> Principal:
        return self.session.canister_id

    @property
    def client_key(self) -> ClientKey:
        """The current session's client key: the principal stays, the nonce is new in each session."""
        return self.session.client_key

    @property
    def principal(self) -> Principal:
        return self.session.principal

    @property
    def gateway_principal(self) -> Principal | None:
        """The principal of the gateway serving the current session."""
        return self.session.gateway_principal

    @property
    def is_open(self) -> bool:
        """True while a session is open (False during a reconnect and after the final close)."""
        return self.close_code is None and self.session.is_open

    @property
    def error(self) -> IcwsError | None:
        """The failure that ended the current (or the final) session, if one did."""
        return self.session.error

    def _adopt(self, session: SessionT) -> bool:
        """``session`` is open (its ``on_open``, before any of its messages): make it current, run the callbacks,
        wake the waiters.

        False, and nothing done, after :meth:`close`: the caller closes that session.
        """
        if self._closing or self.close_code is not None:
            return False
        self._session = session
        lost, self._lost = self._lost, None
        if lost is not None:
            self.reconnects += 1
            self._callback(self.on_reconnect, *lost)
        self._callback(self.on_open)
        self._wake()
        return True

    def _lose(self, session: SessionT, code: int, reason: str) -> float | None:
        """``session`` ended with ``code``: the wait before the first attempt of the next one, or None when none
        follows (then the client has closed for good, or ``session`` was a failed attempt or a stale one)."""
        if session is not self._session or self.close_code is not None:
            return None  # a failed attempt (its connect raises) or a session after the end
        delay = None if self._closing else self._reconnection.lost(code)
        if delay is None:
            self._finish(code, reason)
            return None
        log.info("IC WebSocket to %s: session ended (%d %r), reconnecting", session.canister_id, code, reason)
        self._lost = (code, reason)
        return delay

    def _give_up(self, failed: ConnectionClosed) -> float | None:
        """An attempt failed with ``failed``: the wait before the next, or None after closing for good."""
        if self._closing:
            return None  # close() ends the client
        delay = self._reconnection.failed()
        if delay is None:
            log.warning("IC WebSocket to %s: giving up reconnecting: %s", self.canister_id, failed)
            self._finish(failed.code, failed.reason)
            return None
        log.info("IC WebSocket to %s: reconnect failed (%s), again in %.2fs", self.canister_id, failed, delay)
        return delay

    def _finish(self, code: int, reason: str) -> None:
        """Close for good, once: wake every waiter, tell ``on_close``."""
        if self.close_code is not None:
            return
        self.close_code, self.close_reason = code, reason
        self._wake()
        self._callback(self.on_close, code, reason)

    def _closed_error(self) -> ConnectionClosed:
        exc = ConnectionClosed(CLOSE_ABNORMAL if self.close_code is None else self.close_code, self.close_reason)
        exc.__cause__ = self.error
        return exc

    def _callback(self, fn: Callable[..., Any] | None, *args: Any) -> None:
        # The session's runner: the flavour's way (a coroutine as a task on asyncio), exceptions logged.
        self.session._callback(fn, *args)

    @abstractmethod
    def _wake(self) -> None:
        """Wake whoever waits for the next session: one opened, or the client closed for good."""
