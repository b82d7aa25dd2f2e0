"""The bare server of the capacity benchmark: picows writing exactly the gateway's frames, and nothing else.

Run by :mod:`benchmarks.e2e.bench_capacity` as ``python -m benchmarks.e2e.bare_server DIR CLIENTS MEMORY_MB PASSES
RATE``. ``DIR`` holds the synthetic replica's dump (``stream.bin``). Before it listens, it turns the stream's first
replies (as many as fit in ``MEMORY_MB`` of frames) into what the gateway writes: per reply, per client in the
order of their first message, :func:`icws_fast.gateway.fanout.encode_frames` of that client's messages with the
reply's :func:`~icws_fast.gateway.fanout.batch_suffix`, one buffer. It writes ``DIR/bare_counts.json`` (messages
per client key over all passes), prints ``port N``, waits for ``CLIENTS`` connections, each naming its client key
in a first text frame, prints ``ready``; on ``go`` (stdin) it writes the buffers ``PASSES`` times, each pass after
a text frame ``pass`` to every client (their sequence numbers start again), with one ``write`` per buffer on the
socket, as the gateway does, and a yield to the loop after each reply, as the gateway yields between two batches.
``RATE`` (messages/s, 0: as fast as it can) paces the replies: at the gateway's rate the clients read the same way
they read the gateway's frames (as fast as it can, the bare server outruns the clients, and its writes pile up and
leave in fewer, larger ``send`` calls). A client whose socket has more than :data:`HIGH_WATER` bytes unsent is
waited for (the gateway would close it). It prints ``sent`` at the end.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

from benchmarks.e2e.capacity_clients import PASS_MARKER
from benchmarks.e2e.workers import stdin_lines
from icws_fast.gateway.fanout import batch_suffix, encode_frames
from icws_fast.protocol.types import decode_get_messages_result

HIGH_WATER: Final = 4 * 1024 * 1024
#: One reply's writes: (client key text, its frames, how many messages they hold).
Batch = list[tuple[str, bytes, int]]


def read_replies(path: Path) -> Iterator[bytes]:
    """The Candid replies of a synthetic replica's ``stream.bin``, one by one."""
    with path.open("rb") as f:
        while head := f.read(4):
            yield f.read(int.from_bytes(head, "big"))


def gateway_writes(reply: bytes) -> Batch:
    """What the gateway writes for one ``ws_get_messages`` reply: one buffer of frames per client."""
    batch = decode_get_messages_result(reply)
    shares: dict[str, tuple[list[bytes], list[bytes]]] = {}
    for message in batch.messages:
        keys, contents = shares.setdefault(str(message.client_key), ([], []))
        keys.append(message.key.encode())
        contents.append(message.content)
    suffix = batch_suffix(batch.cert, batch.tree)
    return [(client, encode_frames(keys, contents, suffix), len(keys)) for client, (keys, contents) in shares.items()]


def load_batches(path: Path, memory_bytes: int) -> list[Batch]:
    """The gateway's writes for the stream's first replies, as many as fit in ``memory_bytes`` (at least one)."""
    batches: list[Batch] = []
    total = 0
    for reply in read_replies(path):
        batch = gateway_writes(reply)
        total += sum(len(frames) for _, frames, _ in batch)
        if batches and total > memory_bytes:
            break
        batches.append(batch)
    return batches


class BareServer:
    """The connections by client key, and the writing of the batches."""

    def __init__(self, batches: list[Batch], clients: int) -> None:
        self.batches = batches
        self.transports: dict[str, WSTransport] = {}
        self.clients = clients
        self.ready = asyncio.Event()

    def listener(self) -> WSListener:
        server = self

        class Announced(WSListener):
            def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
                if frame.msg_type == WSMsgType.TEXT:
                    server.transports[frame.get_payload_as_bytes().decode()] = transport
                    if len(server.transports) == server.clients:
                        server.ready.set()

        return Announced()

    async def send(self, passes: int, rate: float) -> None:
        transports = self.transports
        sockets = {key: transport.underlying_transport for key, transport in transports.items()}
        marker = PASS_MARKER.encode()
        loop = asyncio.get_running_loop()
        start, sent = loop.time(), 0
        for _ in range(passes):
            for transport in transports.values():
                transport.send(WSMsgType.TEXT, marker)
            for batch in self.batches:
                for client, frames, count in batch:
                    socket = sockets[client]
                    # Polled: neither picows nor uvloop has an awaitable "drained" for a transport.
                    while socket.get_write_buffer_size() > HIGH_WATER:  # noqa: ASYNC110
                        await asyncio.sleep(0.001)
                    socket.write(frames)
                    sent += count
                await asyncio.sleep(max(0.0, start + sent / rate - loop.time()) if rate else 0)

    def counts(self, passes: int) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for batch in self.batches:
            for client, _, count in batch:
                counts[client] += count * passes
        return dict(counts)


async def main(out: Path, clients: int, memory_mb: float, passes: int, rate: float) -> None:
    server = BareServer(load_batches(out / "stream.bin", int(memory_mb * 2**20)), clients)
    (out / "bare_counts.json").write_text(json.dumps(server.counts(passes)))
    listening = await ws_create_server(lambda _: server.listener(), "127.0.0.1", 0, use_aiofastnet=False)
    messages = sum(count for batch in server.batches for _, _, count in batch)
    print(f"port {listening.sockets[0].getsockname()[1]} replies {len(server.batches)} messages {messages}", flush=True)
    await server.ready.wait()
    print("ready", flush=True)
    async for line in stdin_lines():
        if line == "go":
            await server.send(passes, rate)
            print("sent", flush=True)
        else:
            print(f"unknown command {line!r}: go", file=sys.stderr, flush=True)


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])))
