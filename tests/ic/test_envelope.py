"""Envelopes: the shared vectors, building, strict parsing, the IC's admission checks, hostile bytes."""

from __future__ import annotations

import contextlib
import itertools
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icws_fast.errors import EnvelopeError, SignatureError
from icws_fast.ic import cbor
from icws_fast.ic.envelope import (
    MAX_INGRESS_TTL_NS,
    PERMITTED_DRIFT_NS,
    build_envelope,
    call_content,
    default_ingress_expiry,
    parse_envelope,
    read_state_content,
    verify_envelope,
)
from icws_fast.ic.identity import (
    AnonymousIdentity,
    DelegationChain,
    DelegationIdentity,
    Ed25519Identity,
    Identity,
    P256Identity,
    Secp256k1Identity,
)
from icws_fast.ic.principal import Principal
from icws_fast.ic.request_id import REQUEST_DOMAIN, request_id
from tests.ic.test_request_id import typed_map
from tests.vectors import load_vectors

RECORDS = {r["id"]: r for r in load_vectors("envelopes")}
WITH_BYTES = [r for r in RECORDS.values() if "envelope_cbor_hex" in r]
SECOND = 1_000_000_000
NOW = 1_700_000_000 * SECOND
CANISTER = Principal.from_text("ryjl3-tyaaa-aaaaa-aaaba-cai")
OTHER_CANISTER = Principal.from_text("rrkah-fqaaa-aaaaa-aaaaq-cai")


def _signed(identity: Identity, canister: Principal = CANISTER, **kwargs: Any) -> bytes:
    content = call_content(
        identity.sender, canister, "greet", b"DIDL\x00\x00", ingress_expiry_ns=NOW + 60 * SECOND, **kwargs
    )
    return build_envelope(identity, content)


def _reencode(data: bytes, change: Any) -> bytes:
    """Decode an envelope, let ``change`` edit the map, encode it again."""
    obj = cbor.decode(data)
    change(obj)
    return cbor.encode(obj)


@pytest.mark.parametrize("record", WITH_BYTES, ids=[r["id"] for r in WITH_BYTES])
def test_vector_envelopes(record: dict[str, Any]) -> None:
    data = bytes.fromhex(record["envelope_cbor_hex"])
    env = parse_envelope(data)
    content = typed_map(record["content"])
    assert env.content == content
    assert env.request_id.hex() == record["request_id"]
    assert env.request_type == content["request_type"]
    assert env.sender.to_text() == record["sender_principal"]
    assert env.canister_id == Principal(content["canister_id"])
    assert env.method_name == content["method_name"]
    assert env.arg == content["arg"]
    assert env.ingress_expiry == content["ingress_expiry"]
    assert env.paths is None and env.nonce is None and env.sender_delegation is None
    assert (env.sender_pubkey.hex() if env.sender_pubkey else None) == record["sender_pubkey_hex"]
    assert (env.sender_sig.hex() if env.sender_sig else None) == record["sender_sig_hex"]
    if "signed_message_hex" in record:
        assert (REQUEST_DOMAIN + env.request_id).hex() == record["signed_message_hex"]
    verify_envelope(env, now_ns=env.ingress_expiry - 2 * 60 * SECOND, effective_canister_id=env.canister_id)
    assert cbor.decode(env.to_cbor()) == cbor.decode(data)
    assert repr(env).startswith(f"<Envelope {env.request_type} ")


def test_derived_signed_call_is_reproduced() -> None:
    record = RECORDS["derived-ed25519-signed-call"]
    identity = Ed25519Identity.from_seed(bytes.fromhex(record["ed25519_seed_hex"]))
    content = typed_map(record["content"])
    ours = build_envelope(identity, content)
    # Map order may differ between encoders: compare decoded values. Ed25519 is deterministic.
    assert cbor.decode(ours) == cbor.decode(bytes.fromhex(record["envelope_cbor_hex"]))


