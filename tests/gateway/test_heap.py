"""The gateway process's memory settings: freed batch buffers reused without page faults (counted, not timed),
start-up objects frozen out of the cyclic GC."""

from __future__ import annotations

import subprocess
import sys

import pytest

from icws_fast.gateway.heap import keep_freed_heap

# Eight 70 kB buffers per round, freed at once: the shape of one batch's fan-out to eight clients.
_SCRIPT = """
import resource, sys
from icws_fast.gateway.heap import keep_freed_heap
if sys.argv[1] == "keep":
    assert keep_freed_heap()
def rounds(n):
    for _ in range(n):
        buffers = [bytes(70_000) for _ in range(8)]
        del buffers
rounds(5)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds(200)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _SCRIPT, mode], check=True, capture_output=True, text=True)
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_batch_buffers_are_reused_without_page_faults() -> None:
    if not keep_freed_heap():
        pytest.skip("the C library has no mallopt (not glibc)")
    # By default glibc trims the heap after each round, so every round faults its pages in again.
    assert _page_faults("default") > 200 * 8
    assert _page_faults("keep") < 100


def test_freeze_startup_heap_leaves_the_started_objects_out_of_full_collections() -> None:
    # In a child: freezing is for the whole process, and this one goes on running tests.
    script = (
        "import gc, icws_fast.gateway.server\n"
        "from icws_fast.gateway.heap import freeze_startup_heap\n"
        "before = len(gc.get_objects())\n"
        "frozen = freeze_startup_heap()\n"
        "print(before, frozen, len(gc.get_objects()))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    before, frozen, after = map(int, out.stdout.split())
    # The gateway's modules alone are tens of thousands of objects; a full collection walks none of them now.
    assert before > 10_000
    assert frozen >= before * 0.9
    assert after < 100
