"""The gateway's Python around each poll and each delivery, in-process: the parts no batch size amortises away.

Run: ``.venv/bin/python -m benchmarks.e2e.bench_poll_overhead``. Three figures, CPU µs (``time.process_time``,
best of 7), tracing off, on uvloop:

* ``spans``: the poller's two spans per poll (``poll`` and ``poll_reply``), entered and left;
* ``deliver``: one ``ClientConnection.deliver`` call, for a client that keeps up, on a transport that drops
  the frames (the socket write itself is not the gateway's Python);
* ``poll task``: one poll's task (its span, time-out and the ``ws_get_messages`` argument) around an agent that
  answers at once, created and awaited as the poller does.

``--compare DIR`` also times the gateway whose ``icws_fast`` package is in DIR, in the same run, the two trees'
processes alternating ``--rounds`` times (the best of each tree's rounds is shown).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any


def _best_us(run: Callable[[int], object], n: int, repeat: int = 7) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        run(n)
        best = min(best, (time.process_time() - start) / n)
    return best * 1e6


def measure() -> dict[str, float]:
    """The three figures for the ``icws_fast`` on ``sys.path``."""
    import uvloop

    from icws_fast.gateway.metrics import GatewayMetrics
    from icws_fast.gateway.poller import CanisterPoller
    from icws_fast.gateway.server import ClientConnection
    from icws_fast.gateway.tracing import span
    from icws_fast.ic.principal import Principal
    from icws_fast.protocol.session import SessionState

    def spans(n: int) -> None:
        for nonce in range(n):
            with span("poll", canister_id="rrkah-fqaaa-aaaaa-aaaaq-cai", nonce=nonce):
                pass
            with span("poll_reply", canister_id="rrkah-fqaaa-aaaaa-aaaaq-cai") as reply_span:
                reply_span.set_attribute("messages", 50)

    class Socket:
        def get_write_buffer_size(self) -> int:
            return 0

        def write(self, data: bytes) -> None:
            pass

    metrics = GatewayMetrics()
    gateway: Any = SimpleNamespace(metrics=metrics, config=SimpleNamespace(max_send_buffer=1 << 20), loop=None)
    client = ClientConnection(gateway)
    client.transport = SimpleNamespace(  # type: ignore[assignment]
        is_close_frame_sent=False, is_disconnected=False, underlying_transport=Socket()
    )
    client.session = SimpleNamespace(state=SessionState.OPEN)  # type: ignore[assignment]
    client._opened = True

    def deliver(n: int) -> None:
        call = client.deliver
        for _ in range(n):
            call(b"frames", 1)

    class Agent:
        async def query(self, canister_id: Principal, method: str, arg: bytes) -> bytes:
            return b""

    canister = Principal.from_text("rrkah-fqaaa-aaaaa-aaaaq-cai")
    poller = CanisterPoller(Agent(), canister, {}, metrics=metrics, root_key_der=None, interval_s=0.01)

    async def polls(n: int) -> None:
        for nonce in range(n):
            await asyncio.create_task(poller._query(nonce))

    loop = uvloop.new_event_loop()
    try:
        poll_task = _best_us(lambda n: loop.run_until_complete(polls(n)), 5_000)
    finally:
        loop.close()
    return {"spans_us": _best_us(spans, 20_000), "deliver_us": _best_us(deliver, 100_000), "poll_task_us": poll_task}


def _measure_in(src: Path | None) -> dict[str, float]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(src), os.environ.get("PYTHONPATH"))))
    # Run as a script, so that sys.path starts with this directory and then PYTHONPATH, not the working tree.
    command = [sys.executable, __file__, "--measure"]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    figures: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return figures


def _package_of(src: Path | None) -> str:
    """Where the leg's ``icws_fast`` is imported from (a check that ``--compare`` times the tree it names)."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(src), os.environ.get("PYTHONPATH"))))
    code = "import icws_fast, os; print(os.path.dirname(icws_fast.__file__))"
    command = [sys.executable, "-c", code]
    return subprocess.run(command, env=env, cwd="/", check=True, capture_output=True, text=True).stdout.strip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compare", type=Path, help="also time the gateway whose icws_fast package is in this directory")
    p.add_argument("--rounds", type=int, default=3, help="processes per tree, alternating (default %(default)s)")
    p.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:
        print(json.dumps(measure()))
        return
    legs: list[tuple[str, Path | None]] = [(str(args.compare), args.compare)] if args.compare else []
    legs.append(("working tree", None))
    best: dict[str, dict[str, float]] = {}
    print("gateway packages:", ", ".join(_package_of(src) for _, src in legs))
    for _ in range(args.rounds):
        for name, src in legs:
            figures = _measure_in(src)
            best[name] = {k: min(v, best.get(name, figures)[k]) for k, v in figures.items()}
    print("CPU µs, best of each tree's rounds")
    print(f"{'gateway':40} {'spans/poll':>11} {'deliver':>11} {'poll task':>11}")
    for name, r in best.items():
        print(f"{name:40} {r['spans_us']:11.2f} {r['deliver_us']:11.2f} {r['poll_task_us']:11.2f}")


if __name__ == "__main__":
    main()
