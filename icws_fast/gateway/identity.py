"""The gateway's own identity: an Ed25519 key pair kept in ``./data/key_pair`` across restarts.

The file holds the version-2 PKCS#8 DER document, as the Rust gateway (ring) writes it, so a
deployment can move between the two gateways and keep its principal (which canisters and
clients know). Version-1 PKCS#8 and PEM files are accepted too.
"""

from __future__ import annotations

import os
from pathlib import Path

from icws_fast.errors import ConfigError, DecodeError
from icws_fast.ic.identity import Ed25519Identity


def key_file(data_dir: Path, worker: int = 0) -> Path:
    """Where worker ``worker`` of ``--workers`` keeps its key pair: ``key_pair`` for worker 0 (the file of a single
    gateway process, so a deployment growing to several workers keeps its principal), ``key_pair_<i>`` for the
    others. Each worker has its own principal: the canister keeps one message queue per gateway principal."""
    return data_dir / ("key_pair" if worker == 0 else f"key_pair_{worker}")


def load_or_create_identity(path: Path) -> Ed25519Identity:
    """The identity stored at ``path``, created (owner-only permissions) when the file is missing.

    A file that cannot be read or created, or that holds no Ed25519 key, raises
    :class:`~icws_fast.errors.ConfigError` (field ``data_dir``) saying which file and what to do.
    """
    try:
        if path.exists():
            raw = path.read_bytes()
            try:
                if raw.lstrip().startswith(b"-----BEGIN"):
                    return Ed25519Identity.from_pem(raw)
                return Ed25519Identity.from_der(raw)
            except DecodeError:
                raise ConfigError(
                    "data_dir",
                    f"{path} holds no Ed25519 key pair (PKCS#8 DER or PEM): restore the gateway's key_pair,"
                    " or move the file away to have a new one created (the gateway's principal then changes)",
                ) from None
        identity = Ed25519Identity.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(identity.to_der())
    except OSError as exc:
        raise ConfigError(
            "data_dir", f"cannot read or create {path}: {exc.strerror}; point --data-dir at a writable directory"
        ) from None
    return identity
