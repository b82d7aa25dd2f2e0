"""The gateway's cost per polled batch, in-process: one real 50-message ``ws_get_messages`` reply, over and over.

Run: ``.venv/bin/python benchmarks/e2e/bench_batch.py``. It captures a reply from an in-process devnet
(the firehose canister with ``CLIENTS`` clients, so a batch is shared out to several of them), then times the
poller's handling of it (the state machine's decode, certificate and tree checks and per-message content
hashes, then encoding and handing every client its frames) with recipients that drop what they get, so the figure is
the gateway's own work without the socket writes. Times are the process's CPU time (``time.process_time``), so
that other processes on a shared machine change them little. Three figures: a batch whose certificate the poller has
already checked (the usual case: batches polled within one replica round share it), one with a new
certificate (a BLS check), and one without verification.

``--compare DIR`` also times the gateway whose ``icws_fast`` package is in DIR, in the same run, on the
same reply (each in its own process, one after the other).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: Clients the batch is shared out to (``--clients``): 5 gives 10 messages per client, 50 one each (as at K=100, round
#: robin, where every recipient's costs are paid per message).
CLIENTS = 5
ROUNDS = 400


async def capture(n_clients: int, in_a_row: int) -> dict[str, Any]:
    """One full ``ws_get_messages`` reply, and what is needed to route and check it."""
    from icws_fast.devnet import Devnet
    from icws_fast.ic import candid
    from icws_fast.ic.agent import Agent
    from icws_fast.ic.identity import Ed25519Identity
    from icws_fast.protocol.types import (
        decode_get_messages_result,
        decode_unit_result,
        encode_get_messages_args,
        encode_ws_open_args,
    )

    async with Devnet(address="127.0.0.1:0") as dn:
        canister = dn.canister_ids["firehose"]
        gateway = Ed25519Identity.generate()

        async def open_client() -> tuple[str, int]:
            identity, nonce = Ed25519Identity.generate(), secrets.randbits(63)
            async with Agent(dn.url, identity, root_key=dn.root_key_der) as agent:
                reply = await agent.call(canister, "ws_open", encode_ws_open_args(nonce, gateway.sender))
                decode_unit_result(reply)
            return identity.sender.to_text(), nonce

        async with Agent(dn.url, gateway, root_key=dn.root_key_der) as gateway_agent:
            # At once: each call waits for a devnet round.
            clients = await asyncio.gather(*(open_client() for _ in range(n_clients)))
            config_type = candid.parse_args(
                "(record { messages_per_round : nat32; payload_size : nat32; interval_ms : nat64 })"
            )
            config = {"messages_per_round": in_a_row, "payload_size": 100, "interval_ms": 100}
            await gateway_agent.call(canister, "configure", candid.encode(config_type, [config]))
            # Start past the OpenMessages: a batch of application messages, as under load.
            while True:
                await asyncio.sleep(0.2)
                reply = await gateway_agent.query(canister, "ws_get_messages", encode_get_messages_args(n_clients))
                if len(decode_get_messages_result(reply).messages) == 50:
                    break
    return {
        "root_key": dn.root_key_der.hex(),
        "canister": canister.to_text(),
        "clients": clients,
        "reply": reply.hex(),
        "captured_ns": time.time_ns(),
    }


def measure(path: Path) -> dict[str, float]:
    """µs per batch in the three cases, with this process's ``icws_fast``."""
    from icws_fast.gateway.metrics import GatewayMetrics
    from icws_fast.gateway.poller import CanisterPoller
    from icws_fast.ic.certificate import BLS_CACHE
    from icws_fast.ic.principal import Principal
    from icws_fast.protocol.types import ClientKey

    try:
        from icws_fast.gateway.heap import keep_freed_heap
    except ImportError:  # a gateway from before (for --compare)
        pass
    else:
        keep_freed_heap()  # as the icws-gateway process does
    record = json.loads(path.read_text())
    reply = bytes.fromhex(record["reply"])
    captured_ns = record["captured_ns"]

    class Sink:
        def deliver(self, *args: Any) -> None:
            """Drop the frames: the socket write is the same for every gateway version."""

    clients = [ClientKey(Principal.from_text(p), n) for p, n in record["clients"]]
    try:
        from icws_fast.protocol.types import route_key
    except ImportError:  # a gateway from before routing by bytes (for --compare)
        routes: dict[Any, Any] = {key: Sink() for key in clients}
    else:
        routes = {route_key(key): Sink() for key in clients}

    metrics = GatewayMetrics()

    def new_poller(root_key: bytes | None) -> CanisterPoller:
        return CanisterPoller(
            None,  # type: ignore[arg-type]  # no polling here: replies are fed in directly
            Principal.from_text(record["canister"]),
            routes,
            metrics=metrics,
            root_key_der=root_key,
            interval_s=1.0,
        )

    def handle(poller: Any, reply: bytes) -> int:
        """Feed ``reply`` to a fresh poll at nonce 0 and deliver it; messages delivered."""
        if not hasattr(poller, "state"):  # a gateway from before the sans-IO poller (for --compare)
            poller._first_batch, poller.nonce = True, 0
            return int(poller._handle_reply(reply)[1])
        state = poller.state
        if state.verifier is not None:
            # Each batch brings its own witness tree (only the certificate is shared within a replica round):
            # forget the last one, which the verifier keeps for a client reading one batch frame by frame.
            state.verifier._last_tree = None
        # A reply at the end of the queue makes the poller wait for the polling interval: not here.
        state.expected, state.synced, state.in_flight, state.wake_at = 0, False, [], 0.0
        state.polls(0.0)
        # The wall clock of the capture: a reply kept in a file (--reply) outlives its certificate's 5 minutes.
        step = state.on_reply(0, reply, 0.0, captured_ns)
        poller._apply(step)
        return sum(len(keys) for keys, _ in step.shares.values())

    def per_batch(root_key: bytes | None, fresh_certificate: bool) -> float:
        poller = new_poller(root_key)
        rounds = ROUNDS // 10 if fresh_certificate else ROUNDS
        best = float("inf")
        for _ in range(5):
            start = time.process_time()
            for _ in range(rounds):
                if fresh_certificate:
                    # A new poller has seen no certificate, and the BLS result cache is process-wide: clear it.
                    poller = new_poller(root_key)
                    BLS_CACHE.clear()
                count = handle(poller, reply)
            best = min(best, (time.process_time() - start) / rounds * 1e6)
        assert count == 50, f"{count} messages delivered, expected 50 (a check failed?)"
        return best

    root_key = bytes.fromhex(record["root_key"])
    return {
        "known_cert_us": per_batch(root_key, False),
        "new_cert_us": per_batch(root_key, True),
        "unverified_us": per_batch(None, False),
    }


