"""The wheel users install: ``python -m build --wheel`` holds the compiled extensions, and installed into a clean
venv it runs the devnet, the gateway and a client with no source tree in sight."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from icws_fast.devnet.run_all import READY_BANNER
from tests.processes import REPO, free_port

pytestmark = pytest.mark.slow

EXTENSIONS = sorted(path.stem for path in (REPO / "icws_fast" / "_ext").glob("*.pyx"))

# Run by the venv's Python from a directory outside the checkout: every import must come from the venv.
CLIENT = """
import asyncio, json, sys
import icws_fast, icws_fast._ext
from icws_fast.client import IcWebSocket

gateway_url, canister_id, ic_url = sys.argv[1:]

async def main():
    ws = await IcWebSocket.connect(gateway_url, canister_id, ic_url)
    greeting = await ws.recv()
    await ws.send({"text": "hello", "timestamp": 0})
    answer = await ws.recv()
    await ws.close()
    compiled = all(pure is not bound for pure, bound in icws_fast._ext.BINDINGS.values())
    print(json.dumps({"file": icws_fast.__file__, "compiled": compiled, "greeting": greeting, "answer": answer}))

asyncio.run(main())
"""


def _env() -> dict[str, str]:
    """A clean environment: no PYTHONPATH (the checkout must not be importable), compiled modules required; pip's
    settings and cache location (PIP_*, XDG_*) kept, so the install reuses pip's cache and index."""
    kept = {name: value for name, value in os.environ.items() if name.startswith(("PIP_", "XDG_"))}
    kept |= {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TMPDIR") if name in os.environ}
    return kept | {"ICWS_FAST_REQUIRE_EXT": "1"}


def _run(argv: list[str | Path], cwd: Path, timeout: float) -> str:
    done = subprocess.run(argv, check=False, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.timeout(1200)
def test_the_wheel_installs_into_a_clean_venv_and_runs(tmp_path: Path) -> None:
    # The files of a fresh clone (with this checkout's changes): no stale build/ nor in-place modules slip in.
    source = tmp_path / "source"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    for name in filter(None, listed.stdout.split("\0")):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    # The command a user runs; the build isolation fetches setuptools and Cython (pip's cache keeps them).
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", tmp_path / "dist", source], tmp_path, 900)
    (wheel,) = (tmp_path / "dist").glob("icws_fast-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert len(EXTENSIONS) >= 4  # _cbor, _fanout, _hashtree, _wsbatch at least: the glob found the sources
    for stem in EXTENSIONS:
        assert [name for name in names if re.fullmatch(rf"icws_fast/_ext/{stem}\..*\.so", name)], stem
        assert f"icws_fast/_ext/{stem}.pyi" in names
    assert "icws_fast/py.typed" in names
    assert not [name for name in names if name.endswith(".c")]
    version = wheel.name.split("-")[1]

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], tmp_path, 120)
    python = venv / "bin" / "python"
    _run([python, "-m", "pip", "install", "--quiet", wheel], tmp_path, 600)
    assert _run([venv / "bin" / "icws-gateway", "--version"], tmp_path, 60) == f"icws-gateway {version}\n"
    assert _run([venv / "bin" / "icws-devnet", "--version"], tmp_path, 60) == f"icws-devnet {version}\n"

    devnet, gateway, metrics, page = (f"127.0.0.1:{free_port()}" for _ in range(4))
    argv = [python, "-m", "icws_fast.devnet.run_all", "--devnet-address", devnet, "--gateway-address", gateway]
    argv += ["--metrics-address", metrics, "--chat-page-address", page]
    run = subprocess.Popen(argv, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert run.stdout is not None
    try:
        printed = []
        for line in run.stdout:  # pytest-timeout bounds the wait; the output ends if run_all fails
            printed.append(line)
            if line.startswith(READY_BANNER):
                break
        banner = "".join(printed)
        assert READY_BANNER in banner, banner
        # No source checkout around the installed package: the page is left out, not failed.
        assert "chat page: not in this installation" in banner
        found = re.search(r"^canister test +(\S+)$", banner, re.MULTILINE)
        assert found is not None, banner
        result = _run([python, "-c", CLIENT, f"ws://{gateway}", found[1], f"http://{devnet}"], tmp_path, 120)
    finally:
        run.send_signal(signal.SIGINT)
        run.communicate(timeout=60)
    answer = json.loads(result)
    assert Path(answer["file"]).is_relative_to(venv)
    assert answer["compiled"] is True
    assert answer["greeting"]["text"] == "ping"
    assert answer["answer"]["text"] == "hello ping"
    assert run.returncode == 0
