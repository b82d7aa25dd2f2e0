"""End-to-end gateway benchmark: K clients on the firehose canister, against a raw picows broadcast.

Run (from the repository root): ``.venv/bin/python -m benchmarks.e2e.bench_gateway --clients 100 --seconds 10``.
It starts the devnet, the gateway and the clients as separate child processes (so each one's CPU is its own),
turns the firehose on and, over a window after a warm-up, prints:

* delivered messages/s (all clients together), what the canister really sent (its rounds, seen in the
  messages' timestamps), and the latency from the canister's send (the message's ``timestamp``, the
  canister time of the round) to the client's receipt, p50/p99;
* the CPU (share of one core) of the gateway, the devnet and the client processes, and the gateway's RSS;
* sequence gaps seen by the clients (a message lost or repeated by the gateway shows here);
* the ceiling: a bare picows server (a child process) broadcasting frames of the same size to the same
  number of clients (in the same kind of client process) as fast as it can, and the gateway/ceiling ratio.
  The ratio is the gateway's efficiency only when the gateway is the bottleneck: when delivered equals
  what the canister sent, the canister side is what limits it. The gateway's CPU per delivered message,
  printed next to the raw server's CPU per frame, measures the gateway either way.

The clients do not verify certificates (that is the SDK's cost, not the gateway's) and do not decode the
whole frame: they read the sequence number, timestamp and service flag with a byte scan, and check one
frame in ``SAMPLE_EVERY`` against a full decode. ``--profile DIR`` samples the gateway and the devnet with
py-spy during the window and prints where their time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect, ws_create_server

from benchmarks.e2e.workers import Profiler, profile_dir, read_line, split, stdin_reader
from icws_fast.devnet.server import DEFAULT_ROUND_MS
from icws_fast.errors import RejectError
from icws_fast.ic import candid, cbor
from icws_fast.ic.agent import Agent
from icws_fast.ic.principal import Principal
from icws_fast.protocol.types import decode_canister_to_client, decode_websocket_message
from tests.gateway.gw_rawclient import RawClient, RawListener
from tests.processes import Child, DevnetProcess, GatewayProcess, cpu_seconds, rss_bytes

_MODULE = "benchmarks.e2e.bench_gateway"
SAMPLE_EVERY = 1000
# The fields of a WebsocketMessage the clients read, as CBOR text heads (serde order: they follow each other).
_SEQUENCE_NUM = b"\x6csequence_num"
_TIMESTAMP = b"\x69timestamp"
_IS_SERVICE = b"\x72is_service_message"
_NAT64 = candid.parse_args("(nat64)")


# -- the client process ---------------------------------------------------------------------------------


def _uint(data: bytes, pos: int) -> tuple[int, int]:
    """The CBOR unsigned integer at ``pos`` and the offset after it."""
    major, value, end = cbor.read_head(data, pos)
    if major != 0:
        raise ValueError("not an unsigned integer")
    return value, end


def scan_message(frame: bytes) -> tuple[int, int, bool]:
    """(sequence number, timestamp, is service message) of a relayed canister message, by a byte scan.

    The key is a principal and a nonce in text, so it cannot hold these field names, and the fields come
    in this order right after the ``client_key`` entry; anything else raises ``ValueError``.
    """
    pos = frame.find(_SEQUENCE_NUM)
    if pos < 0:
        raise ValueError("no sequence_num")
    seq, pos = _uint(frame, pos + len(_SEQUENCE_NUM))
    if frame[pos : pos + len(_TIMESTAMP)] != _TIMESTAMP:
        raise ValueError("no timestamp")
    timestamp, pos = _uint(frame, pos + len(_TIMESTAMP))
    if frame[pos : pos + len(_IS_SERVICE)] != _IS_SERVICE:
        raise ValueError("no is_service_message")
    return seq, timestamp, frame[pos + len(_IS_SERVICE)] == 0xF5


class Recorder:
    """What all clients of one process received: latencies in the window, frame sizes, sequence gaps."""

    def __init__(self) -> None:
        self.recording = False
        self.latencies_ms: list[float] = []
        self.frame_bytes = 0
        self.frames = 0
        self.gaps = 0
        self.bad = 0
        # The canister times of the firehose rounds seen in the window: how fast the canister really sent.
        self.rounds: set[int] = set()

    def record(self, listener: BenchListener, frame: bytes, now_ns: int) -> None:
        try:
            seq, timestamp, service = scan_message(frame)
        except (ValueError, IndexError):
            self.bad += 1
            return
        if listener.last_seq and seq != listener.last_seq + 1:
            self.gaps += 1
        listener.last_seq = seq
        self.frames += 1
        if self.frames % SAMPLE_EVERY == 0:
            # The scan must read what a real decoder reads.
            msg = decode_websocket_message(decode_canister_to_client(frame).content)
            if (msg.sequence_num, msg.timestamp, msg.is_service_message) != (seq, timestamp, service):
                self.bad += 1
        if self.recording and not service:
            self.latencies_ms.append((now_ns - timestamp) / 1e6)
            self.frame_bytes += len(frame)
            self.rounds.add(timestamp)


class BenchListener(RawListener):
    """A :class:`RawListener` until its session is open; then each frame is scanned in the callback."""

    def __init__(self) -> None:
        super().__init__()
        self.recorder: Recorder | None = None
        self.last_seq = 0

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        recorder = self.recorder
        if recorder is not None and frame.msg_type == WSMsgType.BINARY:
            recorder.record(self, frame.get_payload_as_bytes(), time.time_ns())
        else:
            super().on_ws_frame(transport, frame)


async def gateway_clients(url: str, canister_text: str, count: int) -> None:
    """Child process: open ``count`` sessions, then record between the ``start`` and ``stop`` lines on stdin."""
    canister = Principal.from_text(canister_text)
    recorder = Recorder()
    listeners: list[BenchListener] = []

    async def one() -> RawClient:
        transport, listener = await ws_connect(BenchListener, url, use_aiofastnet=False)
        client = RawClient(transport, listener)
        await client.open(canister, timeout=60)
        listener.recorder = recorder
        listeners.append(listener)
        return client

    clients: list[RawClient] = []
    for start in range(0, count, 20):
        clients += await asyncio.gather(*(one() for _ in range(start, min(count, start + 20))))
    stdin = await stdin_reader()
    print("ready", flush=True)
    await read_line(stdin, "start", timeout=600)
    recorder.recording, t0 = True, time.time()
    await read_line(stdin, "stop", timeout=600)
    recorder.recording, t1 = False, time.time()
    closed = sum(1 for listener in listeners if listener.closed is not None)
    result = {
        "seconds": t1 - t0,
        "latencies_ms": recorder.latencies_ms,
        "frame_bytes": recorder.frame_bytes,
        "gaps": recorder.gaps,
        "bad": recorder.bad,
        "closed": closed,
        "rounds": sorted(recorder.rounds),
    }
    print(json.dumps(result), flush=True)
    for client in clients:
        client.close()


async def raw_clients(url: str, count: int, frames_each: int) -> None:
    """Child process: ``count`` bare picows clients; prints the rate at which all frames arrived."""
    expected = count * frames_each
    received = [0]
    stamps: list[float] = []
    done = asyncio.Event()

    class Client(WSListener):  # type: ignore[misc]
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type == WSMsgType.BINARY:
                frame.get_payload_as_bytes()  # the gateway's clients copy each frame out too
                if not stamps:
                    stamps.append(time.perf_counter())
                received[0] += 1
                if received[0] == expected:
                    stamps.append(time.perf_counter())
                    done.set()

    conns = [await ws_connect(Client, url, use_aiofastnet=False) for _ in range(count)]
    await asyncio.wait_for(done.wait(), 300)
    print(json.dumps({"msgs_per_s": expected / (stamps[1] - stamps[0])}), flush=True)
    for transport, _ in conns:
        transport.disconnect()


async def raw_server(frame_size: int, total: int, expected: int) -> None:
    """Child process: wait for ``expected`` clients, then broadcast ``total`` frames to each of them."""
    frame = os.urandom(frame_size)
    transports: list[WSTransport] = []
    ready = asyncio.Event()

    class Server(WSListener):  # type: ignore[misc]
        def on_ws_connected(self, transport: WSTransport) -> None:
            transports.append(transport)
            if len(transports) == expected:
                ready.set()

    server = await ws_create_server(lambda _: Server(), "127.0.0.1", 0, use_aiofastnet=False)
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
    await ready.wait()
    for i in range(total):
        for transport in transports:
            transport.send(WSMsgType.BINARY, frame)
        if i % 50 == 49:
            # Yield once per 50 frames a client, as the gateway yields between two batches of 50.
            await asyncio.sleep(0)
    await asyncio.sleep(3600)


# -- the orchestrator ----------------------------------------------------------------------------------------


def _spawn_self(*argv: str, stdin: bool = False) -> Child:
    """This module in a child process, in the role ``argv[0]`` names."""
    return Child(f"bench_gateway {argv[0]}", [sys.executable, "-m", _MODULE, *argv], stdin=stdin)


def _shares(pids: dict[str, int]) -> dict[str, tuple[float, float]]:
    """Per process: (CPU seconds used, seconds its threads waited on a run queue) so far."""
    return {name: (cpu_seconds(pid), run_queue_wait_seconds(pid)) for name, pid in pids.items()}


def run_queue_wait_seconds(pid: int) -> float:
    """How long the threads of ``pid`` have been runnable but waiting for a CPU (``/proc/<pid>/task/*/schedstat``).

    Next to the CPU share this tells a process that is short of work (little CPU, little waiting) from one the
    machine starves (little CPU, much waiting: other jobs hold the cores).
    """
    waited = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            waited += int(stat.read_text().split()[1])
    return waited / 1e9


async def _canister_sent(agent: Agent, canister: Principal) -> int | None:
    """How many messages the firehose has queued so far; None from a firehose without the ``sent`` query."""
    try:
        reply = await agent.query(canister, "sent", candid.encode([], []))
    except RejectError:
        return None
    (sent,) = candid.decode(reply, _NAT64)
    return int(sent)


async def run_gateway_leg(
    args: argparse.Namespace, workdir: Path, src: Path | None, workers: int = 1
) -> dict[str, Any]:
    """One measurement; ``src`` (a directory holding an ``icws_fast`` package) is the gateway's code, and the
    devnet's too with ``--compare-devnet``; ``workers`` the gateway's ``--workers`` (its CPU, waits and RSS are
    then the supervisor's and the workers' together)."""
    src_env = {} if src is None else {"PYTHONPATH": str(src)}
    gateway_env = {"RUST_LOG_FILE": "warn", **src_env}
    devnet_env = src_env if args.compare_devnet else {}
    with contextlib.ExitStack() as children:
        devnet = children.enter_context(DevnetProcess(address="127.0.0.1:0", round_ms=DEFAULT_ROUND_MS, env=devnet_env))
        gateway_args = [
            "--polling-interval",
            str(args.polling_interval),
            "--max-clients-per-ip",
            str(args.clients + 10),
        ]
        gateway_args += ["--poll-pipeline-depth", str(args.pipeline)]
        gateway = GatewayProcess(
            devnet.url, workdir / "data", extra_args=gateway_args, env=gateway_env, workers=workers
        )
        children.enter_context(gateway)
        firehose = devnet.info["canisters"]["firehose"]
        canister = Principal.from_text(firehose)
        workers = [
            children.enter_context(_spawn_self("--gateway-clients", gateway.url, firehose, str(count), stdin=True))
            for count in split(args.clients, args.client_procs)
        ]
        for worker in workers:
            await worker.wait_for_line_async("ready", timeout=600)
        config_type = candid.parse_args(
            "(record { messages_per_round : nat32; payload_size : nat32; interval_ms : nat64 })"
        )
        gateway_pids = [gateway.pid, *gateway.worker_pids]
        sessions = await gateway.by_worker("clients_connected") if gateway.worker_pids else {}
        pids = {f"gateway{i}": pid for i, pid in enumerate(gateway_pids)} | {"devnet": devnet.pid}
        pids |= {f"clients{i}": w.pid for i, w in enumerate(workers)}
        profile_dir = args.profile
        if profile_dir is not None and args.compare is not None:
            profile_dir /= "this" if src is None else "compare"  # each leg's profiles apart
        profiler = Profiler(profile_dir, args.seconds)
        async with Agent(devnet.url, root_key=devnet.root_key_der) as agent:
            config = {"messages_per_round": args.per_round, "payload_size": args.payload, "interval_ms": args.interval}
            await agent.call(canister, "configure", candid.encode(config_type, [config]))
            await asyncio.sleep(args.warmup)
            profiler.start({"gateway": gateway.pid, "devnet": devnet.pid})
            sent0, cpu0, t0 = await _canister_sent(agent, canister), _shares(pids), time.time()
            for worker in workers:
                worker.send_line("start")
            await asyncio.sleep(args.seconds)
            for worker in workers:
                worker.send_line("stop")
            sent1, cpu1, t1 = await _canister_sent(agent, canister), _shares(pids), time.time()
            rss = sum(rss_bytes(pid) for pid in gateway_pids) / 2**20
            results = [json.loads(await w.wait_for_line_async("{", timeout=120)) for w in workers]
            config["messages_per_round"] = 0
            await agent.call(canister, "configure", candid.encode(config_type, [config]))
        profiler.report()
        latencies = sorted(lat for r in results for lat in r["latencies_ms"])
        seconds = statistics.mean(r["seconds"] for r in results)
        cpu = {name: (cpu1[name][0] - cpu0[name][0]) / (t1 - t0) for name in pids}
        wait = {name: (cpu1[name][1] - cpu0[name][1]) / (t1 - t0) for name in pids}
        return {
            "msgs_per_s": len(latencies) / seconds,
            "p50_ms": latencies[len(latencies) // 2] if latencies else float("nan"),
            "p99_ms": latencies[int(len(latencies) * 0.99)] if latencies else float("nan"),
            "gateway_cpu": sum(cpu[f"gateway{i}"] for i in range(len(gateway_pids))),
            "sessions_by_worker": sessions,
            "devnet_cpu": cpu["devnet"],
            "clients_cpu": [cpu[f"clients{i}"] for i in range(len(workers))],
            "gateway_wait": sum(wait[f"gateway{i}"] for i in range(len(gateway_pids))),
            "devnet_wait": wait["devnet"],
            "clients_wait": [wait[f"clients{i}"] for i in range(len(workers))],
            "rss_mb": rss,
            "frame_bytes": sum(r["frame_bytes"] for r in results) / max(1, len(latencies)),
            "gaps": sum(r["gaps"] for r in results),
            "bad": sum(r["bad"] for r in results),
            "closed": sum(r["closed"] for r in results),
            "rounds_per_s": len({t for r in results for t in r["rounds"]}) / seconds,
            "sent_per_s": None if sent0 is None or sent1 is None else (sent1 - sent0) / (t1 - t0),
        }


async def run_raw_leg(args: argparse.Namespace, frame_size: int) -> tuple[float, float]:
    """(msgs/s all clients received, the server's CPU µs per frame sent) of the raw broadcast."""
    with contextlib.ExitStack() as children:
        server = children.enter_context(
            _spawn_self("--raw-server", str(frame_size), str(args.raw_messages), str(args.clients))
        )
        port = int(server.wait_for_line("port ").split()[1])
        cpu0 = cpu_seconds(server.pid)
        url = f"ws://127.0.0.1:{port}"
        workers = [
            children.enter_context(_spawn_self("--raw-clients", url, str(count), str(args.raw_messages)))
            for count in split(args.clients, args.client_procs)
        ]
        rates = [json.loads(await w.wait_for_line_async("{", timeout=600))["msgs_per_s"] for w in workers]
        cpu_us = (cpu_seconds(server.pid) - cpu0) * 1e6 / (args.raw_messages * args.clients)
        return sum(rates), cpu_us


def offered_rate(args: argparse.Namespace) -> float:
    """The messages/s the firehose is asked to send (all clients together)."""
    return float(args.clients * args.per_round * 1000 / args.interval)


def report(name: str, gw: dict[str, Any], raw: float, raw_us: float, args: argparse.Namespace) -> None:
    offered = offered_rate(args)
    delivered = gw["msgs_per_s"]
    gw_us = gw["gateway_cpu"] * 1e6 / delivered if delivered else float("nan")
    devnet_us = gw["devnet_cpu"] * 1e6 / delivered if delivered else float("nan")
    clients_cpu = " + ".join(f"{c * 100:.0f}%" for c in gw["clients_cpu"])
    clients_wait = " + ".join(f"{w * 100:.0f}%" for w in gw["clients_wait"])
    print(f"[{name}]")
    print(
        f"  delivered {delivered:.0f} msgs/s = {delivered / offered:.2f} of offered; "
        f"gateway / ceiling = {delivered / raw:.3f}"
    )
    if gw["sent_per_s"] is not None:
        sent = f"{gw['sent_per_s']:.0f} msgs/s = {gw['sent_per_s'] / offered:.2f} of offered"
    else:  # an older firehose: estimated from the round times seen (catch-up firings share one, so it undercounts)
        rounds = gw["rounds_per_s"]
        sent = f"~{rounds * args.clients * args.per_round:.0f} msgs/s ({rounds:.1f} rounds/s seen)"
    print(f"  the canister sent {sent}")
    print(f"  latency canister send -> client receipt: p50 {gw['p50_ms']:.1f} ms, p99 {gw['p99_ms']:.1f} ms")
    print(
        f"  gateway process(es): CPU {gw['gateway_cpu'] * 100:.0f}% of one core, waited for a CPU "
        f"{gw['gateway_wait'] * 100:.0f}% of the time, RSS {gw['rss_mb']:.0f} MB"
    )
    if sessions := gw["sessions_by_worker"]:
        sessions = {worker: int(n) for worker, n in sessions.items()}
        mean = sum(sessions.values()) / len(sessions)
        spread = max(abs(n - mean) for n in sessions.values()) / mean if mean else float("nan")
        print(f"  sessions by worker {sessions}: at most {spread * 100:.0f}% from the mean")
    print(
        f"  devnet process: CPU {gw['devnet_cpu'] * 100:.0f}% of one core, waited for a CPU "
        f"{gw['devnet_wait'] * 100:.0f}% of the time (canister rounds + ws_get_messages)"
    )
    print(f"  client process(es): CPU {clients_cpu} of one core, waited for a CPU {clients_wait} of the time")
    print(f"  sequence gaps {gw['gaps']}, unreadable frames {gw['bad']}, clients closed by the gateway {gw['closed']}")
    print(
        f"  CPU per delivered message: gateway {gw_us:.1f} µs, raw broadcast server {raw_us:.1f} µs "
        f"(gateway at one full core: ~{1e6 / gw_us:.0f} msgs/s); devnet {devnet_us:.1f} µs "
        f"(at one full core: ~{1e6 / devnet_us:.0f} msgs/s)"
    )


async def main(args: argparse.Namespace) -> None:
    legs: list[tuple[str, Path | None, int]] = []
    for _ in range(args.repeat):  # interleaved: what the machine does meanwhile weighs on every leg alike
        for workers in args.workers:
            named = "" if args.workers == [1] else f", --workers {workers}"
            if args.compare is not None:
                what = "devnet + gateway" if args.compare_devnet else "gateway"
                legs.append((f"{what} from {args.compare}{named}", args.compare, workers))
            legs.append((f"this tree{named}", None, workers))
    results = []
    for name, src, workers in legs:
        with tempfile.TemporaryDirectory() as tmp:
            results.append((name, await run_gateway_leg(args, Path(tmp), src, workers)))
    raw, raw_us = await run_raw_leg(args, int(results[-1][1]["frame_bytes"]) or 512)
    offered = offered_rate(args)
    print(
        f"clients={args.clients} in {args.client_procs} process(es); firehose {args.per_round} msgs/client "
        f"every {args.interval} ms of {args.payload} chars: offered {offered:.0f} msgs/s nominal"
    )
    print(
        f"frame size {results[-1][1]['frame_bytes']:.0f} B; raw picows broadcast ceiling {raw:.0f} msgs/s "
        f"(server CPU {raw_us:.1f} µs per frame)"
    )
    for name, gw in results:
        report(name, gw, raw, raw_us, args)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--client-procs", type=int, default=1, help="client processes the clients are spread over")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--per-round", type=int, default=20, help="firehose messages per client per round")
    p.add_argument("--interval", type=int, default=100, help="firehose round interval, ms")
    p.add_argument("--payload", type=int, default=100, help="firehose payload characters")
    p.add_argument("--polling-interval", type=int, default=100, help="gateway polling interval, ms")
    p.add_argument("--pipeline", type=int, default=3, help="the gateway's --poll-pipeline-depth")
    p.add_argument("--raw-messages", type=int, default=2000, help="frames per client in the raw broadcast")
    p.add_argument("--profile", type=profile_dir, help="directory for py-spy profiles of the gateway and the devnet")
    p.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1],
        help="the gateway's --workers; several values (1 2): one measurement each, in turn",
    )
    p.add_argument("--repeat", type=int, default=1, help="run the measurements this many times, interleaved")
    p.add_argument(
        "--compare",
        type=Path,
        help="also measure, first, the gateway whose icws_fast package is in this directory (before/after runs)",
    )
    p.add_argument("--compare-devnet", action="store_true", help="with --compare, run that tree's devnet too")
    return p.parse_args(argv)


if __name__ == "__main__":
    import uvloop

    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "--raw-server":
        uvloop.run(raw_server(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
    elif mode == "--raw-clients":
        uvloop.run(raw_clients(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    elif mode == "--gateway-clients":
        uvloop.run(gateway_clients(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    else:
        uvloop.run(main(parse_args()))
