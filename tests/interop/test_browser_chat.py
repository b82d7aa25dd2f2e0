"""The chat web page (``examples/chat-web``) in a real browser: two headless Chromium pages chat.

The page is the esbuild bundle of ic-websocket-js and @dfinity/agent, served by the same server ``make run`` uses
(``icws_fast.devnet.run_all.ChatPageServer``), talking through ``icws-gateway`` to the devnet ``chat`` canister.
Playwright (``playwright-core``, no browser download) drives Debian's Chromium; each page must see its own message
and the other's. A screenshot of the first page is saved as ``artifacts/chat.png``.

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
from typing import Final

import pytest

from icws_fast.devnet.run_all import CHAT_PAGE_DIR, ChatPageServer, build_chat_page
from tests.interop.ws_stack import HERE, running_stack
from tests.processes import REPO

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


@pytest.fixture(scope="module")
def page_url(node: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    build_chat_page()
    with running_stack(tmp_path_factory.mktemp("browser-stack")) as info:
        server = ChatPageServer(CHAT_PAGE_DIR, info["ic_url"], info["gateway_url"], info["canisters"]["chat"])
        try:
            yield server.start()
        finally:
            server.stop()


def test_two_browser_pages_chat(node: str, chromium: Path, page_url: str) -> None:
    SCREENSHOT.unlink(missing_ok=True)
    config = {"page_url": page_url, "chromium": str(chromium), "screenshot": str(SCREENSHOT)}
    result = subprocess.run(
        [node, str(HERE / "browser_chat.mjs"), json.dumps(config)],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,  # asserted below, with the browser's console output
    )
    assert result.returncode == 0 and "ok browser chat" in result.stdout, result.stdout + result.stderr
    assert SCREENSHOT.stat().st_size > 0
