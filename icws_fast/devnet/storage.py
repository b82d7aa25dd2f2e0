"""Persistence of the devnet: key files and the canisters' state in ``--state-dir``.

Layout of the state directory (created when missing):

- ``root_key.hex``: the BLS root secret key (32 bytes, hex), unless ``--root-key-file`` names another file;
- ``subnet_key.hex``: the subnet's BLS secret key when certifying through a delegation;
- ``node_key.hex``: the node's Ed25519 seed (signs query responses);
- ``canisters.pickle``: the canister ids by name and each canister instance with its certified data
  (for a Wasm canister: its memory, globals, stable memory and global timer, a :class:`WasmState`).

The state file is local and written by the devnet itself, so ``pickle`` is acceptable here; each
canister is pickled on its own, so one canister whose state cannot be pickled (say, a lambda in an
attribute) is reinstalled fresh without losing the others. Timers are not persisted: a restored
canister gets ``post_upgrade``, where it re-arms them, as after an upgrade on the IC.
"""

from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from icws_fast.cdk.api import Canister
from icws_fast.devnet.replica import Keys, Replica
from icws_fast.devnet.wasm import WasmHost, WasmState
from icws_fast.ic import bls

log = logging.getLogger(__name__)

STATE_FORMAT: Final = 1
_STATE_FILE: Final = "canisters.pickle"


@dataclass
class SavedCanisters:
    indices: dict[str, int]
    canisters: dict[str, tuple[Canister | WasmState, bytes]]


def _write_atomic(path: Path, data: bytes, *, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def _load_or_create_secret(path: Path | None, create: bytes) -> bytes:
    """The hex secret stored at ``path``; writes ``create`` there first when the file is missing."""
    if path is None:
        return create
    if path.exists():
        text = path.read_text().strip()
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise ValueError(f"{path} does not hold a hex-encoded key") from None
    _write_atomic(path, create.hex().encode() + b"\n", private=True)
    return create


def load_keys(
    state_dir: Path | None,
    root_key_file: Path | None,
    *,
    subnet_delegation: bool,
    root_key_seed: bytes | None = None,
) -> Keys:
    """Load the devnet's keys from the state dir / root key file, generating the missing ones."""
    root_path = root_key_file or (state_dir / "root_key.hex" if state_dir is not None else None)
    root = _load_or_create_secret(root_path, bls.generate_secret_key(root_key_seed))
    bls.public_key(root)  # reject a bad key file now, with a clear error
    node = _load_or_create_secret(state_dir / "node_key.hex" if state_dir else None, os.urandom(32))
    subnet = None
    if subnet_delegation:
        subnet = _load_or_create_secret(state_dir / "subnet_key.hex" if state_dir else None, bls.generate_secret_key())
    return Keys(root_secret_key=root, node_seed=node, subnet_secret_key=subnet)


def load_canisters(state_dir: Path) -> SavedCanisters | None:
    """The canisters saved in ``state_dir``, or None when there is no (readable) state file."""
    path = state_dir / _STATE_FILE
    if not path.exists():
        return None
    try:
        saved = pickle.loads(path.read_bytes())
        if saved.get("format") != STATE_FORMAT:
            raise ValueError(f"unknown state format {saved.get('format')!r}")
        indices = {str(name): int(index) for name, index in saved["indices"].items()}
    except Exception as exc:
        log.error("ignoring unreadable devnet state %s: %r", path, exc)
        return None
    canisters: dict[str, tuple[Canister | WasmState, bytes]] = {}
    for name, (blob, certified_data) in saved["canisters"].items():
        try:
            canisters[name] = (pickle.loads(blob), bytes(certified_data))
        except Exception as exc:
            log.error("canister %s: saved state cannot be loaded (%r); it is reinstalled", name, exc)
    return SavedCanisters(indices, canisters)


def save_canisters(state_dir: Path, replica: Replica) -> None:
    """Write the canister ids and every canister's state to ``state_dir``."""
    canisters: dict[str, tuple[bytes, bytes]] = {}
    for name, canister_id in replica.canister_ids.items():
        host = replica.hosts[canister_id]
        try:
            instance = host.instance_state if isinstance(host, WasmHost) else host.instance
            canisters[name] = (pickle.dumps(instance), host.certified_data)
        except Exception as exc:
            log.warning("canister %s: state cannot be pickled (%r); it will be reinstalled", name, exc)
    state = {"format": STATE_FORMAT, "indices": replica.canister_indices, "canisters": canisters}
    _write_atomic(state_dir / _STATE_FILE, pickle.dumps(state))
