"""``icws-devnet``: run the devnet replica.

On start it prints one JSON line ``{"canisters": {name: id}, "root_key": hex, "url": ...}`` on
stdout (launchers and tests read it) and serves the same at ``GET /_devnet/canisters``. SIGINT or
SIGTERM stops it cleanly (the state is persisted when ``--state-dir`` is given).

It hosts the demo canisters (``icws_fast.devnet.canisters``) unless ``--canister NAME=MODULE:CLASS``
options name others (the module must be importable). Rounds last 50 ms by default: responsive
enough that a synchronous call answers within a round or two, cheap enough (one BLS signature per
round) to stay idle at a few percent of a core.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from icws_fast.cdk.api import Canister
from icws_fast.devnet.server import DEFAULT_ROUND_MS, Devnet
from icws_fast.errors import IcwsError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="icws-devnet", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--address", default="127.0.0.1:4943", help="host:port to listen on (default, like dfx: %(default)s)"
    )
    parser.add_argument("--state-dir", help="persist keys and canister state here (restarts keep ids, root key, state)")
    parser.add_argument(
        "--round-ms", type=float, default=DEFAULT_ROUND_MS, help="round length in milliseconds (default %(default)s)"
    )
    parser.add_argument("--root-key-file", help="load the BLS root secret key (hex) from this file; created if missing")
    parser.add_argument(
        "--subnet-delegation",
        action="store_true",
        help="certify through a delegation from the root key to a subnet key (as mainnet application subnets)",
    )
    parser.add_argument(
        "--canister",
        action="append",
        default=[],
        metavar="NAME=MODULE:CLASS",
        help="host this canister class under NAME (repeatable; replaces the demo canisters)",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default %(default)s)")
    return parser


def _load_canisters(parser: argparse.ArgumentParser, specs: list[str]) -> dict[str, type[Canister]] | None:
    """The canisters named by ``--canister`` options, or None (the demo canisters) when there are none."""
    if not specs:
        return None
    canisters: dict[str, type[Canister]] = {}
    for spec in specs:
        name, _, target = spec.partition("=")
        module_name, _, class_name = target.partition(":")
        if not name or not module_name or not class_name:
            parser.error(f"--canister takes NAME=MODULE:CLASS, got {spec!r}")
        try:
            found = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            parser.error(f"--canister {spec}: {exc}")
        if not (isinstance(found, type) and issubclass(found, Canister)):
            parser.error(f"--canister {spec}: {class_name} is not a Canister subclass")
        canisters[name] = found
    return canisters


async def _serve(devnet: Devnet) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await devnet.start()
    try:
        print(json.dumps(devnet.info()), flush=True)
        await stop.wait()
    finally:
        await devnet.stop()


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    canisters = _load_canisters(parser, args.canister)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        devnet = Devnet(
            args.address,
            canisters,
            round_ms=args.round_ms,
            state_dir=args.state_dir,
            root_key_file=args.root_key_file,
            subnet_delegation=args.subnet_delegation,
        )
    except (ValueError, OSError, IcwsError) as exc:  # bad address, unreadable key file, bad canister Candid...
        parser.error(str(exc))
    runner: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop  # noqa: PLC0415 - optional accelerator

        runner = uvloop.run
    try:
        runner(_serve(devnet))
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # typically: the address is in use
        print(f"icws-devnet: error: cannot serve on {args.address}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
