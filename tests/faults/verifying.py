"""Verifying clients: IcWebSocket connections that check every message arrives exactly once and in order.

A :class:`VerifyingClient` talks to the ``test`` canister (which answers ``"ping"`` on open and
``text + " ping"`` to every message). It records what it expects in two streams, each in the order the
canister queues it (the echoes of its own messages, and the messages pushed to it with :func:`push`; the
two interleave as the canister's rounds fall), and everything it receives; :meth:`VerifyingClient.check`
fails unless every expected message arrived exactly once, each stream in order, nothing else arrived and
the connection is still open, naming what was lost, duplicated or reordered. For a gateway that goes away,
``check(close_code=1001, complete=False)`` accepts a closed connection and streams that arrived only in part,
but still no message twice, out of order or after a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Protocol

from icws_fast.client import IcWebSocket
from icws_fast.devnet.canisters.pingpong import encode_app_message
from icws_fast.errors import ConnectionClosed
from icws_fast.ic import candid
from icws_fast.ic.agent import Agent
from icws_fast.ic.identity import Identity
from icws_fast.ic.principal import Principal

_SEND_ARGS = candid.parse_args("(principal, blob)")
_UNIT_RESULT = candid.parse_args("(variant { Ok : null; Err : text })")


class Replica(Protocol):
    """What a client needs of the replica: the in-process devnet and a devnet subprocess both have it."""

    @property
    def url(self) -> str: ...

    @property
    def root_key_der(self) -> bytes: ...


class VerifyingClient:
    """One client of the ``test`` canister through a gateway; see the module docstring."""

    def __init__(self, name: str, ws: IcWebSocket) -> None:
        self.name = name
        self.ws = ws
        self.expected: dict[str, list[str]] = {"echo": ["ping"], "push": []}
        self.received: list[str] = []
        self._sent = 0
        self.pushing = False  # a push to this client is under way (see push)
        self._reader = asyncio.create_task(self._read(), name=f"verifying client {name}")

    @classmethod
    async def connect(
        cls, name: str, gateway_url: str, canister: Principal, devnet: Replica, identity: Identity | None = None
    ) -> VerifyingClient:
        """Open a session (with ``identity``, default a fresh one) and start recording what arrives."""
        ws = await IcWebSocket.connect(gateway_url, canister, devnet.url, identity, root_key_der=devnet.root_key_der)
        return cls(name, ws)

    @property
    def principal(self) -> Principal:
        return self.ws.principal

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for value in self.ws:
                self.received.append(value["text"])

    async def send(self, count: int) -> None:
        """Send ``count`` numbered messages; their echoes are expected in the same order."""
        for _ in range(count):
            text = f"{self.name}-{self._sent}"
            self._sent += 1
            self.expected["echo"].append(f"{text} ping")
            await self.ws.send({"text": text, "timestamp": 0})

    @property
    def expected_count(self) -> int:
        return sum(map(len, self.expected.values()))

    @property
    def done(self) -> bool:
        return len(self.received) >= self.expected_count or self.ws.close_code is not None

    def check(self, *, close_code: int | None = None, complete: bool = True) -> None:
        """Fail unless every expected message arrived exactly once, each stream in order, and the connection is
        open (or closed with ``close_code``); with ``complete=False`` each stream may have arrived only in part
        (a prefix of it: what was in flight when the connection closed may be missing, nothing in between)."""
        expected = Counter(text for stream in self.expected.values() for text in stream)
        lost = expected - Counter(self.received)
        extra = Counter(self.received) - expected
        state = (
            f"client {self.name}: {len(self.received)} of {self.expected_count} messages, closed with "
            f"{self.ws.close_code} {self.ws.close_reason!r}"
        )
        assert not extra, f"{state}; duplicated or unexpected {sorted(extra)[:5]}"
        assert not lost or not complete, f"{state}; lost {sorted(lost)[:5]}"
        for name, stream in self.expected.items():
            members = set(stream)
            arrived = [text for text in self.received if text in members]
            wanted = stream if complete else stream[: len(arrived)]
            assert arrived == wanted, f"{state}; the {name} stream is out of order or has a gap: {arrived[:10]}"
        assert self.ws.close_code == close_code, state

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


async def push(agent: Agent, canister: Principal, client: VerifyingClient, text: str) -> None:
    """Have the canister send ``text`` to ``client`` (its ``send`` update, called straight on the devnet).

    Pushes to one client must not overlap (pushes to different clients may): ``text`` is expected after the
    client's earlier pushes, which holds only if the canister executed them first. Concurrent calls have no set
    order, on the IC as on the devnet (which executes them in the order their HTTP requests happen to arrive),
    so an overlapping push raises :class:`RuntimeError` instead of guessing.
    """
    if client.pushing:
        raise RuntimeError(
            f"push {text!r} to {client.name} while another push to it is under way: the canister may execute "
            "them in either order; await each push to one client before the next"
        )
    client.pushing = True
    try:
        client.expected["push"].append(text)
        arg = candid.encode(_SEND_ARGS, [client.principal, encode_app_message(text, time.time_ns())])
        assert candid.decode(await agent.call(canister, "send", arg), _UNIT_RESULT) == [{"Ok": None}]
    finally:
        client.pushing = False


async def wait_for(condition: Callable[[], object], timeout_s: float = 10.0) -> bool:
    """Poll ``condition()`` until true or ``timeout_s`` passed; its last value."""
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:  # noqa: ASYNC110 - the state has no event to wait on
        await asyncio.sleep(0.05)
    return bool(condition())


async def settle(clients: Iterable[VerifyingClient], timeout_s: float = 20.0) -> None:
    """Wait until every client has all it expects (or closed), at most ``timeout_s``; then check them all."""
    clients = list(clients)
    await wait_for(lambda: all(c.done for c in clients), timeout_s)
    # Anything arriving after the expected messages would be a duplicate: give it a moment to show.
    await asyncio.sleep(0.3)
    for client in clients:
        client.check()


class FirehoseClient:
    """A client of the ``firehose`` canister, whose rounds each send ``per_round`` identical messages to every
    client: :meth:`check` fails unless whole rounds arrived (a multiple of ``per_round``), their canister
    times never went backwards and the connection is still open (the SDK closes it on a sequence-number gap
    or repeat, so an open connection also means no message was lost or duplicated on the wire)."""

    def __init__(self, name: str, ws: IcWebSocket, per_round: int) -> None:
        self.name = name
        self.ws = ws
        self.per_round = per_round
        self.timestamps: list[int] = []
        self._reader = asyncio.create_task(self._read(), name=f"firehose client {name}")

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for value in self.ws:
                self.timestamps.append(value["timestamp"])

    def check(self) -> None:
        state = f"firehose client {self.name}: {len(self.timestamps)} messages, closed with {self.ws.close_code}"
        assert self.ws.close_code is None, f"{state} {self.ws.close_reason!r}"
        assert len(self.timestamps) % self.per_round == 0, f"{state}: not whole rounds of {self.per_round}"
        assert self.timestamps == sorted(self.timestamps), f"{state}: the rounds' times went backwards"

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
