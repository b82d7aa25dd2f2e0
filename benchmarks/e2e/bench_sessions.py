"""Sessions mode of the gateway-bound benchmark: many IC WebSocket sessions opened at once, then left idle.

Run (from the repository root)::

    .venv/bin/python -m benchmarks.e2e.bench_sessions --sessions 1000 5000 15000
    .venv/bin/python -m benchmarks.e2e.bench_sessions --sessions 5000 --compare /path/to/other/tree --json out.json

For each N it starts a replica, a gateway (``icws-gateway``) and ``--client-procs`` client processes, all
separate child processes, so that each one's CPU and memory are its own. The clients first sign their N
``ws_open`` envelopes (a fresh Ed25519 identity per session, as an SDK does), then, on one signal, open all N
sessions at once: WebSocket upgrade, the gateway's handshake message, the signed ``ws_open`` envelope, and the
canister's first message (the session is open when that arrives). The sessions then stay idle. It prints:

* **opens/s**: N over the time from the signal to the last session open (and the p50/p99 open latency);
* **CPU per open** of the gateway over the same window (accept, upgrade, envelope checks, the relayed
  ``ws_open`` call and its certified reply, the poll that brings the first message), and the CPU of the replica
  and the clients, to show which process was the limit;
* **RSS per idle session**: the gateway's resident set after the sessions settled, minus before the first
  connection, over N (and its peak, ``VmHWM``, over the same baseline);
* with ``--timeline S``, **the stages' timeline**: the seconds from the signal until 1 %, half, and all, of the
  sessions were connected (upgraded and admitted), had their ``ws_open`` relayed (the IC's verdict back) and had a
  canister message delivered, from the gateway's ``/metrics`` read every S seconds;
* **the gateway's GC** from the signal to the settled sessions: collections per generation and their pauses (wall
  time: the loop waits), the longest pause and those of 10 ms or more, and the objects the collector tracks per
  session and frozen, from a probe loaded into the gateway (``gcprobe/sitecustomize.py``, read on ``SIGUSR2``);
* **accept-queue overflows**: the longest accept queue of the gateway's listener seen (``ss``, every 0.1 s) against
  its backlog, and the kernel's ``ListenOverflows`` and ``ListenDrops`` (``/proc/net/netstat``,
  counted for the whole network namespace, so other listeners on the machine show up too) before and after.

The replica is the devnet (``icws-devnet``, its ``test`` (ping-pong) canister). ``--compare DIR`` measures, first, the
gateway whose ``icws_fast`` package is in DIR, then the working tree's, for each N in turn (before/after in one
run). The soft limit of open files is raised to the hard limit first: the gateway and the clients inherit it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import resource
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from benchmarks.e2e.workers import Profiler, gc_figures, gc_probe_env, profile_dir, read_gc_probe
from icws_fast.ic.envelope import build_envelope, call_content
from icws_fast.ic.identity import Ed25519Identity
from icws_fast.ic.principal import Principal
from icws_fast.protocol.types import (
    decode_canister_to_client,
    decode_handshake,
    decode_websocket_message,
    encode_client_request,
    encode_ws_open_args,
)
from tests.processes import Child, DevnetProcess, GatewayProcess, cpu_seconds

_MODULE = "benchmarks.e2e.bench_sessions"
_CANISTER = "test"  # the devnet's ping-pong demo canister
_OPEN_TIMEOUT_S = 120.0  # a client gives up on a session not open by then (it counts as failed)
_SETTLE_S = 3.0  # after the last open, before the gateway's RSS is read: relays and polls finish
# The stages of an open, as the gateway counts them: the connection upgraded and admitted, its ws_open relayed (the
# IC's verdict came back), and a canister message written to it (the first one opens the session).
_STAGES = {
    "connected": "clients_connected ",
    "relayed": "relayed_envelopes_to_ic_total{",
    "delivered": "relayed_messages_to_clients_total{",
}


# -- the client process ----------------------------------------------------------------------------------------


class OpeningListener(WSListener):  # type: ignore[misc]
    """One session: answers the gateway's handshake with its ``ws_open`` frame, waits for the first message."""

    __slots__ = ("done", "gateway", "open_frame", "opened_at", "outcome")

    def __init__(self, open_frame: bytes, gateway: Principal, done: asyncio.Future[None]) -> None:
        super().__init__()
        self.open_frame = open_frame
        self.gateway = gateway
        self.done = done
        self.opened_at = 0.0
        self.outcome = ""  # "open", or why the session failed

    def finish(self, outcome: str) -> None:
        if not self.outcome:
            self.outcome = outcome
            self.opened_at = time.monotonic()
            if not self.done.done():
                self.done.set_result(None)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.BINARY:
            payload = frame.get_payload_as_bytes()
            if not self.open_frame:
                # The canister's first message: it must be a relayed canister message (not checked further:
                # certification is the SDK's work, and the first message's content is the canister's).
                try:
                    decode_websocket_message(decode_canister_to_client(payload).content)
                except Exception as exc:
                    self.finish(f"unreadable first message: {type(exc).__name__}")
                else:
                    self.finish("open")
                return
            if decode_handshake(payload) != self.gateway:
                self.finish("handshake names another gateway")
                return
            transport.send(WSMsgType.BINARY, self.open_frame)
            self.open_frame = b""
        elif frame.msg_type == WSMsgType.CLOSE:
            self.finish(f"closed by the gateway: {frame.get_close_code()} {frame.get_close_reason() or ''}")
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.finish("disconnected")


