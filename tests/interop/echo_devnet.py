"""A devnet hosting one small canister, run as a subprocess by the @dfinity/agent check and the devnet benchmark.

``python tests/interop/echo_devnet.py [--address HOST:PORT] [--subnet-delegation]`` prints one JSON line
``{"url", "root_key", "canisters": {"echo": id}}`` once it serves, then runs until SIGTERM or SIGINT. A
separate process gives the devnet its own interpreter (and core) while the load runs elsewhere.

The ``echo`` canister: update ``shout(text) -> (text)`` (upper case), update ``whoami() -> (principal)``
(the caller), query ``echo(text) -> (text)``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from icws_fast.cdk.api import Canister, caller, query, update
from icws_fast.devnet.server import Devnet
from icws_fast.ic.principal import Principal


class Echo(Canister):
    """Stateless methods with replies a test can predict."""

    CANDID = ""

    @update("(text) -> (text)")
    def shout(self, text: str) -> str:
        return text.upper()

    @update("() -> (principal)")
    def whoami(self) -> Principal:
        return caller()

    @query("(text) -> (text)")
    def echo(self, text: str) -> str:
        return text


async def serve(address: str, subnet_delegation: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with Devnet(address, {"echo": Echo}, subnet_delegation=subnet_delegation) as devnet:
        print(json.dumps(devnet.info()), flush=True)
        await stop.wait()


@contextlib.contextmanager
def running(*, subnet_delegation: bool = False) -> Iterator[dict[str, Any]]:
    """Start this script as a subprocess; yield its start-up line (``url``, ``root_key``, ``canisters``) and ``pid``."""
    command = [sys.executable, __file__, "--address", "127.0.0.1:0"]
    if subnet_delegation:
        command.append("--subnet-delegation")
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the echo devnet exited with status {proc.wait()} before serving")
        info: dict[str, Any] = json.loads(line)
        info["pid"] = proc.pid
        yield info
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", default="127.0.0.1:0")
    parser.add_argument("--subnet-delegation", action="store_true")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.address, args.subnet_delegation))
    return 0


if __name__ == "__main__":
    sys.exit(main())
