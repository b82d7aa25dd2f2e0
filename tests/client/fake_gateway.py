"""A gateway and ``test`` canister on a real loopback WebSocket, for the client transport tests.

It runs an aiohttp server on its own event loop in a thread, so the asyncio and the blocking client
can both talk to it. Each connection gets a :class:`~icws_sim.SimCanister`: the client's envelopes are
checked as the IC checks them, and every message back is certified for real. The ``test`` canister's
behaviour: OpenMessage, then ``{text = "ping"}``; each message is answered with ``text + " ping"``.
``mode`` selects a misbehaviour for the failure tests.
"""

from __future__ import annotations

import asyncio
import ssl
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from icws_fast.client._common import MAX_MESSAGE_SIZE
from icws_fast.ic import cbor
from icws_fast.protocol.types import ClientKey, CloseMessageReason
from tests.client.icws_sim import OTHER_SK, ROOT_KEY_DER, SimCanister
from tests.tls import self_signed

MODES = (
    "echo", "ack", "silent", "no_open", "bad_cert", "gap", "close_by_app", "text_frame", "drop", "flood", "too_big"
)  # fmt: skip
FLOOD = 60  # messages the "flood" mode sends after the greeting
TOO_BIG = MAX_MESSAGE_SIZE + 1  # the size of the frame the "too_big" mode sends after the greeting


class FakeGateway:
    """``with FakeGateway(mode) as gw``: ``gw.url`` (WebSocket), ``gw.ic_url`` (serves ``/api/v2/status``)."""

    def __init__(self, mode: str = "echo", *, tls: bool = False) -> None:
        assert mode in MODES
        self.mode = mode
        self._server_ssl, self.client_ssl = _self_signed_contexts() if tls else (None, None)
        self.received: list[Any] = []  # every decoded client request, in order
        self.closes: list[tuple[int | None, str]] = []
        self.status_root_key = ROOT_KEY_DER  # what /api/v2/status serves as the root key
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.url = self.ic_url = ""

    def __enter__(self) -> FakeGateway:
        self._thread.start()
        port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        scheme = "s" if self._server_ssl else ""
        self.url = f"ws{scheme}://127.0.0.1:{port}/"
        self.ic_url = f"http{scheme}://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        """Poll until ``predicate()`` holds (the server runs on another thread)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "timed out waiting for the fake gateway"
            time.sleep(0.01)

    async def _start(self) -> int:
        app = web.Application()
        app.router.add_get("/", self._websocket)
        app.router.add_get("/api/v2/status", self._status)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._server_ssl)
        await site.start()
        port: int = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return port

    async def _status(self, request: web.Request) -> web.Response:
        body = cbor.encode({"ic_api_version": "0.18.0", "root_key": self.status_root_key})
        return web.Response(body=body, content_type="application/cbor")

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        if self.mode == "silent":
            async for _ in ws:
                pass
            return ws
        canister = SimCanister()
        key: ClientKey | None = None

        async def relay(messages: list[tuple[str, bytes]], **kw: Any) -> None:
            for frame in canister.relay(messages, cert_time_ns=time.time_ns(), **kw):
                await ws.send_bytes(frame)

        await ws.send_bytes(canister.handshake())
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                got = canister.receive(msg.data, time.time_ns())
                self.received.append(got)
                now = time.time_ns()
                if got.method == "ws_open":
                    nonce = got.open_args[0] if got.open_args else 0
                    key = ClientKey(got.envelope.sender, nonce)
                    if self.mode == "no_open":
                        continue
                    await relay([canister.open(key, now), canister.app(key, {"text": "ping", "timestamp": now}, now)])
                    if self.mode == "bad_cert":
                        await relay(
                            [canister.app(key, {"text": "forged", "timestamp": now}, now)], signing_key=OTHER_SK
                        )
                    elif self.mode == "gap":  # a certified message that skips a sequence number
                        skipped = canister.sequence[key] + 2
                        await relay([canister.app(key, {"text": "late", "timestamp": now}, now, sequence_num=skipped)])
                    elif self.mode == "close_by_app":
                        await relay([canister.close(key, CloseMessageReason.ClosedByApplication, now)])
                    elif self.mode == "text_frame":
                        await ws.send_str("not binary")
                    elif self.mode == "too_big":
                        await ws.send_bytes(bytes(TOO_BIG))
                    elif self.mode == "drop":
                        await ws.close()
                    elif self.mode == "flood":
                        for batch in range(0, FLOOD, 20):
                            await relay(
                                [
                                    canister.app(key, {"text": str(i), "timestamp": now}, now)
                                    for i in range(batch, batch + 20)
                                ]
                            )
                elif key is not None and got.message is not None and not got.message.is_service_message:
                    answer = {"text": got.value["text"] + " ping", "timestamp": now}
                    out = [canister.app(key, answer, now)]
                    if self.mode == "ack":
                        out.append(canister.ack(key, got.message.sequence_num, now))
                    await relay(out)
        self.closes.append((ws.close_code, ""))
        return ws


def _self_signed_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh self-signed certificate for 127.0.0.1, and a client context trusting it."""
    with tempfile.TemporaryDirectory() as tmp:
        tls = self_signed(Path(tmp))
        return tls.server_context(), tls.client_context()