def _open_frames(canister: Principal, gateway: Principal, count: int) -> list[bytes]:
    """``count`` ClientRequest frames of ``ws_open``, each signed by a fresh identity with a random client nonce."""
    frames = []
    for _ in range(count):
        identity = Ed25519Identity.generate()
        arg = encode_ws_open_args(secrets.randbits(63), gateway)
        content = call_content(identity.sender, canister, "ws_open", arg, nonce=secrets.token_bytes(8))
        frames.append(encode_client_request(build_envelope(identity, content)))
    return frames


async def _read_line(stream: asyncio.StreamReader, expected: str) -> None:
    line = (await stream.readline()).decode().strip()
    if line != expected:
        raise SystemExit(f"bench_sessions client: expected {expected!r} on stdin, got {line!r}")


async def clients(url: str, canister_text: str, gateway_text: str, count: int) -> None:
    """Child process: sign ``count`` ``ws_open``, print ``ready``; on ``go`` open them all, print the outcome as JSON;
    hold the sessions idle until ``stop``."""
    canister, gateway = Principal.from_text(canister_text), Principal.from_text(gateway_text)
    frames = _open_frames(canister, gateway, count)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    print("ready", flush=True)
    await _read_line(stdin, "go")
    started = time.monotonic()
    listeners: list[OpeningListener] = []
    transports: list[WSTransport] = []
    connect_failures: list[str] = []

    async def one(frame: bytes) -> None:
        done = loop.create_future()
        try:
            transport, listener = await ws_connect(
                lambda *_: OpeningListener(frame, gateway, done),
                url,
                websocket_handshake_timeout=_OPEN_TIMEOUT_S,
                use_aiofastnet=False,
            )
        except Exception as exc:  # the gateway refused the connection: count it, do not crash
            connect_failures.append(f"connect failed: {type(exc).__name__}: {exc}"[:120])
            return
        if listener is None:  # picows: the connection went away before the upgrade completed
            connect_failures.append("disconnected during the WebSocket upgrade")
            return
        listeners.append(listener)
        transports.append(transport)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done, max(0.0, started + _OPEN_TIMEOUT_S - time.monotonic()))
        listener.finish("no first message in time")

    await asyncio.gather(*(one(frame) for frame in frames))
    opened = [lst.opened_at - started for lst in listeners if lst.outcome == "open"]
    failures = collections.Counter(connect_failures)
    failures.update(lst.outcome for lst in listeners if lst.outcome != "open")
    last = max((lst.opened_at for lst in listeners if lst.outcome == "open"), default=started)
    print(json.dumps({"started": started, "last_open": last, "latencies_s": opened, "failures": failures}), flush=True)
    await _read_line(stdin, "stop")
    for transport in transports:
        transport.disconnect(False)


# -- the orchestrator ------------------------------------------------------------------------------------------


