"""The benchmarks' GC probe: every cyclic-GC pause of the process it is loaded into, and what the collector tracks.

Loaded by the interpreter at start-up (``sitecustomize``) when this directory is on the ``PYTHONPATH`` of a process
whose environment names an output file in ``ICWS_GC_PROBE``; the benchmarks put it in front of the gateway they
start, theirs or the ``--compare`` tree's alike, so both sides are measured the same way. ``gc.callbacks`` times
each collection (wall time, the loop waits for it); on ``SIGUSR2`` the probe writes, as JSON: per generation the
collections, their total and longest pause, the pauses of 10 ms or more (when, how long, which generation), the
objects the collector tracks and the frozen count, and the ten types with most tracked objects (what a full
collection walks). Without ``ICWS_GC_PROBE`` it does nothing.
"""

from __future__ import annotations

import collections
import gc
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

_LONG_S = 0.010  # pauses at least this long are listed one by one


def _install(out: Path) -> None:
    stats = [[0, 0.0, 0.0] for _ in range(3)]  # per generation: collections, total s, longest s
    long_pauses: list[tuple[float, int, float]] = []  # (monotonic start, generation, seconds)
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        pause = time.perf_counter() - started[0]
        s = stats[info["generation"]]
        s[0] += 1
        s[1] += pause
        s[2] = max(s[2], pause)
        if pause >= _LONG_S:
            long_pauses.append((time.monotonic() - pause, info["generation"], pause))

    def dump(*_: Any) -> None:
        tracked = gc.get_objects()  # not the frozen ones: what a full collection walks
        types = collections.Counter(type(o).__qualname__ for o in tracked).most_common(10)
        report = {
            "generations": [{"collections": c, "total_s": t, "max_s": m} for c, t, m in stats],
            "long_pauses": [{"at": at, "generation": g, "seconds": p} for at, g, p in long_pauses],
            "tracked": len(tracked),
            "frozen": gc.get_freeze_count(),
            "top_types": types,
        }
        del tracked
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(report))
        tmp.replace(out)  # whole or not at all: the benchmark waits for the file

    gc.callbacks.append(on_gc)
    signal.signal(signal.SIGUSR2, dump)


if _path := os.environ.get("ICWS_GC_PROBE"):
    _install(Path(_path))
