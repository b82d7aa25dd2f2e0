"""A fault-injecting reverse proxy for the IC HTTP interface, for tests on loopback.

:class:`FaultProxy` sits between an agent (the gateway's, a client's) and a replica (the devnet): an
asyncio HTTP/1.1 server whose requests are forwarded upstream over a keep-alive pool, unless a
:class:`Rule` says otherwise. Rules select requests by endpoint kind (``call``, ``query``,
``read_state``, ``status``) and by the ``method_name`` inside the request's CBOR envelope
(``ws_get_messages``, ``ws_message``, ``ws_open``, ``ws_close``, ...), and apply one action:

===============  ===================================================================================
``cut``          forward, send the headers and ``fraction`` of the body, close (the length promised more)
``reset``        read the request, forward nothing, reset the connection (RST)
``delay``        wait ``delay_s``, then forward
``status``       answer ``status`` (5xx, 429, ...) with a short text, forward nothing
``truncate``     forward, answer only ``fraction`` of the body (a consistent, shorter Content-Length)
``corrupt``      forward, flip ``corrupt_bytes`` bytes of the body (seeded positions)
``resign``       forward, re-sign the answer's certificate (a call or read_state answer's, or the data
                 certificate of a ``ws_get_messages`` batch) with another BLS root key, delegation dropped
``swap_tree``    forward a ``ws_get_messages`` query, answer its batch with the certificate and tree of
                 the previous, different batch this proxy saw for the canister
``replay``       forward nothing, answer the oldest reply kept for the same endpoint, method and canister
                 (for ``ws_get_messages`` only batches with messages are kept: a stale batch)
``reorder``      forward a ``ws_get_messages`` query, answer its batch with the messages reversed
                 (certificate and tree untouched: every message still verifies)
``drop``         forward (the replica executes the request), then close without answering
``reject``       forward nothing, answer a reject (``reject_code``, default SYS_TRANSIENT) of a query or
                 a call as the replica words it (non-replicated rejection for calls)
``not_end_of_queue``  forward a ``ws_get_messages`` query, answer its batch marked "not the end of the
                 queue" (with an empty batch: a canister asking to be polled again at once)
===============  ===================================================================================

A rule applies ``count`` times (None: forever) to matching requests, after letting ``skip`` of them
pass, each with ``probability`` (drawn from the proxy's seeded RNG). A fault that cannot apply to an
answer (a reorder of a one-message batch, a replay with nothing kept) forwards the answer unchanged
and is not counted. :meth:`FaultProxy.refuse_connections` closes the listening socket (clients get
"connection refused") until :meth:`FaultProxy.accept_connections`.

``FaultProxy.applied`` counts the faults applied by ``(action, endpoint, method)``; ``FaultProxy.seen``
the requests by ``(endpoint, method)``. Requests are read with Content-Length only (agents send that);
a chunked request gets 501. The replica being down makes the proxy answer 502, as a boundary node does.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections import Counter, defaultdict, deque
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final

import aiohttp

from icws_fast.errors import IcwsError
from icws_fast.ic import bls, cbor
from icws_fast.ic.certificate import Certificate, sign_certificate
from icws_fast.protocol.types import (
    CanisterOutputCertifiedMessages,
    decode_get_messages_result,
    encode_get_messages_result,
)

ACTIONS: Final = frozenset(
    {
        *("cut", "reset", "delay", "status", "truncate", "corrupt"),
        *("resign", "swap_tree", "replay", "reorder", "drop", "reject", "not_end_of_queue"),
    }
)
ENDPOINTS: Final = frozenset({"call", "query", "read_state", "status"})
#: The key the ``resign`` action signs with: a root key nobody trusts.
FOREIGN_ROOT_SECRET: Final = bls.generate_secret_key(b"icws fault proxy: a foreign root key")
#: Replies kept per (endpoint, method, canister) for ``replay`` and ``swap_tree``.
HISTORY_SIZE: Final = 16
_MAX_HEAD_BYTES: Final = 64 * 1024
_UPSTREAM_TIMEOUT_S: Final = 60.0


@dataclass
class Rule:
    """One fault: which requests (``endpoint``, ``method``; None matches any) and what to do with them."""

    action: str
    endpoint: str | None = None
    method: str | None = None
    count: int | None = None
    skip: int = 0
    probability: float = 1.0
    delay_s: float = 1.0
    status: int = 503
    reject_code: int = 2
    fraction: float = 0.5
    corrupt_bytes: int = 1
    matched: int = 0
    applied: int = 0

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown fault action {self.action!r}; one of {sorted(ACTIONS)}")
        if self.endpoint is not None and self.endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint kind {self.endpoint!r}; one of {sorted(ENDPOINTS)}")

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.applied >= self.count


@dataclass
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    endpoint: str | None
    canister: str | None
    ic_method: str | None


@dataclass
class _Answer:
    status: int
    content_type: str | None
    body: bytes


class _NotApplicable(Exception):
    """The fault cannot change this answer (forward it as it is)."""


def _parse_path(path: str) -> tuple[str | None, str | None]:
    """The endpoint kind and the canister (or subnet) id of an IC API path."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    if parts[:3] == ["api", "v2", "status"]:
        return "status", None
    if len(parts) == 5 and parts[0] == "api" and parts[2] in ("canister", "subnet") and parts[4] in ENDPOINTS:
        return parts[4], parts[3]
    return None, None


