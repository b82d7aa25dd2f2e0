"""What the end-to-end benchmarks share about their child processes: roles, stdin commands, CPU, profiles.

A benchmark runs each part (replica, gateway, clients, bare server) in its own process so that each one's CPU
is its own (read from ``/proc``). A worker reads commands from stdin, one a line (:func:`stdin_lines`,
:func:`read_line`), and prints what the orchestrator waits for (:meth:`tests.processes.Child.wait_for_line`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Final

from tests.processes import Child, cpu_times

BIN = Path(sys.executable).parent
# The GC probe (a sitecustomize) put in front of a gateway's own PYTHONPATH: see gcprobe/sitecustomize.py.
GC_PROBE_DIR = Path(__file__).with_name("gcprobe")


async def stdin_reader() -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def read_line(stream: asyncio.StreamReader, prefix: str = "", timeout: float = 120) -> str:
    """The next line of ``stream`` starting with ``prefix`` (stripped); ``RuntimeError`` at its end."""
    while True:
        line = (await asyncio.wait_for(stream.readline(), timeout)).decode()
        if not line:
            raise RuntimeError(f"stdin ended before a line starting with {prefix!r}")
        if line.startswith(prefix):
            return line.strip()


async def stdin_lines() -> AsyncIterator[str]:
    """The commands on stdin, one a line (stripped, empty lines skipped), until stdin ends."""
    reader = await stdin_reader()
    while line := await reader.readline():
        if text := line.decode().strip():
            yield text


def spawn_role(module: str, *argv: str, env: dict[str, str] | None = None) -> Child:
    """``python -m module argv...`` as a child with a stdin pipe, named for the module and its first argument."""
    name = f"{module.rsplit('.', 1)[-1]} {argv[0] if argv else ''}".strip()
    return Child(name, [sys.executable, "-m", module, *argv], env=env, stdin=True)


def split(total: int, parts: int) -> list[int]:
    """``total`` shared out over ``parts`` as evenly as possible."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def rss_bytes(pid: int) -> int:
    """The resident set size of process ``pid`` now (Linux ``/proc``), 0 once it exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


#: Suffix of a process's name that makes :meth:`CpuTimeline.cpu` give its system (kernel) time alone.
KERNEL: Final = " kernel"


class CpuTimeline:
    """The CPU seconds and RSS of some processes, sampled every ``interval`` s by a thread (``with`` runs it).

    Any window of the run then gets its CPU by interpolation (:meth:`cpu`), whatever the moment it turns out to
    start and end at (a stream that ran dry, say); ``/proc`` counts in clock ticks, 10 ms, so windows of
    seconds are needed.
    """

    def __init__(self, pids: Mapping[str, int], interval: float = 0.05) -> None:
        self.pids = dict(pids)
        self.interval = interval
        self.samples: list[tuple[float, dict[str, float], dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu timeline", daemon=True)

    def _sample(self) -> None:
        cpu: dict[str, float] = {}
        rss: dict[str, int] = {}
        for name, pid in self.pids.items():
            try:
                user, system = cpu_times(pid)
                cpu[name], cpu[name + KERNEL] = user + system, system
            except OSError:
                for key in (name, name + KERNEL):
                    cpu[key] = self.samples[-1][1][key] if self.samples else 0.0
            rss[name] = rss_bytes(pid)
        self.samples.append((time.monotonic(), cpu, rss))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> CpuTimeline:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _at(self, name: str, t: float) -> float:
        samples = self.samples
        for (t0, c0, _), (t1, c1, _) in itertools.pairwise(samples):
            if t0 <= t <= t1:
                return c0[name] + (c1[name] - c0[name]) * (t - t0) / max(t1 - t0, 1e-9)
        return samples[0][1][name] if t < samples[0][0] else samples[-1][1][name]

    def cpu(self, name: str, start: float, end: float) -> float:
        """CPU seconds process ``name`` used between the monotonic times ``start`` and ``end``; of them, those spent
        in the kernel (system time) for ``name + KERNEL``."""
        return self._at(name, end) - self._at(name, start)

    def max_rss(self, name: str, start: float, end: float) -> int:
        """The largest RSS of process ``name`` sampled between ``start`` and ``end`` (bytes)."""
        return max((rss[name] for t, _, rss in self.samples if start <= t <= end), default=0)


def profile_dir(text: str) -> Path:
    """The ``type`` of ``--profile DIR``: DIR if it is a directory, or one that can be made there.

    Checked while parsing the arguments, so that a wrong DIR is an argument error before the processes start, not
    a traceback after the benchmark ran."""
    path = Path(text)
    existing = next(p for p in (path, *path.parents) if p.exists())  # "." or "/" at the latest
    if not existing.is_dir():
        where = "" if existing == path else f" ({existing} is)"
        raise argparse.ArgumentTypeError(
            f"{text} is a file{where}, not a directory: give a directory for the profiles (it is made if missing)"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text}: cannot write in {existing}: give a directory you may write in")
    return path


class Profiler:
    """py-spy sampling some processes during a window (``--profile DIR``); :meth:`report` prints their top frames."""

    def __init__(self, out_dir: Path | None, seconds: float) -> None:
        self.out_dir, self.seconds = out_dir, seconds
        self.procs: list[tuple[str, Path, subprocess.Popen[bytes]]] = []

    def start(self, pids: Mapping[str, int]) -> None:
        if self.out_dir is None:
            return
        py_spy = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
        if py_spy is None:
            raise SystemExit("--profile needs py-spy (pip install py-spy)")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in pids.items():
            out = self.out_dir / f"{name}.txt"
            cmd = [py_spy, "record", "--nonblocking", "--format", "raw", "--rate", "200"]
            cmd += ["--duration", str(max(1, int(self.seconds))), "--pid", str(pid), "--output", str(out)]
            self.procs.append((name, out, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))

    def report(self) -> None:
        for name, out, proc in self.procs:
            proc.wait(60)
            self_time: collections.Counter[str] = collections.Counter()
            total = 0
            for line in out.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                leaf = stack.rsplit(";", 1)[-1]
                self_time[leaf] += int(count)
                total += int(count)
            print(f"\n{name}: top self time ({total} samples, {out})")
            for leaf, samples in self_time.most_common(15):
                print(f"  {samples / max(total, 1) * 100:5.1f}%  {leaf}")
        self.procs.clear()


def _read_gc_probe(pid: int, out: Path, timeout: float) -> dict[str, Any]:
    out.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + timeout
    while not out.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the GC probe of process {pid} wrote nothing to {out} within {timeout:g} s")
        time.sleep(0.05)
    report: dict[str, Any] = json.loads(out.read_text())
    return report


async def read_gc_probe(pid: int, out: Path, timeout: float = 60) -> dict[str, Any]:
    """What the GC probe of process ``pid`` says now (it writes ``out`` on SIGUSR2; listing what it tracks takes a
    while with hundreds of thousands of objects)."""
    return await asyncio.to_thread(_read_gc_probe, pid, out, timeout)


def gc_probe_env(out: Path, src: Path | None) -> dict[str, str]:
    """The environment that loads the GC probe into a gateway (whose ``icws_fast`` is in ``src``, else this tree's)
    and has it write to ``out``."""
    paths = [GC_PROBE_DIR] if src is None else [GC_PROBE_DIR, src]
    return {"ICWS_GC_PROBE": str(out), "PYTHONPATH": os.pathsep.join(map(str, paths))}


def gc_figures(
    before: dict[str, Any], after: dict[str, Any], sessions: int, window: tuple[float, float] | None = None
) -> dict[str, Any]:
    """The collections between two probe reports (per generation: how many, total and longest pause), the longest
    pause and those of 10 ms or more among them (those that began in ``window``, monotonic times, if given), and
    the tracked objects added per session."""
    gens = [
        {
            "collections": a["collections"] - b["collections"],
            "total_s": a["total_s"] - b["total_s"],
            "max_s": a["max_s"],  # since start; the probe's own start-up collections are short
        }
        for b, a in zip(before["generations"], after["generations"], strict=True)
    ]
    long_pauses = after["long_pauses"][len(before["long_pauses"]) :]
    if window is not None:
        long_pauses = [p for p in long_pauses if window[0] <= p["at"] < window[1]]
    return {
        "generations": gens,
        "total_s": sum(g["total_s"] for g in gens),
        "max_s": max((p["seconds"] for p in long_pauses), default=max(g["max_s"] for g in gens)),
        "long_pauses_s": [p["seconds"] for p in long_pauses],
        "tracked_before": before["tracked"],
        "tracked_after": after["tracked"],
        "frozen_after": after["frozen"],
        "tracked_per_session": (after["tracked"] - before["tracked"]) / max(sessions, 1),
        "top_types": after["top_types"],
    }
