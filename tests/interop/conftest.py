"""Fixtures of the interop tests: the Node.js runtime with the pinned npm packages of this folder."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Final

import pytest

HERE: Final = Path(__file__).resolve().parent


def npm_ci(project: Path) -> None:
    """``npm ci`` in ``project`` unless its ``node_modules`` matches ``package-lock.json`` (``make test`` ran it)."""
    installed = project / "node_modules" / ".package-lock.json"  # npm's record of what node_modules holds
    if installed.is_file() and installed.stat().st_mtime >= (project / "package-lock.json").stat().st_mtime:
        return
    npm = shutil.which("npm")
    assert npm is not None, f"node is installed but npm is not: cannot install the packages pinned in {project}"
    subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=project, check=True, timeout=600)


@pytest.fixture(scope="session")
def node() -> str:
    """The ``node`` executable, with this folder's packages installed; skips the test when Node is missing."""
    path = shutil.which("node")
    if path is None:
        pytest.skip("node is not installed")
    npm_ci(HERE)
    return path
