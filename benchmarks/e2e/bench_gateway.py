"""End-to-end gateway benchmark: K clients on the firehose canister, against a raw picows broadcast.

Run: ``.venv/bin/python benchmarks/e2e/bench_gateway.py --clients 50 --seconds 10``. It starts the devnet
and the gateway as child processes (the console scripts a deployment runs), connects K raw clients, turns
the firehose on, and prints:

* delivered messages/s (all clients together) and the latency from the canister's send (the message's
  ``timestamp``, the canister time of the round) to the client's receipt, p50/p99;
* the gateway process's CPU (share of one core) and RSS;
* the ceiling: a bare picows server (also a child process) broadcasting frames of the same size to the
  same number of clients as fast as it can, and the gateway/ceiling ratio.

The clients do not verify certificates (that is the SDK's cost, not the gateway's); they decode each
message far enough to read its timestamp.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect, ws_create_server

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "gateway"))

from gw_rawclient import RawClient  # noqa: E402

from icws_fast.ic import candid  # noqa: E402
from icws_fast.ic.agent import Agent  # noqa: E402
from icws_fast.protocol.types import decode_canister_to_client, decode_websocket_message  # noqa: E402

BIN = Path(sys.executable).parent
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def read_line(stream: asyncio.StreamReader, prefix: str = "") -> str:
    while True:
        line = (await asyncio.wait_for(stream.readline(), 60)).decode()
        if not line:
            raise RuntimeError(f"child exited before printing {prefix!r}")
        if line.startswith(prefix):
            return line.strip()


class Receiver:
    """Counts what one client receives during the measurement window and keeps the latencies."""

    def __init__(self, client: RawClient, stats: dict[str, list[float]], window: list[float]) -> None:
        self.client, self.stats, self.window = client, stats, window

    async def run(self) -> None:
        inbox = self.client.listener.inbox
        while True:
            frame = await inbox.get()
            if not isinstance(frame, bytes):
                return
            now = time.time_ns()
            msg = decode_websocket_message(decode_canister_to_client(frame).content)
            if self.window[0] <= now / 1e9 < self.window[1] and not msg.is_service_message:
                self.stats["latency_ms"].append((now - msg.timestamp) / 1e6)
                self.stats["frame_bytes"].append(len(frame))


async def run_gateway_leg(args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    devnet = await asyncio.create_subprocess_exec(
        str(BIN / "icws-devnet"), "--address", "127.0.0.1:0", stdout=asyncio.subprocess.PIPE
    )
    assert devnet.stdout is not None
    info = json.loads(await read_line(devnet.stdout, "{"))
    gateway = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "icws_fast.gateway",
        "--gateway-address", "127.0.0.1:0", "--prometheus-endpoint", "127.0.0.1:0",
        "--ic-network-url", info["url"], "--polling-interval", str(args.polling_interval),
        "--max-clients-per-ip", str(args.clients + 10), "--poll-pipeline-depth", str(args.pipeline),
        cwd=workdir, stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "RUST_LOG_STDOUT": "warn", "RUST_LOG_FILE": "warn"},
    )  # fmt: skip
    assert gateway.stdout is not None
    try:
        port = int((await read_line(gateway.stdout, "listening on ")).split()[2].rsplit(":", 1)[1])
        firehose = info["canisters"]["firehose"]
        from icws_fast.ic.principal import Principal

        canister = Principal.from_text(firehose)
        clients = []
        for _ in range(args.clients):
            client = await RawClient.connect(f"ws://127.0.0.1:{port}")
            await client.open(canister)
            clients.append(client)
        stats: dict[str, list[float]] = {"latency_ms": [], "frame_bytes": []}
        window = [float("inf"), float("inf")]
        tasks = [asyncio.create_task(Receiver(c, stats, window).run()) for c in clients]
        config_type = candid.parse_args(
            "(record { messages_per_round : nat32; payload_size : nat32; interval_ms : nat64 })"
        )
        async with Agent(info["url"], root_key=bytes.fromhex(info["root_key"])) as agent:
            config = {"messages_per_round": args.per_round, "payload_size": args.payload, "interval_ms": args.interval}
            await agent.call(canister, "configure", candid.encode(config_type, [config]))
            await asyncio.sleep(args.warmup)
            cpu0, dcpu0, t0 = proc_cpu_seconds(gateway.pid), proc_cpu_seconds(devnet.pid), time.time()
            ccpu0 = time.process_time()
            window[:] = [t0, t0 + args.seconds]
            await asyncio.sleep(args.seconds)
            cpu1, dcpu1, t1 = proc_cpu_seconds(gateway.pid), proc_cpu_seconds(devnet.pid), time.time()
            ccpu1 = time.process_time()
            rss = proc_rss_mb(gateway.pid)
            config["messages_per_round"] = 0
            await agent.call(canister, "configure", candid.encode(config_type, [config]))
        for client in clients:
            client.close()
        await asyncio.sleep(0.5)
        for task in tasks:
            task.cancel()
        latencies = sorted(stats["latency_ms"])
        delivered = len(latencies)
        return {
            "msgs_per_s": delivered / (t1 - t0),
            "p50_ms": latencies[len(latencies) // 2] if latencies else float("nan"),
            "p99_ms": latencies[int(len(latencies) * 0.99)] if latencies else float("nan"),
            "cpu_share": (cpu1 - cpu0) / (t1 - t0),
            "devnet_cpu_share": (dcpu1 - dcpu0) / (t1 - t0),
            "clients_cpu_share": (ccpu1 - ccpu0) / (t1 - t0),
            "rss_mb": rss,
            "frame_bytes": statistics.mean(stats["frame_bytes"]) if stats["frame_bytes"] else 0.0,
        }
    finally:
        for proc in (gateway, devnet):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (gateway, devnet):
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()


# -- the ceiling: a bare picows broadcast -------------------------------------------------------------


async def raw_server(frame_size: int, total: int) -> None:
    """Child process: wait for ``expected`` clients, then broadcast ``total`` frames to all of them."""
    frame = os.urandom(frame_size)
    transports: list[WSTransport] = []
    ready = asyncio.Event()
    expected = int(os.environ["RAW_CLIENTS"])

    class Server(WSListener):
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
        if i % 64 == 0:
            # Yield so the loop flushes; the gateway's writes are interleaved with polls the same way.
            await asyncio.sleep(0)
    await asyncio.sleep(3600)


async def run_raw_leg(args: argparse.Namespace, frame_size: int) -> float:
    total = args.raw_messages
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--raw-server", str(frame_size), str(total),
        env={**os.environ, "RAW_CLIENTS": str(args.clients)}, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        port = int((await read_line(proc.stdout, "port ")).split()[1])
        done = asyncio.Event()
        counts = [0]
        expected = total * args.clients
        stamps: list[float] = []

        class Client(WSListener):
            def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
                if frame.msg_type == WSMsgType.BINARY:
                    if not stamps:
                        stamps.append(time.perf_counter())
                    counts[0] += 1
                    if counts[0] == expected:
                        stamps.append(time.perf_counter())
                        done.set()

        conns = [await ws_connect(Client, f"ws://127.0.0.1:{port}", use_aiofastnet=False) for _ in range(args.clients)]
        await asyncio.wait_for(done.wait(), 300)
        for transport, _ in conns:
            transport.disconnect()
        return expected / (stamps[1] - stamps[0])
    finally:
        proc.kill()
        await proc.wait()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        gw = await run_gateway_leg(args, workdir)
    raw = await run_raw_leg(args, int(gw["frame_bytes"]) or 512)
    print(f"clients={args.clients} firehose={args.per_round} msgs/{args.interval} ms of {args.payload} chars")
    print(
        f"gateway: {gw['msgs_per_s']:.0f} msgs/s delivered, latency p50 {gw['p50_ms']:.1f} ms p99 {gw['p99_ms']:.1f} ms"
    )
    print(f"gateway process: CPU {gw['cpu_share'] * 100:.0f}% of one core, RSS {gw['rss_mb']:.0f} MB")
    print(f"devnet process: CPU {gw['devnet_cpu_share'] * 100:.0f}% of one core (the canister side of the load)")
    print(f"client process: CPU {gw['clients_cpu_share'] * 100:.0f}% of one core (K clients decoding every message)")
    print(f"frame size {gw['frame_bytes']:.0f} B; raw picows broadcast ceiling {raw:.0f} msgs/s")
    print(f"gateway / ceiling = {gw['msgs_per_s'] / raw:.3f}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--per-round", type=int, default=20, help="firehose messages per client per round")
    p.add_argument("--interval", type=int, default=100, help="firehose round interval, ms")
    p.add_argument("--payload", type=int, default=100, help="firehose payload characters")
    p.add_argument("--polling-interval", type=int, default=100, help="gateway polling interval, ms")
    p.add_argument("--pipeline", type=int, default=3, help="the gateway's --poll-pipeline-depth")
    p.add_argument("--raw-messages", type=int, default=2000, help="frames per client in the raw broadcast")
    return p.parse_args(argv)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--raw-server":
        import uvloop

        uvloop.run(raw_server(int(sys.argv[2]), int(sys.argv[3])))
    else:
        import uvloop

        uvloop.run(main(parse_args()))
