"""Gateway capacity: the gateway as the bottleneck, next to a bare picows server writing the same frames.

Run (from the repository root): ``.venv/bin/python -m benchmarks.e2e.bench_capacity`` (every point),
``--quick`` (K=100, 100 B, round robin, a few seconds: the CI ratio guard), or choose points with
``--clients``, ``--payload``, ``--pattern``, ``--half-load``. Each point, in one run:

1. **gateway**: the synthetic replica (:mod:`benchmarks.e2e.synthetic_replica`), the gateway
   (``python -m icws_fast.gateway``, with an identity file made beforehand, fast polling) and K clients in
   separate processes (:mod:`benchmarks.e2e.capacity_clients`); the clients open real sessions through the
   gateway, the replica precomputes an honestly certified stream of ``ws_get_messages`` replies for them and
   releases it all at once: the gateway polls as fast as it can;
2. **bare**: a picows server (:mod:`benchmarks.e2e.bare_server`) writes exactly the frames the gateway wrote
   for the same replies (``encode_frames``, one buffer per client per reply) to the same K clients (same keys,
   new connections);
3. with ``--half-load``, the gateway again, the stream released at half the rate it delivered in (1): the
   latency it adds when it is not saturated. Its replica certifies a round per ``--round-seconds`` (1 s) of the
   stream, about as often as the IC certifies a subnet's state; the saturated legs' every ``--round-messages``.

Figures over a window (``--warmup`` s after the release, ``--seconds`` long; the bare server's whole run), from
``/proc`` of each process and from the clients' records of every message (nonce, the monotonic time read):
messages/s and MB/s (WebSocket payload bytes) delivered, CPU µs per message and CPU share of each process,
the gateway/bare ratios, the latency the gateway adds (the replica wrote the reply → a client read the message:
one clock, ``time.monotonic``) p50/p99/p99.9, also apart for the messages whose reply carried a new certificate
(the gateway checks its BLS signature first) and the others, the largest RSS, and faults: sequence gaps,
duplicates, misroutes, unreadable frames, messages missing at the end. Any fault fails the run (exit status 1).

``--json PATH`` writes every figure; ``--compare DIR`` measures first the gateway whose ``icws_fast`` package is
in DIR (another checkout), then this tree's, in the same run; ``--profile DIR`` samples the gateway with py-spy
during the window. ``--workers 1 2`` measures the gateway with ``--workers 1`` and ``--workers 2`` in turn
(``--repeat 3``: three times, interleaved); a leg's gateway CPU is then the supervisor's and its workers' together
(also printed without the supervisor), and the sessions each worker holds are read from its ``/metrics``.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from benchmarks.e2e.capacity_clients import read_records
from benchmarks.e2e.synthetic_replica import DEFAULT_BATCH as BATCH
from benchmarks.e2e.workers import (
    KERNEL,
    CpuTimeline,
    Profiler,
    gc_figures,
    gc_probe_env,
    profile_dir,
    read_gc_probe,
    spawn_role,
    split,
)
from icws_fast.gateway.identity import key_file
from icws_fast.ic.identity import Ed25519Identity
from tests.processes import Child, ChildProcessFailed, GatewayProcess

_REPLICA: Final = "benchmarks.e2e.synthetic_replica"
_CLIENTS: Final = "benchmarks.e2e.capacity_clients"
_BARE: Final = "benchmarks.e2e.bare_server"
#: Messages in a row to one client in the bursty pattern.
BURST: Final = 10
PATTERNS: Final = {"round-robin": 1, "bursty": BURST}
#: Generous bounds for the slow steps (1 000 sessions to open, a long stream to precompute).
SETUP_TIMEOUT_S: Final = 600.0
#: The gateway's --max-send-buffer here: 16 times its default, so that a client process that a busy machine
#: leaves unscheduled for a while is not closed as a slow consumer (which would end the run with messages missing).
MAX_SEND_BUFFER: Final = 64 * 1024 * 1024
#: The slowest delivery a saturated leg waits for before it counts the messages not yet read as missing.
MIN_RATE: Final = 5000.0
_QUANTILES: Final = {"p50": 0.5, "p99": 0.99, "p999": 0.999}


@dataclass(frozen=True)
class Point:
    clients: int
    payload: int
    pattern: str

    def __str__(self) -> str:
        return f"K={self.clients}, {self.payload} B, {self.pattern}"


@dataclass
class Leg:
    """The figures of one server (gateway or bare) over its window."""

    name: str
    seconds: float = 0.0
    messages: int = 0
    msgs_per_s: float = 0.0
    mb_per_s: float = 0.0
    cpu_us_per_msg: float = 0.0
    kernel_us_per_msg: float = 0.0  # of cpu_us_per_msg, the system time (socket writes and reads)
    cpu_share: dict[str, float] = field(default_factory=dict)  # process -> share of one core
    rss_mb: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)  # p50, p99, p999 (gateway legs)
    # "new" (messages whose reply carried a new certificate) and "same": share of the messages, p50, p99, p999
    latency_by_certificate: dict[str, dict[str, float]] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    offered_rate: float = 0.0  # msgs/s the replica released at (0: all at once)
    notes: list[str] = field(default_factory=list)
    workers: int = 1  # the gateway's --workers (gateway legs)
    workers_cpu_us_per_msg: float = 0.0  # with workers: the workers' CPU alone, without the supervisor's
    sessions_by_worker: dict[str, int] = field(default_factory=dict)  # with workers: clients_connected by worker


@dataclass
class Records:
    """Every message the clients read: nonce, monotonic read time, frame size; sorted by time."""

    nonces: list[int]
    times: list[float]
    sizes: list[int]

    @classmethod
    def load(cls, paths: Sequence[Path]) -> Records:
        rows: list[tuple[float, int, int]] = []
        for path in paths:
            nonces, times, sizes = read_records(path)
            rows += zip(times, nonces, sizes, strict=True)
        rows.sort()
        return cls([n for _, n, _ in rows], [t for t, _, _ in rows], [s for _, _, s in rows])

    def window(self, start: float, end: float) -> tuple[int, int]:
        """The index range of the messages read between ``start`` and ``end``."""
        return bisect.bisect_left(self.times, start), bisect.bisect_right(self.times, end)


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    values.sort()
    return {name: values[min(len(values) - 1, int(len(values) * q))] for name, q in _QUANTILES.items()}


def _added_latency(records: Records, lo: int, hi: int, replica: dict[str, Any]) -> tuple[list[float], list[bool]]:
    """ms from the replica's write of each message's reply to its read, for the messages ``lo:hi``; and for each,
    whether its reply carried a new certificate (the first of a round: the gateway's BLS check).

    ``replica`` is the record of the one gateway queue they all came through (its nonces are the queue's)."""
    writes: dict[int, list[float]] = {}
    for index, t in replica["writes"]:
        writes.setdefault(index, []).append(t)
    first, batch, rounds = replica["first_nonce"], replica["batch"], set(replica["rounds"])
    latencies, new_certificate = [], []
    for nonce, read in zip(records.nonces[lo:hi], records.times[lo:hi], strict=True):
        index = (nonce - first) // batch
        served = writes.get(index, [])
        # The last write before the read (a poll repeated after a lost answer is written again).
        i = bisect.bisect_right(served, read)
        if i:
            latencies.append((read - served[i - 1]) * 1000)
            new_certificate.append(index in rounds)
    return latencies, new_certificate


def _by_certificate(latencies: list[float], new_certificate: list[bool]) -> dict[str, dict[str, float]]:
    """The added latency's percentiles of the messages whose reply carried a new certificate, and of the others."""
    split_: dict[str, dict[str, float]] = {}
    for name, wanted in (("new", True), ("same", False)):
        chosen = [ms for ms, new in zip(latencies, new_certificate, strict=True) if new == wanted]
        if chosen:
            split_[name] = {"share": len(chosen) / len(latencies), **_percentiles(chosen)}
    return split_


def _summarise(
    leg: Leg,
    records: Records,
    timeline: CpuTimeline,
    servers: Sequence[str],
    *,
    start: float,
    end: float,
    wanted: float,
) -> None:
    """Fill ``leg``'s rates, CPU and RSS from the messages read between ``start`` and ``end``.

    ``servers`` are the server's processes (a supervisor and its workers): their CPU is summed, their RSS too."""
    last = records.times[-1] if records.times else start
    if end > last:
        leg.notes.append(f"the stream ran out {end - last:.2f} s before the window's end: window shortened")
        end = last
    if end - start < 0.5 * wanted:
        leg.notes.append(f"window of {end - start:.2f} s, not {wanted:.2f} s: use a longer stream (--messages)")
    lo, hi = records.window(start, end)
    leg.seconds = end - start
    leg.messages = hi - lo
    if leg.seconds <= 0 or leg.messages == 0:
        leg.notes.append("no messages in the window")
        return
    leg.msgs_per_s = leg.messages / leg.seconds
    leg.mb_per_s = sum(records.sizes[lo:hi]) / leg.seconds / 1e6
    leg.cpu_share = {name: timeline.cpu(name, start, end) / leg.seconds for name in timeline.pids}
    leg.cpu_us_per_msg = sum(timeline.cpu(name, start, end) for name in servers) * 1e6 / leg.messages
    leg.kernel_us_per_msg = sum(timeline.cpu(name + KERNEL, start, end) for name in servers) * 1e6 / leg.messages
    leg.rss_mb = sum(timeline.max_rss(name, start, end) for name in servers) / 2**20


async def _reports(clients: Sequence[Child], out: Path, tag: str) -> tuple[list[Path], dict[str, int]]:
    """Ask every client process for its records; their files and the summed fault counts."""
    paths: list[Path] = []
    faults: dict[str, int] = {}
    for i, child in enumerate(clients):
        path = out / f"records-{tag}-{i}.bin"
        child.send_line(f"report {path}")
        summary = json.loads(await child.wait_for_line_async("{", SETUP_TIMEOUT_S))
        for name, value in summary.items():
            if name != "messages":
                faults[name] = faults.get(name, 0) + value
        paths.append(path)
    return paths, faults


async def _expect(clients: Sequence[Child], counts: Path) -> None:
    """Have every client process record, expecting the messages per client in ``counts``; before the stream."""
    for child in clients:
        child.send_line(f"expect {counts}")
    for child in clients:
        await child.wait_for_line_async("expecting", SETUP_TIMEOUT_S)


async def _await_done(clients: Sequence[Child], timeout: float) -> list[str]:
    """Wait until every client process has all its messages; notes for those that did not within ``timeout``."""
    notes = []
    deadline = time.monotonic() + timeout
    for i, child in enumerate(clients):
        try:
            await child.wait_for_line_async("done", max(1.0, deadline - time.monotonic()))
        except ChildProcessFailed as exc:  # a client short of messages: the report counts them as missing
            notes.append(f"client process {i} did not get all its messages: {str(exc).splitlines()[0]}")
    return notes


class Run:
    """One point's processes and figures; see the module docstring."""

    def __init__(self, args: argparse.Namespace, point: Point, workdir: Path) -> None:
        self.args = args
        self.point = point
        self.workdir = workdir
        data = workdir / "data"
        data.mkdir()
        # One identity per worker of the largest --workers (worker 0's is a single gateway's): the replica must
        # know every principal that will poll it before the gateway starts.
        self.principals = []
        for worker in range(max(args.workers)):
            identity = Ed25519Identity.generate()
            key_file(data, worker).write_bytes(identity.to_der())
            self.principals.append(identity.sender.to_text())

    def _stream_messages(self, rate: float) -> int:
        args = self.args
        if rate:  # a little more than the window: the last messages arrive after their release
            return int(rate * (args.warmup + args.seconds + 0.5))
        return int(args.messages or args.expect_rate * (args.warmup + args.seconds + 0.5))

    def _round_messages(self, rate: float) -> int:
        """Messages per certificate: ``--round-seconds`` of a paced stream (as the IC certifies), else
        ``--round-messages``."""
        args = self.args
        if rate and args.round_seconds:
            return max(BATCH, int(rate * args.round_seconds) // BATCH * BATCH)
        return int(args.round_messages)

    async def gateway_leg(
        self, stack: contextlib.ExitStack, name: str, src: Path | None, workers: int, rate: float = 0.0
    ) -> tuple[Leg, list[Child], Path]:
        """Stream through a gateway (the one in ``src``, else this tree's) of ``workers`` workers; the leg, its
        clients, its dump dir."""
        args, point = self.args, self.point
        out = Path(tempfile.mkdtemp(dir=self.workdir))
        leg = Leg(name, offered_rate=rate, workers=workers)
        if rate:
            round_messages = self._round_messages(rate)
            leg.notes.append(
                f"stream released at {rate:.0f} msgs/s, a new certificate every {round_messages} messages "
                f"({round_messages / rate:.2f} s)"
            )
        principals = self.principals[:workers]
        replica = stack.enter_context(
            spawn_role(
                _REPLICA,
                *(arg for principal in principals for arg in ("--gateway-principal", principal)),
                "--messages",
                str(self._stream_messages(rate)),
                "--payload",
                str(point.payload),
                "--burst",
                str(PATTERNS[point.pattern]),
                "--rate",
                str(rate),
                "--round-messages",
                str(self._round_messages(rate)),
            )
        )
        info = json.loads(await replica.wait_for_line_async("{"))
        probe_out = out / "gc-probe.json"
        env = {"RUST_LOG_FILE": "warn"} | gc_probe_env(probe_out, src)
        flags = ["--polling-interval", str(args.polling_interval), "--max-clients-per-ip", str(point.clients + 10)]
        flags += ["--poll-pipeline-depth", str(args.pipeline), "--max-send-buffer", str(args.max_send_buffer)]
        gateway = GatewayProcess(info["url"], self.workdir / "data", extra_args=flags, env=env, workers=workers)
        await gateway.start_async()
        try:
            if gateway.principals != principals:
                raise RuntimeError(f"the gateway's principals {gateway.principals} are not the replica's {principals}")
            clients = [
                stack.enter_context(spawn_role(_CLIENTS, gateway.url, info["canister"], str(count)))
                for count in split(point.clients, args.client_procs)
            ]
            for child in clients:
                await child.wait_for_line_async("ready", SETUP_TIMEOUT_S)
            if gateway.worker_pids:
                sessions = await gateway.by_worker("clients_connected")
                leg.sessions_by_worker = {worker: int(n) for worker, n in sorted(sessions.items())}
            counts = out / "counts.json"
            replica.send_line(f"precompute {counts}")
            stream = json.loads((await replica.wait_for_line_async("stream ready", SETUP_TIMEOUT_S)).split(" ", 2)[2])
            await _expect(clients, counts)
            workers_pids = {f"worker{i}": pid for i, pid in enumerate(gateway.worker_pids)}
            pids = {"gateway": gateway.pid, **workers_pids, "replica": replica.pid} | {
                f"clients{i}": c.pid for i, c in enumerate(clients)
            }
            profiler = Profiler(args.profile, args.seconds)
            # With workers the probe is in each worker and the supervisor, and only the supervisor's pid is known.
            gc0 = None if workers_pids else await read_gc_probe(gateway.pid, probe_out)
            with CpuTimeline(pids) as timeline:
                replica.send_line("go")
                go = float((await replica.wait_for_line_async("go ")).split()[1])
                await asyncio.sleep(max(0.0, go + args.warmup - time.monotonic()))
                profiler.start({"gateway": gateway.pid})  # with workers, the supervisor
                drain = stream["messages"] / (rate or MIN_RATE) + 30
                leg.notes += await _await_done(clients, drain)
            profiler.report()
            gc1 = None if gc0 is None else await read_gc_probe(gateway.pid, probe_out)
            paths, leg.faults = await _reports(clients, out, "gateway")
            replica.send_line(f"dump {out}")
            await replica.wait_for_line_async("dumped", SETUP_TIMEOUT_S)
        finally:
            await gateway.stop_async()
        replica_record = json.loads((out / "replica.json").read_text())
        records = Records.load(paths)
        start = go + args.warmup
        servers = ["gateway", *workers_pids]
        _summarise(leg, records, timeline, servers, start=start, end=start + args.seconds, wanted=args.seconds)
        if workers_pids and leg.messages:
            leg.workers_cpu_us_per_msg = sum(timeline.cpu(w, start, start + leg.seconds) for w in workers_pids)
            leg.workers_cpu_us_per_msg *= 1e6 / leg.messages
        if gc0 is not None and gc1 is not None:
            leg.notes.append(_gc_note(gc_figures(gc0, gc1, point.clients, (start, start + leg.seconds))))
        lo, hi = records.window(start, start + leg.seconds)
        (queue, *more) = replica_record["streams"]
        if more:  # the clients' records do not say which queue (worker) a message came through
            leg.notes.append("added latency not measured with several workers")
        else:
            latencies, new_certificate = _added_latency(records, lo, hi, queue)
            leg.latency_by_certificate = _by_certificate(latencies, new_certificate)
            leg.latency_ms = _percentiles(latencies)
        leg.notes.append(
            f"stream {stream['messages']} messages in {stream['replies']} replies, precomputed in "
            f"{stream['seconds']:.1f} s; replica CPU since go {replica_record['cpu_since_go_s']:.2f} s, "
            f"{replica_record['empty_answers']} empty answers, {replica_record['live_queries']} live queries"
        )
        replica.stop()
        return leg, clients, out

    async def bare_leg(self, clients: list[Child], dump: Path, rate: float) -> Leg:
        """The bare server writing the gateway's frames of ``dump``'s stream to the same clients at ``rate``."""
        args, leg = self.args, Leg("bare server", offered_rate=rate)
        passes = str(args.bare_passes)
        argv = [str(dump), str(self.point.clients), str(args.bare_memory_mb), passes, str(rate)]
        with spawn_role(_BARE, *argv) as bare:
            words = (await bare.wait_for_line_async("port ", SETUP_TIMEOUT_S)).split()
            for child in clients:
                child.send_line(f"bare ws://127.0.0.1:{words[1]}")
            for child in clients:
                await child.wait_for_line_async("ready", SETUP_TIMEOUT_S)
            await bare.wait_for_line_async("ready", SETUP_TIMEOUT_S)
            await _expect(clients, dump / "bare_counts.json")
            pids = {"bare": bare.pid} | {f"clients{i}": c.pid for i, c in enumerate(clients)}
            with CpuTimeline(pids) as timeline:
                start = time.monotonic()
                bare.send_line("go")
                leg.notes += await _await_done(clients, int(words[5]) * args.bare_passes / MIN_RATE + 30)
            paths, leg.faults = await _reports(clients, dump, "bare")
        records = Records.load(paths)
        end = records.times[-1] if records.times else start
        _summarise(leg, records, timeline, ["bare"], start=start, end=end, wanted=end - start)
        paced = f"at {rate:.0f} msgs/s" if rate else "as fast as it can"
        leg.notes.append(f"{words[3]} replies ({words[5]} messages) written {passes} times, {paced}")
        return leg


def _ratio(gateway: Leg, bare: Leg) -> dict[str, float]:
    """CPU per message, gateway / bare; and msgs/s when the bare server ran as fast as it could."""
    if not (gateway.messages and bare.messages):
        return {}
    ratio = {"cpu_per_msg": gateway.cpu_us_per_msg / bare.cpu_us_per_msg}
    if not bare.offered_rate:
        ratio["msgs_per_s"] = gateway.msgs_per_s / bare.msgs_per_s
    return ratio


def _print_point(point: Point, legs: list[Leg], ratios: dict[str, dict[str, float]]) -> None:
    print(f"\n== {point}")
    print(
        f"  {'':34} {'msgs/s':>9} {'MB/s':>7} {'CPU µs/msg':>11} {'CPU':>6} {'RSS MB':>7}  added latency p50/p99/p99.9"
    )
    for leg in legs:
        latency = "/".join(f"{leg.latency_ms[q]:.2f}" for q in ("p50", "p99", "p999")) if leg.latency_ms else "-"
        share = leg.cpu_us_per_msg * leg.msgs_per_s / 1e6  # the server's processes together
        print(
            f"  {leg.name:34} {leg.msgs_per_s:9.0f} {leg.mb_per_s:7.1f} {leg.cpu_us_per_msg:11.1f} "
            f"{share * 100:5.0f}% {leg.rss_mb:7.0f}  {latency} ms"
        )
    for name, ratio in ratios.items():
        if ratio:
            rate = f", msgs/s {ratio['msgs_per_s']:.2f}x" if "msgs_per_s" in ratio else ""
            print(f"  {name} / bare: CPU per message {ratio['cpu_per_msg']:.2f}x{rate}")
    for leg in legs:
        others = ", ".join(f"{n} {s * 100:.0f}%" for n, s in leg.cpu_share.items())
        faults = ", ".join(f"{n} {v}" for n, v in leg.faults.items())
        split_ = f"user {leg.cpu_us_per_msg - leg.kernel_us_per_msg:.1f} + kernel {leg.kernel_us_per_msg:.1f} µs/msg"
        print(f"  [{leg.name}] CPU: {others} ({split_}); faults: {faults}")
        if leg.sessions_by_worker:
            mean = sum(leg.sessions_by_worker.values()) / len(leg.sessions_by_worker)
            spread = max(abs(n - mean) for n in leg.sessions_by_worker.values()) / mean if mean else 0.0
            print(
                f"    workers' CPU alone {leg.workers_cpu_us_per_msg:.1f} µs/msg; sessions by worker "
                f"{leg.sessions_by_worker}: at most {spread * 100:.0f}% from the mean"
            )
        if leg.latency_by_certificate:
            print(
                "    added latency p50/p99/p99.9 "
                + "; ".join(
                    f"{name} certificate ({split_['share'] * 100:.1f}% of messages) "
                    + "/".join(f"{split_[q]:.2f}" for q in ("p50", "p99", "p999"))
                    + " ms"
                    for name, split_ in leg.latency_by_certificate.items()
                )
            )
        for note in leg.notes:
            print(f"    {note}")


def _gc_note(gc: dict[str, Any]) -> str:
    per_gen = ", ".join(
        f"gen{i} {g['collections']} ({g['total_s'] * 1000:.0f} ms, longest {g['max_s'] * 1000:.1f})"
        for i, g in enumerate(gc["generations"])
    )
    pauses = ", ".join(f"{p * 1000:.0f}" for p in gc["long_pauses_s"]) or "none"
    return f"gateway GC from the go (longest: since start-up): {per_gen}; pauses of 10 ms+ in the window: {pauses}"


async def measure_point(args: argparse.Namespace, point: Point) -> dict[str, Any]:
    legs: list[Leg] = []
    ratios: dict[str, dict[str, float]] = {}
    gateways: list[tuple[str, Path | None, int]] = []
    for repeat in range(args.repeat):
        for workers in args.workers:
            suffix = ("" if args.workers == [1] else f", --workers {workers}") + (f" #{repeat + 1}" if repeat else "")
            if args.compare is not None:
                gateways.append((f"gateway from {args.compare}{suffix}", args.compare, workers))
            gateways.append((f"gateway{suffix}", None, workers))
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        run = Run(args, point, Path(tmp))
        saturated: list[Leg] = []
        for name, src, workers in gateways:
            leg, clients, dump = await run.gateway_leg(stack, name, src, workers)
            saturated.append(leg)
        legs += saturated
        bare = await run.bare_leg(clients, dump, saturated[-1].msgs_per_s if args.bare_rate == "gateway" else 0.0)
        legs.append(bare)
        for leg in saturated:
            ratios[leg.name] = _ratio(leg, bare)
        if args.half_load:
            for (name, src, workers), leg in zip(gateways, saturated, strict=True):
                rate = leg.msgs_per_s / 2
                half, _, _ = await run.gateway_leg(stack, f"{name} at half load", src, workers, rate=rate)
                legs.append(half)
    _print_point(point, legs, ratios)
    return {"point": asdict(point), "legs": [asdict(leg) for leg in legs], "ratios": ratios}


def _faults(results: list[dict[str, Any]]) -> list[str]:
    return [
        f"{result['point']} {leg['name']}: {name} {value}"
        for result in results
        for leg in result["legs"]
        for name, value in leg["faults"].items()
        if value and name != "closed"
    ]


async def main(args: argparse.Namespace) -> int:
    points = [
        Point(clients, payload, pattern)
        for clients in args.clients
        for payload in args.payload
        for pattern in args.pattern
    ]
    results = [await measure_point(args, point) for point in points]
    if args.json is not None:
        args.json.write_text(json.dumps({"argv": sys.argv[1:], "points": results}, indent=1))
    faults = _faults(results)
    for fault in faults:
        print(f"FAULT {fault}")
    return 1 if faults else 0


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=_ints, default=[10, 100, 1000], help="K values, comma-separated")
    p.add_argument("--payload", type=_ints, default=[100, 1024], help="payload bytes, comma-separated")
    p.add_argument("--pattern", type=lambda t: t.split(","), default=list(PATTERNS), help="round-robin,bursty")
    p.add_argument("--half-load", action="store_true", help="also measure the latency at half the saturated rate")
    p.add_argument("--quick", action="store_true", help="K=100, 100 B, round robin, short: the CI ratio guard")
    p.add_argument("--seconds", type=float, default=4.0, help="measurement window")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds from the stream's release to the window")
    p.add_argument("--messages", type=int, default=0, help="messages in the stream (default: --expect-rate x time)")
    p.add_argument("--expect-rate", type=float, default=80_000, help="msgs/s the stream is sized for")
    p.add_argument(
        "--round-messages", type=int, default=2000, help="messages per replica round (certificate), saturated legs"
    )
    p.add_argument(
        "--round-seconds",
        type=float,
        default=1.0,
        help="half-load legs: a round (certificate) per this many seconds of the stream, as the IC certifies a "
        "subnet's state about once a second; 0: every --round-messages messages",
    )
    p.add_argument("--client-procs", type=int, default=1, help="client processes")
    p.add_argument("--polling-interval", type=int, default=1, help="the gateway's --polling-interval, ms")
    p.add_argument("--pipeline", type=int, default=3, help="the gateway's --poll-pipeline-depth")
    p.add_argument(
        "--max-send-buffer",
        type=int,
        default=MAX_SEND_BUFFER,
        help="the gateway's --max-send-buffer: a client process starved by a busy machine must not be closed",
    )
    p.add_argument("--bare-memory-mb", type=float, default=200, help="frames the bare server holds, MB")
    p.add_argument("--bare-passes", type=int, default=5, help="times the bare server writes them")
    p.add_argument(
        "--bare-rate",
        choices=("gateway", "max"),
        default="gateway",
        help="the bare server writes at the rate the gateway delivered (the clients read alike) or as fast as it can",
    )
    p.add_argument("--json", type=Path, help="write every figure to this file")
    p.add_argument("--profile", type=profile_dir, help="directory for a py-spy profile of the gateway")
    p.add_argument("--compare", type=Path, help="also measure, first, the gateway whose icws_fast is in this directory")
    p.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1],
        help="the gateway's --workers; several values (1 2): one gateway leg each, in turn",
    )
    p.add_argument("--repeat", type=int, default=1, help="measure the gateway legs this many times, interleaved")
    if p.parse_known_args(argv)[0].quick:
        # Defaults, not overrides: a flag given beside --quick (a shorter run in a test) still counts.
        p.set_defaults(clients=[100], payload=[100], pattern=["round-robin"], seconds=2.0, warmup=0.5)
        p.set_defaults(messages=250_000, bare_memory_mb=100, bare_passes=6)
    args = p.parse_args(argv)
    if min(args.workers) < 1 or args.repeat < 1:
        p.error("--workers and --repeat take numbers of at least 1")
    unknown = set(args.pattern) - set(PATTERNS)
    if unknown:
        p.error(f"unknown pattern(s) {', '.join(sorted(unknown))}: choose among {', '.join(PATTERNS)}")
    return args


if __name__ == "__main__":
    import uvloop

    sys.exit(uvloop.run(main(parse_args())))
