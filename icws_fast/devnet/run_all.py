"""`make run`: the devnet with the demo canisters, and a gateway in front of it.

Both run as child processes (the same console scripts a user would start by hand), so what
`make run` shows is exactly what a deployment runs. Ctrl-C (or SIGTERM) drains the gateway
first, then stops the devnet.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO

SNIPPET = """\
import asyncio
from icws_fast.client import IcWebSocket

async def main() -> None:
    ws = await IcWebSocket.connect("{gateway_url}", "{canister_id}", "{ic_url}")
    print("received:", await ws.recv())  # the test canister greets with {{'text': 'ping', ...}}
    await ws.send({{"text": "hello", "timestamp": 0}})
    print("received:", await ws.recv())  # ... and answers every message with text + " ping"
    await ws.close()

asyncio.run(main())
"""


def _read_json_line(stream: IO[str], deadline: float) -> dict[str, object]:
    """The first line of ``stream`` that parses as a JSON object, echoing the others."""
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        try:
            value = json.loads(line)
        except ValueError:
            sys.stdout.write(line)
            continue
        if isinstance(value, dict):
            return value
    raise RuntimeError("the devnet did not print its start-up line")


def _echo(stream: IO[str]) -> None:
    for line in stream:
        sys.stdout.write(line)


def _stop(proc: subprocess.Popen[str], sig: int, timeout: float) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devnet-address", default="127.0.0.1:4943")
    parser.add_argument("--gateway-address", default="127.0.0.1:8080")
    parser.add_argument("--prometheus-endpoint", default="127.0.0.1:9000")
    parser.add_argument("--state-dir", default="data/devnet")
    args = parser.parse_args(argv)

    bin_dir = os.path.dirname(sys.executable)
    devnet = subprocess.Popen(
        [os.path.join(bin_dir, "icws-devnet"), "--address", args.devnet_address, "--state-dir", args.state_dir],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert devnet.stdout is not None
    try:
        info = _read_json_line(devnet.stdout, time.monotonic() + 60)
        ic_url = str(info["url"])
        canisters = info["canisters"]
        assert isinstance(canisters, dict)
        gateway = subprocess.Popen(
            [
                os.path.join(bin_dir, "icws-gateway"),
                "--gateway-address",
                args.gateway_address,
                "--ic-network-url",
                ic_url,
                "--prometheus-endpoint",
                args.prometheus_endpoint,
            ],
            text=True,
        )
    except BaseException:
        _stop(devnet, signal.SIGTERM, 10)
        raise

    gateway_url = f"ws://{args.gateway_address}"
    print()
    print(f"devnet   {ic_url}")
    print(f"gateway  {gateway_url}   (metrics: http://{args.prometheus_endpoint}/metrics)")
    for name, canister_id in canisters.items():
        print(f"canister {name:<9}{canister_id}")
    print("\nPaste this into `.venv/bin/python` in another terminal to talk to the test canister:\n")
    print(SNIPPET.format(gateway_url=gateway_url, canister_id=canisters.get("test", ""), ic_url=ic_url))
    print("Ctrl-C stops everything.", flush=True)

    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    # The devnet's stdout must keep draining or the devnet blocks once the pipe fills.
    threading.Thread(target=_echo, args=(devnet.stdout,), daemon=True).start()
    while not stopping and gateway.poll() is None and devnet.poll() is None:
        time.sleep(0.2)
    _stop(gateway, signal.SIGTERM, 15)
    _stop(devnet, signal.SIGTERM, 10)
    return 0 if stopping else 1


if __name__ == "__main__":
    sys.exit(main())
