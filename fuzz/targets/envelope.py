"""Envelope parse and verify (``icws_fast.ic.envelope``): what the gateway reads from every client request.

Each parsed envelope is verified twice: at a time just before its own expiry (so the
checks after the expiry one run: sender, delegations, signatures) and at the fixed
clock against a fixed effective canister id. It is also re-encoded, as a relay may do.
"""

from __future__ import annotations

from collections.abc import Iterator

from fuzz import fixtures
from icws_fast.ic.envelope import build_envelope, call_content, parse_envelope, read_state_content, verify_envelope
from icws_fast.ic.identity import AnonymousIdentity, Identity

PREFIX = 0
_MINUTE_NS = 60 * 10**9


def one_input(data: bytes) -> None:
    envelope = parse_envelope(data)
    envelope.to_cbor()
    verify_envelope(
        envelope, now_ns=max(0, envelope.ingress_expiry - _MINUTE_NS), effective_canister_id=envelope.canister_id
    )
    verify_envelope(envelope, now_ns=fixtures.NOW_NS, effective_canister_id=fixtures.CANISTER)


def signed_envelopes() -> Iterator[bytes]:
    """Well-formed envelopes of each kind, signed by the fuzz identities, valid at :data:`fixtures.NOW_NS`."""
    expiry = fixtures.NOW_NS + 4 * _MINUTE_NS
    identities: list[Identity] = [fixtures.CLIENT, fixtures.delegated_client(), AnonymousIdentity()]
    for identity in identities:
        for request_type in ("call", "query"):
            content = call_content(
                identity.sender,
                fixtures.CANISTER,
                "ws_message",
                b"DIDL\x00\x00",
                ingress_expiry_ns=expiry,
                nonce=b"\x01" * 16,
                request_type=request_type,
            )
            yield build_envelope(identity, content)
        paths = [[b"time"], [b"request_status", b"\x00" * 32, b"reply"]]
        yield build_envelope(identity, read_state_content(identity.sender, paths, ingress_expiry_ns=expiry))


def seeds() -> Iterator[bytes]:
    for record in fixtures.records("envelopes"):
        if record.get("envelope_cbor_hex"):
            yield bytes.fromhex(record["envelope_cbor_hex"])
    yield from signed_envelopes()
