"""``icws-devnet``'s command line: built from ``DevnetConfig``, bad values exit 2 with a message naming the flag."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from icws_fast.cliconfig import config_from_argv
from icws_fast.devnet.cli import DevnetConfig, _parser, flag_table, main
from icws_fast.errors import ConfigError
from icws_fast.ic import candid
from icws_fast.ic.agent import Agent
from icws_fast.ic.identity import Ed25519Identity
from tests.processes import DevnetProcess


def test_no_flags_give_the_dataclass_defaults():
    config = config_from_argv(DevnetConfig, _parser(), [], environ={})
    assert config == DevnetConfig()
    assert config.address == "127.0.0.1:4943" and config.round_ms == 50 and config.canister == ()


def test_every_field_is_a_flag_in_the_table_and_the_help():
    table = flag_table()
    help_text = " ".join(_parser().format_help().split())
    for field in dataclasses.fields(DevnetConfig):
        name = "--" + field.name.replace("_", "-")
        assert f"`{name}" in table
        assert name in help_text
    assert "(like dfx) (default: 127.0.0.1:4943)" in help_text and "(default: 50)" in help_text


def test_flags_reach_the_config():
    argv = ["--address", "0.0.0.0:0", "--subnet-delegation", "--canister", "a=m:A", "--canister", "b=m:B"]
    config = config_from_argv(DevnetConfig, _parser(), [*argv, "--max-api-version", "3"], environ={})
    assert config.address == "0.0.0.0:0" and config.subnet_delegation and config.max_api_version == 3
    assert config.canister == ("a=m:A", "b=m:B")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.address = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--address", "nope"], "--address nope: expected HOST:PORT, got 'nope'"),
        (["--address", "127.0.0.1:65536"], "--address 127.0.0.1:65536: port 65536 is out of range (0-65535)"),
        (["--round-ms", "0"], "--round-ms 0: the round length must be positive, got 0.0"),
        (["--round-ms", "fast"], "--round-ms fast: expected a number, got 'fast'"),
        (["--log-level", "loud"], "--log-level loud: unknown logging level 'loud'"),
        (["--max-api-version", "5"], "--max-api-version 5: must be 2, 3 or 4, got 5"),
    ],
)
def test_bad_values_exit_2_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_code_building_a_config_gets_the_same_checks():
    with pytest.raises(ConfigError) as info:
        DevnetConfig(round_ms=-1)
    assert info.value.field == "round_ms"


def test_the_command_reports_a_bad_flag_without_a_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "icws_fast.devnet.cli", "--address", "localhost:99999"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "icws-devnet: error: --address localhost:99999: port 99999 is out of range" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
async def test_the_command_plays_an_older_replica(tmp_path):
    with DevnetProcess(state_dir=tmp_path / "state", extra_args=["--max-api-version", "3"]) as process:
        canister = process.canister_ids["test"]
        async with Agent(process.url, Ed25519Identity.generate(), root_key=process.root_key_der) as agent:
            # The call reaches the canister (which answers that it has no such client: a reply, not a reject).
            await agent.call(canister, "send", candid.encode(candid.parse_args("(principal, blob)"), [canister, b""]))
            await agent.read_state(canister, [[b"time"]])
            versions = [agent.endpoint_version(kind) for kind in ("call", "query", "read_state")]
        assert versions == [3, 3, 2]  # v3 call; read_state found v3 missing; the query was never tried
