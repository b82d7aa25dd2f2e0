"""The image's start-up scripts, run for real on this machine (no Docker daemon needed, none is here).

``deploy/docker/entrypoint.sh`` starts the real ``icws-gateway`` in front of a devnet: as root on a data
directory another user owns (it must give the directory to uid 10001 and run the gateway as 10001, keeping the
identity found there), as uid 10001 on its own directory, and as uid 10001 on a directory it cannot write (it
must refuse with a message that says what to run). ``deploy/docker/healthcheck.py`` is asked about a live
gateway, a server that answers 503 and a port where nothing listens. ``scripts/certbot_certonly.sh
--permissions-only`` is run on a directory laid out as certbot lays out /etc/letsencrypt.

Root is needed to give files to other users and to become uid 10001 (``setpriv``); the sandbox and CI run as
root. The image build itself (``docker build``) is not tested: no daemon.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from icws_fast.gateway.identity import load_or_create_identity
from icws_fast.gateway.metrics import GatewayMetrics, HealthServer
from tests.processes import REPO, DevnetProcess, GatewayProcess, console_script, free_port

ENTRYPOINT = REPO / "deploy" / "docker" / "entrypoint.sh"
HEALTHCHECK = REPO / "deploy" / "docker" / "healthcheck.py"
ICWS_UID = 10001  # the image's user (and group)
OTHER_UID = 4242  # a host user who owns the mounted directory
AS_ICWS = ["setpriv", f"--reuid={ICWS_UID}", f"--regid={ICWS_UID}", "--clear-groups"]
# The entrypoint runs `icws-gateway` from PATH: this environment's.
PATH_ENV = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv (util-linux) to give files to other users and to run as uid 10001",
)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A temporary directory uid 10001 may enter (pytest's tmp_path is root's alone)."""
    with tempfile.TemporaryDirectory(prefix="icws-image-") as name:
        path = Path(name)
        path.chmod(0o755)
        yield path


def chown_tree(path: Path, uid: int) -> None:
    for entry in [path, *path.rglob("*")]:
        os.chown(entry, uid, uid)


def owners(path: Path) -> set[tuple[int, int]]:
    return {(entry.stat().st_uid, entry.stat().st_gid) for entry in [path, *path.rglob("*")]}


@dataclass
class EntrypointGateway(GatewayProcess):
    """The gateway started through the image's entrypoint, as the user ``as_user`` switches to (none: root)."""

    as_user: list[str] = field(default_factory=list)

    def command(self) -> list[str]:
        gateway = console_script("icws-gateway", "icws_fast.gateway")
        command = super().command()
        assert command[: len(gateway)] == gateway
        return [*self.as_user, "sh", str(ENTRYPOINT), *command[len(gateway) :]]


