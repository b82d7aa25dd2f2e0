"""The client process of the capacity benchmark: K sessions that record every relayed message they read.

Run by :mod:`benchmarks.e2e.bench_capacity` as ``python -m benchmarks.e2e.capacity_clients GATEWAY_URL
CANISTER COUNT``. It opens COUNT real IC WebSocket sessions through the gateway (handshake, signed
``ws_open``, the canister's OpenMessage: :class:`tests.gateway.gw_rawclient.RawClient`), prints ``ready``, and
then takes commands on stdin:

* ``expect FILE``: record from now on; the messages each client key should get (``{"<principal>_<nonce>":
  count}``, the synthetic replica's counts). Prints ``expecting`` (only then may the stream start), and
  ``done`` once every client has them all;
* ``bare URL``: the same clients (same keys) connect to a bare server, each announcing its key in a first
  text frame; prints ``ready`` when all are connected. The bare server repeats the stream in passes, each
  starting with a text frame ``pass``, after which a client expects its sequence numbers from the start again;
* ``report FILE``: writes what was read since the last ``expect`` (per message: its nonce, the monotonic time
  it was read, its frame's size, see :func:`read_records`) and prints a JSON summary: messages, gaps,
  duplicates, misroutes (a message whose client key is not the reader's), unreadable frames, missing.

Each frame is read with a few byte comparisons rather than a full decode (the clients would otherwise cost
more than the gateway): the message key gives the nonce, the start of the ``content`` must be this client's
``WebsocketMessage`` head (self-describe tag, ``client_key`` with its principal and nonce) and the sequence
number follows it. One frame in :data:`CHECK_EVERY` is decoded in full and compared.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from array import array
from pathlib import Path
from typing import Final

from picows import WSFrame, WSMsgType, WSTransport, ws_connect

from benchmarks.e2e.workers import stdin_lines
from icws_fast.ic import cbor
from icws_fast.ic.principal import Principal
from icws_fast.protocol.types import (
    ClientKey,
    WebsocketMessage,
    decode_canister_to_client,
    decode_websocket_message,
    encode_websocket_message,
)
from tests.gateway.gw_rawclient import RawClient, RawListener

CHECK_EVERY: Final = 1000
PASS_MARKER: Final = "pass"
_KEY_HEAD: Final = b"\xa4\x63key"  # map(4), "key": how every CanisterToClientMessage starts
_CONTENT_LABEL: Final = b"\x67content"
_SEQUENCE_NUM: Final = b"\x6csequence_num"
_NONCE_DIGITS: Final = 20
_OPEN_BATCH: Final = 20  # sessions opened at once


def message_head(key: ClientKey) -> bytes:
    """The bytes every ``WebsocketMessage`` to ``key`` starts with, up to its sequence number's value."""
    encoded = encode_websocket_message(WebsocketMessage(key, 0, 0, False, b""))
    return encoded[: encoded.index(_SEQUENCE_NUM) + len(_SEQUENCE_NUM)]


class Recorder:
    """What the clients of this process read: per message (nonce, read time, frame size), and the faults."""

    def __init__(self) -> None:
        self.nonces = array("q")
        self.times = array("d")
        self.sizes = array("I")
        self.gaps = 0
        self.duplicates = 0
        self.misroutes = 0
        self.unreadable = 0
        self.complete = 0  # clients that have all their expected messages
        self.done: asyncio.Event = asyncio.Event()
        self.clients = 0