def test_delegated_request_with_the_golden_chain() -> None:
    record = RECORDS["agentjs-delegation-chain-golden"]
    session = Ed25519Identity.from_seed(bytes.fromhex(record["session_key_seed_hex"]))
    chain = DelegationChain(
        bytes.fromhex(record["sender_pubkey_der_hex"]),
        [
            {"delegation": typed_map(link["delegation"]), "signature": bytes.fromhex(link["signature_hex"])}
            for link in record["sender_delegation"]
        ],
    )
    identity = DelegationIdentity(session, chain)
    expiration = chain.delegations[0]["delegation"]["expiration"]
    now = expiration - 10 * 60 * SECOND
    content = call_content(identity.sender, CANISTER, "m", b"DIDL\x00\x00", ingress_expiry_ns=now + 60 * SECOND)
    env = parse_envelope(build_envelope(identity, content))
    assert env.sender.to_text() == record["sender_principal"]
    assert env.sender_delegation == chain.delegations
    verify_envelope(env, now_ns=now)
    later = call_content(identity.sender, CANISTER, "m", b"", ingress_expiry_ns=expiration + 60 * SECOND)
    with pytest.raises(EnvelopeError, match="expired"):
        verify_envelope(parse_envelope(build_envelope(identity, later)), now_ns=expiration + 1)


@pytest.mark.parametrize("kind", [Ed25519Identity, Secp256k1Identity, P256Identity])
def test_each_scheme_round_trip(kind: Any) -> None:
    identity = kind.generate()
    env = parse_envelope(_signed(identity, nonce=b"\x01\x02"))
    assert env.nonce == b"\x01\x02"
    assert env.sender == identity.sender
    verify_envelope(env, now_ns=NOW, effective_canister_id=CANISTER)


_IDENTITIES = [Ed25519Identity.from_seed(b"\x05" * 32), Secp256k1Identity.from_seed(b"\x05" * 32)]


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(_IDENTITIES),
    st.sampled_from(["call", "query"]),
    st.tuples(st.text(max_size=30), st.binary(max_size=200), st.none() | st.binary(max_size=32)),
    st.integers(min_value=0, max_value=MAX_INGRESS_TTL_NS),
)
def test_round_trip_any_content(
    identity: Identity, kind: str, fields: tuple[str, bytes, bytes | None], ahead: int
) -> None:
    method, arg, nonce = fields
    content = call_content(
        identity.sender, CANISTER, method, arg, ingress_expiry_ns=NOW + ahead, nonce=nonce, request_type=kind
    )
    env = parse_envelope(build_envelope(identity, content))
    assert (env.request_type, env.method_name, env.arg, env.nonce) == (kind, method, arg, nonce)
    assert env.request_id == request_id(content)
    verify_envelope(env, now_ns=NOW, effective_canister_id=CANISTER)
    assert parse_envelope(env.to_cbor()).request_id == env.request_id


def test_anonymous_envelope_has_content_only() -> None:
    data = _signed(AnonymousIdentity())
    assert set(cbor.decode(data)) == {"content"}
    assert data.startswith(cbor.SELF_DESCRIBE_PREFIX)
    verify_envelope(parse_envelope(data), now_ns=NOW)


def test_builders() -> None:
    sender = Principal.anonymous()
    expiry = default_ingress_expiry(NOW + 17 * SECOND)
    assert expiry % (60 * SECOND) == 0
    assert NOW + 3 * 60 * SECOND < expiry <= NOW + 4 * 60 * SECOND + 17 * SECOND
    content = call_content(sender, CANISTER, "q", b"", request_type="query")
    assert content["request_type"] == "query" and "nonce" not in content
    assert 0 < content["ingress_expiry"] - default_ingress_expiry() + 60 * SECOND <= 2 * 60 * SECOND
    with pytest.raises(ValueError):
        call_content(sender, CANISTER, "q", b"", request_type="read_state")
    paths = [[b"time"], [b"request_status", bytes(32), b"status"]]
    rs = read_state_content(sender, paths, ingress_expiry_ns=NOW, nonce=b"n")
    env = parse_envelope(build_envelope(AnonymousIdentity(), rs))
    assert env.paths == paths and env.nonce == b"n"
    assert env.canister_id is None and env.method_name is None and env.arg is None
    with pytest.raises(ValueError):
        build_envelope(Ed25519Identity.generate(), content)
    # The sender may also be given as a Principal.
    as_principal = content | {"sender": sender}
    assert parse_envelope(build_envelope(AnonymousIdentity(), as_principal)).sender == sender


