"""``icws-devnet``: run the devnet replica.

On start it prints one JSON line ``{"canisters": {name: id}, "root_key": hex, "url": ...}`` on
stdout (launchers and tests read it) and serves the same at ``GET /_devnet/canisters``. SIGINT or
SIGTERM stops it cleanly (the state is persisted when ``--state-dir`` is given).

It hosts the demo canisters (``icws_fast.devnet.canisters``) unless ``--canister NAME=MODULE:CLASS``
options name others (the module must be importable), or ``--canister NAME=PATH.wasm`` canister
modules (WebAssembly, with ``--init-arg NAME=CANDID`` init arguments; see docs/devnet.md). Rounds
last 50 ms by default: responsive enough that a synchronous call answers within a round or two,
cheap enough (one BLS signature per round) to stay idle at a few percent of a core.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from icws_fast import cliconfig
from icws_fast.cdk.api import Canister
from icws_fast.cliconfig import ConfigError, check_address, check_positive, flag, parse_float, parse_int
from icws_fast.devnet.replica import CanisterSpec
from icws_fast.devnet.server import DEFAULT_ROUND_MS, Devnet
from icws_fast.devnet.wasm import WasmCanister
from icws_fast.errors import IcwsError


@dataclass(frozen=True)
class DevnetConfig:
    """Everything ``icws-devnet`` is run with: each field is one flag (see :func:`flag_table`)."""

    address: str = flag("127.0.0.1:4943", "--address", "host:port to listen on (like dfx)", metavar="HOST:PORT")
    """Where the replica's HTTP interface listens; port 0 picks a free port (the JSON line says which)."""

    state_dir: Path | None = flag(
        None,
        "--state-dir",
        "persist keys and canister state here (restarts keep ids, root key, state)",
        metavar="DIR",
        parse=Path,
    )
    """Directory holding the keys and every canister's state; None keeps everything in memory."""

    round_ms: float = flag(
        DEFAULT_ROUND_MS, "--round-ms", "round length in milliseconds", metavar="MS", parse=parse_float
    )
    """Length of a round: every round executes the pending calls and certifies the state once."""

    root_key_file: Path | None = flag(
        None,
        "--root-key-file",
        "load the BLS root secret key (hex) from this file; created if missing",
        metavar="FILE",
        parse=Path,
    )
    """File with the BLS root secret key in hex, created when missing: the root key survives restarts."""

    subnet_delegation: bool = flag(
        False,
        "--subnet-delegation",
        "certify through a delegation from the root key to a subnet key (as mainnet application subnets)",
        switch=True,
    )
    """Sign certificates with a subnet key delegated by the root key, as mainnet application subnets do."""

    max_api_version: int = flag(
        4,
        "--max-api-version",
        "newest call endpoint served: 4 (today's replica), 3 (v3 call, v2 query/read_state) or 2 (v2 only)",
        metavar="N",
        parse=parse_int,
    )
    """Play an older replica: the endpoints newer than this generation answer 404."""

    canister: tuple[str, ...] = flag(
        (),
        "--canister",
        "host this canister class, or this canister module (a .wasm file), under NAME "
        "(repeatable; replaces the demo canisters)",
        metavar="NAME=MODULE:CLASS|NAME=PATH.wasm",
        collect=tuple,
    )
    """Canister specs ``NAME=MODULE:CLASS`` or ``NAME=PATH.wasm``; empty: the demo canisters of
    ``icws_fast.devnet.canisters``."""

    init_arg: tuple[str, ...] = flag(
        (),
        "--init-arg",
        "init arguments of the wasm canister NAME as Candid text, e.g. NAME='(50 : nat64, 300_000 : nat64)'",
        metavar="NAME=CANDID",
        collect=tuple,
    )
    """Init arguments of wasm canisters, ``NAME=CANDID`` (Candid text read against the module's init types)."""

    log_level: str = flag("INFO", "--log-level", "logging level", metavar="LEVEL")
    """Level of the log lines written to stderr (a :mod:`logging` level name, any case)."""

    def __post_init__(self) -> None:
        check_address("address", self.address)
        check_positive("round_ms", self.round_ms, "the round length")
        if self.max_api_version not in (2, 3, 4):
            raise ConfigError("max_api_version", f"must be 2, 3 or 4, got {self.max_api_version}")
        if not isinstance(logging.getLevelName(self.log_level.upper()), int):
            raise ConfigError("log_level", f"unknown logging level {self.log_level!r} (e.g. DEBUG, INFO, WARNING)")


def flag_table() -> str:
    """The flags of ``icws-devnet`` as a Markdown table (flag, env, default, meaning)."""
    return cliconfig.flag_table(DevnetConfig)


def _parser() -> argparse.ArgumentParser:
    return cliconfig.build_parser(DevnetConfig, prog="icws-devnet", description=__doc__.split("\n\n")[0])


def _load_canisters(
    parser: argparse.ArgumentParser, specs: tuple[str, ...], init_args: tuple[str, ...]
) -> dict[str, CanisterSpec] | None:
    """The canisters named by ``--canister`` options, or None (the demo canisters) when there are none."""
    wasm_args = dict(arg.partition("=")[::2] for arg in init_args)
    if not specs:
        if wasm_args:
            parser.error("--init-arg needs a --canister NAME=PATH.wasm to apply to")
        return None
    canisters: dict[str, CanisterSpec] = {}
    for spec in specs:
        name, _, target = spec.partition("=")
        if target.endswith(".wasm"):
            if not name:
                parser.error(f"--canister takes NAME=PATH.wasm, got {spec!r}")
            canisters[name] = WasmCanister(Path(target), wasm_args.pop(name, None))
            continue
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
    if wasm_args:
        parser.error(f"--init-arg names no wasm canister: {', '.join(sorted(wasm_args))}")
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
    config = cliconfig.config_from_argv(DevnetConfig, parser, argv)
    canisters = _load_canisters(parser, config.canister, config.init_arg)
    logging.basicConfig(
        level=config.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        devnet = Devnet(
            config.address,
            canisters,
            round_ms=config.round_ms,
            state_dir=config.state_dir,
            root_key_file=config.root_key_file,
            subnet_delegation=config.subnet_delegation,
            max_api_version=config.max_api_version,
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
        print(f"icws-devnet: error: cannot serve on {config.address}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
