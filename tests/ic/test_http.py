"""The agent's HTTP client (``icws_fast.ic.http``) against real sockets on loopback.

``ScriptedServer`` is an asyncio server that reads each request (Content-Length bodies, as the client sends)
and answers it with a script: bytes to write, pauses, a close, a reset, or silence. It counts the connections
it accepts, so keep-alive reuse and the closing of connections in a bad state are observable from outside.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import ssl
import struct
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from icws_fast.errors import AgentError, AgentTimeout, HttpStatusError, TransportError
from icws_fast.ic.agent import Agent
from icws_fast.ic.http import MAX_HEAD_BYTES, HttpClient, Origin
from tests.tls import self_signed

#: One step of a scripted answer: bytes to write, seconds to wait, or "close" / "reset" / "hang".
Step = bytes | float | str


@dataclass
class Seen:
    """A request as the server read it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    connection: int  # which accepted connection (0, 1, ...) carried it


def ok(body: bytes = b"answer", *, extra: bytes = b"") -> list[Step]:
    return [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)]


@dataclass
class ScriptedServer:
    """Answers request number i with ``script(i)`` (default: 200 "answer"); see the module docstring."""

    script: Callable[[int], list[Step]] = lambda _: ok()
    accepted: int = 0
    seen: list[Seen] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = self.accepted
        self.accepted += 1
        self.writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
                method, path, _ = request_line.split(" ")
                headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.seen.append(Seen(method, path, headers, body, number))
                for step in self.script(len(self.seen) - 1):
                    if isinstance(step, bytes):
                        writer.write(step)
                        await writer.drain()
                    elif isinstance(step, float):
                        await asyncio.sleep(step)
                    elif step == "close":
                        writer.close()
                        return
                    elif step == "reset":
                        sock = writer.get_extra_info("socket")
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        writer.transport.abort()
                        return
                    elif step == "hang":
                        await asyncio.sleep(3600)


@contextlib.asynccontextmanager
async def running(server: ScriptedServer, tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """Serve ``server`` on loopback; yields its URL."""
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0, ssl=tls)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        listener.close()
        for writer in server.writers:
            writer.transport.abort()
        await listener.wait_closed()


