"""``icws-devnet --canister NAME=PATH.wasm --init-arg NAME=CANDID``: the command line, and the HTTP interface."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from icws_fast.devnet.canisters import DEMO_CANISTERS
from icws_fast.devnet.cli import main
from icws_fast.devnet.server import Devnet
from icws_fast.devnet.wasm import WasmCanister
from icws_fast.errors import RejectError
from icws_fast.ic.agent import Agent
from tests.processes import DevnetProcess
from tests.wasm.motoko_stack import INIT_ARG
from tests.wasm.wasm_canisters import MOTOKO_CDK_CANISTER

TEST_CANISTER = DEMO_CANISTERS["test"]


def cli_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    with pytest.raises(SystemExit) as exited:
        main(["--address", "127.0.0.1:0", *args])
    assert exited.value.code == 2
    return capsys.readouterr().err


def test_init_args_are_checked_against_the_module_init_types(capsys: pytest.CaptureFixture[str]) -> None:
    module = f"mo={MOTOKO_CDK_CANISTER}"
    error = cli_error(capsys, "--canister", module, "--init-arg", 'mo=("fifty" : text, 1 : nat64)')
    assert "bad init arguments" in error and "(nat64, nat64)" in error
    error = cli_error(capsys, "--canister", module)
    assert "takes init arguments (nat64, nat64)" in error and "--init-arg" in error
    error = cli_error(capsys, "--canister", module, "--init-arg", "other=(1 : nat64)", "--init-arg", f"mo={INIT_ARG}")
    assert "--init-arg names no wasm canister: other" in error
    error = cli_error(capsys, "--canister", "mo=/nonexistent/module.wasm")
    assert "cannot read the module /nonexistent/module.wasm" in error


def test_wasm_and_python_canisters_side_by_side(tmp_path: Path, system_api_wasm: Path) -> None:
    devnet = DevnetProcess(
        state_dir=tmp_path,
        extra_args=[
            "--canister",
            f"wat={system_api_wasm}",
            "--canister",
            f"test={TEST_CANISTER.__module__}:{TEST_CANISTER.__qualname__}",
        ],
    )
    devnet.start()
    try:
        assert set(devnet.info["canisters"]) == {"wat", "test"}
        with urllib.request.urlopen(f"{devnet.url}/_devnet/canisters", timeout=10) as response:
            assert json.loads(response.read())["canisters"] == devnet.info["canisters"]
    finally:
        assert devnet.stop() == 0


def test_help_names_the_wasm_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "icws_fast.devnet.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "NAME=PATH.wasm" in result.stdout and "--init-arg" in result.stdout


async def test_inspect_message_through_the_http_interface(system_api_wasm: Path) -> None:
    async with (
        Devnet("127.0.0.1:0", {"wat": WasmCanister(system_api_wasm)}, round_ms=10) as devnet,
        Agent(devnet.url, root_key=devnet.root_key_der) as agent,
    ):
        canister_id = devnet.canister_ids["wat"]
        with pytest.raises(RejectError) as caught:
            await agent.call(canister_id, "inspect_refuses", b"")
        assert caught.value.reject_code == 4
        assert "Canister rejected the message" in str(caught.value)
        assert int.from_bytes((await agent.call(canister_id, "inc", b""))[:8], "little") == 1
