"""WebAssembly canisters on the devnet: modules run on wasmtime against the ``ic0`` System API."""

from icws_fast.devnet.wasm.binary import WasmModuleError
from icws_fast.devnet.wasm.calls import Network
from icws_fast.devnet.wasm.host import WasmCanister, WasmHost, WasmState

__all__ = ["Network", "WasmCanister", "WasmHost", "WasmModuleError", "WasmState"]
