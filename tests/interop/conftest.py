"""Fixtures of the interop tests: the Node.js runtime with the pinned npm packages of this folder."""

from __future__ import annotations

import shutil

import pytest

from icws_fast.devnet.run_all import npm_ci
from tests.interop.ws_stack import HERE


@pytest.fixture(scope="session")
def node() -> str:
    """The ``node`` executable, with this folder's packages installed; skips the test when Node is missing."""
    path = shutil.which("node")
    if path is None:
        pytest.skip("node is not installed")
    npm_ci(HERE)
    return path