async def until(condition: Callable[[], bool]) -> None:
    """Wait (up to 10 s) until ``condition()`` holds: for what the server does while the client idles."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


def client_for(url: str, **kwargs: object) -> HttpClient:
    options: dict[str, object] = {"max_connections": 4, "max_response_bytes": 1 << 20, **kwargs}
    return HttpClient(url, **options)  # type: ignore[arg-type]


# -- valid answers and keep-alive ----------------------------------------------------------------------


async def test_requests_reuse_one_keep_alive_connection() -> None:
    server = ScriptedServer(lambda i: ok(b"answer %d" % i))
    async with running(server) as url:
        client = client_for(url)
        assert await client.request("GET", "/api/v2/status", None, 5) == (200, b"answer 0")
        for i in range(1, 20):
            assert await client.request("POST", "/api/v3/canister/x/query", b"\xa0", 5) == (200, b"answer %d" % i)
        assert server.accepted == 1 == client.connections_opened
        get, post = server.seen[0], server.seen[1]
        assert (get.method, get.path, get.body, get.headers["host"]) == ("GET", "/api/v2/status", b"", url[7:])
        assert "content-type" not in get.headers
        assert (post.method, post.body, post.headers["content-type"]) == ("POST", b"\xa0", "application/cbor")
        assert "accept-encoding" not in post.headers  # so no compressed answer may come back
        await client.close()


async def test_a_path_prefix_of_the_url_is_kept() -> None:
    server = ScriptedServer()
    async with running(server) as url:
        client = client_for(url + "/replica/")
        await client.request("GET", "/api/v2/status", None, 5)
        assert server.seen[0].path == "/replica/api/v2/status"
        await client.close()


async def test_concurrent_requests_stay_within_max_connections() -> None:
    server = ScriptedServer(lambda i: [0.05, *ok(b"%d" % i)])
    async with running(server) as url:
        client = client_for(url, max_connections=3)
        answers = await asyncio.gather(*(client.request("GET", f"/{i}", None, 10) for i in range(12)))
        assert sorted(body for _, body in answers) == sorted(b"%d" % i for i in range(12))
        assert server.accepted == 3 == client.open_connections
        await client.close()


async def test_waiting_for_a_busy_pool_times_out() -> None:
    server = ScriptedServer(lambda i: ["hang"] if i == 0 else ok())
    async with running(server) as url:
        client = client_for(url, max_connections=1)
        stuck = asyncio.ensure_future(client.request("GET", "/stuck", None, 30))
        await asyncio.sleep(0.05)
        with pytest.raises(AgentTimeout, match=r"GET /next to http://127\.0\.0\.1:\d+: all 1 connections stayed busy"):
            await client.request("GET", "/next", None, 0.2)
        await client.close()
        with pytest.raises(TransportError, match="the agent was closed"):
            await stuck


async def test_connection_close_is_honoured() -> None:
    server = ScriptedServer(lambda i: ok(extra=b"Connection: close\r\n") if i == 0 else ok())
    async with running(server) as url:
        client = client_for(url)
        assert await client.request("GET", "/", None, 5) == (200, b"answer")
        assert await client.request("GET", "/", None, 5) == (200, b"answer")
        assert server.accepted == 2
        assert [seen.connection for seen in server.seen] == [0, 1]
        await client.close()


async def test_a_closed_connection_leaves_no_cycle() -> None:
    # Refcounting alone frees a connection once the server closed it (the gateway freezes what survives a full
    # collection, so a cycle would wait for its hourly audit: see icws_fast/gateway/heap.py).
    server = ScriptedServer()
    async with running(server) as url:
        client = client_for(url)
        assert await client.request("GET", "/", None, 5) == (200, b"answer")
        (conn,) = client._idle
        gone = weakref.ref(conn)
        del conn
        gc.disable()
        try:
            for writer in server.writers:
                writer.close()
            for _ in range(100):
                if not client._idle:
                    break
                await asyncio.sleep(0.01)
            assert not client._idle
            await asyncio.sleep(0)  # let the loop drop the closed transport
            assert gone() is None, "a closed connection is still alive without the cyclic GC"
        finally:
            gc.enable()
        await client.close()


async def test_an_http_1_0_answer_without_length_runs_to_the_close() -> None:
    server = ScriptedServer(lambda _: [b"HTTP/1.0 200 OK\r\n\r\nuntil ", 0.02, b"the end", "close"])
    async with running(server) as url:
        client = client_for(url)
        assert await client.request("GET", "/", None, 5) == (200, b"until the end")
        assert await client.request("GET", "/", None, 5) == (200, b"until the end")
        assert server.accepted == 2  # HTTP/1.0: never kept alive
        await client.close()


async def test_chunked_answers_in_pieces() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1;ext=1\r\n \r\n"
    server = ScriptedServer(lambda _: [chunked, 0.01, b"5\r\nwor", 0.01, b"ld\r\n0\r\nTrailer: x\r\n\r\n"])
    async with running(server) as url:
        client = client_for(url)
        for _ in range(3):
            assert await client.request("GET", "/", None, 5) == (200, b"hello world")
        assert server.accepted == 1
        await client.close()


async def test_interim_answers_are_skipped() -> None:
    server = ScriptedServer(lambda _: [b"HTTP/1.1 100 Continue\r\n\r\n", *ok(b"final")])
    async with running(server) as url:
        client = client_for(url)
        assert await client.request("POST", "/", b"x", 5) == (200, b"final")
        assert await client.request("POST", "/", b"x", 5) == (200, b"final")
        assert server.accepted == 1
        await client.close()


async def test_error_statuses_are_answers() -> None:
    server = ScriptedServer(lambda _: [b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy"])
    async with running(server) as url:
        client = client_for(url)
        assert await client.request("GET", "/", None, 5) == (503, b"busy")
        await client.close()
        async with Agent(url) as agent:
            with pytest.raises(HttpStatusError) as info:
                await agent.status()
            assert (info.value.status, info.value.text) == (503, "busy")


async def test_an_idle_connection_the_server_closed_is_not_used() -> None:
    server = ScriptedServer(lambda i: [*ok(), 0.0, "close"] if i == 0 else ok())
    async with running(server) as url:
        client = client_for(url)
        assert await client.request("GET", "/", None, 5) == (200, b"answer")
        await until(lambda: client.open_connections == 0)  # the close arrives while the connection idles
        assert await client.request("GET", "/", None, 5) == (200, b"answer")
        assert server.accepted == 2
        await client.close()


# -- hostile and broken answers ------------------------------------------------------------------------


async def answer_fails(script: list[Step], error: type[AgentError], match: str, **kwargs: object) -> ScriptedServer:
    """Check the first request fails as said, and that a second one works on a new connection."""
    server = ScriptedServer(lambda i: script if i == 0 else ok())
    async with running(server) as url:
        client = client_for(url, **kwargs)
        with pytest.raises(error, match=match) as info:
            await client.request("POST", "/api/v3/canister/x/query", b"\xa0", 2)
        assert type(info.value) is error
        assert f"POST /api/v3/canister/x/query to {url}" in str(info.value)
        assert await client.request("GET", "/", None, 5) == (200, b"answer")
        assert server.accepted == 2  # the failed connection never went back to the pool
        await client.close()
    return server


@pytest.mark.parametrize(
    ("script", "match"),
    [
        ([b"HTTP/1.1 200 OK\r\nContent-Length: 2001\r\n\r\n"], "the answer of 2001 bytes is over the limit of 2000"),
        (
            [
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n"
                + b"x" * 2000
                + b"\r\n1\r\n!\r\n0\r\n\r\n"
            ],
            "the answer is over the limit of 2000 bytes",
        ),
        ([b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 2001, "close"], "the answer is over the limit of 2000 bytes"),
    ],
    ids=["content-length", "chunked", "until-close"],
)
async def test_oversized_answers(script: list[Step], match: str) -> None:
    await answer_fails(script, AgentError, match, max_response_bytes=2000)


async def test_an_endless_header_is_cut() -> None:
    header = b"HTTP/1.1 200 OK\r\nX-Filler: " + b"a" * (MAX_HEAD_BYTES + 10)
    await answer_fails([header], AgentError, f"the answer's header is over {MAX_HEAD_BYTES} bytes")


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        (b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n", "malformed HTTP answer"),
        (b"ICY 200 OK\r\n\r\n", "malformed HTTP answer"),
        (b"HTTP/1.1 000 OK\r\nContent-Length: 0\r\n\r\n", r"malformed HTTP answer \(status 0\)"),
        (b"HTTP/1.1 600 OK\r\nContent-Length: 0\r\n\r\n", r"malformed HTTP answer \(status 600\)"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n", "malformed HTTP answer"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", "malformed HTTP answer"),
        (b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n", "malformed HTTP answer"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed HTTP answer"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            "malformed HTTP answer",
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc", "unsupported transfer-encoding 'gzip'"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 1\r\n\r\nx", "compressed .'gzip'."),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "switched protocols",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            "an answer nobody asked for",
        ),
    ],
    ids=[
        "status-code",
        "status-line",
        "status-0",
        "status-600",
        "length-digits",
        "two-lengths",
        "header-line",
        "chunk-size",
        "chunked-and-length",
        "transfer-coding",
        "compressed",
        "upgrade",
        "two-answers",
    ],
)
async def test_malformed_answers(answer: bytes, match: str) -> None:
    await answer_fails([answer, 0.05], AgentError, match)


@pytest.mark.parametrize(
    ("script", "match"),
    [
        (["close"], "the server closed the connection before answering"),
        (
            [b"HTTP/1.1 200 OK\r\nContent-Le", "close"],
            "the server closed the connection in the middle of the answer's header",
        ),
        (
            [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "close"],
            "closed the connection after 3 of 10 body bytes",
        ),
        ([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", "close"], "after 3 body bytes"),
        (["reset"], r"the connection broke \(connection reset by peer\) before answering"),
    ],
    ids=["nothing", "mid-header", "mid-body", "mid-chunks", "reset"],
)
async def test_a_peer_that_stops_early(script: list[Step], match: str) -> None:
    await answer_fails(script, TransportError, match)


@pytest.mark.parametrize(
    "script",
    [["hang"], [b"HTTP/1.1 200 OK\r\n", "hang"], [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "hang"]],
    ids=["silent", "mid-header", "mid-body"],
)
async def test_a_slow_peer_times_out(script: list[Step]) -> None:
    server = ScriptedServer(lambda i: script if i == 0 else ok())
    async with running(server) as url:
        client = client_for(url)
        with pytest.raises(AgentTimeout, match=rf"GET /slow: no answer from {url} within 0.2 s"):
            await client.request("GET", "/slow", None, 0.2)
        assert await client.request("GET", "/", None, 5) == (200, b"answer")
        assert server.accepted == 2
        await client.close()


async def test_bytes_on_an_idle_connection_close_it() -> None:
    server = ScriptedServer(lambda i: [*ok(), 0.02, b"HTTP/1.1 200 OK\r\n"] if i == 0 else ok())
    async with running(server) as url:
        client = client_for(url)
        assert await client.request("GET", "/", None, 5) == (200, b"answer")
        await until(lambda: client.open_connections == 0)
        assert await client.request("GET", "/", None, 5) == (200, b"answer")
        assert server.accepted == 2
        await client.close()


async def test_a_cancelled_request_closes_its_connection_and_frees_its_slot() -> None:
    server = ScriptedServer(lambda i: [0.5, *ok()] if i == 0 else ok())
    async with running(server) as url:
        client = client_for(url, max_connections=1)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.request("GET", "/", None, 30), 0.05)
        assert await client.request("GET", "/", None, 5) == (200, b"answer")  # not the late first answer
        assert server.accepted == 2
        await client.close()


# -- connecting --------------------------------------------------------------------------------------


async def test_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = client_for(f"http://127.0.0.1:{port}")
    with pytest.raises(
        TransportError, match=rf"GET / to http://127.0.0.1:{port} failed: cannot connect \(connection refused\)$"
    ):
        await client.request("GET", "/", None, 5)


async def test_unknown_host() -> None:
    client = client_for("http://no-such-host.invalid")
    with pytest.raises(
        TransportError, match=r"GET / to http://no-such-host.invalid failed: cannot resolve the host \("
    ):
        await client.request("GET", "/", None, 5)


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("ftp://host", "unsupported URL 'ftp://host'"),
        ("http://", "unsupported URL"),
        ("http://host:port", "malformed URL"),
        ("http://host/?q=1", "a query, fragment or user name"),
        ("http://user@host", "a query, fragment or user name"),
    ],
)
def test_urls_that_are_not_an_origin(url: str, match: str) -> None:
    with pytest.raises(AgentError, match=match):
        Origin(url)
    with pytest.raises(AgentError, match=match):
        Agent(url)


def test_origin_parts() -> None:
    origin = Origin("https://icp-api.io/")
    assert (origin.tls, origin.host, origin.port, origin.prefix, origin.host_header) == (
        True,
        "icp-api.io",
        443,
        "",
        "icp-api.io",
    )
    v6 = Origin("http://[::1]:4943/base")
    assert (v6.host, v6.port, v6.prefix, v6.host_header) == ("::1", 4943, "/base", "[::1]:4943")


# -- TLS -------------------------------------------------------------------------------------------------


async def test_tls_with_a_trusted_certificate(tmp_path: Path) -> None:
    cert = self_signed(tmp_path)
    server = ScriptedServer()
    async with running(server, cert.server_context()) as url:
        client = client_for(url, ssl_context=cert.client_context())
        for _ in range(3):
            assert await client.request("GET", "/api/v2/status", None, 5) == (200, b"answer")
        assert server.accepted == 1
        await client.close()


async def test_tls_verifies_the_certificate_by_default(tmp_path: Path) -> None:
    cert = self_signed(tmp_path)
    server = ScriptedServer()
    async with running(server, cert.server_context()) as url:
        client = client_for(url)
        with pytest.raises(TransportError, match=r"the TLS certificate of 127\.0\.0\.1 is not trusted \(self.signed"):
            await client.request("GET", "/", None, 5)
        assert server.seen == []


async def test_tls_sends_the_host_name_and_checks_it(tmp_path: Path) -> None:
    cert = self_signed(tmp_path)  # issued for 127.0.0.1, not for localhost
    server = ScriptedServer()
    names: list[str | None] = []
    context = cert.server_context()
    context.sni_callback = lambda _sock, name, _context: names.append(name)  # type: ignore[assignment, func-returns-value]
    async with running(server, context) as url:
        client = client_for(url.replace("127.0.0.1", "localhost"), ssl_context=cert.client_context())
        with pytest.raises(TransportError, match=r"the TLS certificate of localhost is not trusted \(.*mismatch"):
            await client.request("GET", "/", None, 5)
    assert names == ["localhost"]  # SNI, as a boundary node needs it to pick its certificate
