"""A replica that is never the gateway's limit: a precomputed, honestly certified ``ws_get_messages`` stream.

Run: ``.venv/bin/python -m benchmarks.e2e.synthetic_replica --gateway-principal P [options]`` (a separate
process, :mod:`benchmarks.e2e.bench_capacity` drives it; ``--gateway-principal`` once per gateway worker, since
the CDK keeps one queue per gateway principal). It is the devnet (:mod:`icws_fast.devnet`) hosting one
:class:`~benchmarks.e2e.stream_canister.StreamCanister`, served by the devnet's own HTTP handlers (status with
the root key, v2/v3/v4 calls, v2/v3 queries and read_state), plus one fast path. It prints a JSON line (``url``,
``root_key``, ``canister``, ``pid``), then takes commands on stdin:

* **Live phase.** Clients open their sessions through the gateway: their signed ``ws_open`` calls execute in the
  devnet's rounds and get certified replies; the gateway polls the OpenMessages live.
* **Precompute** (stdin ``precompute FILE``). The canister produces the stream in rounds of ``--round-messages``
  messages (the CDK's ``send``: its message encoding, certified map and sequence numbers); each round is
  certified once (a BLS signature, as a replica round), and then every ``ws_get_messages`` reply of each
  gateway's queue (the clients that opened through that gateway) that the round completes is asked from the
  canister as a query (the CDK's witness, the round's data certificate, Candid) and kept as the bytes of the HTTP
  answer. A reply is taken while more messages follow it (``is_end_of_queue`` false, as for a canister with a
  backlog), the last one at the end. Writes the messages per client key to FILE (``{"<principal>_<nonce>":
  count}``) and prints ``stream ready {json}`` (first nonce, messages, replies, clients, reply bytes, seconds
  taken).
* **Stream** (stdin ``go``). A query of the gateway for a nonce on the replies' grid is answered from the
  precomputed bytes of the sender's queue: one CBOR decode of the envelope, two lookups. Before ``go``, or before
  its release time when ``--rate`` limits the stream, such a query gets the CDK's empty reply (the canister has
  not sent those messages yet). The monotonic time each stream reply is written is recorded (``time.monotonic``
  is one clock for all processes on Linux), so the gateway's added latency is measurable at the clients. Other
  queries (other senders, nonces before the stream or off the grid, which a gateway never asks since every reply
  but the last holds ``--batch`` messages) go to the live canister.
* ``dump DIR`` writes ``DIR/stream.bin`` (the replies' Candid bytes, each after a 4-byte big-endian length, the
  queues' replies interleaved: what a bare server needs to write the gateway's exact frames) and
  ``DIR/replica.json`` (per queue: first nonce, batch size, per-reply message counts, the replies that carry a new
  certificate, the write times; the CPU
  this process used since ``go``), then prints ``dumped``.

The query fast path neither checks the envelope's signature nor signs the answer: the gateway's agent checks no
node signatures on a local replica, and a replica's cost is not what the benchmark measures. Everything else
(calls, read_state, status, every malformed request) is the devnet's, with its checks and errors.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from benchmarks.e2e.stream_canister import PRODUCE_ARGS, PRODUCER, StreamCanister
from benchmarks.e2e.workers import stdin_lines
from icws_fast.devnet.server import CBOR_CONTENT_TYPE, LISTEN_BACKLOG, Devnet, build_app
from icws_fast.errors import IcwsError
from icws_fast.ic import candid, cbor
from icws_fast.ic.principal import Principal
from icws_fast.protocol.types import MAX_NAT64, decode_get_messages_result, encode_get_messages_args

CANISTER_NAME: Final = "stream"
#: Messages per ``ws_get_messages`` reply: the CDK's default ``max_number_of_returned_messages``.
DEFAULT_BATCH: Final = 50
DEFAULT_ROUND_MESSAGES: Final = 2000
#: The live phase's round length: ``ws_open`` calls wait for the round that certifies them.
DEFAULT_ROUND_MS: Final = 10
# A ws_get_messages argument is this Candid prefix followed by the nonce (nat64, little-endian).
_ARGS_PREFIX: Final = encode_get_messages_args(0)[:-8]
_INGRESS_TTL_NS: Final = 60 * 1_000_000_000


@dataclass
class StreamOptions:
    """What the canister sends: ``messages`` in all, of ``payload_size`` bytes, in runs of ``burst`` per client.

    ``rate`` (messages/s, 0: unlimited) paces the stream's release after ``go``; ``batch`` is the most messages
    a reply holds, ``round_messages`` the messages certified by one BLS signature.
    """

    messages: int
    payload_size: int = 100
    burst: int = 1
    rate: float = 0.0
    batch: int = DEFAULT_BATCH
    round_messages: int = DEFAULT_ROUND_MESSAGES


@dataclass
class Stream:
    """The precomputed replies of one gateway's queue: reply ``i`` holds the nonces from ``first + i * batch``."""

    gateway: bytes
    first_nonce: int
    batch: int
    empty: bytes  # the HTTP answer of a query past the queue's end (the CDK's empty batch)
    bodies: list[bytes] = field(default_factory=list)  # HTTP answers (CBOR query responses)
    replies: list[bytes] = field(default_factory=list)  # their Candid replies
    counts: list[int] = field(default_factory=list)  # messages per reply
    rounds: list[int] = field(default_factory=list)  # the replies that carry a new certificate (a round's first)
    go: float | None = None  # monotonic time of ``go``; nothing is released before
    rate: float = 0.0
    writes: list[tuple[int, float]] = field(default_factory=list)  # (reply index, monotonic time written)
    empties: int = 0  # grid queries answered empty (not released yet, or past the end)

    def answer(self, nonce: int) -> bytes | None:
        """The HTTP answer for a poll from ``nonce``, recorded; None when ``nonce`` is off the grid."""
        index, rest = divmod(nonce - self.first_nonce, self.batch)
        if index < 0 or rest:
            return None
        if self.go is None or index >= len(self.bodies):
            self.empties += 1
            return self.empty
        now = time.monotonic()
        if self.rate and now < self.go + index * self.batch / self.rate:
            self.empties += 1
            return self.empty
        self.writes.append((index, now))
        return self.bodies[index]


