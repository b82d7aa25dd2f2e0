"""Locust load test of an IC WebSocket gateway, with the blocking client (``SyncIcWebSocket``) under gevent.

Every simulated user opens its own connection (a fresh Ed25519 identity) to the ``test`` canister, then
echoes messages: each ``echo`` sends ``{text, timestamp}`` and waits for the canister's verified answer, so
the response time Locust reports is the full round trip client -> gateway -> canister -> gateway -> client,
including certificate verification. Opening is reported as ``connect``.

    ICWS_GATEWAY_URL=ws://127.0.0.1:8080 ICWS_IC_URL=http://127.0.0.1:4943 \\
        locust -f loadtest/locustfile.py --headless -u 100 -r 20 -t 1m

``ICWS_CANISTER_ID`` names the canister; without it the devnet's ``/_devnet/canisters`` is asked for ``test``.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from functools import cache
from typing import Any

from locust import User, between, task

from icws_fast.client import SyncIcWebSocket, fetch_root_key
from icws_fast.errors import IcwsError

GATEWAY_URL = os.environ.get("ICWS_GATEWAY_URL", "ws://127.0.0.1:8080")
IC_URL = os.environ.get("ICWS_IC_URL", "http://127.0.0.1:4943")
RECV_TIMEOUT_S = float(os.environ.get("ICWS_RECV_TIMEOUT_S", "30"))


@cache
def canister_id() -> str:
    """The target canister: ``ICWS_CANISTER_ID``, else the devnet's ``test`` canister."""
    configured = os.environ.get("ICWS_CANISTER_ID")
    if configured:
        return configured
    with urllib.request.urlopen(f"{IC_URL}/_devnet/canisters", timeout=10) as response:
        return str(json.load(response)["canisters"]["test"])


@cache
def root_key() -> bytes:
    """The replica's root key, read once per worker process instead of once per user."""
    return fetch_root_key(IC_URL)


class IcWebSocketUser(User):
    """One client connection that echoes messages through the gateway."""

    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        self.ws: SyncIcWebSocket | None = None
        start = time.perf_counter()
        try:
            self.ws = SyncIcWebSocket.connect(GATEWAY_URL, canister_id(), IC_URL, root_key_der=root_key())
            greeting = self.ws.recv(timeout=RECV_TIMEOUT_S)  # the test canister greets every client
        except (IcwsError, TimeoutError, OSError) as exc:
            self._report("connect", start, exc)
            self.stop()
            return
        self._report("connect", start, None, greeting)

    @task
    def echo(self) -> None:
        if self.ws is None:
            return
        start = time.perf_counter()
        text = f"hello {time.time_ns()}"
        try:
            self.ws.send({"text": text, "timestamp": time.time_ns()})
            answer = self.ws.recv(timeout=RECV_TIMEOUT_S)
            error = None if answer["text"] == text + " ping" else AssertionError(f"unexpected answer {answer!r}")
        except (IcwsError, TimeoutError) as exc:
            self._report("echo", start, exc)
            self.stop()
            return
        self._report("echo", start, error, answer)

    def on_stop(self) -> None:
        if self.ws is not None:
            self.ws.close()

    def _report(self, name: str, start: float, exception: BaseException | None, value: Any = None) -> None:
        self.environment.events.request.fire(
            request_type="icws",
            name=name,
            response_time=(time.perf_counter() - start) * 1000,
            response_length=len(value["text"]) if value else 0,
            exception=exception,
            context={},
        )
