"""The agent's HTTP response reader (``ic.http.Connection``: llhttp and the checks around it).

Input: a mode byte, then the bytes a server sends after the request. The mode's low two bits split
them into reads of 1, 7 or 300 bytes, or one read; bit 2 lowers the body limit to 64 bytes. After
the last read the server closes. The request must then have an outcome, a (status, body) within
the limit or an :class:`~icws_fast.errors.AgentError`, and a connection left reusable must be open.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from fuzz.harness import Violation
from icws_fast.ic.http import Connection, Failure

PREFIX = 1
_SPLITS = (1, 7, 300, 1 << 30)
_LOOP = asyncio.new_event_loop()  # futures need a loop; it never runs


class _Pool:
    def __init__(self, max_response_bytes: int) -> None:
        self.loop: asyncio.AbstractEventLoop = _LOOP
        self.max_response_bytes = max_response_bytes

    def forget(self, conn: Connection) -> None:
        pass


class _Transport:
    """Enough of a stream transport: writes are dropped, an abort closes."""

    def __init__(self) -> None:
        self.closing = False

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.closing = True


def one_input(data: bytes) -> None:
    if not data:
        return
    mode, answer = data[0], data[1:]
    limit = 64 if mode & 4 else 1 << 20
    conn = Connection(_Pool(limit))
    transport = _Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    waiter = conn.send(b"GET / HTTP/1.1\r\n\r\n")
    step = _SPLITS[mode & 3]
    for start in range(0, len(answer), step):
        if transport.closing:
            break
        conn.data_received(answer[start : start + step])
    if waiter.done() and not waiter.exception() and conn.reusable and transport.closing:
        raise Violation("a closed connection was left reusable")
    conn.connection_lost(None)
    if not waiter.done():
        raise Violation("the server closed and the request has no outcome")
    failure: Any = waiter.exception()
    if failure is None:
        status, body = waiter.result()
        if len(body) > limit:
            raise Violation(f"a body of {len(body)} bytes passed the limit of {limit}")
        if not 200 <= status <= 599:
            raise Violation(f"status {status} delivered as an answer")
        return
    if not isinstance(failure, Failure):
        raise failure
    raise failure.kind(failure.reason)


def seeds() -> Iterator[bytes]:
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Type: application/cbor\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1;a=b\r\n!\r\n0\r\nX-T: 1\r\n\r\n",
        b"HTTP/1.0 200 OK\r\n\r\nuntil the end",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 9\r\n\r\nnot found",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: identity\r\nContent-Length: 1\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"y" * 100,
    ]
    for mode in range(8):
        for answer in answers:
            yield bytes([mode]) + answer