def _write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value))


def _response(reply: bytes) -> bytes:
    return cbor.encode({"status": "replied", "reply": {"arg": reply}})


class SyntheticReplica:
    """The devnet's replica and HTTP interface with the stream's fast path; see the module docstring."""

    def __init__(self, address: str, gateways: Sequence[Principal], options: StreamOptions, round_ms: float) -> None:
        self.devnet = Devnet(address, canisters={CANISTER_NAME: StreamCanister})
        self.replica = self.devnet.replica
        self.canister_id = self.devnet.canister_ids[CANISTER_NAME]
        self.gateways = list(gateways)
        self.options = options
        self.round_s = round_ms / 1000
        self.streams: dict[bytes, Stream] = {}  # by gateway principal: one queue each
        self.live_queries = 0
        self._cpu_at_go = 0.0
        self._runner: web.AppRunner | None = None
        self._rounds: asyncio.Task[None] | None = None

    async def start(self) -> None:
        app = build_app(self.devnet)
        # Outermost, so a stream poll skips the devnet's middleware and routing work.
        app.middlewares.insert(0, self._fast_query)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.devnet.host, self.devnet.port, backlog=LISTEN_BACKLOG)
        await site.start()
        self.devnet.port = int(self._runner.addresses[0][1])
        self._rounds = asyncio.create_task(self._run_rounds())

    async def stop(self) -> None:
        if self._rounds is not None:
            self._rounds.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _run_rounds(self) -> None:
        """Certify the live calls: a round whenever a call waits, else once a second (the CDK's timers)."""
        last = 0.0
        while True:
            await asyncio.sleep(self.round_s)
            if self.replica.queue_length or time.monotonic() - last >= 1.0:
                self.replica.run_round()
                last = time.monotonic()

    @web.middleware
    async def _fast_query(self, request: web.Request, handler: Any) -> web.StreamResponse:
        streams = self.streams
        if streams and request.method == "POST" and request.path.endswith("/query"):
            answer = self._stream_answer(streams, await request.read())
            if answer is not None:
                return web.Response(body=answer, content_type=CBOR_CONTENT_TYPE)
            self.live_queries += 1
        response: web.StreamResponse = await handler(request)
        return response

    @staticmethod
    def _stream_answer(streams: Mapping[bytes, Stream], body: bytes) -> bytes | None:
        """The answer from the sender's stream to a query envelope, or None for any other query (the devnet's)."""
        try:
            content = cbor.decode(body)["content"]
            arg = content["arg"]
            stream = streams.get(content["sender"])
            if (
                stream is None
                or content["method_name"] != "ws_get_messages"
                or content["request_type"] != "query"
                or arg[:-8] != _ARGS_PREFIX
            ):
                return None
        except (IcwsError, LookupError, TypeError):
            return None  # malformed: the devnet's handler answers it with its error
        return stream.answer(int.from_bytes(arg[-8:], "little"))

    # -- precompute ----------------------------------------------------------------------------------------

    def _query(self, gateway: Principal, nonce: int) -> bytes:
        args = encode_get_messages_args(nonce)
        return self.replica.query(self.canister_id, "ws_get_messages", args, gateway)

    def _produce(self, count: int) -> None:
        opts = self.options
        arg = candid.encode(PRODUCE_ARGS, [count, opts.payload_size, opts.burst])
        expiry = self.replica.clock() + _INGRESS_TTL_NS
        request_id = os.urandom(32)
        replica = self.replica
        replica.submit(
            request_id, sender=PRODUCER, canister_id=self.canister_id, method="produce", arg=arg, expiry_ns=expiry
        )
        replica.run_round()
        status = replica.ingress[request_id]
        if status.status != "replied":
            raise RuntimeError(f"produce failed: {status.reject}")

    async def precompute(self, counts_path: Path) -> dict[str, Any]:
        """Produce and certify the stream round by round, keeping every reply; what ``stream ready`` says."""
        opts = self.options
        self.replica.run_round()  # the live calls so far are in the state the stream starts from
        instance = self.replica.hosts[self.canister_id].instance
        assert isinstance(instance, StreamCanister)
        clients = len(instance.websocket.connected_clients())
        streams = {
            gateway: Stream(
                gateway.bytes,
                self._first_nonce(gateway),
                opts.batch,
                _response(self._query(gateway, MAX_NAT64)),
                rate=opts.rate,
            )
            for gateway in self.gateways
        }
        # From now on the gateways' polls of the stream are answered from it (empty until ``go``), never live.
        self.streams = {stream.gateway: stream for stream in streams.values()}
        nonces = {gateway: stream.first_nonce for gateway, stream in streams.items()}
        per_client: Counter[str] = Counter()
        produced = 0
        started = time.perf_counter()
        while produced < opts.messages:
            count = min(opts.round_messages, opts.messages - produced)
            self._produce(count)
            produced += count
            last = produced == opts.messages
            # Take the full replies this round completes while more messages follow them (a backlog); all at the end.
            for gateway, stream in streams.items():
                stream.rounds.append(len(stream.bodies))  # the replies taken now carry this round's certificate
                while True:
                    batch = decode_get_messages_result(reply := self._query(gateway, nonces[gateway]))
                    full = len(batch.messages) == opts.batch and not batch.is_end_of_queue
                    if not batch.messages or not (last or full):
                        break
                    per_client.update(str(m.client_key) for m in batch.messages)
                    stream.replies.append(reply)
                    stream.bodies.append(_response(reply))
                    stream.counts.append(len(batch.messages))
                    nonces[gateway] += len(batch.messages)
            await asyncio.sleep(0)  # answer the gateway's polls (empty) and the live calls meanwhile
        taken = sum(sum(stream.counts) for stream in streams.values())
        if taken != opts.messages:
            raise RuntimeError(f"the gateways' queues hold {taken} messages, not the {opts.messages} produced")
        _write_json(counts_path, per_client)
        return {
            "first_nonce": {gateway.to_text(): stream.first_nonce for gateway, stream in streams.items()},
            "messages": opts.messages,
            "replies": sum(len(stream.bodies) for stream in streams.values()),
            "clients": clients,
            "reply_bytes": sum(len(reply) for stream in streams.values() for reply in stream.replies),
            "seconds": time.perf_counter() - started,
            "counts": str(counts_path),
        }

    def _first_nonce(self, gateway: Principal) -> int:
        """``gateway``'s next outgoing nonce: where its stream starts (past the OpenMessages)."""
        batch = decode_get_messages_result(self._query(gateway, 0))
        nonce = 0
        while batch.messages:
            nonce += len(batch.messages)
            batch = decode_get_messages_result(self._query(gateway, nonce))
        return nonce

    def go(self) -> float:
        """Release the stream (at ``--rate`` from now on, if set); the monotonic time of the release."""
        if not self.streams:
            raise RuntimeError("go before precompute")
        self._cpu_at_go = time.process_time()
        now = time.monotonic()
        for stream in self.streams.values():
            stream.go = now
        return now

    def dump(self, out: Path) -> None:
        """Write ``stream.bin`` and ``replica.json`` into ``out`` (see the module docstring)."""
        streams = list(self.streams.values())
        if not streams:
            raise RuntimeError("dump before precompute")
        with (out / "stream.bin").open("wb") as f:
            # Interleaved, as the gateways' workers deliver them; each client's messages stay in their order.
            for reply in itertools.chain.from_iterable(itertools.zip_longest(*(s.replies for s in streams))):
                if reply is not None:
                    f.write(len(reply).to_bytes(4, "big"))
                    f.write(reply)
        record = {
            "streams": [
                {
                    "gateway": Principal(s.gateway).to_text(),
                    "first_nonce": s.first_nonce,
                    "batch": s.batch,
                    "counts": s.counts,
                    "rounds": s.rounds,
                    "writes": s.writes,
                }
                for s in streams
            ],
            "empty_answers": sum(s.empties for s in streams),
            "live_queries": self.live_queries,
            "cpu_since_go_s": time.process_time() - self._cpu_at_go,
        }
        _write_json(out / "replica.json", record)


