"""Fixtures of the Wasm canister tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.wasm.wasm_canisters import SYSTEM_API_WAT, build_wat


@pytest.fixture(scope="session")
def system_api_wasm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/wasm/system_api.wat assembled (wasm32)."""
    return build_wat(SYSTEM_API_WAT, tmp_path_factory.mktemp("wat"))
