"""What a campaign talks to, read once per Locust process from the environment.

``ICWS_GATEWAY_URL`` (``ws://`` or ``wss://``), ``ICWS_IC_URL`` (the replica or boundary node; mainnet's root key
is built in, any other URL is asked for its ``/api/v2/status``), ``ICWS_CANISTER_ID`` (the echo canister),
``ICWS_CHAT_CANISTER_ID`` and ``ICWS_FIREHOSE_CANISTER_ID``: a canister id left unset is looked up by name on the
devnet's ``/_devnet/canisters``, so against a devnet none is needed. ``ICWS_IDENTITY_PEM`` names a PEM key file
(Ed25519, secp256k1 or P-256, as ``dfx identity export`` writes it) that every user signs with; without it each
connection has a fresh Ed25519 identity.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import urllib.error
import urllib.request
from functools import cache
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from icws_fast.client import fetch_root_key
from icws_fast.errors import ConfigError, IcwsError, TransportError
from icws_fast.ic import candid
from icws_fast.ic.envelope import build_envelope, call_content
from icws_fast.ic.identity import Ed25519Identity, Identity, identity_from_pem
from icws_fast.ic.principal import Principal

GATEWAY_URL: Final = os.environ.get("ICWS_GATEWAY_URL", "ws://127.0.0.1:8080")
IC_URL: Final = os.environ.get("ICWS_IC_URL", "http://127.0.0.1:4943")
#: How long one wait for a message (an echo's answer, a stream's next message) may take.
RECV_TIMEOUT_S: Final = float(os.environ.get("ICWS_RECV_TIMEOUT_S", "30"))
#: The firehose's rate while a campaign with firehose subscribers runs; ``ICWS_FIREHOSE_CONFIGURE=0`` leaves a
#: canister that someone else drives alone.
FIREHOSE_MESSAGES_PER_ROUND: Final = int(os.environ.get("ICWS_FIREHOSE_MESSAGES_PER_ROUND", "2"))
FIREHOSE_INTERVAL_MS: Final = int(os.environ.get("ICWS_FIREHOSE_INTERVAL_MS", "250"))
FIREHOSE_PAYLOAD_SIZE: Final = int(os.environ.get("ICWS_FIREHOSE_PAYLOAD_SIZE", "64"))
FIREHOSE_CONFIGURE: Final = os.environ.get("ICWS_FIREHOSE_CONFIGURE", "1") != "0"

#: The environment variable naming each canister's id, by the name the devnet gives it.
_CANISTER_ENV: Final = {
    "test": "ICWS_CANISTER_ID",
    "chat": "ICWS_CHAT_CANISTER_ID",
    "firehose": "ICWS_FIREHOSE_CANISTER_ID",
}
_FIREHOSE_CONFIG: Final = candid.parse_args(
    "(record { messages_per_round : nat32; payload_size : nat32; interval_ms : nat64 })"
)
_HTTP_TIMEOUT_S: Final = 10.0


@cache
def _devnet_canisters() -> dict[str, str]:
    url = f"{IC_URL.rstrip('/')}/_devnet/canisters"
    try:
        with urllib.request.urlopen(url, timeout=_HTTP_TIMEOUT_S) as response:
            return {str(name): str(cid) for name, cid in json.load(response)["canisters"].items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            "canister id",
            f"cannot list the devnet's canisters at {url} ({exc}); against anything but a devnet set "
            + ", ".join(sorted(_CANISTER_ENV.values())),
        ) from exc


@cache
def canister_id(name: str) -> Principal:
    """The id of canister ``name`` (``test``, ``chat`` or ``firehose``): its variable, else the devnet's."""
    variable = _CANISTER_ENV[name]
    text = os.environ.get(variable) or _devnet_canisters().get(name)
    if text is None:
        raise ConfigError(variable, f"the devnet at {IC_URL} hosts no {name!r} canister; set {variable}")
    try:
        return Principal.from_text(text)
    except IcwsError as exc:
        raise ConfigError(variable, f"{text!r} is not a canister id: {exc}") from exc


@cache
def root_key() -> bytes:
    """The root key of ``ICWS_IC_URL``, read once per process instead of once per user."""
    return fetch_root_key(IC_URL)


@cache
def _shared_identity() -> Identity | None:
    path = os.environ.get("ICWS_IDENTITY_PEM")
    if not path:
        return None
    try:
        return identity_from_pem(Path(path).read_bytes())
    except OSError as exc:
        raise ConfigError("ICWS_IDENTITY_PEM", f"cannot read {path}: {exc}") from exc


def identity() -> Identity:
    """The identity a new connection signs with: ``ICWS_IDENTITY_PEM``'s key, else a fresh Ed25519 key."""
    return _shared_identity() or Ed25519Identity.generate()


def unreachable() -> list[str]:
    """What of the gateway and the replica does not accept TCP connections, as ``"gateway at HOST:PORT"``."""
    down = []
    for what, url, default_port in (("gateway", GATEWAY_URL, 80), ("replica", IC_URL, 80)):
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme in ("https", "wss") else default_port)
        try:
            socket.create_connection((parts.hostname or "", port), timeout=3).close()
        except OSError:
            down.append(f"{what} at {parts.hostname}:{port}")
    return down


def configure_firehose(messages_per_round: int) -> None:
    """Set the firehose's rate (0 stops it) with one update call, answered ``202`` on the ``/api/v2`` endpoint.

    Raises :class:`~icws_fast.errors.TransportError` when the replica refuses it.
    """
    firehose = canister_id("firehose")
    config = {
        "messages_per_round": messages_per_round,
        "payload_size": FIREHOSE_PAYLOAD_SIZE,
        "interval_ms": FIREHOSE_INTERVAL_MS,
    }
    signer = identity()
    content = call_content(
        signer.sender,
        firehose,
        "configure",
        candid.encode(_FIREHOSE_CONFIG, [config]),
        nonce=secrets.token_bytes(16),
    )
    url = f"{IC_URL.rstrip('/')}/api/v2/canister/{firehose}/call"
    request = urllib.request.Request(
        url, data=build_envelope(signer, content), headers={"Content-Type": "application/cbor"}
    )
    try:
        with urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT_S) as response:
            status = response.status
    except (OSError, urllib.error.URLError) as exc:
        raise TransportError(f"configuring the firehose at {url} failed: {exc}") from exc
    if status != 202:
        raise TransportError(f"configuring the firehose at {url}: HTTP {status}, expected 202")