def _method_name(body: bytes) -> str | None:
    try:
        envelope = cbor.decode(body)
    except IcwsError:
        return None
    content = envelope.get("content") if type(envelope) is dict else None
    name = content.get("method_name") if type(content) is dict else None
    return name if type(name) is str else None


def _resigned(certificate: Any) -> bytes:
    if type(certificate) is not bytes:
        raise _NotApplicable
    try:
        tree = Certificate.from_cbor(certificate).tree
    except IcwsError:
        raise _NotApplicable from None
    return sign_certificate(tree, FOREIGN_ROOT_SECRET)


def _query_batch(body: bytes) -> tuple[dict[str, Any], CanisterOutputCertifiedMessages]:
    """The CBOR query answer and the ``ws_get_messages`` batch in it."""
    try:
        answer = cbor.decode(body)
        if type(answer) is not dict or answer.get("status") != "replied":
            raise _NotApplicable
        return answer, decode_get_messages_result(answer["reply"]["arg"])
    except (IcwsError, KeyError, TypeError):
        raise _NotApplicable from None


def _worth_keeping(request: _Request, body: bytes) -> bool:
    """Whether to keep a reply for ``replay`` and ``swap_tree``: a ``ws_get_messages`` one only with messages."""
    if request.ic_method != "ws_get_messages":
        return True
    try:
        return bool(_query_batch(body)[1].messages)
    except _NotApplicable:
        return False


def _with_batch(answer: dict[str, Any], batch: CanisterOutputCertifiedMessages) -> bytes:
    # The node signatures no longer match; agents check them on mainnet only, and this proxy serves tests.
    return cbor.encode({**answer, "reply": {"arg": encode_get_messages_result(batch)}})


