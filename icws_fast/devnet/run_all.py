"""`make run`: the devnet with the demo canisters, a gateway in front of it, and the chat web page.

The devnet and the gateway run as child processes (the same console scripts a user would start by
hand), so what `make run` shows is exactly what a deployment runs. The chat page
(``examples/chat-web``, built with npm on first use) is served from a thread of this process.

Every port is checked before anything starts, and the banner is printed only once every component
answers (the devnet's start-up line, the gateway's ``/ready``, the page's listener). A component
that fails makes the whole command fail: exit code 1, no banner, and one message naming the
component, why it failed (its last output) and what to change (the make variable of a taken port).
Ctrl-C (or SIGTERM) drains the gateway first, then stops the devnet.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp
from aiohttp import web

from icws_fast.cliconfig import parse_address

PROG: Final = "make run"
"""How the errors name this command: it is what users type (``make run`` runs this module)."""

READY_BANNER: Final = "Ctrl-C stops everything."
"""The banner's last line: printed once every component is ready, never after a failed start."""

CHAT_PAGE_OFF: Final = "off"
"""The ``--chat-page-address`` (``CHAT_PAGE_ADDRESS``) that serves no chat page."""

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


class StartError(Exception):
    """A component of ``make run`` could not start; the message says which, why and what to do."""


@dataclass(frozen=True)
class Listener:
    """One address ``make run`` listens on, with the flag and the make variable that choose it."""

    component: str
    flag: str
    make_variable: str
    address: str

    @property
    def host_port(self) -> tuple[str, int]:
        """The host and the port (0: any free port); :class:`StartError` when the address is not one."""
        try:
            host, port = parse_address(self.address)
        except ValueError:
            port = -1
        if not 0 <= port <= 65535:
            raise StartError(
                f"the {self.component} address {self.address!r} is not HOST:PORT with a port from 0 to 65535;"
                f" set {self.make_variable} (run_all {self.flag}), e.g. {self.make_variable}=127.0.0.1:PORT"
            )
        return host, port

    def taken(self, reason: str) -> StartError:
        """The error saying this port is taken, and how to choose another one."""
        host, port = self.host_port
        other = f"[{host}]" if ":" in host else host
        return StartError(
            f"the {self.component} cannot listen on {self.address}: port {port} is taken ({reason}).\n"
            f"Stop what listens there, or choose another port: make run {self.make_variable}={other}:{port + 1}"
            f" (run_all {self.flag})"
        )


def check_free(listeners: list[Listener]) -> None:
    """Raise :class:`StartError` naming the first port already taken, before anything is started.

    Each port is bound the way the servers bind it (``SO_REUSEADDR``, so a connection lingering in TIME_WAIT
    does not count) and released at once; a component that loses a race for its port later still fails
    with its own error.
    """
    seen: dict[tuple[str, int], Listener] = {}
    for listener in listeners:
        host, port = listener.host_port
        if port == 0:  # any free port
            continue
        if (host, port) in seen:
            raise StartError(
                f"the {seen[host, port].component} and the {listener.component} are both given {listener.address};"
                f" change {listener.make_variable} (run_all {listener.flag})"
            )
        seen[host, port] = listener
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise StartError(f"the {listener.component} cannot listen on {listener.address}: {exc}") from None
                raise listener.taken(exc.strerror or str(exc)) from None


def state_dir(data_dir: Path, component: str, address: str) -> Path:
    """Where a component listening on ``address`` keeps its state: one directory per address, so two
    ``make run`` on different ports never share a devnet's canisters or a gateway's key."""
    return data_dir / f"{component}-{re.sub(r'[^A-Za-z0-9.]+', '-', address).strip('-')}"