def _measure_in(src: Path | None, path: Path) -> dict[str, float]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(src), os.environ.get("PYTHONPATH"))))
    out = subprocess.run(
        [sys.executable, __file__, "--measure", str(path)], env=env, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compare", type=Path, help="also time the gateway whose icws_fast package is in this directory")
    p.add_argument(
        "--clients", type=int, default=CLIENTS, help="clients the batch is shared out to (default %(default)s)"
    )
    p.add_argument(
        "--in-a-row", type=int, default=20, help="messages in a row to one client (default %(default)s; 1: round robin)"
    )
    p.add_argument(
        "--reply", type=Path, help="the captured reply: read from this file, or captured into it when it is missing"
    )
    p.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args.measure)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = args.reply or Path(tmp) / "reply.json"
        if not path.exists():
            path.write_text(json.dumps(asyncio.run(capture(args.clients, args.in_a_row))))
        legs = ([(str(args.compare), args.compare)] if args.compare else []) + [("working tree", None)]
        clients = len(json.loads(path.read_text())["clients"])
        print(f"one 50-message batch for {clients} clients; CPU µs per batch (best of 5)")
        print(f"{'gateway':40} {'known cert':>11} {'new cert':>11} {'unverified':>11}")
        for name, src in legs:
            r = _measure_in(src, path)
            print(f"{name:40} {r['known_cert_us']:11.0f} {r['new_cert_us']:11.0f} {r['unverified_us']:11.0f}")


if __name__ == "__main__":
    main()
