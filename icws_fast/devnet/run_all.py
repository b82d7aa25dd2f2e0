"""`make run`: the devnet with the demo canisters, a gateway in front of it, and the chat web page.

The devnet and the gateway run as child processes (the same console scripts a user would start by
hand), so what `make run` shows is exactly what a deployment runs. The chat page
(``examples/chat-web``, built with npm on first use) is served from a thread of this process.
Ctrl-C (or SIGTERM) drains the gateway first, then stops the devnet.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Final

import aiohttp
from aiohttp import web

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


CHAT_PAGE_DIR: Final = Path(__file__).resolve().parents[2] / "examples" / "chat-web"
"""The chat page's sources; present in a source checkout (where `make run` runs), not in an installed wheel."""


def npm_ci(project: Path) -> None:
    """``npm ci`` in ``project`` unless its ``node_modules`` already matches its ``package-lock.json``.

    Raises ``OSError`` when npm is missing and ``subprocess.CalledProcessError`` when npm fails.
    """
    installed = project / "node_modules" / ".package-lock.json"  # npm's record of what node_modules holds
    if installed.is_file() and installed.stat().st_mtime >= (project / "package-lock.json").stat().st_mtime:
        return
    subprocess.run([_npm(), "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=project, check=True)


def build_chat_page(page_dir: Path = CHAT_PAGE_DIR) -> None:
    """Install the page's pinned npm packages if needed and bundle it (``dist/app.js``) with esbuild.

    Raises ``OSError`` when npm is missing and ``subprocess.CalledProcessError`` when npm fails.
    """
    npm_ci(page_dir)
    subprocess.run([_npm(), "run", "--silent", "build"], cwd=page_dir, check=True)


def _npm() -> str:
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError("npm is not installed")
    return npm


class ChatPageServer:
    """Serves the built chat page over HTTP from a background thread, with its ``config.json``.

    The replica's HTTP interface is proxied under the page's own origin (``/api/...``): browsers only let a
    page call another origin that answers CORS preflights, which the devnet does not do.
    """

    def __init__(self, page_dir: Path, ic_url: str, gateway_url: str, canister_id: str) -> None:
        self.page_dir = page_dir
        self.ic_url = ic_url.rstrip("/")
        self.gateway_url = gateway_url
        self.canister_id = canister_id
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="chat-page", daemon=True)

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0: any free port); returns the page URL."""
        self._thread.start()
        try:
            bound = asyncio.run_coroutine_threadsafe(self._start(host, port), self._loop).result(30)
        except BaseException:
            self.stop()
            raise
        self.url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{bound}/"
        return self.url

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self, host: str, port: int) -> int:
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/config.json", self._config)
        app.router.add_static("/dist", self.page_dir / "dist")
        app.router.add_route("*", "/api/{tail:.*}", self._proxy)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound: int = self._runner.addresses[0][1]
        return bound

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _index(self, _request: web.Request) -> web.FileResponse:
        return web.FileResponse(self.page_dir / "index.html")

    async def _config(self, request: web.Request) -> web.Response:
        origin = f"{request.scheme}://{request.host}"
        return web.json_response({"gateway_url": self.gateway_url, "ic_url": origin, "canister_id": self.canister_id})

    async def _proxy(self, request: web.Request) -> web.Response:
        assert self._session is not None
        headers = {"Content-Type": request.headers.get("Content-Type", "application/cbor")}
        try:
            async with self._session.request(
                request.method, self.ic_url + request.path_qs, data=await request.read(), headers=headers
            ) as answer:
                body = await answer.read()
                return web.Response(status=answer.status, body=body, content_type=answer.content_type)
        except aiohttp.ClientError as exc:
            return web.Response(status=502, text=f"the replica is unreachable: {exc}")


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


def _start_chat_page(address: str, ic_url: str, gateway_url: str, canister_id: str) -> ChatPageServer | None:
    """Build and serve the chat page; None (with the reason printed) when it cannot be, which is not fatal."""
    if not (CHAT_PAGE_DIR / "package.json").is_file():
        return None
    try:
        build_chat_page()
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"chat page not served: building examples/chat-web failed ({exc})", flush=True)
        return None
    host, _, port = address.rpartition(":")
    # A browser cannot connect to 0.0.0.0: point the page at loopback when the gateway listens on every address.
    page = ChatPageServer(CHAT_PAGE_DIR, ic_url, gateway_url.replace("//0.0.0.0:", "//127.0.0.1:"), canister_id)
    try:
        page.start(host, int(port))
    except OSError as exc:
        print(f"chat page not served: {exc}", flush=True)
        return None
    return page


def _canister_options(modules: list[str], init_args: list[str]) -> list[str]:
    """``icws-devnet`` options serving the demo canisters and ``modules`` (naming any canister replaces the demo)."""
    if not modules:
        return []
    from icws_fast.devnet.canisters import DEMO_CANISTERS  # noqa: PLC0415 - only needed with extra modules

    options = []
    for name, canister_class in DEMO_CANISTERS.items():
        options += ["--canister", f"{name}={canister_class.__module__}:{canister_class.__qualname__}"]
    for module in modules:
        options += ["--canister", module]
    for init_arg in init_args:
        options += ["--init-arg", init_arg]
    return options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devnet-address", default="127.0.0.1:4943")
    parser.add_argument("--gateway-address", default="127.0.0.1:8080")
    parser.add_argument("--prometheus-endpoint", default="127.0.0.1:9000")
    parser.add_argument("--state-dir", default="data/devnet")
    parser.add_argument("--chat-page-address", default="127.0.0.1:8000", help="where to serve the chat web page")
    parser.add_argument(
        "--canister",
        action="append",
        default=[],
        metavar="NAME=PATH.wasm",
        help="also serve this canister module (repeatable; see icws-devnet --canister)",
    )
    parser.add_argument(
        "--init-arg", action="append", default=[], metavar="NAME=CANDID", help="init arguments of a --canister module"
    )
    args = parser.parse_args(argv)

    bin_dir = os.path.dirname(sys.executable)
    devnet = subprocess.Popen(
        [
            os.path.join(bin_dir, "icws-devnet"),
            "--address",
            args.devnet_address,
            "--state-dir",
            args.state_dir,
            *_canister_options(args.canister, args.init_arg),
        ],
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
    page = _start_chat_page(args.chat_page_address, ic_url, gateway_url, str(canisters.get("chat", "")))
    print()
    print(f"devnet   {ic_url}")
    print(f"gateway  {gateway_url}   (metrics: http://{args.prometheus_endpoint}/metrics)")
    for name, canister_id in canisters.items():
        print(f"canister {name:<9}{canister_id}")
    print("\nPaste this into `.venv/bin/python` in another terminal to talk to the test canister:\n")
    print(SNIPPET.format(gateway_url=gateway_url, canister_id=canisters.get("test", ""), ic_url=ic_url))
    if page is not None:
        print(f"Chat in a browser (open it twice to talk to yourself): {page.url}\n")
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
    if page is not None:
        page.stop()
    _stop(gateway, signal.SIGTERM, 15)
    _stop(devnet, signal.SIGTERM, 10)
    return 0 if stopping else 1


if __name__ == "__main__":
    sys.exit(main())