def test_parse_accepts_an_already_decoded_map() -> None:
    data = _signed(Ed25519Identity.generate())
    assert parse_envelope(cbor.decode(data)).request_id == parse_envelope(data).request_id
    # Without the self-describe tag too.
    assert parse_envelope(cbor.encode(cbor.decode(data), self_describe=False)).sender == parse_envelope(data).sender


def test_ingress_expiry_window() -> None:
    env = parse_envelope(_signed(Ed25519Identity.generate()))
    expiry = env.ingress_expiry
    verify_envelope(env, now_ns=expiry)
    verify_envelope(env, now_ns=expiry - MAX_INGRESS_TTL_NS - PERMITTED_DRIFT_NS)
    with pytest.raises(EnvelopeError, match="past"):
        verify_envelope(env, now_ns=expiry + 1)
    with pytest.raises(EnvelopeError, match="future"):
        verify_envelope(env, now_ns=expiry - MAX_INGRESS_TTL_NS - PERMITTED_DRIFT_NS - 1)


def test_effective_canister_id() -> None:
    identity = Ed25519Identity.generate()
    env = parse_envelope(_signed(identity))
    verify_envelope(env, now_ns=NOW, effective_canister_id=CANISTER)
    with pytest.raises(EnvelopeError, match="effective canister id"):
        verify_envelope(env, now_ns=NOW, effective_canister_id=OTHER_CANISTER)
    # Management canister calls name their target in the argument: any effective id is accepted.
    management = parse_envelope(_signed(identity, canister=Principal.management()))
    verify_envelope(management, now_ns=NOW, effective_canister_id=OTHER_CANISTER)


def test_sender_authentication() -> None:
    identity, other = Ed25519Identity.generate(), Ed25519Identity.generate()
    data = _signed(identity)

    def swap_key(obj: dict[str, Any]) -> None:
        obj["sender_pubkey"] = other.der_public_key

    def drop(field: str) -> Any:
        return lambda obj: obj.pop(field)

    def set_sender(principal: Principal) -> Any:
        return lambda obj: obj["content"].__setitem__("sender", principal.bytes)

    with pytest.raises(EnvelopeError, match="not the principal"):
        verify_envelope(parse_envelope(_reencode(data, swap_key)), now_ns=NOW)
    for field in ("sender_sig", "sender_pubkey"):
        with pytest.raises(EnvelopeError, match="needs sender_pubkey"):
            verify_envelope(parse_envelope(_reencode(data, drop(field))), now_ns=NOW)
    with pytest.raises(EnvelopeError, match="anonymous"):
        verify_envelope(parse_envelope(_reencode(data, set_sender(Principal.anonymous()))), now_ns=NOW)


def test_signature_must_cover_the_content() -> None:
    identity = Secp256k1Identity.generate()
    data = _signed(identity)

    def tamper_arg(obj: dict[str, Any]) -> None:
        obj["content"]["arg"] = b"DIDL\x00\x01\x7e\x01"

    def tamper_sig(obj: dict[str, Any]) -> None:
        sig = bytearray(obj["sender_sig"])
        sig[5] ^= 1
        obj["sender_sig"] = bytes(sig)

    def add_nonce(obj: dict[str, Any]) -> None:
        obj["content"]["nonce"] = b"\x00"

    for change in (tamper_arg, tamper_sig, add_nonce):
        with pytest.raises(SignatureError):
            verify_envelope(parse_envelope(_reencode(data, change)), now_ns=NOW)


def _chain(*identities: Identity, expiration: int = NOW + 3600 * SECOND, targets: Any = None) -> DelegationChain:
    chain = None
    for signer, delegate in itertools.pairwise(identities):
        chain = DelegationChain.create(signer, delegate.der_public_key or b"", expiration, targets, chain)
    assert chain is not None
    return chain


