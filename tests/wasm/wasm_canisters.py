"""Helpers of the Wasm canister tests: the modules they run and hosts wired to one network."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

import wasmtime

from icws_fast.devnet.replica import canister_id_from_index
from icws_fast.devnet.wasm import Network, WasmCanister, WasmHost
from icws_fast.ic.principal import Principal

HERE: Final = Path(__file__).resolve().parent
#: The canister modules built from public sources (``../shared/canisters``, beside the checkout, as the vectors).
CANISTERS: Final = Path(os.environ.get("ICWS_CANISTERS", HERE.parents[2] / "shared" / "canisters"))
#: The official Motoko CDK's integration-test canister (wasm64), see ../shared/canisters/README.md.
MOTOKO_CDK_CANISTER: Final = CANISTERS / "ic_websocket_cdk_mo_test_canister.wasm"
SYSTEM_API_WAT: Final = HERE / "system_api.wat"


def build_wat(source: Path, out_dir: Path) -> Path:
    """Assemble a ``.wat`` file into ``out_dir``; returns the ``.wasm`` path."""
    target = out_dir / source.with_suffix(".wasm").name
    target.write_bytes(wasmtime.wat2wasm(source.read_text()))
    return target


class Subnet:
    """Wasm hosts on one :class:`Network`, installed at indices 0, 1, ... (no replica, no HTTP)."""

    def __init__(self) -> None:
        self.hosts: dict[Principal, object] = {}
        self.network = Network(self.hosts)

    def install(self, spec: WasmCanister, now_ns: int = 1) -> WasmHost:
        canister_id = canister_id_from_index(len(self.hosts))
        host = WasmHost.install(canister_id, f"c{len(self.hosts)}", spec, self.network, now_ns)
        self.hosts[canister_id] = host
        return host