def process_ids(pid: int) -> dict[str, str]:
    """The fields of /proc/PID/status (Uid, Gid, Groups, CapEff, ...), their whitespace collapsed."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = " ".join(value.split())
    return fields


def skip_unless_10001_runs_python(command: list[str]) -> None:
    """Skip unless uid 10001 can run ``command``, which starts this environment's Python as the entrypoint would.

    icws-gateway's interpreter is this environment's; one installed where 10001 may not go (under a 0700 /root,
    say) cannot start the gateway as 10001, whatever the entrypoint does.
    """
    if subprocess.run([*AS_ICWS, *command], capture_output=True, check=False).returncode != 0:
        pytest.skip(f"uid {ICWS_UID} cannot run this environment's Python ({os.path.realpath(sys.executable)})")


def run_healthcheck(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK)],
        env={**os.environ, "ICWS_HEALTH_URL": url},
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def devnet() -> Iterator[DevnetProcess]:
    with DevnetProcess() as running:
        yield running


@pytest.mark.slow
def test_as_root_the_data_dir_goes_to_10001_and_the_gateway_runs_as_10001(
    devnet: DevnetProcess, shared_dir: Path
) -> None:
    skip_unless_10001_runs_python([sys.executable, "-c", ""])  # setpriv execs the gateway
    data = shared_dir / "data"
    identity = load_or_create_identity(data / "key_pair")  # an identity from an earlier run, 0600
    (data / "traces").mkdir()
    data.chmod(0o700)
    chown_tree(data, OTHER_UID)
    gateway = EntrypointGateway(ic_url=devnet.url, data_dir=data, env=PATH_ENV)
    gateway.start()
    try:
        assert gateway.principal == str(identity.sender), "the identity in the data directory was not kept"
        ids = process_ids(gateway.pid)  # setpriv execs the gateway: same pid
        assert ids["Uid"] == ids["Gid"] == f"{ICWS_UID} {ICWS_UID} {ICWS_UID} {ICWS_UID}", ids
        assert ids["Groups"] == "", ids
        assert ids["CapPrm"] == ids["CapEff"] == "0" * 16, ids  # no root capability survives the switch
        assert owners(data) == {(ICWS_UID, ICWS_UID)}
        assert run_healthcheck(f"{gateway.metrics_url}/health").returncode == 0
    finally:
        assert gateway.stop() == 0, gateway.output


@pytest.mark.slow
def test_as_10001_on_its_own_data_dir_the_gateway_starts(devnet: DevnetProcess, shared_dir: Path) -> None:
    """The Kubernetes path: runAsUser 10001, and fsGroup gave the volume to 10001."""
    skip_unless_10001_runs_python(["sh", "-c", 'exec "$0" -c ""', sys.executable])  # the entrypoint's shell execs
    data = shared_dir / "data"
    data.mkdir()
    chown_tree(data, ICWS_UID)
    gateway = EntrypointGateway(ic_url=devnet.url, data_dir=data, env=PATH_ENV, as_user=AS_ICWS)
    gateway.start()
    try:
        assert process_ids(gateway.pid)["Uid"].split()[0] == str(ICWS_UID)
        assert (data / "key_pair").exists()
    finally:
        assert gateway.stop() == 0, gateway.output


@pytest.mark.parametrize("key_mode", [0o600, 0o400])
def test_as_10001_a_usable_data_dir_is_handed_to_the_gateway(shared_dir: Path, key_mode: int) -> None:
    """The entrypoint's checks pass for a directory 10001 may write, with a key it may only read (0400: the way
    a Kubernetes Secret is mounted), and it execs icws-gateway with the flags as given, as the same user.

    ``icws-gateway`` here is a stand-in that reports what it was started with, so this runs wherever uid 10001
    cannot start this environment's Python (the tests above start the real gateway where it can).
    """
    data = shared_dir / "data"
    load_or_create_identity(data / "key_pair")  # a key file as the gateway writes it
    (data / "key_pair").chmod(key_mode)
    chown_tree(data, ICWS_UID)
    bin_dir = shared_dir / "bin"
    bin_dir.mkdir()
    (bin_dir / "icws-gateway").write_text('#!/bin/sh\necho "icws-gateway as $(id -u):$(id -g): $*"\n')
    (bin_dir / "icws-gateway").chmod(0o755)
    done = subprocess.run(
        [*AS_ICWS, "sh", str(ENTRYPOINT), "--data-dir", str(data), "--log-level", "warn"],
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, f"icws-gateway as 10001:10001: --data-dir {data} --log-level warn\n")
    assert done.stderr == ""


@pytest.mark.parametrize("spelling", ["--data-dir", "--data-dir="])
@pytest.mark.parametrize("unwritable", ["directory", "key_pair"])
def test_as_10001_an_unwritable_data_dir_is_refused_with_what_to_run(
    shared_dir: Path, spelling: str, unwritable: str
) -> None:
    data = shared_dir / "data"
    data.mkdir()
    if unwritable == "key_pair":  # the directory is 10001's, but a key written by root stays root's
        load_or_create_identity(data / "key_pair")
        os.chown(data, ICWS_UID, ICWS_UID)
    data_args = [f"{spelling}{data}"] if spelling.endswith("=") else [spelling, str(data)]
    done = subprocess.run(
        # Were the gateway started, it would fail on the unreachable IC instead, with another message.
        [*AS_ICWS, "sh", str(ENTRYPOINT), *data_args, "--ic-network-url", f"http://127.0.0.1:{free_port()}"],
        env={**os.environ, **PATH_ENV},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    message = " ".join(done.stderr.split())
    culprit = data if unwritable == "directory" else data / "key_pair"
    mode = "755" if unwritable == "directory" else "600"
    assert f"uid 10001:10001 cannot use {culprit} (owner 0:0, mode {mode})" in message, message
    assert "sudo chown -R 10001:10001 ./data" in message and "without --user" in message, message
    assert "securityContext.fsGroup to 10001" in message, message
    assert sorted(path.name for path in data.iterdir()) == (["key_pair"] if unwritable == "key_pair" else [])


async def test_healthcheck_fails_on_a_503_and_on_a_closed_port() -> None:
    server = HealthServer(GatewayMetrics(), is_ready=lambda: False)
    await server.start("127.0.0.1", 0)
    try:
        base = f"http://127.0.0.1:{server.port}"
        healthy, not_ready = await asyncio.gather(
            asyncio.to_thread(run_healthcheck, f"{base}/health"), asyncio.to_thread(run_healthcheck, f"{base}/ready")
        )
    finally:
        await server.stop()
    assert healthy.returncode == 0, healthy.stderr
    assert (not_ready.returncode, not_ready.stderr) == (1, f"icws-healthcheck: {base}/ready answered 503\n")
    closed = f"http://127.0.0.1:{free_port()}/health"
    refused = run_healthcheck(closed)
    assert refused.returncode == 1 and refused.stderr.startswith(f"icws-healthcheck: {closed}: "), refused.stderr
    assert "refused" in refused.stderr


def test_certbot_permissions_let_the_gateway_read_its_key_and_only_its_key(shared_dir: Path) -> None:
    """certbot's layout: live/ and archive/ 0700, keys 0600, live/DOMAIN/*.pem symlinks into archive/DOMAIN/."""
    letsencrypt = shared_dir / "letsencrypt"
    for domain in ("gateway.example.org", "other.example.org"):
        archive = letsencrypt / "archive" / domain
        live = letsencrypt / "live" / domain
        archive.mkdir(parents=True)
        live.mkdir(parents=True)
        for name, mode in (("fullchain", 0o644), ("privkey", 0o600)):
            (archive / f"{name}1.pem").write_text(f"{name} of {domain}\n")
            (archive / f"{name}1.pem").chmod(mode)
            (live / f"{name}.pem").symlink_to(f"../../archive/{domain}/{name}1.pem")
    (letsencrypt / "live").chmod(0o700)
    (letsencrypt / "archive").chmod(0o700)
    env_file = shared_dir / ".env"
    env_file.write_text("DOMAIN=gateway.example.org\n")

    def read_as_10001(domain: str, name: str) -> subprocess.CompletedProcess[str]:
        path = letsencrypt / "live" / domain / name
        return subprocess.run([*AS_ICWS, "cat", str(path)], capture_output=True, text=True, check=False)

    assert read_as_10001("gateway.example.org", "privkey.pem").returncode != 0
    subprocess.run(
        [str(REPO / "scripts" / "certbot_certonly.sh"), "--permissions-only"],
        env={**os.environ, "ENV_FILE": str(env_file), "LETSENCRYPT_DIR": str(letsencrypt)},
        check=True,
    )
    for name in ("fullchain", "privkey"):
        done = read_as_10001("gateway.example.org", f"{name}.pem")
        assert (done.returncode, done.stdout) == (0, f"{name} of gateway.example.org\n"), done.stderr
    assert read_as_10001("other.example.org", "privkey.pem").returncode != 0