def test_delegation_checks() -> None:
    root, middle, session = Ed25519Identity.generate(), P256Identity.generate(), Secp256k1Identity.generate()
    good = DelegationIdentity(session, _chain(root, middle, session))
    verify_envelope(parse_envelope(_signed(good)), now_ns=NOW)

    expired = DelegationIdentity(session, _chain(root, middle, session, expiration=NOW - 1))
    with pytest.raises(EnvelopeError, match="expired"):
        verify_envelope(parse_envelope(_signed(expired)), now_ns=NOW)

    targeted = DelegationIdentity(session, _chain(root, session, targets=[OTHER_CANISTER, CANISTER]))
    verify_envelope(parse_envelope(_signed(targeted)), now_ns=NOW)
    with pytest.raises(EnvelopeError, match="does not allow"):
        verify_envelope(
            parse_envelope(_signed(targeted, canister=Principal.from_text("aaaaa-aa"))),
            now_ns=NOW,
            effective_canister_id=Principal.from_text("r7inp-6aaaa-aaaaa-aaabq-cai"),
        )
    elsewhere = DelegationIdentity(session, _chain(root, session, targets=[OTHER_CANISTER]))
    with pytest.raises(EnvelopeError, match="does not allow"):
        verify_envelope(parse_envelope(_signed(elsewhere)), now_ns=NOW)

    # read_state: the targets are checked against the effective canister id, which must then be known.
    content = read_state_content(targeted.sender, [[b"time"]], ingress_expiry_ns=NOW + SECOND)
    env = parse_envelope(build_envelope(targeted, content))
    verify_envelope(env, now_ns=NOW, effective_canister_id=CANISTER)
    with pytest.raises(EnvelopeError, match="no effective canister id"):
        verify_envelope(env, now_ns=NOW)
    plain = DelegationIdentity(session, _chain(root, session))
    verify_envelope(parse_envelope(build_envelope(plain, content | {"sender": plain.sender.bytes})), now_ns=NOW)


@pytest.mark.parametrize("permissions", ["queries", "all"])
def test_delegation_permissions(permissions: str) -> None:
    # Interface spec, read-only delegations: "queries" signs queries and read_state requests only.
    root, session = Ed25519Identity.generate(), Ed25519Identity.generate()
    first = DelegationChain.create(root, session.der_public_key, NOW + 3600 * SECOND, permissions=permissions)
    identity = DelegationIdentity(session, first)
    query = call_content(
        identity.sender, CANISTER, "greet", b"DIDL\x00\x00", request_type="query", ingress_expiry_ns=NOW + SECOND
    )
    read = read_state_content(identity.sender, [[b"time"]], ingress_expiry_ns=NOW + SECOND)
    for content in (query, read):
        verify_envelope(parse_envelope(build_envelope(identity, content)), now_ns=NOW, effective_canister_id=CANISTER)
    call = parse_envelope(_signed(identity))
    # The field is part of the signed delegation map: dropping it breaks the link's signature.
    assert call.sender_delegation is not None and call.sender_delegation[0]["delegation"]["permissions"] == permissions
    if permissions == "all":
        verify_envelope(call, now_ns=NOW)
    else:
        with pytest.raises(EnvelopeError, match="permits only queries"):
            verify_envelope(call, now_ns=NOW)
    stripped = cbor.decode(_signed(identity))
    del stripped["sender_delegation"][0]["delegation"]["permissions"]
    with pytest.raises(SignatureError, match="delegation 0"):
        verify_envelope(parse_envelope(cbor.encode(stripped)), now_ns=NOW)
    # A read-only link anywhere in a longer chain makes the whole chain read-only.
    middle = Ed25519Identity.generate()
    chain = DelegationChain.create(root, middle.der_public_key, NOW + 3600 * SECOND)
    chain = DelegationChain.create(
        middle, session.der_public_key, NOW + 3600 * SECOND, None, chain, permissions=permissions
    )
    assert DelegationChain.from_json(chain.to_json()).delegations == chain.delegations
    if permissions == "queries":
        with pytest.raises(EnvelopeError, match="delegation 1 permits only queries"):
            verify_envelope(parse_envelope(_signed(DelegationIdentity(session, chain))), now_ns=NOW)
    with pytest.raises(ValueError, match="permissions"):
        DelegationChain.create(root, session.der_public_key, NOW, permissions="reads")


