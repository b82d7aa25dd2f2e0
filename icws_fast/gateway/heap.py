"""The gateway process's memory settings: the C heap the fan-out reuses, and the objects the cyclic GC scans.

**The C heap.** glibc must not hand it back to the kernel after every batch.

The fan-out builds one buffer per client per batch (every message carries its batch's certificate and witness
tree, so tens of kB per client) and frees it as soon as the socket took it. By default glibc returns the top of
the heap to the kernel whenever more than 128 KiB lie free there (``M_TRIM_THRESHOLD``) and maps larger blocks
afresh (``M_MMAP_THRESHOLD``), so the next batch faults the same pages in again: on
``benchmarks/e2e/bench_batch.py``, 40 page faults and about 80 µs per 50-message batch, as much as decoding,
verifying and encoding it. :func:`keep_freed_heap` raises both thresholds for the gateway process.

**The cyclic GC.** A full (generation 2) collection walks every tracked object, and the event loop waits for it:
nothing is accepted, read, relayed or delivered meanwhile. A started gateway tracks about 48 000 objects (its
modules, classes and functions: aiohttp, prometheus, picows, the agent), and each session adds about 23 (the
connection, its session, client key and principals, and picows's and uvloop's transport, protocol, futures and
bound methods). Freezing the start-up objects once started took out full collections of 24-99 ms in
``benchmarks/e2e/bench_capacity.py --half-load`` (with 1 000 sessions one still took 18-26 ms, against 30-52 ms
unfrozen). With CPython's own policy a full collection runs whenever the objects that outlived the
middle generation since the last one reach a quarter of those that outlived it; so a full collection comes back
every time the sessions held grow by a quarter, or a quarter of them turned over, and it walks them all:
``benchmarks/e2e/bench_sessions.py --sessions 10000`` saw 4-5 of them in the burst, 1.1-2.1 s of GC in all, the
longest pause 0.23-0.38 s.

:func:`start_gc_policy` instead moves every object that survives a full collection out of the collector's reach
(:func:`gc.freeze`, from a :data:`gc.callbacks` hook, right as the collection ends: nothing then tracked is
garbage), and lets a full collection run at every middle-generation collection that CPython's quarter rule allows
(threshold 1 instead of 10). So each full collection walks only what survived since the previous one, a few
thousand objects, and each object is walked in full collections once or twice in its life instead of once per
collection. The young generation's threshold stays 700: a larger one makes each young collection longer (5 000:
pauses of 40-180 ms in the burst), for no fewer objects walked.

Frozen objects are still freed by reference counting; what a freeze gives up is finding their *cycles*: a cycle
that includes an object frozen while it was alive is never collected, until :func:`audit_frozen_heap` (every
:data:`AUDIT_INTERVAL_S`) unfreezes everything and runs one full collection, which walks every object once (the
pause CPython's policy had every few thousand sessions, here once an hour) and freezes the survivors again. A
session closed leaves no cycle (``tests/gateway/test_heap.py`` checks it, graceful and abrupt closes, through a
gateway process): what is left to the audit are the rare cycles other code makes around long-lived objects (an
exception kept in a frame, say; the agent's HTTP connections drop their parser when they close for this
reason, ``tests/ic/test_http.py``), which otherwise would build up over months.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import time
from typing import Final

log = logging.getLogger(__name__)

# mallopt() parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3

#: Free memory kept at the top of the heap: a few batches' buffers, at every client count.
TRIM_THRESHOLD: Final = 16 << 20
#: Blocks smaller than this come from the heap (and are kept by it), larger ones are mapped afresh.
MMAP_THRESHOLD: Final = 8 << 20

#: The cyclic GC's thresholds once started: CPython's, but a full collection may follow any middle-generation one.
GC_THRESHOLDS: Final = (700, 10, 1)
#: Seconds between two audits of the frozen objects (one full walk of the heap each).
AUDIT_INTERVAL_S: Final = 3600.0


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


def _freeze_after_full_collection(phase: str, info: dict[str, int]) -> None:
    """A :data:`gc.callbacks` hook: freeze what survived a full collection, as it ends (none of it is garbage)."""
    if phase == "stop" and info["generation"] == 2:
        gc.freeze()


def start_gc_policy() -> int:
    """Freeze the objects that outlive each full collection from now on, the start-up ones first; how many are.

    Called once the gateway has started: what exists then is code and configuration that lives until exit.
    """
    gc.set_threshold(*GC_THRESHOLDS)
    if _freeze_after_full_collection not in gc.callbacks:
        gc.callbacks.append(_freeze_after_full_collection)
    gc.collect()  # and the hook freezes what is left
    return gc.get_freeze_count()


def audit_frozen_heap() -> int:
    """Unfreeze every object and collect (then the policy's hook freezes the survivors again); the objects found
    unreachable: cycles that formed around objects while they were frozen."""
    gc.unfreeze()
    return gc.collect()


async def audit_periodically(interval_s: float = AUDIT_INTERVAL_S) -> None:
    """:func:`audit_frozen_heap` every ``interval_s`` seconds, each logged with what it found and its pause."""
    while True:
        await asyncio.sleep(interval_s)
        started = time.perf_counter()
        found = audit_frozen_heap()
        pause = time.perf_counter() - started
        log.info("GC audit: %d unreachable objects among the frozen ones, %.0f ms", found, pause * 1000)