async def serve(args: argparse.Namespace) -> None:
    options = StreamOptions(
        messages=args.messages,
        payload_size=args.payload,
        burst=args.burst,
        rate=args.rate,
        batch=args.batch,
        round_messages=args.round_messages,
    )
    gateways = [Principal.from_text(text) for text in args.gateway_principal]
    server = SyntheticReplica(args.address, gateways, options, args.round_ms)
    await server.start()
    info = {**server.devnet.info(), "canister": server.canister_id.to_text(), "pid": os.getpid()}
    print(json.dumps(info), flush=True)
    try:
        async for line in stdin_lines():
            command, _, rest = line.partition(" ")
            if command == "precompute":
                print("stream ready", json.dumps(await server.precompute(Path(rest))), flush=True)
            elif command == "go":
                print("go", server.go(), flush=True)
            elif command == "dump":
                server.dump(Path(rest))
                print("dumped", flush=True)
            else:
                print(f"unknown command {line!r}: precompute FILE, go, dump DIR", file=sys.stderr, flush=True)
    finally:
        await server.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--address", default="127.0.0.1:0", help="host:port to serve on (port 0: any)")
    p.add_argument(
        "--gateway-principal",
        required=True,
        action="append",
        help="the principal of a gateway (worker) that polls the stream; once per gateway",
    )
    p.add_argument("--messages", type=int, default=100_000, help="messages in the stream")
    p.add_argument("--payload", type=int, default=100, help="bytes of each message's payload")
    p.add_argument("--burst", type=int, default=1, help="messages in a row to the same client (1: round robin)")
    p.add_argument("--rate", type=float, default=0.0, help="release the stream at this many messages/s (0: at once)")
    p.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="messages per ws_get_messages reply")
    p.add_argument("--round-messages", type=int, default=DEFAULT_ROUND_MESSAGES, help="messages per certificate")
    p.add_argument("--round-ms", type=float, default=DEFAULT_ROUND_MS, help="live rounds (ws_open calls), ms")
    return p.parse_args(argv)


if __name__ == "__main__":
    import uvloop

    uvloop.run(serve(parse_args()))