class Child:
    """A component's process. Its output (stdout and stderr together) is held back until it is ready, so a
    failed start can quote its last lines and a good one prints them above the banner; then it is echoed."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.info: dict[str, object] | None = None
        """The first JSON object line the process printed (the devnet's start-up line), if any."""
        self.info_seen = threading.Event()
        self._held: deque[str] = deque(maxlen=200)
        self._echoing = False
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        # The pipe must keep draining or the process blocks once it fills.
        self._pump_thread = threading.Thread(target=self._pump, name=f"{name}-output", daemon=True)
        self._pump_thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if self.info is None and line.startswith("{"):
                with contextlib.suppress(ValueError):
                    value = json.loads(line)
                    if isinstance(value, dict):
                        self.info = value
                        self.info_seen.set()
                        continue
            with self._lock:
                if self._echoing:
                    sys.stdout.write(line)
                    sys.stdout.flush()
                else:
                    self._held.append(line)

    def echo(self) -> None:
        """Print what was held back, then every later line as it comes."""
        with self._lock:
            sys.stdout.writelines(self._held)
            self._held.clear()
            self._echoing = True

    def failed(self, what: str, lines: int = 20) -> StartError:
        """The error saying the process ``what`` (e.g. "exited with code 1"), quoting its last lines."""
        if self.proc.poll() is not None:
            self._pump_thread.join(5)  # its last words may still be in the pipe
        with self._lock:
            tail = list(self._held)[-lines:]
        quoted = "".join(f"  | {line}" for line in tail) if tail else "  (it printed nothing)\n"
        return StartError(f"the {self.name} {what}; its last output:\n{quoted.rstrip()}")

    def check_running(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise self.failed(f"exited with code {code} while starting")

    def stop(self, timeout: float) -> None:
        """SIGTERM (the gateway drains, the devnet saves its state), then SIGKILL after ``timeout`` seconds."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._pump_thread.join(5)


def wait_devnet(devnet: Child, timeout: float) -> dict[str, object]:
    """The devnet's start-up line (printed once it serves), or :class:`StartError` with its last output."""
    deadline = time.monotonic() + timeout
    while not devnet.info_seen.wait(0.1):
        devnet.check_running()
        if time.monotonic() > deadline:
            raise devnet.failed(f"did not start within {timeout:.0f} s")
    assert devnet.info is not None
    return devnet.info


def wait_ready(gateway: Child, metrics: Listener, timeout: float) -> None:
    """Wait until the gateway's ``/ready`` answers 200: listening, and the replica answering it."""
    host, port = metrics.host_port
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/ready"
    deadline = time.monotonic() + timeout
    while True:
        gateway.check_running()
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:  # not listening yet (refused) or not ready yet (503, an HTTPError)
            pass
        if time.monotonic() > deadline:
            raise gateway.failed(f"was not ready within {timeout:.0f} s ({url} never answered 200)")
        time.sleep(0.1)


def _prepare_chat_page(listener: Listener) -> bool:
    """Build the chat page when it is wanted and present; False when it is off or not in this installation."""
    if listener.address == CHAT_PAGE_OFF:
        return False
    if not (CHAT_PAGE_DIR / "package.json").is_file():
        print("chat page: not in this installation (it is examples/chat-web of a source checkout)", flush=True)
        return False
    what_to_do = f"or run without the chat page: make run {listener.make_variable}={CHAT_PAGE_OFF}"
    try:
        build_chat_page()
    except OSError as exc:
        raise StartError(
            f"the chat page cannot be built: {exc}.\n"
            f"Install Node.js and npm (Debian/Ubuntu: apt-get install nodejs npm), {what_to_do}"
        ) from None
    except subprocess.CalledProcessError as exc:
        raise StartError(
            f"building the chat page ({CHAT_PAGE_DIR}) failed: `{' '.join(map(str, exc.cmd))}` exited with code"
            f" {exc.returncode} (its output is above).\n"
            f"Check your network for npm ci, or remove {CHAT_PAGE_DIR / 'node_modules'} and retry, {what_to_do}"
        ) from None
    return True


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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m icws_fast.devnet.run_all",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--devnet-address", default="127.0.0.1:4943", help="the replica's HTTP interface")
    parser.add_argument("--gateway-address", default="127.0.0.1:8080", help="the gateway's WebSocket listener")
    parser.add_argument("--metrics-address", default="127.0.0.1:9000", help="the gateway's /metrics, /health, /ready")
    parser.add_argument(
        "--chat-page-address", default="127.0.0.1:8000", help=f"the chat web page ({CHAT_PAGE_OFF}: no chat page)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("data"),
        help="state goes to DATA_DIR/devnet-HOST-PORT and DATA_DIR/gateway-HOST-PORT (one per address)",
    )
    parser.add_argument(
        "--clean", action="store_true", help="remove the state of these addresses (stop `make run` first) and exit"
    )
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
    return parser


def _listeners(args: argparse.Namespace) -> tuple[Listener, Listener, Listener, Listener]:
    return (
        Listener("devnet", "--devnet-address", "DEVNET_ADDRESS", args.devnet_address),
        Listener("gateway", "--gateway-address", "GATEWAY_ADDRESS", args.gateway_address),
        Listener("gateway's metrics endpoint", "--metrics-address", "METRICS_ADDRESS", args.metrics_address),
        Listener("chat page", "--chat-page-address", "CHAT_PAGE_ADDRESS", args.chat_page_address),
    )


def clean(data_dir: Path, devnet: Listener, gateway: Listener) -> None:
    """Remove the devnet's and the gateway's state directories for these addresses, saying what was removed."""
    try:
        check_free([devnet])
    except StartError:
        raise StartError(
            f"the devnet port of {devnet.address} is in use: stop that `make run` (Ctrl-C) before cleaning its state"
        ) from None
    for component, listener in (("devnet", devnet), ("gateway", gateway)):
        directory = state_dir(data_dir, component, listener.address)
        if directory.exists():
            shutil.rmtree(directory)
            print(f"removed {directory} (the {component} state of {listener.address})")
        else:
            print(f"nothing to remove: {directory} does not exist")


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    devnet_at, gateway_at, metrics_at, page_at = _listeners(args)
    # SIGTERM, like Ctrl-C, stops what was started (also while starting) instead of orphaning the children.
    signal.signal(signal.SIGTERM, _interrupt)
    children: list[Child] = []
    page: ChatPageServer | None = None
    try:
        if args.clean:
            clean(args.data_dir, devnet_at, gateway_at)
            return 0
        check_free([devnet_at, gateway_at, metrics_at, *([page_at] if page_at.address != CHAT_PAGE_OFF else [])])
        serve_page = _prepare_chat_page(page_at)

        bin_dir = os.path.dirname(sys.executable)
        devnet_state = state_dir(args.data_dir, "devnet", devnet_at.address)
        devnet = Child(
            "devnet",
            [
                os.path.join(bin_dir, "icws-devnet"),
                *("--address", devnet_at.address, "--state-dir", str(devnet_state)),
                *_canister_options(args.canister, args.init_arg),
            ],
        )
        children.append(devnet)
        info = wait_devnet(devnet, 60)
        ic_url = str(info["url"])
        canisters = info["canisters"]
        assert isinstance(canisters, dict)
        gateway = Child(
            "gateway",
            [
                os.path.join(bin_dir, "icws-gateway"),
                *("--gateway-address", gateway_at.address, "--ic-network-url", ic_url),
                *("--prometheus-endpoint", metrics_at.address),
                *("--data-dir", str(state_dir(args.data_dir, "gateway", gateway_at.address))),
            ],
        )
        children.insert(0, gateway)  # stopped first: it drains while the replica still answers
        wait_ready(gateway, metrics_at, 60)
        gateway_url = f"ws://{gateway_at.address}"
        if serve_page:
            # A browser cannot connect to 0.0.0.0: the page points at loopback when the gateway listens everywhere.
            page = ChatPageServer(
                CHAT_PAGE_DIR, ic_url, gateway_url.replace("//0.0.0.0:", "//127.0.0.1:"), str(canisters.get("chat", ""))
            )
            host, port = page_at.host_port
            try:
                page.start(host, port)
            except OSError as exc:
                page = None
                raise (
                    page_at.taken(exc.strerror or str(exc))
                    if exc.errno == errno.EADDRINUSE
                    else StartError(f"the chat page cannot listen on {page_at.address}: {exc}")
                ) from None

        for child in children:
            child.echo()
        print()
        print(f"devnet   {ic_url}   (state: {devnet_state})")
        print(f"gateway  {gateway_url}   (metrics: http://{metrics_at.address}/metrics)")
        for name, canister_id in canisters.items():
            print(f"canister {name:<9}{canister_id}")
        print("\nPaste this into `.venv/bin/python` in another terminal to talk to the test canister:\n")
        print(SNIPPET.format(gateway_url=gateway_url, canister_id=canisters.get("test", ""), ic_url=ic_url))
        if page is not None:
            print(f"Chat in a browser (open it twice to talk to yourself): {page.url}\n")
        print(READY_BANNER, flush=True)

        while all(child.proc.poll() is None for child in children):
            time.sleep(0.2)
        for child in children:
            if child.proc.poll() is not None:
                print(f"{PROG}: the {child.name} exited with code {child.proc.returncode}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping...", flush=True)
        return 0
    except StartError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        # Signals no longer interrupt: the children are stopped whatever arrives now.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if page is not None:
            page.stop()
        for child in children:
            child.stop(15)


if __name__ == "__main__":
    sys.exit(main())
