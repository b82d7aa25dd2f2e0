"""A lean keep-alive HTTP/1.1 client of one origin: the agent's transport to a replica or boundary node.

The agent sends small CBOR requests to one host, over and over (a gateway polls each canister many times a
second), so this client does only that: a bounded pool of keep-alive connections, one request at a time on
each (no pipelining: concurrent requests take separate connections, and one slow answer never holds up
another), a deadline per request, TLS for ``https`` URLs (SNI and certificate verification on by default).
Responses are parsed by llhttp (:mod:`httptools`, Node.js's parser): a general-purpose client's
per-request machinery (aiohttp's) cost more CPU than the rest of a poll (``benchmarks/e2e/bench_agent.py``).

Every byte from the peer is hostile. The header is bounded (:data:`MAX_HEAD_BYTES`), the body by the
client's ``max_response_bytes`` (a ``Content-Length`` over it is refused before the body is read), and the
whole answer by the deadline; a malformed status line, header or chunked body, an answer nobody asked for,
an upgrade or a compressed body (never asked for: no ``Accept-Encoding`` is sent) fail the request. A
connection that failed, timed out, was cancelled mid-request or was told ``Connection: close`` is closed,
never returned to the pool.

Nothing is retried here: a connection the server closes just as a request goes out fails that request, and
the caller's own policy (the poller's back-off, the relay's error to its client) decides, as for any other
transport failure. Failures raise :class:`~icws_fast.errors.AgentError` subclasses naming the request and the
URL: :class:`~icws_fast.errors.AgentTimeout` past the deadline, :class:`~icws_fast.errors.TransportError` when
the connection fails (DNS, refused, reset, closed early), plain :class:`~icws_fast.errors.AgentError` for a
malformed or oversized answer.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from typing import Final, Protocol, cast
from urllib.parse import urlsplit

import httptools

from icws_fast import __version__
from icws_fast.errors import AgentError, AgentTimeout, TransportError

#: Largest status line plus header (and trailer) of an answer; llhttp itself sets no limit.
MAX_HEAD_BYTES: Final = 64 * 1024
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


class Failure(Exception):
    """Why a request failed, as the connection saw it; :meth:`HttpClient.request` words the public error."""

    def __init__(self, kind: type[AgentError], reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class Origin:
    """The parts of a base URL a request needs: scheme, host, port, path prefix and the ``Host`` header."""

    __slots__ = ("host", "host_header", "port", "prefix", "tls", "url")

    def __init__(self, url: str) -> None:
        """Parse ``url`` (``http`` or ``https``, a host, optionally a port and a path prefix).

        Raises :class:`AgentError` for anything else: it is a configuration mistake, said at once.
        """
        self.url = url.rstrip("/")
        try:
            parts = urlsplit(self.url)
            port = parts.port
        except ValueError as exc:
            raise AgentError(f"malformed URL {url!r}: {exc}") from None
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise AgentError(f"unsupported URL {url!r}: expected http://host[:port] or https://host[:port]")
        if parts.query or parts.fragment or parts.username is not None:
            raise AgentError(f"unsupported URL {url!r}: a query, fragment or user name has no place in it")
        self.tls = parts.scheme == "https"
        host = parts.hostname
        if not host.isascii():
            try:
                host = host.encode("idna").decode("ascii")
            except UnicodeError as exc:
                raise AgentError(f"malformed host name in URL {url!r}: {exc}") from None
        self.host: str = host
        self.port: int = port if port is not None else _DEFAULT_PORTS[parts.scheme]
        self.prefix = parts.path
        bracketed = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = bracketed if port is None else f"{bracketed}:{port}"


class Pool(Protocol):
    """What a connection needs from the client that owns it (:class:`HttpClient`; a fuzz target fakes it)."""

    loop: asyncio.AbstractEventLoop
    max_response_bytes: int

    def forget(self, conn: Connection) -> None:
        """Drop a connection that closed."""


class Connection(asyncio.Protocol):
    """One keep-alive connection: writes a request, parses its answer (llhttp callbacks), hands it over.

    The callbacks never raise (an exception inside llhttp's callback loses its type): they record what is
    wrong in ``_problem``, and :meth:`data_received` fails the request after ``feed_data`` returns.
    """

    def __init__(self, client: Pool) -> None:
        self._client = client
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        #: True once an answer completed and both sides keep the connection open for another request.
        self.reusable = False
        self._keep_alive = False
        self._reset()

    def _reset(self) -> None:
        """Forget the answer being read (before each request, and after a 1xx interim answer)."""
        self._wire = 0  # bytes received for this answer, framing included
        self._headers_done = False
        self._status = 0
        self._length: int | None = None  # Content-Length
        self._chunked = False
        self._chunks: list[bytes] = []
        self._size = 0
        self._complete = False
        self._problem: Failure | None = None

    # -- used by HttpClient ---------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def send(self, data: bytes) -> asyncio.Future[tuple[int, bytes]]:
        """Write one request; the future of its (status, body), or of a :class:`Failure`."""
        assert self._transport is not None and self._waiter is None
        self.reusable = False
        self._reset()
        waiter: asyncio.Future[tuple[int, bytes]] = self._client.loop.create_future()
        self._waiter = waiter
        self._transport.write(data)
        return waiter

    def fail(self, failure: Failure) -> None:
        """Fail the pending request (if any) and close the connection at once."""
        self.reusable = False
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(failure)
        self.abort()

    def time_out(self) -> None:
        """The request's deadline passed (a timer callback): fail it, close the connection."""
        self.fail(Failure(AgentTimeout, "no answer in time"))

    def abort(self) -> None:
        self.reusable = False
        if self._transport is not None:
            self._transport.abort()

    # -- asyncio.Protocol -----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's does not derive from asyncio.Transport, hence no isinstance check).
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        # The parser holds this protocol for its callbacks: a cycle the gateway's GC policy would keep (frozen)
        # until its hourly audit. Nothing parses after the connection is lost (asyncio calls no data_received).
        del self._parser
        self.reusable = False
        self._client.forget(self)
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            return
        if exc is None and self._headers_done and self._length is None and not self._chunked:
            # No length and not chunked: the body runs until the server closes (RFC 9112, 6.3).
            waiter.set_result((self._status, b"".join(self._chunks)))
            return
        waiter.set_exception(Failure(TransportError, self._lost_reason(exc)))

    def _lost_reason(self, exc: Exception | None) -> str:
        if isinstance(exc, OSError) and exc.errno:
            reason = f"the connection broke ({os.strerror(exc.errno).lower()})"
        elif exc is not None:
            reason = f"the connection broke ({exc})"
        else:
            reason = "the server closed the connection"
        if self._wire == 0:
            return f"{reason} before answering"
        if not self._headers_done:
            return f"{reason} in the middle of the answer's header"
        expected = f"of {self._length} " if self._length is not None else ""
        return f"{reason} after {self._size} {expected}body bytes"

    def eof_received(self) -> bool:
        return False  # close: every answer this client reads ends before the server's half-close

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            # Bytes nobody asked for (a second answer, garbage on an idle connection): the stream is out of step.
            self.abort()
            return
        self._wire += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.fail(Failure(AgentError, "the server switched protocols (an upgrade nobody asked for)"))
            return
        except httptools.HttpParserError as exc:
            self.fail(Failure(AgentError, f"malformed HTTP answer ({exc})"))
            return
        if self._problem is not None:
            self.fail(self._problem)
        elif self._complete:
            waiter, self._waiter = self._waiter, None
            self.reusable = self._keep_alive and self.is_open
            waiter.set_result((self._status, b"".join(self._chunks)))
        elif not self._headers_done and self._wire > MAX_HEAD_BYTES:
            self.fail(Failure(AgentError, f"the answer's header is over {MAX_HEAD_BYTES} bytes"))
        elif self._wire > 2 * self._client.max_response_bytes + MAX_HEAD_BYTES:
            # Twice the body limit leaves ample room for chunk framing; more is a peer playing games.
            self.fail(Failure(AgentError, f"the answer's chunk framing is over {self._wire} bytes"))

    # -- llhttp callbacks -----------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:
            # A second answer in the same read: never asked for.
            self._problem = Failure(AgentError, "the server sent an answer nobody asked for")

    def on_header(self, name: bytes, value: bytes) -> None:
        # Only three headers matter; their lengths tell them apart before any lower-casing.
        size = len(name)
        if size == 14 and name.lower() == b"content-length":
            # llhttp has checked the digits (and refused two different lengths).
            self._length = int(value)
        elif size == 17 and name.lower() == b"transfer-encoding":
            self._chunked = True
            if value.strip().lower() != b"chunked":
                self._problem = self._problem or Failure(
                    AgentError, f"unsupported transfer-encoding {value.decode('latin-1')!r:.40} (only chunked)"
                )
        elif size == 16 and name.lower() == b"content-encoding" and value.strip().lower() != b"identity":
            self._problem = self._problem or Failure(
                AgentError, f"the answer is compressed ({value.decode('latin-1')!r:.40}), which was never asked for"
            )

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            return  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        if not 200 <= status <= 599:
            self._problem = self._problem or Failure(AgentError, f"malformed HTTP answer (status {status})")
        self._status = status
        self._headers_done = True
        limit = self._client.max_response_bytes
        if self._length is not None and self._length > limit:
            reason = f"the answer of {self._length} bytes is over the limit of {limit} bytes (max_response_bytes)"
            self._problem = self._problem or Failure(AgentError, reason)

    def on_body(self, body: bytes) -> None:
        if self._problem is not None:
            return
        self._size += len(body)
        limit = self._client.max_response_bytes
        if self._size > limit:
            self._problem = Failure(AgentError, f"the answer is over the limit of {limit} bytes (max_response_bytes)")
            self._chunks = []
            return
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        if not self._headers_done:
            self._reset()  # the end of an interim answer: read the next one afresh
            return
        self._complete = True
        # Here, before llhttp resets its flags for the next message: HTTP/1.1 unless Connection: close.
        self._keep_alive = self._parser.should_keep_alive()


class HttpClient:
    """A keep-alive HTTP/1.1 client of one origin; see the module docstring.

    At most ``max_connections`` connections are open (and so at most that many requests in flight; more wait
    for a free one within their deadline). Idle connections are reused most recent first, so the ones beyond
    the usual concurrency go idle and the server's keep-alive time-out closes them. ``ssl_context`` replaces
    the default one (system trust store, host name checked) for ``https`` URLs. Create it inside the event
    loop that will use it; :meth:`close` closes every connection, and the client opens new ones if used again.
    """

    def __init__(
        self,
        url: str | Origin,
        *,
        max_connections: int,
        max_response_bytes: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {max_connections}")
        self.origin = url if isinstance(url, Origin) else Origin(url)
        self.loop = asyncio.get_running_loop()
        self.max_connections = max_connections
        self.max_response_bytes = max_response_bytes
        self._ssl_context = ssl_context
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[Connection] = []
        self._connections: set[Connection] = set()
        # The head lines every request repeats, and the path prefix of the base URL.
        self._head_suffix = f"Host: {self.origin.host_header}\r\nUser-Agent: icws_fast/{__version__}\r\n".encode()
        self._prefix = self.origin.prefix.encode()
        #: Connections opened so far (for tests and metrics).
        self.connections_opened = 0

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def forget(self, conn: Connection) -> None:
        """Drop a closed connection (called by the connection itself)."""
        self._connections.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)

    async def close(self) -> None:
        """Close every connection; requests in flight fail with :class:`TransportError`."""
        self._idle.clear()
        for conn in list(self._connections):
            conn.fail(Failure(TransportError, "the agent was closed"))
        self._connections.clear()

    async def request(self, method: str, path: str, body: bytes | None, timeout_s: float) -> tuple[int, bytes]:
        """Send ``method path`` (with a CBOR ``body``, if any) and read the answer; its status and body.

        Any status is returned; the deadline ``timeout_s`` covers waiting for a free connection, connecting
        and reading the whole answer. Raises the errors listed in the module docstring.
        """
        loop = self.loop
        deadline = loop.time() + timeout_s
        slots = self._slots
        if slots.locked():
            try:
                await asyncio.wait_for(slots.acquire(), timeout_s)
            except TimeoutError:
                raise self._error(
                    method, path, AgentTimeout, f"all {self.max_connections} connections stayed busy for {timeout_s} s"
                ) from None
        else:
            await slots.acquire()  # free: returns at once
        try:
            return await self._exchange(method, path, body, deadline, timeout_s)
        finally:
            slots.release()

    async def _exchange(
        self, method: str, path: str, body: bytes | None, deadline: float, timeout_s: float
    ) -> tuple[int, bytes]:
        idle = self._idle
        conn = None
        while idle:
            candidate = idle.pop()
            if candidate.is_open:
                conn = candidate
                break
        if conn is None:
            conn = await self._connect(method, path, deadline, timeout_s)
        if body is None:
            data = b"%s %s%s HTTP/1.1\r\n%s\r\n" % (
                method.encode(),
                self._prefix,
                path.encode(),
                self._head_suffix,
            )
        else:
            data = b"%s %s%s HTTP/1.1\r\n%sContent-Type: application/cbor\r\nContent-Length: %d\r\n\r\n%s" % (
                method.encode(),
                self._prefix,
                path.encode(),
                self._head_suffix,
                len(body),
                body,
            )
        waiter = conn.send(data)
        timer = self.loop.call_at(deadline, conn.time_out)
        try:
            status, answer = await waiter
        except Failure as failure:
            if failure.kind is AgentTimeout:
                raise AgentTimeout(f"{method} {path}: no answer from {self.origin.url} within {timeout_s} s") from None
            raise self._error(method, path, failure.kind, failure.reason) from None
        except BaseException:
            conn.abort()  # cancelled mid-request: the answer may still come, so the stream is out of step
            raise
        finally:
            timer.cancel()
        if conn.reusable:
            idle.append(conn)
        else:
            conn.abort()
        return status, answer

    def _error(self, method: str, path: str, kind: type[AgentError], reason: str) -> AgentError:
        if kind is TransportError:
            return TransportError(f"{method} {path} to {self.origin.url} failed: {reason}")
        if kind is AgentTimeout:
            return AgentTimeout(f"{method} {path} to {self.origin.url}: {reason}")
        return kind(f"{method} {path} to {self.origin.url}: {reason}")

    async def _connect(self, method: str, path: str, deadline: float, timeout_s: float) -> Connection:
        """A new connection (TLS for ``https``), or the error of the first address that failed."""
        origin = self.origin
        remaining = deadline - self.loop.time()
        try:
            return await asyncio.wait_for(self._open(), remaining)
        except TimeoutError:
            raise self._error(method, path, AgentTimeout, f"no connection within {timeout_s} s") from None
        except socket.gaierror as exc:
            raise self._error(method, path, TransportError, f"cannot resolve the host ({exc.strerror})") from None
        except ssl.SSLCertVerificationError as exc:
            reason = f"the TLS certificate of {origin.host} is not trusted ({exc.verify_message})"
            raise self._error(method, path, TransportError, reason) from None
        except ssl.SSLError as exc:
            raise self._error(method, path, TransportError, f"TLS handshake failed ({exc.reason or exc})") from None
        except OSError as exc:
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            raise self._error(method, path, TransportError, f"cannot connect ({reason})") from None

    async def _open(self) -> Connection:
        origin = self.origin
        context: ssl.SSLContext | None = None
        if origin.tls:
            if self._ssl_context is None:
                self._ssl_context = ssl.create_default_context()
            context = self._ssl_context
        # Resolved here, then tried address by address, so that a refusal keeps its errno (asyncio folds the
        # failures of several addresses into one OSError without any).
        infos = await self.loop.getaddrinfo(origin.host, origin.port, type=socket.SOCK_STREAM)
        first: OSError | None = None
        for family, _, proto, _, address in infos:
            try:
                _, conn = await self.loop.create_connection(
                    lambda: Connection(self),
                    str(address[0]),
                    origin.port,
                    family=family,
                    proto=proto,
                    ssl=context,
                    server_hostname=origin.host if context is not None else None,
                )
            except ssl.SSLError:
                raise
            except OSError as exc:
                first = first or exc
                continue
            self._connections.add(conn)
            self.connections_opened += 1
            return conn
        raise first or OSError(f"{origin.host} has no address")