def raise_fd_limit() -> int:
    """Raise this process's soft limit of open files to the hard limit (children inherit it); the new limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def listen_counters() -> dict[str, int]:
    """The kernel's ``ListenOverflows`` and ``ListenDrops`` (TcpExt, ``/proc/net/netstat``)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], map(int, values.split()[1:]), strict=True))
            return {key: table[key] for key in ("ListenOverflows", "ListenDrops")}
    raise RuntimeError("/proc/net/netstat has no TcpExt lines")


def _status_kib(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {field_name} line")


async def _sample_stages(
    gateway: GatewayProcess, t0: float, period: float, samples: list[tuple[float, dict[str, float]]]
) -> None:
    """Append, every ``period`` seconds, the seconds since ``t0`` and how many sessions each of ``_STAGES`` counts."""
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(f"{gateway.metrics_url}/metrics") as resp:
                text = await resp.text()
            counts = dict.fromkeys(_STAGES, 0.0)
            for line in text.splitlines():
                for stage, prefix in _STAGES.items():
                    if line.startswith(prefix):
                        counts[stage] += float(line.rsplit(" ", 1)[1])
            samples.append((time.monotonic() - t0, counts))
            await asyncio.sleep(period)


async def _sample_accept_queue(port: int, peak: list[int]) -> None:
    """Keep in ``peak`` the longest accept queue (and the backlog) of the listener on ``port``, read every 0.1 s.

    The kernel's overflow counters are the whole network namespace's: a busy machine's other listeners show up
    in them too. ``ss`` reads this one listener's queue (its Recv-Q; Send-Q is the backlog) through netlink."""
    while True:
        proc = await asyncio.create_subprocess_exec(
            "ss", "-Hltn", f"sport = :{port}", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        out, _ = await proc.communicate()
        for line in out.decode().splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[1].isdigit() and fields[2].isdigit():
                peak[0], peak[1] = max(peak[0], int(fields[1])), int(fields[2])
        await asyncio.sleep(0.1)


def _stage_times(samples: list[tuple[float, dict[str, float]]], n: int) -> dict[str, list[float | None]]:
    """For each stage, the first sample time at which it counted 1 %, half, and all of the ``n`` sessions."""
    times: dict[str, list[float | None]] = {}
    for stage in _STAGES:
        times[stage] = [next((t for t, c in samples if c[stage] >= n * share), None) for share in (0.01, 0.5, 1.0)]
    return times


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _spawn_clients(url: str, canister: str, gateway: str, count: int) -> Child:
    command = [sys.executable, "-m", _MODULE, "--client", url, canister, gateway, str(count)]
    return Child("bench_sessions clients", command, stdin=True)


@dataclass
class Leg:
    """One measurement: N sessions on one gateway."""

    name: str
    sessions: int
    figures: dict[str, Any] = field(default_factory=dict)


async def run_leg(args: argparse.Namespace, leg: Leg, gateway_src: Path | None, workdir: Path) -> None:
    """Open ``leg.sessions`` sessions on a fresh replica and gateway (the gateway's code from ``gateway_src``)."""
    n = leg.sessions
    probe_out = workdir / "gc-probe.json"
    env = {"RUST_LOG_FILE": "warn"} | gc_probe_env(probe_out, gateway_src)
    limits = ["--max-clients", str(n + 100), "--max-clients-per-ip", str(n + 100), *args.gateway_arg]
    with contextlib.ExitStack() as children:
        replica = children.enter_context(DevnetProcess(address="127.0.0.1:0", round_ms=args.round_ms))
        canister = replica.info["canisters"][_CANISTER]
        gateway = GatewayProcess(replica.url, workdir / "data", extra_args=limits, env=env)
        children.enter_context(gateway)
        workers = [
            children.enter_context(_spawn_clients(gateway.url, canister, gateway.principal, count))
            for count in _split(n, args.client_procs)
        ]
        for worker in workers:
            await worker.wait_for_line_async("ready", timeout=600)
        await asyncio.sleep(1.0)  # the gateway settles after start-up
        pids = {"gateway": gateway.pid, "replica": replica.pid} | {f"clients{i}": w.pid for i, w in enumerate(workers)}
        gc0 = await read_gc_probe(gateway.pid, probe_out)
        rss0 = _status_kib(gateway.pid, "VmRSS")
        listen0 = listen_counters()
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        leg_profile = args.profile and args.profile / f"{leg.name.replace(' ', '_').replace('/', '_')}-{n}"
        profiler = Profiler(leg_profile, args.profile_seconds)
        profiler.start({"gateway": gateway.pid, "replica": replica.pid})
        t0 = time.monotonic()
        for worker in workers:
            worker.send_line("go")
        samples: list[tuple[float, dict[str, float]]] = []
        accept_queue = [0, 0]  # the longest accept queue seen, the backlog
        samplers = [asyncio.ensure_future(_sample_accept_queue(int(gateway.url.rsplit(":", 1)[1]), accept_queue))]
        if args.timeline:
            samplers.append(asyncio.ensure_future(_sample_stages(gateway, t0, args.timeline, samples)))
        try:
            results = [json.loads(await w.wait_for_line_async("{", timeout=_OPEN_TIMEOUT_S + 60)) for w in workers]
        finally:
            for sampler in samplers:
                sampler.cancel()
        cpu1 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        t1 = time.monotonic()
        await asyncio.sleep(_SETTLE_S)
        rss1 = _status_kib(gateway.pid, "VmRSS")
        hwm = _status_kib(gateway.pid, "VmHWM")
        gc1 = await read_gc_probe(gateway.pid, probe_out)
        listen1 = listen_counters()
        connected = await gateway.metric("clients_connected")
        for worker in workers:
            worker.send_line("stop")
        # Nothing is measured after this: no drain (n ws_close calls would only slow the run down).
        gateway.stop(9)
    profiler.report()
    latencies = sorted(lat for r in results for lat in r["latencies_s"])
    failures: dict[str, int] = {}
    for r in results:
        for reason, count in r["failures"].items():
            failures[reason] = failures.get(reason, 0) + count
    opened = len(latencies)
    window = max(r["last_open"] for r in results) - t0
    cpu = {name: cpu1[name] - cpu0[name] for name in pids}
    leg.figures = {
        "sessions": n,
        "opened": opened,
        "failures": failures,
        "gateway_clients_connected": connected,
        "open_seconds": window,
        "opens_per_s": opened / window if window > 0 else float("nan"),
        "open_latency_p50_s": latencies[len(latencies) // 2] if latencies else float("nan"),
        "open_latency_p99_s": latencies[int(len(latencies) * 0.99)] if latencies else float("nan"),
        "gateway_cpu_us_per_open": cpu["gateway"] * 1e6 / max(opened, 1),
        "cpu_share_during_opens": {name: seconds / (t1 - t0) for name, seconds in cpu.items()},
        "gateway_rss_before_mib": rss0 / 1024,
        "gateway_rss_after_mib": rss1 / 1024,
        "rss_kib_per_session": (rss1 - rss0) / max(opened, 1),
        "peak_rss_kib_per_session": (hwm - rss0) / max(opened, 1),
        "listen_overflows": listen1["ListenOverflows"] - listen0["ListenOverflows"],
        "listen_drops": listen1["ListenDrops"] - listen0["ListenDrops"],
        "accept_queue_peak": accept_queue[0],
        "accept_backlog": accept_queue[1],
        "stage_seconds": _stage_times(samples, n) if args.timeline else None,
        "gc": gc_figures(gc0, gc1, opened),
    }


def report(leg: Leg) -> None:
    f = leg.figures
    shares = ", ".join(f"{name} {share * 100:.0f}%" for name, share in f["cpu_share_during_opens"].items())
    print(f"[{leg.name}] {f['sessions']} sessions")
    print(
        f"  opened {f['opened']} in {f['open_seconds']:.2f} s: {f['opens_per_s']:.0f} opens/s; open latency "
        f"p50 {f['open_latency_p50_s'] * 1000:.0f} ms, p99 {f['open_latency_p99_s'] * 1000:.0f} ms"
    )
    if f["failures"]:
        print(f"  FAILED: {f['failures']}")
    print(f"  gateway CPU per open {f['gateway_cpu_us_per_open']:.0f} µs; CPU in the opens (1 core = 100%): {shares}")
    print(
        f"  gateway RSS {f['gateway_rss_before_mib']:.1f} -> {f['gateway_rss_after_mib']:.1f} MiB: "
        f"{f['rss_kib_per_session']:.2f} KiB per idle session (peak {f['peak_rss_kib_per_session']:.2f} KiB); "
        f"gateway says {f['gateway_clients_connected']:.0f} clients connected"
    )
    if f["stage_seconds"] is not None:
        stages = ", ".join(
            f"{stage} " + "/".join("-" if t is None else f"{t:.1f}" for t in times)
            for stage, times in f["stage_seconds"].items()
        )
        print(f"  seconds from the go to 1 %/half/all of the sessions (gateway's /metrics): {stages}")
    g = f["gc"]
    per_gen = ", ".join(
        f"gen{i} {x['collections']} ({x['total_s'] * 1000:.0f} ms)" for i, x in enumerate(g["generations"])
    )
    print(
        f"  gateway GC from the go to the settled sessions: {per_gen}; {g['total_s'] * 1000:.0f} ms in all, longest"
        f" pause {g['max_s'] * 1000:.1f} ms, {len(g['long_pauses_s'])} of 10 ms or more"
        f" ({', '.join(f'{p * 1000:.0f}' for p in g['long_pauses_s']) or '-'} ms)"
    )
    print(
        f"  GC-tracked objects {g['tracked_before']} -> {g['tracked_after']} ({g['tracked_per_session']:.1f} per"
        f" session; {g['frozen_after']} frozen); most tracked: "
        + ", ".join(f"{name} {count}" for name, count in g["top_types"][:6])
    )
    print(
        f"  gateway's accept queue: at most {f['accept_queue_peak']} of {f['accept_backlog']} (read every 0.1 s); "
        f"namespace-wide ListenOverflows +{f['listen_overflows']}, ListenDrops +{f['listen_drops']}"
    )


async def main(args: argparse.Namespace) -> None:
    limit = raise_fd_limit()
    if max(args.sessions) + 1000 > limit:
        raise SystemExit(f"{max(args.sessions)} sessions need more open files than the hard limit {limit}")
    sources: list[tuple[str, Path | None]] = [("gateway", None)]
    if args.compare is not None:
        sources.insert(0, (f"gateway from {args.compare}", args.compare))
    legs = []
    for n in args.sessions:
        for name, src in sources:
            leg = Leg(name, n)
            with tempfile.TemporaryDirectory() as tmp:
                await run_leg(args, leg, src, Path(tmp))
            report(leg)
            legs.append(leg)
    if args.json is not None:
        args.json.write_text(json.dumps([{"gateway": leg.name, **leg.figures} for leg in legs], indent=2))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, nargs="+", default=[1000, 5000, 15000], help="session counts to measure")
    p.add_argument("--client-procs", type=int, default=2, help="client processes the sessions are spread over")
    p.add_argument("--round-ms", type=float, default=50, help="the devnet's round length, in ms")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    p.add_argument(
        "--gateway-arg",
        action="append",
        default=[],
        help="an extra icws-gateway argument (repeat; e.g. --gateway-arg=--ping-interval --gateway-arg=0)",
    )
    p.add_argument(
        "--timeline",
        type=float,
        default=0,
        metavar="S",
        help="read the gateway's /metrics every S seconds during the opens, for the stages' timeline (each read "
        "costs the gateway a few ms at 10 000 sessions, so it is off by default)",
    )
    p.add_argument("--profile", type=profile_dir, help="sample the gateway and the replica with py-spy from the go")
    p.add_argument("--profile-seconds", type=float, default=10, help="how long --profile samples (10 s)")
    p.add_argument(
        "--compare",
        type=Path,
        help="also measure, first, the gateway whose icws_fast package is in this directory (before/after runs)",
    )
    return p.parse_args(argv)


if __name__ == "__main__":
    import uvloop

    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        url, canister, gateway, count = sys.argv[2:6]
        uvloop.run(clients(url, canister, gateway, int(count)))
    else:
        uvloop.run(main(parse_args()))
