"""The gateway process's memory settings: the C heap the fan-out reuses, and the objects the cyclic GC scans.

**The C heap.** glibc must not hand it back to the kernel after every batch.

The fan-out builds one buffer per client per batch (every message carries its batch's certificate and witness
tree, so tens of kB per client) and frees it as soon as the socket took it. By default glibc returns the top of
the heap to the kernel whenever more than 128 KiB lie free there (``M_TRIM_THRESHOLD``) and maps larger blocks
afresh (``M_MMAP_THRESHOLD``), so the next batch faults the same pages in again: on
``benchmarks/e2e/bench_batch.py``, 40 page faults and about 80 µs per 50-message batch, as much as decoding,
verifying and encoding it. :func:`keep_freed_heap` raises both thresholds for the gateway process.

**The cyclic GC.** A full (generation 2) collection walks every tracked object, and the event loop waits for it.
Most of a started gateway's objects are its modules, classes and functions (about 48 000: aiohttp, prometheus,
picows, the agent) and live as long as the process; ``benchmarks/e2e/bench_capacity.py --half-load`` saw full
collections of 24-99 ms during the stream, each one delaying every message in flight. :func:`freeze_startup_heap`
moves them out of the collector's reach once started (:func:`gc.freeze`), so a full collection walks only what
came later (sessions, batches: with 1 000 sessions one still took 18-26 ms, against 30-52 ms unfrozen). Cycles
among frozen objects are never collected, which for start-up objects that stay until exit loses nothing (and is
why sessions are not frozen: those that close would leak their cycles).
"""

from __future__ import annotations

import ctypes
import gc
from typing import Final

# mallopt() parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3

#: Free memory kept at the top of the heap: a few batches' buffers, at every client count.
TRIM_THRESHOLD: Final = 16 << 20
#: Blocks smaller than this come from the heap (and are kept by it), larger ones are mapped afresh.
MMAP_THRESHOLD: Final = 8 << 20


def keep_freed_heap() -> bool:
    """Raise glibc's trim and mmap thresholds for this process; False where the C library has no ``mallopt``.

    Setting them also turns off glibc's own adjustment of the mmap threshold, which would otherwise start at
    128 KiB again: that is why both are set.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's C library
    except (OSError, AttributeError):  # not glibc (musl has mallopt as a no-op; macOS has none)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def freeze_startup_heap() -> int:
    """Collect, then move every object tracked now out of the cyclic GC's scans (:func:`gc.freeze`); how many.

    Called once the gateway has started: what exists then is code and configuration that lives until exit.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