def test_delegation_signatures_and_cycles() -> None:
    root, middle, session = (Ed25519Identity.generate() for _ in range(3))
    data = _signed(DelegationIdentity(session, _chain(root, middle, session)))

    def tamper_link(obj: dict[str, Any]) -> None:
        obj["sender_delegation"][1]["delegation"]["expiration"] += 1

    def swap_links(obj: dict[str, Any]) -> None:
        obj["sender_delegation"].reverse()

    for change in (tamper_link, swap_links):
        with pytest.raises(SignatureError, match="delegation"):
            verify_envelope(parse_envelope(_reencode(data, change)), now_ns=NOW)

    def garbage_key(obj: dict[str, Any]) -> None:
        obj["sender_delegation"][1]["delegation"]["pubkey"] = b"\x30\x00"

    def short_signature(obj: dict[str, Any]) -> None:
        obj["sender_delegation"][0]["signature"] = obj["sender_delegation"][0]["signature"][:-1]

    for change in (garbage_key, short_signature):
        with pytest.raises(SignatureError):
            verify_envelope(parse_envelope(_reencode(data, change)), now_ns=NOW)

    # root -> session -> root -> session: every link is validly signed, but a key repeats.
    cycle = DelegationIdentity(session, _chain(root, session, root, session))
    with pytest.raises(EnvelopeError, match="repeats"):
        verify_envelope(parse_envelope(_signed(cycle)), now_ns=NOW)


def test_at_most_20_delegations() -> None:
    keys = [Ed25519Identity.generate() for _ in range(22)]
    ok = DelegationIdentity(keys[20], _chain(*keys[:21]))
    verify_envelope(parse_envelope(_signed(ok)), now_ns=NOW)
    too_long = DelegationIdentity(keys[21], _chain(*keys))
    with pytest.raises(EnvelopeError, match="1 to 20"):
        parse_envelope(_signed(too_long))


def _valid_map() -> dict[str, Any]:
    identity = DelegationIdentity(
        Ed25519Identity.from_seed(b"\x02" * 32),
        _chain(Ed25519Identity.from_seed(b"\x01" * 32), Ed25519Identity.from_seed(b"\x02" * 32), targets=[CANISTER]),
    )
    obj: dict[str, Any] = cbor.decode(_signed(identity, nonce=b"n"))
    return obj


def _set(path: tuple[Any, ...], value: Any) -> Any:
    def change(obj: Any) -> None:
        for key in path[:-1]:
            obj = obj[key]
        obj[path[-1]] = value

    return change


def _delete(path: tuple[Any, ...]) -> Any:
    def change(obj: Any) -> None:
        for key in path[:-1]:
            obj = obj[key]
        del obj[path[-1]]

    return change


DELEGATION = ("sender_delegation", 0, "delegation")
MALFORMED = {
    "not a map": lambda obj: obj.clear() or obj.update({"x": 1}),
    "unknown top-level field": _set(("extra",), b""),
    "content missing": _delete(("content",)),
    "content not a map": _set(("content",), [1]),
    "unknown request type": _set(("content", "request_type"), "install"),
    "request type not text": _set(("content", "request_type"), b"call"),
    "unknown content field": _set(("content", "memo"), b""),
    "read_state field in a call": _set(("content", "paths"), []),
    "sender missing": _delete(("content", "sender")),
    "sender not bytes": _set(("content", "sender"), "2vxsx-fae"),
    "sender too long": _set(("content", "sender"), bytes(30)),
    "canister id too long": _set(("content", "canister_id"), bytes(30)),
    "canister id missing": _delete(("content", "canister_id")),
    "method name bytes": _set(("content", "method_name"), b"greet"),
    "method name missing": _delete(("content", "method_name")),
    "arg text": _set(("content", "arg"), "DIDL"),
    "arg missing": _delete(("content", "arg")),
    "expiry missing": _delete(("content", "ingress_expiry")),
    "expiry negative": _set(("content", "ingress_expiry"), -1),
    "expiry bool": _set(("content", "ingress_expiry"), True),
    "expiry float": _set(("content", "ingress_expiry"), 1.0),
    "expiry over 64 bits": _set(("content", "ingress_expiry"), 1 << 64),
    "nonce text": _set(("content", "nonce"), "n"),
    "pubkey text": _set(("sender_pubkey",), "key"),
    "sig int": _set(("sender_sig",), 5),
    "delegations not a list": _set(("sender_delegation",), {}),
    "delegations empty": _set(("sender_delegation",), []),
    "link not a map": _set(("sender_delegation", 0), b""),
    "link unknown field": _set(("sender_delegation", 0, "extra"), 1),
    "link signature missing": _delete(("sender_delegation", 0, "signature")),
    "delegation not a map": _set(DELEGATION, [1]),
    "delegation pubkey missing": _delete((*DELEGATION, "pubkey")),
    "delegation expiration text": _set((*DELEGATION, "expiration"), "soon"),
    "delegation unknown field": _set((*DELEGATION, "senders"), []),
    "targets not a list": _set((*DELEGATION, "targets"), b""),
    "target too long": _set((*DELEGATION, "targets"), [bytes(30)]),
    "target text": _set((*DELEGATION, "targets"), ["ryjl3-tyaaa-aaaaa-aaaba-cai"]),
    "too many targets": _set((*DELEGATION, "targets"), [b"\x01"] * 1001),
    "permissions unknown": _set((*DELEGATION, "permissions"), "reads"),
    "permissions bytes": _set((*DELEGATION, "permissions"), b"queries"),
    "permissions list": _set((*DELEGATION, "permissions"), ["queries"]),
}


