"""The server of the chat page (``make run``): page files, ``config.json``, the replica proxied under ``/api``."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from icws_fast.devnet.run_all import ChatPageServer
from icws_fast.ic import cbor
from tests.processes import DevnetProcess, free_port


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def page_dir(tmp_path: Path) -> Path:
    (tmp_path / "dist").mkdir()
    (tmp_path / "index.html").write_text("<p>chat</p>")
    (tmp_path / "dist" / "app.js").write_text("export {};")
    return tmp_path


@pytest.fixture
def server(page_dir: Path) -> Iterator[ChatPageServer]:
    # Nothing listens on this port: the proxy must answer 502, not fail.
    page = ChatPageServer(
        page_dir, f"http://127.0.0.1:{free_port()}", "ws://127.0.0.1:1", "rrkah-fqaaa-aaaaa-aaaaq-cai"
    )
    page.start()
    try:
        yield page
    finally:
        page.stop()


def test_serves_the_page_and_its_config(server: ChatPageServer) -> None:
    assert fetch(server.url) == (200, b"<p>chat</p>")
    assert fetch(server.url + "dist/app.js") == (200, b"export {};")
    status, body = fetch(server.url + "config.json")
    assert status == 200
    assert json.loads(body) == {
        "gateway_url": "ws://127.0.0.1:1",
        "ic_url": server.url.rstrip("/"),  # the page reaches the replica through this server
        "canister_id": "rrkah-fqaaa-aaaaa-aaaaq-cai",
    }
    assert fetch(server.url + "dist/../../etc/passwd")[0] in (403, 404)


def test_unreachable_replica_is_a_502(server: ChatPageServer) -> None:
    assert fetch(server.url + "api/v2/status")[0] == 502


@pytest.mark.slow
def test_proxies_the_replica(page_dir: Path, devnet_process: DevnetProcess) -> None:
    page = ChatPageServer(page_dir, devnet_process.url, "ws://127.0.0.1:1", "aaaaa-aa")
    page.start()
    try:
        status, direct = fetch(devnet_process.url + "/api/v2/status")
        assert status == 200
        proxied_status, proxied = fetch(page.url + "api/v2/status")
        assert proxied_status == 200
        # The certified height moves between the two requests (the devnet certifies in rounds): compare the
        # fields that identify the replica, which a broken proxy would not reproduce.
        stable = ("root_key", "impl_version", "ic_api_version")
        direct_fields, proxied_fields = cbor.decode(direct), cbor.decode(proxied)
        assert {k: proxied_fields[k] for k in stable} == {k: direct_fields[k] for k in stable}
    finally:
        page.stop()
