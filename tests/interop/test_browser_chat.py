"""The chat web page (``examples/chat-web``) in a real browser: headless Chromium pages chat across a gateway restart.

The page is the esbuild bundle of ic-websocket-js and @dfinity/agent, served by the same server ``make run`` uses
(``icws_fast.devnet.run_all.ChatPageServer``), talking through ``icws-gateway`` to the devnet ``chat`` canister.
Playwright (``playwright-core``, no browser download) drives Debian's Chromium (``browser_chat.mjs`` says what the
pages must do): two pages chat, a late joiner sees the history, each page marks its own messages; then the gateway
is drained and started again on the same port, and every page must say why it lost the gateway, reconnect by
itself and chat again without showing a message twice; a message the canister refuses ends one page's session,
which says so and reconnects. A screenshot of the first page is saved as ``artifacts/chat.png``.

Chromium comes from apt (``apt-get install -y chromium``): the test installs it when it is missing and it runs as
root with apt-get available (as CI does); otherwise it skips, as it does without ``node``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Final, NamedTuple

import pytest

from icws_fast.devnet.run_all import CHAT_PAGE_DIR, ChatPageServer, build_chat_page
from tests.interop.ws_stack import HERE, gateway_process, stack_devnet
from tests.processes import REPO, Child, GatewayProcess

pytestmark = [pytest.mark.interop, pytest.mark.slow]

CHROMIUM: Final = Path("/usr/bin/chromium")
SCREENSHOT: Final = REPO / "artifacts" / "chat.png"


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's Chromium, installed with apt-get when missing (never a browser download)."""
    if not CHROMIUM.exists():
        apt_get = shutil.which("apt-get")
        if apt_get is None or os.geteuid() != 0:
            pytest.skip("chromium is not installed and apt-get cannot install it (not root or no apt-get)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = [apt_get, "install", "-y", "--no-install-recommends", "chromium"]
        if subprocess.run(install, env=env, check=False, timeout=900).returncode != 0:
            # A fresh image has no package lists yet.
            subprocess.run([apt_get, "update"], env=env, check=True, timeout=600)
            subprocess.run(install, env=env, check=True, timeout=900)
    return CHROMIUM


class ChatStack(NamedTuple):
    page_url: str
    gateway: GatewayProcess  # the test restarts it


@pytest.fixture(scope="module")
def chat_stack(node: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatStack]:
    build_chat_page()
    state_dir = tmp_path_factory.mktemp("browser-stack")
    with stack_devnet(state_dir) as devnet, gateway_process(devnet.url, state_dir / "gateway") as gateway:
        chat = devnet.info["canisters"]["chat"]
        server = ChatPageServer(CHAT_PAGE_DIR, devnet.url, gateway.url, chat)
        try:
            yield ChatStack(server.start(), gateway)
        finally:
            server.stop()


def test_browser_pages_chat_across_a_gateway_restart(node: str, chromium: Path, chat_stack: ChatStack) -> None:
    SCREENSHOT.unlink(missing_ok=True)
    config = {"page_url": chat_stack.page_url, "chromium": str(chromium), "screenshot": str(SCREENSHOT)}
    command = [node, str(HERE / "browser_chat.mjs"), json.dumps(config)]
    with Child("browser_chat.mjs", command, cwd=HERE, stdin=True) as pages:
        pages.wait_for_line("stop the gateway", timeout=300)
        chat_stack.gateway.stop()  # SIGTERM: it drains, closing every client with 1001
        pages.send_line("stopped")
        pages.wait_for_line("start the gateway", timeout=180)
        chat_stack.gateway.start()  # on the same port
        pages.send_line("started", last=True)
        assert pages.wait(300) == 0 and "ok browser chat" in pages.output.splitlines(), pages.output
    assert SCREENSHOT.stat().st_size > 0
