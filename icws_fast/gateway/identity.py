"""The gateway's own identity: an Ed25519 key pair kept in ``./data/key_pair`` across restarts.

The file holds the PKCS#8 DER document, as the Rust gateway writes it, so a deployment can
move between the two gateways and keep its principal (which canisters and clients know).
A PEM file is accepted too.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from icws_fast.ic.identity import Ed25519Identity


def load_or_create_identity(path: Path) -> Ed25519Identity:
    """The identity stored at ``path``, created (owner-only permissions) when the file is missing."""
    if path.exists():
        raw = path.read_bytes()
        if raw.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(raw, password=None)
        else:
            key = serialization.load_der_private_key(raw, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 key")
    else:
        key = Ed25519PrivateKey.generate()
        der = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(der)
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return Ed25519Identity.from_seed(seed)
