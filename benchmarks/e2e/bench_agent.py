"""CPU per :class:`~icws_fast.ic.agent.Agent` round trip: status, query, call, against the devnet on loopback.

Run (from the repository root)::

    .venv/bin/python benchmarks/e2e/bench_agent.py [--compare DIR] [--rounds 3] [--queries 2000] [--calls 200]

It starts ``icws-devnet`` (hosting ``tests.interop.echo_canister:Echo``) in its own process, then runs each leg
in a child process of its own, one after the other and ``--rounds`` times interleaved: the working tree's agent,
and with ``--compare DIR`` the agent whose ``icws_fast`` package is in DIR (e.g. ``git archive main`` unpacked
and built with ``setup.py build_ext --inplace``). A leg measures its own CPU (``time.process_time``) over
sequential round trips on uvloop, as the gateway runs them, signed by an Ed25519 identity (the gateway's kind):

* ``status``: ``GET /api/v2/status`` and its CBOR decode, the bare HTTP round trip;
* ``query``: ``echo("hello")``, the shape of a gateway poll (envelope, signature, CBOR both ways);
* ``query 64 KiB``: ``echo`` of a 64 KiB text, a large answer (a full ``ws_get_messages`` batch is larger);
* ``call``: ``shout("hello")`` on the synchronous call endpoint (its certificate's BLS check dominates).

It prints the median CPU µs per round trip of each leg, and the ratio working tree / DIR. The devnet's CPU is
not counted: only the agent's process is measured, so the devnet's speed changes the wall time, not the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[2]
SEED = bytes(range(32))


def _leg(url: str, root_key_hex: str, canister: str, queries: int, calls: int) -> dict[str, float]:
    """Run in the leg's child process: CPU µs per round trip of each kind (imports the tree on PYTHONPATH)."""
    from collections.abc import Awaitable, Callable

    import uvloop

    from icws_fast.ic import candid
    from icws_fast.ic.agent import Agent
    from icws_fast.ic.identity import Ed25519Identity

    text = [candid.parse_type("text")]
    small = candid.encode(text, ["hello"])
    large = candid.encode(text, ["x" * 65536])

    async def main() -> dict[str, float]:
        figures: dict[str, float] = {}
        async with Agent(url, Ed25519Identity.from_seed(SEED), root_key=bytes.fromhex(root_key_hex)) as agent:

            async def timed(name: str, count: int, run: Callable[[], Awaitable[object]]) -> None:
                for _ in range(max(count // 10, 5)):  # warm-up: connections, caches
                    await run()
                start = time.process_time()
                for _ in range(count):
                    await run()
                figures[name] = (time.process_time() - start) / count * 1e6

            await timed("status", queries, agent.status)
            await timed("query", queries, lambda: agent.query(canister, "echo", small))
            await timed("query 64 KiB", max(queries // 10, 20), lambda: agent.query(canister, "echo", large))
            await timed("call", calls, lambda: agent.call(canister, "shout", small))
        return figures

    return uvloop.run(main())


def _run_leg(tree: Path, info: dict[str, object], args: argparse.Namespace) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    spec = json.dumps({"url": info["url"], "root_key": info["root_key"], "canister": info["canister"]})
    command = [sys.executable, str(HERE), "--leg", spec, "--queries", str(args.queries), "--calls", str(args.calls)]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"the leg of {tree} failed:\n{out.stderr[-3000:]}")
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--compare", type=Path, help="also measure the agent whose icws_fast package is in this directory")
    p.add_argument("--rounds", type=int, default=3, help="legs run interleaved this many times; medians are printed")
    p.add_argument("--queries", type=int, default=2000, help="status and query round trips per leg")
    p.add_argument("--calls", type=int, default=200, help="update calls per leg")
    p.add_argument("--leg", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.leg is not None:
        spec = json.loads(args.leg)
        print(json.dumps(_leg(spec["url"], spec["root_key"], spec["canister"], args.queries, args.calls)))
        return

    sys.path.insert(0, str(REPO))
    from tests.interop.echo_canister import echo_devnet

    legs = [("working tree", REPO)]
    if args.compare is not None:
        legs.insert(0, (str(args.compare), args.compare.resolve()))
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in legs}
    with echo_devnet() as devnet:
        info = {"url": devnet.url, "root_key": devnet.info["root_key"], "canister": str(devnet.canister_ids["echo"])}
        for round_ in range(args.rounds):
            for name, tree in legs:
                started = time.monotonic()
                results[name].append(_run_leg(tree, info, args))
                print(f"round {round_ + 1}/{args.rounds}, {name}: {time.monotonic() - started:.1f} s", file=sys.stderr)
    kinds = list(results[legs[0][0]][0])
    medians = {
        name: {kind: statistics.median(r[kind] for r in runs) for kind in kinds} for name, runs in results.items()
    }
    width = max(len(name) for name, _ in legs)
    print(f"CPU µs per round trip (median of {args.rounds} interleaved rounds)")
    print(f"{'':{width}}  " + "  ".join(f"{kind:>13}" for kind in kinds))
    for name, _ in legs:
        print(f"{name:{width}}  " + "  ".join(f"{medians[name][kind]:13.1f}" for kind in kinds))
    if args.compare is not None:
        base, new = medians[legs[0][0]], medians["working tree"]
        print(f"{'ratio new/old':{width}}  " + "  ".join(f"{new[kind] / base[kind]:13.2f}" for kind in kinds))


if __name__ == "__main__":
    main()