@pytest.mark.parametrize("change", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_envelopes(change: Any) -> None:
    obj = _valid_map()
    parse_envelope(obj)
    change(obj)
    with pytest.raises(EnvelopeError):
        parse_envelope(cbor.encode(obj))


@pytest.mark.parametrize(
    "paths",
    [b"", [b"time"], [["time"]], [[b"time", 1]], {"a": []}],
    ids=["bytes", "flat", "text label", "int label", "map"],
)
def test_malformed_read_state_paths(paths: Any) -> None:
    obj = {"content": {"request_type": "read_state", "sender": b"\x04", "ingress_expiry": NOW, "paths": paths}}
    with pytest.raises(EnvelopeError):
        parse_envelope(obj)


@pytest.mark.parametrize("data", [b"", b"\xff", b"\xa1", cbor.encode([1, 2]), cbor.encode(None), b"\xd9\xd9\xf7"])
def test_not_an_envelope(data: bytes) -> None:
    with pytest.raises(EnvelopeError):
        parse_envelope(data)


def test_mutated_envelopes_raise_only_envelope_errors() -> None:
    rng = random.Random(2024)
    samples = [bytes.fromhex(r["envelope_cbor_hex"]) for r in WITH_BYTES] + [cbor.encode(_valid_map())]
    for data in samples:
        for _ in range(400):
            mutated = bytearray(data)
            for _ in range(rng.randint(1, 3)):
                pos = rng.randrange(len(mutated))
                if rng.random() < 0.8:
                    mutated[pos] = rng.randrange(256)
                else:
                    del mutated[pos]
                if not mutated:
                    break
            try:
                env = parse_envelope(bytes(mutated))
            except EnvelopeError:
                continue
            with contextlib.suppress(EnvelopeError):
                verify_envelope(env, now_ns=env.ingress_expiry, effective_canister_id=CANISTER)


_cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 65), max_value=1 << 65)
    | st.binary(max_size=40)
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
_field_names = st.sampled_from(
    [
        "content",
        "sender_pubkey",
        "sender_sig",
        "sender_delegation",
        "request_type",
        "sender",
        "ingress_expiry",
        "canister_id",
        "method_name",
        "arg",
        "nonce",
        "paths",
        "delegation",
        "signature",
        "pubkey",
        "expiration",
        "targets",
        "permissions",
    ]
)
_envelope_like = st.recursive(
    _cbor_values,
    lambda children: st.dictionaries(_field_names, children, max_size=7) | st.lists(children, max_size=3),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(_envelope_like)
def test_arbitrary_values_raise_only_envelope_errors(value: Any) -> None:
    try:
        env = parse_envelope(cbor.encode(value))
    except EnvelopeError:
        return
    with contextlib.suppress(EnvelopeError):
        verify_envelope(env, now_ns=env.ingress_expiry)
    assert env.request_id == request_id(env.content)
