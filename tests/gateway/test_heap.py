"""The gateway process's memory settings: freed batch buffers reused without page faults (counted, not timed), the
cyclic GC's policy (survivors frozen, new cycles collected, frozen cycles found by the audit), and a gateway under
session churn holding no more objects than before."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.e2e.workers import gc_probe_env, read_gc_probe
from icws_fast.gateway.heap import keep_freed_heap
from icws_fast.ic.principal import Principal
from tests.gateway.gw_rawclient import RawClient
from tests.processes import DevnetProcess, GatewayProcess

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


def _child(script: str) -> list[int]:
    # In a child: the policy is for the whole process, and this one goes on running tests.
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    return list(map(int, out.stdout.split()))


def test_gc_policy_leaves_the_started_objects_out_of_full_collections() -> None:
    before, frozen, after = _child(
        "import gc, icws_fast.gateway.server\n"
        "from icws_fast.gateway.heap import start_gc_policy\n"
        "before = len(gc.get_objects())\n"
        "frozen = start_gc_policy()\n"
        "print(before, frozen, len(gc.get_objects()))\n"
    )
    # The gateway's modules alone are tens of thousands of objects; a full collection walks none of them now.
    assert before > 10_000
    assert frozen >= before * 0.9
    assert after < 100


# Objects kept alive (a session's, say) and cycles dropped at once, by turns; then a cycle closed around a kept
# object after its freeze. Prints: full collections, tracked (unfrozen) objects, objects in the dropped cycles
# still alive, whether the late cycle outlived its last reference, what the audit found, whether it is gone then.
_POLICY_SCRIPT = """
import gc, weakref
from icws_fast.gateway.heap import audit_frozen_heap, start_gc_policy

class Node:
    pass

start_gc_policy()
full0 = gc.get_stats()[2]["collections"]
kept, dropped = [], weakref.WeakSet()
for i in range(200_000):
    node = Node()
    node.me = node  # a cycle: only the collector frees it
    if i % 10 == 0:
        kept.append(node)
    else:
        dropped.add(node)
del node
full = gc.get_stats()[2]["collections"] - full0
tracked = len(gc.get_objects())
gc.collect(1)  # the young generations: what a dropped cycle could still wait in
late = kept[0]
late.other = Node()
late.other.back = late  # a cycle formed around an object frozen long ago
probe = weakref.ref(late.other)
kept.clear()
del late
gc.collect()
outlived = probe() is not None
found = audit_frozen_heap()
print(full, tracked, len(dropped), int(outlived), found, int(probe() is not None))
"""


def test_gc_policy_collects_new_cycles_freezes_survivors_and_the_audit_finds_frozen_cycles() -> None:
    full, tracked, dropped_alive, outlived, found, alive_after_audit = _child(_POLICY_SCRIPT)
    assert full > 10  # full collections ran all along, each freezing what survived it
    # 20 000 objects kept alive (with their dicts): frozen, not walked again. Without the policy all are tracked.
    assert tracked < 10_000
    # The 180 000 dropped cycles were collected as the program ran, none kept by a freeze.
    assert dropped_alive < 100
    # A cycle around a frozen object is the policy's cost: no collection finds it...
    assert outlived == 1
    # ...until the audit, which walks everything once.
    assert found >= 2
    assert alive_after_audit == 0


# -- a gateway process under session churn ---------------------------------------------------------------------

_ROUND = 150  # sessions opened at once, then closed, per round
_WARM_ROUNDS, _ROUNDS = 2, 4


async def _churn_round(gateway: GatewayProcess, canister: Principal) -> None:
    """Open ``_ROUND`` sessions, close half with a close frame and drop the others' sockets; wait for them to end."""

    async def one() -> RawClient:
        client = await RawClient.connect(gateway.url)
        await client.open(canister)
        return client

    clients = await asyncio.gather(*(one() for _ in range(_ROUND)))
    for i, client in enumerate(clients):
        client.close() if i % 2 else client.abort()
    deadline = time.monotonic() + 30
    while await gateway.metric("clients_connected") > 0:
        assert time.monotonic() < deadline, "the gateway still counts clients 30 s after they all left"
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # their ws_close calls


@pytest.mark.slow
async def test_closed_sessions_leave_nothing_frozen_or_tracked_behind(tmp_path: Path) -> None:
    # The gateway's own start-up runs the policy; the benchmarks' GC probe reports what the collector holds.
    probe_out = tmp_path / "gc-probe.json"
    env = gc_probe_env(probe_out, None)
    limits = ["--max-clients-per-ip", str(2 * _ROUND)]
    with (
        DevnetProcess(address="127.0.0.1:0", round_ms=20) as replica,
        GatewayProcess(replica.url, tmp_path / "gw", extra_args=limits, env=env) as gateway,
    ):
        canister = Principal.from_text(replica.info["canisters"]["test"])
        for _ in range(_WARM_ROUNDS):  # the agent's pool of connections to the replica fills up
            await _churn_round(gateway, canister)
        before = await read_gc_probe(gateway.pid, probe_out)
        for _ in range(_ROUNDS):
            await _churn_round(gateway, canister)
        after = await read_gc_probe(gateway.pid, probe_out)
    # Full collections ran during the churn, each freezing what it left: the sessions then open among it.
    assert after["generations"][2]["collections"] > before["generations"][2]["collections"]
    # 600 sessions came and went. One that left a cycle (or anything else) behind would hold ~23 objects, frozen or
    # tracked: 14 000 over the rounds. What moves is the pools' and the loop's own (a few hundred).
    grown = after["frozen"] + after["tracked"] - before["frozen"] - before["tracked"]
    assert grown < 1_500, f"{grown} more objects held after {_ROUNDS * _ROUND} sessions came and went"
