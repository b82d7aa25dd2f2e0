"""The ``icws-gateway`` command: flags, identity kept across restarts, logs, signals; EnvFilter parsing."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import icws_fast
from icws_fast.cliconfig import ConfigError, config_from_argv
from icws_fast.gateway.cli import build_parser, main
from icws_fast.gateway.config import GatewayConfig, flag_table
from icws_fast.gateway.identity import load_or_create_identity
from icws_fast.gateway.logs import EnvFilter
from icws_fast.ic.identity import Ed25519Identity
from icws_fast.ic.principal import Principal
from tests.gateway.gw_harness import OFFLINE_ROOT_KEY, start_offline_gateway
from tests.gateway.gw_rawclient import RawClient
from tests.processes import GatewayProcess


def _config(argv: list[str], environ: dict[str, str] | None = None) -> GatewayConfig:
    return config_from_argv(GatewayConfig, build_parser(), argv, environ=environ or {})


def test_defaults_match_the_rust_gateway():
    config = _config([])
    assert config == GatewayConfig()
    assert (config.host, config.port) == ("0.0.0.0", 8080)
    assert config.ic_url == "http://127.0.0.1:4943"
    assert config.polling_interval_s == 0.1  # --polling-interval 100 (ms)
    assert (config.metrics_host, config.metrics_port) == ("0.0.0.0", 9000)
    assert config.tls_certificate_pem_path is None and config.opentelemetry_collector_endpoint is None
    assert (config.log_level, config.log_file_level, config.data_dir) == ("info", "trace", Path("data"))


def _flag_defaults() -> list[tuple[str, str]]:
    """(flag, default as flag text) of every flag with a default, read off the help the user sees."""
    help_text = " ".join(build_parser().format_help().split())
    found = re.findall(r"(--[a-z-]+) [A-Z{][^ ]* [^-]*?\(default: ([^)]*)\)", help_text)
    return [(name, default) for name, default in found if name != "--help"]


def test_every_flag_default_is_the_dataclass_default():
    defaults = _flag_defaults()
    flagged = [f for f in dataclasses.fields(GatewayConfig) if f.metadata and f.metadata["icws_fast.flag"].name]
    no_default = {"--tls-certificate-pem-path", "--tls-certificate-key-pem-path"}
    no_default |= {"--opentelemetry-collector-endpoint", "--allowed-canister-id", "--trusted-proxies"}
    assert len(defaults) == len(flagged) - len(no_default)
    for name, text in defaults:
        # Passing the default shown by --help gives the dataclass's default config.
        assert _config([name, text]) == GatewayConfig(), name


def test_help_shows_the_defaults_and_the_variables():
    proc = subprocess.run(
        [sys.executable, "-m", "icws_fast.gateway", "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    help_text = " ".join(proc.stdout.split())
    for expected in [
        "--gateway-address HOST:PORT WebSocket listen address (default: 0.0.0.0:8080)",
        "(default: http://127.0.0.1:4943)",
        "canister polling interval, in ms (default: 100)",
        "(default: 0.0.0.0:9000)",
        "(default: 262144)",
        "(default: info) [env: RUST_LOG_STDOUT]",
        "RUST_LOG_FILE: ",
    ]:
        assert expected in help_text


def test_flag_table_lists_every_setting():
    table = flag_table()
    assert table.startswith("| Flag | Env | Default | Meaning |")
    assert "| `--gateway-address HOST:PORT` |  | `0.0.0.0:8080` | WebSocket listen address |" in table
    assert "| `--log-level FILTER` | `RUST_LOG_STDOUT` | `info` |" in table
    assert "|  | `RUST_LOG_FILE` | `trace` |" in table
    assert len(table.splitlines()) == 2 + sum(1 for f in dataclasses.fields(GatewayConfig) if f.metadata)


def test_flags_and_variables_reach_the_config(tmp_path):
    config = _config(
        ["--gateway-address", "[::1]:0", "--polling-interval", "250", "--log-level", "debug"],
        {"RUST_LOG_STDOUT": "warn", "RUST_LOG_FILE": "info"},
    )
    assert (config.host, config.port) == ("::1", 0)
    assert config.polling_interval_s == 0.25
    assert config.log_level == "debug"  # the flag wins over the variable
    assert config.log_file_level == "info"
    assert _config([], {"RUST_LOG_STDOUT": "warn"}).log_level == "warn"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]


def test_allow_list_flag():
    config = _config(["--allowed-canister-id", "aaaaa-aa", "--allowed-canister-id", "2vxsx-fae"])
    assert config.allowed_canisters == {Principal.from_text("aaaaa-aa"), Principal.from_text("2vxsx-fae")}


def test_trusted_proxies_flag_takes_cidrs_separated_by_commas_and_repeats():
    config = _config(["--trusted-proxies", "10.0.0.0/8, 127.0.0.1", "--trusted-proxies", "fd00::/8"])
    assert config.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("fd00::/8"),
    )
    assert _config([]).trusted_proxies == ()  # the default: X-Forwarded-For is never believed


def test_trusted_proxies_set_in_code_must_be_networks():
    with pytest.raises(ConfigError, match=r"trusted_proxies: expected ipaddress networks .* got '10.0.0.0/8'"):
        GatewayConfig(trusted_proxies=("10.0.0.0/8",))  # type: ignore[arg-type]


def _junk_pem(tmp_path: Path) -> tuple[str, str]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    key.write_text("not a key")
    return str(cert), str(key)


BAD_FLAGS = [
    (["--gateway-address", "nope"], "--gateway-address nope: expected HOST:PORT, got 'nope'"),
    (
        ["--gateway-address", "0.0.0.0:70000"],
        "--gateway-address 0.0.0.0:70000: port 70000 is out of range (0-65535)",
    ),
    (
        ["--prometheus-endpoint", "127.0.0.1:65536"],
        "--prometheus-endpoint 127.0.0.1:65536: port 65536 is out of range (0-65535)",
    ),
    (["--polling-interval", "0"], "--polling-interval 0: the polling interval must be positive, got 0.0"),
    (["--polling-interval", "0.5"], "--polling-interval 0.5: expected a whole number, got '0.5'"),
    (["--max-message-size", "0"], "--max-message-size 0: the size must be positive, got 0"),
    (["--max-send-buffer", "-1"], "--max-send-buffer -1: the size must be positive, got -1"),
    (["--max-clients", "0"], "--max-clients 0: the limit must be positive, got 0"),
    (["--max-concurrent-calls", "0"], "--max-concurrent-calls 0: the limit must be positive, got 0"),
    (["--handshake-timeout", "0"], "--handshake-timeout 0: the timeout must be positive, got 0.0"),
    (["--ping-interval", "-1"], "--ping-interval -1: the ping interval must be at least 0, got -1.0"),
    (
        ["--ic-network-url", "ftp://127.0.0.1:4943"],
        "--ic-network-url ftp://127.0.0.1:4943: expected an http:// or https:// URL with a host",
    ),
    (["--ic-network-url", "127.0.0.1:4943"], "expected an http:// or https:// URL with a host, got '127.0.0.1:4943'"),
    (["--ic-network-url", "http://"], "--ic-network-url http://: expected an http:// or https:// URL with a host"),
    (["--ic-network-url", "http://localhost:port"], "--ic-network-url http://localhost:port: malformed URL"),
    (["--ic-network-url", "http://localhost:0"], "port 0 is out of range (1-65535)"),
    (
        ["--opentelemetry-collector-endpoint", "otel-collector"],
        "--opentelemetry-collector-endpoint otel-collector: it names no port (a collector listens for OTLP/gRPC on"
        " 4317 unless told otherwise); give http://HOST:PORT (plaintext), https://HOST[:PORT] (TLS) or HOST:PORT,"
        " e.g. http://127.0.0.1:4317",
    ),
    (
        ["--opentelemetry-collector-endpoint", "http://otel-collector"],
        "--opentelemetry-collector-endpoint http://otel-collector: it names no port",
    ),
    (
        ["--opentelemetry-collector-endpoint", "grpc://otel-collector:4317"],
        "--opentelemetry-collector-endpoint grpc://otel-collector:4317: grpc:// is not a scheme of OTLP/gRPC",
    ),
    (["--opentelemetry-collector-endpoint", "http://:4317"], "http://:4317: it names no host; give http://HOST:PORT"),
    (
        ["--opentelemetry-collector-endpoint", "http://otel-collector:431700"],
        "--opentelemetry-collector-endpoint http://otel-collector:431700: the port is not a number from 1 to 65535",
    ),
    (["--opentelemetry-collector-endpoint", "otel-collector:0"], "otel-collector:0: the port is not a number from 1"),
    (
        ["--opentelemetry-collector-endpoint", "http://otel-collector:4318/v1/traces"],
        "http://otel-collector:4318/v1/traces: an OTLP/gRPC endpoint has no path or query",
    ),
    (["--opentelemetry-collector-endpoint", "http://otel collector:4317"], "it contains white space"),
    (["--log-format", "xml"], "argument --log-format: invalid choice: 'xml'"),
    (["--drain", "5"], "unrecognized arguments: --drain 5"),
    (["--log-level", "loud"], "--log-level loud: unknown log level 'loud'"),
    (
        ["--allowed-canister-id", "not-a-principal"],
        "--allowed-canister-id not-a-principal: bad grouping in principal text 'not-a-principal'",
    ),
    (
        ["--trusted-proxies", "10.0.0.1/8"],
        "--trusted-proxies 10.0.0.1/8: expected CIDR networks separated by commas: 10.0.0.1/8 has host bits set",
    ),
    (
        ["--trusted-proxies", "10.0.0.0/8,,"],
        "--trusted-proxies 10.0.0.0/8,,: expected CIDR networks separated by commas:",
    ),
    (
        ["--tls-certificate-pem-path", "cert.pem"],
        "--tls-certificate-pem-path cert.pem: TLS needs both the certificate (--tls-certificate-pem-path)"
        " and its key (--tls-certificate-key-pem-path)",
    ),
]


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1:4317",
        "http://otel-collector:4317/",
        "HTTP://[::1]:4317",
        "https://otel.example.com",
        "https://otel.example.com:4317",
        "otel-collector:4317",
        "[::1]:4317",
        "",  # no tracing, as in the Rust gateway
    ],
)
def test_the_collector_endpoints_the_exporter_can_dial_are_taken(endpoint):
    config = config_from_argv(GatewayConfig, build_parser(), ["--opentelemetry-collector-endpoint", endpoint])
    assert config.opentelemetry_collector_endpoint == endpoint


@pytest.mark.parametrize(("argv", "message"), BAD_FLAGS, ids=[" ".join(argv) for argv, _ in BAD_FLAGS])
def test_bad_flags_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith("usage: icws-gateway") and "Traceback" not in err


def test_a_bad_variable_is_named(capsys, monkeypatch):
    monkeypatch.setenv("RUST_LOG_FILE", "everything")
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "RUST_LOG_FILE=everything: unknown log level 'everything'" in capsys.readouterr().err


def test_tls_files_must_be_readable_and_load(tmp_path, capsys):
    cert, key = _junk_pem(tmp_path)
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(SystemExit):
        main(["--tls-certificate-pem-path", missing, "--tls-certificate-key-pem-path", key])
    err = capsys.readouterr().err
    assert f"--tls-certificate-pem-path {missing}: cannot read {missing!r}: No such file or directory" in err
    with pytest.raises(SystemExit) as info:
        main(["--tls-certificate-pem-path", cert, "--tls-certificate-key-pem-path", key])
    assert info.value.code == 2
    assert f"--tls-certificate-key-pem-path {key}: cannot load the certificate {cert!r} with this key" in (
        capsys.readouterr().err
    )


def _run_cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "icws_fast.gateway", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--gateway-address", "127.0.0.1:99999"], "--gateway-address 127.0.0.1:99999: port 99999 is out of range"),
        (["--max-send-buffer", "0"], "--max-send-buffer 0: the size must be positive, got 0"),
        (["--ic-network-url", "ws://127.0.0.1:4943"], "expected an http:// or https:// URL with a host"),
        (["--opentelemetry-collector-endpoint", "127.0.0.1"], "it names no port"),
    ],
)
def test_the_command_exits_2_without_a_traceback(argv, message, tmp_path):
    proc = _run_cli(*argv, cwd=tmp_path)
    assert proc.returncode == 2
    assert f"icws-gateway: error: {' '.join(argv)}: " in proc.stderr and message in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not (tmp_path / "data").exists()  # refused before anything is created


def test_the_command_names_an_unreadable_tls_file(tmp_path):
    _, key = _junk_pem(tmp_path)
    proc = _run_cli(
        "--tls-certificate-pem-path", "nowhere/cert.pem", "--tls-certificate-key-pem-path", key, cwd=tmp_path
    )
    assert proc.returncode == 2
    assert "--tls-certificate-pem-path nowhere/cert.pem: cannot read 'nowhere/cert.pem'" in proc.stderr
    assert "Traceback" not in proc.stderr


async def test_the_gateway_never_writes_into_its_config():
    gateway = await start_offline_gateway()
    try:
        assert gateway.config.root_key_der is None  # the root key in use is the gateway's, not the config's
        assert gateway.root_key_der == OFFLINE_ROOT_KEY
    finally:
        await gateway.drain()


def test_identity_is_created_once_and_kept(tmp_path):
    path = tmp_path / "data" / "key_pair"
    first = load_or_create_identity(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_identity(path).sender == first.sender
    path.write_bytes(b"not a key")
    with pytest.raises(ValueError):
        load_or_create_identity(path)


def test_identity_reads_the_rust_gateway_key_pair_format(tmp_path):
    # ring's generate_pkcs8 (what the Rust gateway stores) is version-2 PKCS#8, with the public key.
    rust_identity = Ed25519Identity.from_seed(bytes(range(32)))
    der = rust_identity.to_der()
    assert der[:5] == bytes.fromhex("3051020101")  # SEQUENCE, INTEGER 1 (= PKCS#8 version 2)
    path = tmp_path / "data" / "key_pair"
    path.parent.mkdir()
    path.write_bytes(der)
    assert load_or_create_identity(path).sender == rust_identity.sender
    path.write_text(rust_identity.to_pem())
    assert load_or_create_identity(path).sender == rust_identity.sender


def test_env_filter():
    f = EnvFilter("warn,icws_fast::gateway=debug,ic_websocket_gateway::poller=error,picows=off")
    assert f.level_for("icws_fast.gateway.server") == logging.DEBUG
    assert f.level_for("icws_fast.gateway.poller") == logging.ERROR
    assert f.level_for("icws_fast.gatewayx") == logging.WARNING
    assert f.level_for("picows.server") > logging.CRITICAL
    assert f.level_for("aiohttp") == logging.WARNING
    assert f.lowest == logging.DEBUG
    assert EnvFilter("trace").level_for("x") == logging.DEBUG
    with pytest.raises(ValueError):
        EnvFilter("loud")


def _gateway(tmp_path: Path, ic_url: str) -> GatewayProcess:
    # RUST_LOG_FILE: the trace log file records INFO and above.
    return GatewayProcess(ic_url, tmp_path / "data", extra_args=["--log-format", "json"], env={"RUST_LOG_FILE": "info"})


@pytest.mark.slow
async def test_cli_keeps_its_principal_and_exits_0_on_sigterm(tmp_path):
    from icws_fast.devnet import Devnet

    async with Devnet(address="127.0.0.1:0") as devnet:
        async with _gateway(tmp_path, devnet.url) as gateway:
            client = await RawClient.connect(gateway.url)
            assert str(await client.handshake()) == gateway.principal
            assert await gateway.stop_async(signal.SIGTERM) == 0
        assert (tmp_path / "data" / "key_pair").exists()
        logs = list((tmp_path / "data" / "traces").glob("gateway_*.log"))
        assert logs and '"level": "INFO"' in logs[0].read_text()

        async with _gateway(tmp_path, devnet.url) as again:
            assert again.principal == gateway.principal
            assert await again.stop_async(signal.SIGINT) == 0


@pytest.mark.slow
def test_cli_fails_to_start_without_a_replica(tmp_path):
    argv = ["--gateway-address", "127.0.0.1:0", "--prometheus-endpoint", "127.0.0.1:0"]
    proc = _run_cli(*argv, "--ic-network-url", "http://127.0.0.1:9", cwd=tmp_path)
    assert proc.returncode == 1
    text = proc.stderr
    assert text.startswith("icws-gateway: error: the gateway failed to start: GET /api/v2/status to http://127.0.0.1:9")
    assert "cannot connect (connection refused); check --ic-network-url and that the replica is running" in text
    assert "Traceback" not in text and "ClientConnectorError" not in text and len(text.splitlines()) == 1


@pytest.mark.parametrize(("name", "module"), [("gateway", "icws_fast.gateway"), ("devnet", "icws_fast.devnet.cli")])
def test_version(name, module):
    proc = subprocess.run(
        [sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0
    assert proc.stdout == f"icws-{name} {icws_fast.__version__}\n"


def test_a_bad_key_pair_is_named_with_what_to_do(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "key_pair").write_bytes(b"not a key")
    proc = _run_cli("--ic-network-url", "http://127.0.0.1:9", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr == (
        "icws-gateway: error: data/key_pair holds no Ed25519 key pair (PKCS#8 DER or PEM): restore the gateway's"
        " key_pair, or move the file away to have a new one created (the gateway's principal then changes)\n"
    )


def test_an_unwritable_data_dir_is_named_with_what_to_do(tmp_path):
    (tmp_path / "file").write_bytes(b"")  # a data dir under a file can never be created, even by root
    proc = _run_cli("--data-dir", "file/data", "--ic-network-url", "http://127.0.0.1:9", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr == (
        "icws-gateway: error: cannot create file/data/traces: Not a directory; point --data-dir at a writable"
        " directory\n"
    )