class FaultProxy:
    """The proxy; ``async with FaultProxy(upstream_url) as proxy: ... proxy.url ...``."""

    def __init__(self, upstream: str, *, seed: int = 0, host: str = "127.0.0.1", port: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self.host = host
        self.port = port
        self.rules: list[Rule] = []
        self.applied: Counter[tuple[str, str | None, str | None]] = Counter()
        self.seen: Counter[tuple[str | None, str | None]] = Counter()
        self._rng = random.Random(seed)
        self._history: defaultdict[tuple[str | None, str | None, str | None], deque[bytes]] = defaultdict(
            lambda: deque(maxlen=HISTORY_SIZE)
        )
        self._server: asyncio.Server | None = None
        self._session: aiohttp.ClientSession | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- control -------------------------------------------------------------------------------------------

    def add(self, rule: Rule) -> Rule:
        """Apply ``rule`` from now on (after the rules added before it); returns it, to read its counters."""
        self.rules.append(rule)
        return rule

    def fault(self, action: str, **options: Any) -> Rule:
        """Shorthand for ``add(Rule(action, **options))``."""
        return self.add(Rule(action, **options))

    def clear(self) -> None:
        """Remove every rule (the counters stay)."""
        self.rules.clear()

    def count(self, action: str | None = None, endpoint: str | None = None, method: str | None = None) -> int:
        """How many faults were applied, by action, endpoint and method (None: any)."""
        return sum(
            n
            for (a, e, m), n in self.applied.items()
            if action in (None, a) and endpoint in (None, e) and method in (None, m)
        )

    async def refuse_connections(self) -> None:
        """Close the listening socket and every open connection: new connections are refused."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._connections):
            writer.transport.abort()

    async def accept_connections(self) -> None:
        """Listen again, on the same port."""
        if self._server is None:
            self._server = await asyncio.start_server(
                self._serve, self.host, self.port, limit=_MAX_HEAD_BYTES, reuse_address=True
            )
            self.port = self._server.sockets[0].getsockname()[1]

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=_UPSTREAM_TIMEOUT_S))
        await self.accept_connections()

    async def stop(self) -> None:
        await self.refuse_connections()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- serving -------------------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The connection runs in a task of ours, which stop() may cancel (asyncio.start_server logs the
        # cancellation of its own handler tasks as an error).
        task = asyncio.create_task(self._connection(reader, writer))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            while True:
                request = await self._read_request(reader, writer)
                if request is None or not await self._answer(request, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._connections.discard(writer)
            writer.transport.abort()

    async def _read_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _Request | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None  # the client closed the keep-alive connection
        lines = head.decode("latin-1").split("\r\n")
        method, path, *_ = [*lines[0].split(" ", 2), "", ""]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        if "transfer-encoding" in headers:
            await self._write(writer, _Answer(501, "text/plain", b"the fault proxy reads Content-Length bodies only"))
            return None
        length = headers.get("content-length", "0")
        if not length.isdigit() or not path.startswith("/"):
            await self._write(writer, _Answer(400, "text/plain", b"malformed request for the fault proxy"))
            return None
        body = await reader.readexactly(int(length))
        endpoint, canister = _parse_path(path)
        ic_method = _method_name(body) if endpoint in ("call", "query") else None
        return _Request(method, path, headers, body, endpoint, canister, ic_method)

    def _rule_for(self, request: _Request) -> Rule | None:
        for rule in self.rules:
            if rule.exhausted or rule.endpoint not in (None, request.endpoint):
                continue
            if rule.method not in (None, request.ic_method):
                continue
            rule.matched += 1
            if rule.matched <= rule.skip:
                continue
            if rule.probability < 1.0 and self._rng.random() >= rule.probability:
                continue
            return rule
        return None

    async def _answer(self, request: _Request, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection must close."""
        self.seen[(request.endpoint, request.ic_method)] += 1
        rule = self._rule_for(request)
        action = rule.action if rule is not None else None
        if rule is not None and action in ("reset", "status", "replay", "reject", "delay"):
            answer = await self._synthetic(rule, request)
            if action == "reset":
                self._counted(rule, request)
                _reset(writer)
                return False
            if answer is not None:
                self._counted(rule, request)
                await self._write(writer, answer)
                return True
        upstream = await self._forward(request)
        if upstream.status == 200 and _worth_keeping(request, upstream.body):
            self._history[(request.endpoint, request.ic_method, request.canister)].append(upstream.body)
        if rule is None or action in ("replay", "delay"):
            await self._write(writer, upstream)
            return True
        try:
            return await self._faulty(rule, request, upstream, writer)
        except _NotApplicable:
            await self._write(writer, upstream)
            return True

    async def _synthetic(self, rule: Rule, request: _Request) -> _Answer | None:
        """An answer made without the replica (None: forward after all)."""
        if rule.action == "delay":
            self._counted(rule, request)
            await asyncio.sleep(rule.delay_s)
            return None
        if rule.action == "status":
            text = f"{rule.status} injected by the fault proxy".encode()
            return _Answer(rule.status, "text/plain; charset=utf-8", text)
        if rule.action == "replay":
            kept = self._history.get((request.endpoint, request.ic_method, request.canister))
            return _Answer(200, "application/cbor", kept[0]) if kept else None
        if rule.action == "reject":
            fields = {
                "error_code": "IC0000",
                "reject_code": rule.reject_code,
                "reject_message": "rejected by the fault proxy",
            }
            if request.endpoint == "query":
                return _Answer(200, "application/cbor", cbor.encode({"status": "rejected", **fields, "signatures": []}))
            if request.endpoint == "call":
                if not request.path.startswith("/api/v2/"):
                    fields["status"] = "non_replicated_rejection"
                return _Answer(200, "application/cbor", cbor.encode(fields))
            return None
        return None  # reset

    async def _faulty(self, rule: Rule, request: _Request, upstream: _Answer, writer: asyncio.StreamWriter) -> bool:
        """Apply ``rule`` to the replica's answer; raises _NotApplicable when it cannot."""
        body = upstream.body
        action = rule.action
        if action == "drop":
            self._counted(rule, request)
            _reset(writer)
            return False
        if action == "cut":
            if len(body) < 2:
                raise _NotApplicable
            self._counted(rule, request)
            writer.write(_head(upstream, len(body)) + body[: int(len(body) * rule.fraction)])
            await writer.drain()
            writer.close()
            return False
        if action == "truncate":
            if len(body) < 2:
                raise _NotApplicable
            body = body[: int(len(body) * rule.fraction)]
        elif action == "corrupt":
            if not body:
                raise _NotApplicable
            damaged = bytearray(body)
            for position in self._rng.sample(range(len(damaged)), min(rule.corrupt_bytes, len(damaged))):
                damaged[position] ^= self._rng.randrange(1, 256)
            body = bytes(damaged)
        elif action == "resign":
            body = self._resign(request, body)
        elif action in ("swap_tree", "reorder", "not_end_of_queue"):
            if request.ic_method != "ws_get_messages":
                raise _NotApplicable
            answer, batch = _query_batch(body)
            if action == "reorder":
                if len(batch.messages) < 2:
                    raise _NotApplicable
                batch = batch._replace(messages=batch.messages[::-1])
            elif action == "not_end_of_queue":
                batch = batch._replace(is_end_of_queue=False)
            else:
                batch = self._swapped(request, batch)
            body = _with_batch(answer, batch)
        else:  # reject or replay of what has no such answer: forward it
            raise _NotApplicable
        self._counted(rule, request)
        await self._write(writer, _Answer(upstream.status, upstream.content_type, body))
        return True

    def _resign(self, request: _Request, body: bytes) -> bytes:
        try:
            answer = cbor.decode(body)
        except IcwsError:
            raise _NotApplicable from None
        if type(answer) is not dict:
            raise _NotApplicable
        if "certificate" in answer:
            return cbor.encode({**answer, "certificate": _resigned(answer["certificate"])})
        if request.ic_method == "ws_get_messages":
            answer, batch = _query_batch(body)
            return _with_batch(answer, batch._replace(cert=_resigned(batch.cert)))
        raise _NotApplicable

    def _swapped(self, request: _Request, batch: CanisterOutputCertifiedMessages) -> CanisterOutputCertifiedMessages:
        """``batch`` with the certificate and tree of the latest earlier batch that has others."""
        kept = self._history.get((request.endpoint, request.ic_method, request.canister), deque())
        for body in reversed(kept):
            try:
                _, earlier = _query_batch(body)
            except _NotApplicable:
                continue
            if earlier.tree != batch.tree:
                return batch._replace(cert=earlier.cert, tree=earlier.tree)
        raise _NotApplicable

    def _counted(self, rule: Rule, request: _Request) -> None:
        rule.applied += 1
        self.applied[(rule.action, request.endpoint, request.ic_method)] += 1

    async def _forward(self, request: _Request) -> _Answer:
        assert self._session is not None
        headers = {"Content-Type": request.headers["content-type"]} if "content-type" in request.headers else None
        try:
            async with self._session.request(
                request.method, self.upstream + request.path, data=request.body or None, headers=headers
            ) as resp:
                return _Answer(resp.status, resp.headers.get("Content-Type"), await resp.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _Answer(502, "text/plain; charset=utf-8", f"upstream {self.upstream} failed: {exc!r}".encode())

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, answer: _Answer) -> None:
        writer.write(_head(answer, len(answer.body)) + answer.body)
        await writer.drain()


def _head(answer: _Answer, length: int) -> bytes:
    try:
        reason = HTTPStatus(answer.status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {answer.status} {reason}", f"Content-Length: {length}", "Connection: keep-alive"]
    if answer.content_type:
        lines.append(f"Content-Type: {answer.content_type}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (linger 0), as a crashed peer or a middlebox dropping the flow does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