class CapacityListener(RawListener):
    """A :class:`RawListener` until :meth:`record_into`; from then on every binary frame is checked and recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.recorder: Recorder | None = None
        self.head = b""
        self.last_seq = 1  # the OpenMessage was sequence number 1
        self.received = 0
        self.expected = -1

    def record_into(self, recorder: Recorder, key: ClientKey, expected: int) -> None:
        self.recorder = recorder
        self.head = message_head(key)
        self.last_seq = 1
        self.received = 0
        self.expected = expected

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        recorder = self.recorder
        if recorder is None:
            super().on_ws_frame(transport, frame)
        elif frame.msg_type == WSMsgType.BINARY:
            self._record(recorder, frame.get_payload_as_bytes(), time.monotonic())
        elif frame.msg_type == WSMsgType.TEXT and frame.get_payload_as_bytes() == PASS_MARKER.encode():
            self.last_seq = 1
        else:
            super().on_ws_frame(transport, frame)

    def _record(self, recorder: Recorder, data: bytes, now: float) -> None:
        try:
            if not data.startswith(_KEY_HEAD):
                raise ValueError("not a CanisterToClientMessage")
            major, length, pos = cbor.read_head(data, len(_KEY_HEAD))
            if major != 3 or length < _NONCE_DIGITS:
                raise ValueError("no message key")
            key_end = pos + length
            nonce = int(data[key_end - _NONCE_DIGITS : key_end])
            if not data.startswith(_CONTENT_LABEL, key_end):
                raise ValueError("no content after the key")
            _, _, content = cbor.read_head(data, key_end + len(_CONTENT_LABEL))
            if not data.startswith(self.head, content):
                recorder.misroutes += 1
                return
            major, seq, _ = cbor.read_head(data, content + len(self.head))
            if major != 0:
                raise ValueError("no sequence number")
        except (ValueError, IndexError):
            recorder.unreadable += 1
            return
        if seq != self.last_seq + 1:
            if seq <= self.last_seq:
                recorder.duplicates += 1
                return
            recorder.gaps += seq - self.last_seq - 1
        self.last_seq = seq
        recorder.nonces.append(nonce)
        recorder.times.append(now)
        recorder.sizes.append(len(data))
        if len(recorder.nonces) % CHECK_EVERY == 0 and not _decodes_to(data, nonce, seq):
            recorder.unreadable += 1
        self.received += 1
        if self.received == self.expected:
            recorder.complete += 1
            if recorder.complete == recorder.clients:
                recorder.done.set()


def _decodes_to(data: bytes, nonce: int, seq: int) -> bool:
    """Whether a full decode of ``data`` reads the nonce and sequence number the byte scan read."""
    relayed = decode_canister_to_client(data)
    return int(relayed.key.rsplit("_", 1)[1]) == nonce and decode_websocket_message(relayed.content).sequence_num == seq


def read_records(path: Path) -> tuple[array[int], array[float], array[int]]:
    """The (nonces, read times, frame sizes) a ``report FILE`` wrote."""
    nonces, times, sizes = array("q"), array("d"), array("I")
    with path.open("rb") as f:
        count = int.from_bytes(f.read(8), "little")
        nonces.fromfile(f, count)
        times.fromfile(f, count)
        sizes.fromfile(f, count)
    return nonces, times, sizes


async def _connect(url: str) -> tuple[WSTransport, CapacityListener]:
    listener = CapacityListener()
    transport, _ = await ws_connect(lambda: listener, url, use_aiofastnet=False)
    return transport, listener


def load_counts(path: Path) -> dict[str, int]:
    """The messages per client key (``{"<principal>_<nonce>": count}``) in a JSON file."""
    counts: dict[str, int] = json.loads(path.read_text())
    return counts


class Clients:
    """This process's clients: their keys, their current connections and what they read."""

    def __init__(self) -> None:
        self.keys: list[ClientKey] = []
        self.listeners: list[CapacityListener] = []
        self.recorder = Recorder()

    async def open(self, url: str, canister: Principal, count: int) -> None:
        async def one() -> tuple[ClientKey, CapacityListener]:
            transport, listener = await _connect(url)
            client = RawClient(transport, listener)
            await client.open(canister, timeout=120)
            assert client.key is not None
            return client.key, listener

        for start in range(0, count, _OPEN_BATCH):
            opened = await asyncio.gather(*(one() for _ in range(start, min(count, start + _OPEN_BATCH))))
            self.keys += [key for key, _ in opened]
            self.listeners += [listener for _, listener in opened]

    async def connect_bare(self, url: str) -> None:
        listeners: list[CapacityListener] = []
        for key in self.keys:
            transport, listener = await _connect(url)
            transport.send(WSMsgType.TEXT, str(key).encode())
            listeners.append(listener)
        self.listeners = listeners

    def expect(self, counts: dict[str, int]) -> None:
        """Record from now on, each client expecting its count in ``counts`` (0 when absent)."""
        self.recorder = recorder = Recorder()
        recorder.clients = len(self.keys)
        for key, listener in zip(self.keys, self.listeners, strict=True):
            listener.record_into(recorder, key, counts.get(str(key), 0))
            if listener.expected == 0:
                recorder.complete += 1
        if recorder.complete == recorder.clients:
            recorder.done.set()

    def report(self, path: Path) -> dict[str, int]:
        r = self.recorder
        with path.open("wb") as f:
            f.write(len(r.nonces).to_bytes(8, "little"))
            r.nonces.tofile(f)
            r.times.tofile(f)
            r.sizes.tofile(f)
        missing = sum(max(0, listener.expected - listener.received) for listener in self.listeners)
        closed = sum(1 for listener in self.listeners if listener.closed is not None)
        return {
            "messages": len(r.nonces),
            "gaps": r.gaps,
            "duplicates": r.duplicates,
            "misroutes": r.misroutes,
            "unreadable": r.unreadable,
            "missing": missing,
            "closed": closed,
        }


async def main(url: str, canister: str, count: int) -> None:
    clients = Clients()
    await clients.open(url, Principal.from_text(canister), count)
    print("ready", flush=True)
    waiter: asyncio.Task[None] | None = None

    async def announce_done(recorder: Recorder) -> None:
        await recorder.done.wait()
        print("done", flush=True)

    async for line in stdin_lines():
        command, _, rest = line.partition(" ")
        if command == "expect":
            clients.expect(load_counts(Path(rest)))
            waiter = asyncio.create_task(announce_done(clients.recorder))
            print("expecting", flush=True)
        elif command == "bare":
            await clients.connect_bare(rest)
            print("ready", flush=True)
        elif command == "report":
            print(json.dumps(clients.report(Path(rest))), flush=True)
        else:
            print(f"unknown command {line!r}: expect FILE, bare URL, report FILE", file=sys.stderr, flush=True)
    if waiter is not None:
        waiter.cancel()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
