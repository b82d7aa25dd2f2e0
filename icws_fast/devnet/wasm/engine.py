"""The wasmtime engine of the devnet and its cache of compiled canister modules.

Compiling a large canister (the Motoko CDK's test canister: ~2 MB of Wasm) takes seconds, so the
machine code is kept on disk (``Module.serialize``), keyed by the module's hash and the wasmtime
version: a restart, or another test, deserializes it in milliseconds. A cache entry written by
another wasmtime version is never read (its key differs).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import logging
import os
import tempfile
from pathlib import Path
from typing import Final

import wasmtime

log = logging.getLogger(__name__)

#: Bumped when the engine configuration changes, so that machine code compiled differently is not reused.
_CONFIG_VERSION: Final = 1


@functools.cache
def engine() -> wasmtime.Engine:
    """The process's engine: memory64 (Motoko's enhanced orthogonal persistence) and fuel (instruction limits)."""
    config = wasmtime.Config()
    config.wasm_memory64 = True
    config.consume_fuel = True
    return wasmtime.Engine(config)


def default_cache_dir() -> Path:
    """``$ICWS_WASM_CACHE``, else ``$XDG_CACHE_HOME/icws-fast/wasm`` (``~/.cache/icws-fast/wasm``)."""
    explicit = os.environ.get("ICWS_WASM_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "icws-fast" / "wasm"


_compiled: dict[bytes, wasmtime.Module] = {}


def compile_module(wasm: bytes, cache_dir: Path | None) -> wasmtime.Module:
    """``wasm`` compiled for :func:`engine`, from the in-process or on-disk cache when possible.

    Raises ``wasmtime.WasmtimeError`` when the module does not validate.
    """
    version = importlib.metadata.version("wasmtime")
    key = hashlib.sha256(wasm + f"|wasmtime {version}|config {_CONFIG_VERSION}".encode()).digest()
    module = _compiled.get(key)
    if module is not None:
        return module
    path = cache_dir / f"{key.hex()}.cwasm" if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            module = wasmtime.Module.deserialize_file(engine(), str(path))
        except wasmtime.WasmtimeError as exc:  # a truncated or foreign file: compile again
            log.warning("ignoring unusable compiled module %s: %s", path, exc)
    if module is None:
        module = wasmtime.Module(engine(), wasm)
        if path is not None:
            _store(path, module.serialize())
    _compiled[key] = module
    return module


def _store(path: Path, data: bytes | bytearray) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only cache only costs the next start a compilation
        log.warning("cannot cache the compiled module in %s: %s", path.parent, exc)
