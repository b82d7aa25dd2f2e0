"""Well-formed CBOR with the wrong thing in every field: only the project's errors may come out.

Random bytes mostly die in the CBOR decoder; these tests start from valid structures (signed envelopes,
ClientRequests, WebsocketMessages, CanisterToClientMessages, the gateway handshake, and canister messages
certified as the replica certifies them) and change them field by field: another type in the field (an int
where bytes go, text, a map where an array goes, floats, tags, huge integers, deep nesting), a field
removed, a field added, a value wrapped. Decoders must answer with a ``DecodeError`` / ``EnvelopeError``
(an :class:`~icws_fast.errors.IcwsError`), and the sans-IO receive entry points with a close, never with an
escaped exception or their last-resort guard (``InternalError``), which would mean a decoder used a value
before checking its type.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from icws_fast.errors import IcwsError, InternalError
from icws_fast.ic import bls, candid, cbor, hashtree
from icws_fast.ic.certificate import sign_certificate
from icws_fast.ic.envelope import build_envelope, call_content, parse_envelope, read_state_content, verify_envelope
from icws_fast.ic.identity import AnonymousIdentity, DelegationChain, DelegationIdentity, Ed25519Identity
from icws_fast.ic.principal import Principal
from icws_fast.ic.request_id import leb128
from icws_fast.protocol import session as s
from icws_fast.protocol.client import ClientProtocol, CloseConnection, ErrorOccurred, Opened, SendToGateway
from icws_fast.protocol.types import (
    ClientKey,
    KeepAliveMessage,
    OpenMessage,
    WebsocketMessage,
    decode_canister_to_client,
    decode_client_request,
    decode_handshake,
    decode_websocket_message,
    encode_canister_to_client,
    encode_client_request,
    encode_handshake,
    encode_service_message,
    encode_websocket_message,
    encode_ws_message_args,
    encode_ws_open_args,
    message_key,
)

NS = 1_000_000_000
NOW = 1_700_000_000 * NS
CANISTER = Principal.from_text("bnz7o-iuaaa-aaaaa-qaaaa-cai")
GATEWAY = Ed25519Identity.from_seed(b"\x07" * 32).sender
CLIENT = Ed25519Identity.from_seed(b"\x01" * 32)
NONCE = 5
KEY = ClientKey(CLIENT.sender, NONCE)
ROOT_SK = bls.generate_secret_key(b"hostile-fields-root")
ROOT_DER = bls.der_encode_public_key(bls.public_key(ROOT_SK))
EXAMPLES = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _deep(depth: int) -> Any:
    value: Any = 0
    for i in range(depth):
        value = [value] if i % 2 else {"d": value}
    return value


# Every kind of CBOR value but the right one: what a field may hold instead of what it should.
WRONG_VALUES = st.one_of(
    st.integers(-(2**64), 2**64 - 1),
    st.sampled_from([2**64, 2**100, -(2**64) - 1, -(2**200)]),
    st.booleans(),
    st.none(),
    st.floats(),
    st.text(max_size=12),
    st.binary(max_size=40),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
    st.builds(cbor.Tag, st.integers(4, 2**16), st.one_of(st.integers(), st.lists(st.integers(), max_size=2))),
    st.integers(1, 400).map(_deep),
)
MAP_KEYS = st.one_of(st.text(max_size=12), st.binary(max_size=8), st.integers(-5, 2**64 - 1))


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path of ``obj`` itself and of everything inside it."""
    yield prefix
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _paths(value, (*prefix, i))


@st.composite
def mutated(draw: st.DrawFn, valid: Any, max_changes: int = 3) -> Any:
    """``valid`` with one to ``max_changes`` fields replaced, removed, added or wrapped."""
    obj = copy.deepcopy(valid)
    for _ in range(draw(st.integers(1, max_changes))):
        path = draw(st.sampled_from(list(_paths(obj))))
        target = obj
        for step in path[:-1]:
            target = target[step]
        here = target[path[-1]] if path else obj
        op = draw(st.sampled_from(["replace", "delete", "add", "wrap"]))
        if op == "add" and isinstance(here, (dict, list)):
            if isinstance(here, dict):
                here[draw(MAP_KEYS)] = draw(WRONG_VALUES)
            else:
                here.append(draw(WRONG_VALUES))
            continue
        if op == "delete" and path:
            del target[path[-1]]
            continue
        new = [here] if op == "wrap" else draw(WRONG_VALUES)
        if path:
            target[path[-1]] = new
        else:
            obj = new
    return obj


def _envelope_map(identity: Any, content: dict[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = cbor.decode(build_envelope(identity, content))
    return value


DELEGATED = DelegationIdentity(
    Ed25519Identity.from_seed(b"\x03" * 32),
    DelegationChain.create(
        CLIENT, Ed25519Identity.from_seed(b"\x03" * 32).der_public_key or b"", 2**63, targets=[CANISTER]
    ),
)
OPEN_ARG = encode_ws_open_args(NONCE, GATEWAY)
VALID_ENVELOPES = [
    _envelope_map(
        CLIENT, call_content(CLIENT.sender, CANISTER, "ws_open", OPEN_ARG, nonce=b"n", ingress_expiry_ns=NOW)
    ),
    _envelope_map(DELEGATED, call_content(DELEGATED.sender, CANISTER, "ws_open", OPEN_ARG, ingress_expiry_ns=NOW)),
    _envelope_map(AnonymousIdentity(), read_state_content(Principal.anonymous(), [[b"time"]], ingress_expiry_ns=NOW)),
]
MESSAGE = WebsocketMessage(KEY, 1, NOW, False, b"DIDL\x00\x00")
VALID_MESSAGE_ENVELOPE = _envelope_map(
    CLIENT, call_content(CLIENT.sender, CANISTER, "ws_message", encode_ws_message_args(MESSAGE), ingress_expiry_ns=NOW)
)


def _only_project_errors(call: Callable[[], Any]) -> None:
    with contextlib.suppress(IcwsError):
        call()


# ---- the decoders --------------------------------------------------------------------------------------------


@EXAMPLES
@given(st.sampled_from(VALID_ENVELOPES).flatmap(mutated))
def test_envelope_fields_of_any_type(envelope: Any) -> None:
    data = cbor.encode(envelope)

    def parse_and_verify() -> None:
        parsed = parse_envelope(data)
        assert parsed.request_id  # hashing the content must cope with whatever passed the shape checks
        verify_envelope(parsed, now_ns=NOW - NS, effective_canister_id=CANISTER)

    _only_project_errors(parse_and_verify)
    _only_project_errors(lambda: parse_envelope(envelope))


@EXAMPLES
@given(mutated({"envelope": VALID_ENVELOPES[0]}, max_changes=4))
def test_client_request_fields_of_any_type(request: Any) -> None:
    _only_project_errors(lambda: decode_client_request(cbor.encode(request)))


_VALID_WS_MESSAGE = cbor.decode(encode_websocket_message(MESSAGE))
_VALID_TO_CLIENT = cbor.decode(encode_canister_to_client("k_00000000000000000001", b"c", b"cert", b"tree"))


@EXAMPLES
@given(mutated(_VALID_WS_MESSAGE), mutated(_VALID_TO_CLIENT), mutated({"gateway_principal": GATEWAY.bytes}))
def test_websocket_protocol_fields_of_any_type(message: Any, to_client: Any, handshake: Any) -> None:
    _only_project_errors(lambda: decode_websocket_message(cbor.encode(message)))
    _only_project_errors(lambda: decode_canister_to_client(cbor.encode(to_client)))
    _only_project_errors(lambda: decode_handshake(cbor.encode(handshake)))


# ---- the gateway session -------------------------------------------------------------------------------------


def _assert_closed_cleanly(actions: list[s.Action]) -> None:
    """The session refused the frame with a close (or took it), and no decoder let a foreign exception out."""
    assert not [a for a in actions if isinstance(a, s.ReportError)], actions
    kinds = {type(a) for a in actions}
    assert s.Close in kinds or kinds <= {s.Register, s.Relay}, actions
    for action in actions:
        if isinstance(action, s.Close):
            assert action.code == s.CLOSE_POLICY_VIOLATION, action


def _session(*, verify: bool, opened: bool = False) -> s.GatewaySession:
    session = s.GatewaySession(GATEWAY, now=0.0, open_timeout_s=10.0, verify_signatures=verify)
    if opened:
        frame = encode_client_request(cbor.encode(VALID_ENVELOPES[0]))
        assert [type(a) for a in session.receive(frame, now_ns=NOW - NS)] == [s.Register, s.Relay]
        session.delivered()
    return session


@EXAMPLES
@given(st.sampled_from(VALID_ENVELOPES).flatmap(mutated), st.booleans())
def test_session_answers_any_open_envelope_with_a_close(envelope: Any, verify: bool) -> None:
    frame = encode_client_request(cbor.encode(envelope))
    _assert_closed_cleanly(_session(verify=verify).receive(frame, now_ns=NOW - NS))


@EXAMPLES
@given(mutated({"envelope": VALID_ENVELOPES[0]}, max_changes=4), st.booleans())
def test_session_answers_any_client_request_with_a_close(request: Any, opened: bool) -> None:
    session = _session(verify=True, opened=opened)
    _assert_closed_cleanly(session.receive(cbor.encode(request), now_ns=NOW - NS))


@EXAMPLES
@given(mutated(VALID_MESSAGE_ENVELOPE))
def test_session_answers_any_message_envelope_with_a_close(envelope: Any) -> None:
    frame = encode_client_request(cbor.encode(envelope))
    _assert_closed_cleanly(_session(verify=True, opened=True).receive(frame, now_ns=NOW - NS))


# Candid arguments of another type than ws_open's, inside an envelope whose CBOR is right.
WRONG_OPEN_ARGS = [
    candid.encode(candid.parse_args("(record { client_nonce : text; gateway_principal : principal })"), [v])
    for v in [{"client_nonce": "5", "gateway_principal": GATEWAY}]
] + [
    candid.encode(candid.parse_args(types), values)
    for types, values in [
        ("(nat64)", [5]),
        ("(record {})", [{}]),
        ("(record { client_nonce : nat64 })", [{"client_nonce": 5}]),
        ("(record { client_nonce : int; gateway_principal : blob })", [{"client_nonce": -1, "gateway_principal": b""}]),
        ("(vec nat8)", [b"\x00" * 40]),
        ("()", []),
    ]
]


@pytest.mark.parametrize("arg", WRONG_OPEN_ARGS)
def test_session_answers_ws_open_arguments_of_another_type_with_a_close(arg: bytes) -> None:
    content = call_content(CLIENT.sender, CANISTER, "ws_open", arg, ingress_expiry_ns=NOW)
    actions = _session(verify=True).receive(encode_client_request(build_envelope(CLIENT, content)), now_ns=NOW - NS)
    _assert_closed_cleanly(actions)
    assert [type(a) for a in actions] == [s.Close]


def test_the_last_resort_guard_closes_with_1011_and_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_: bytes) -> tuple[int, int]:
        raise KeyError("a bug")

    monkeypatch.setattr(s, "envelope_span", broken)
    session = _session(verify=True)
    report, close = session.receive(b"\xa0")
    assert isinstance(report, s.ReportError) and isinstance(report.error.__cause__, KeyError)
    assert close == s.Close(s.CLOSE_INTERNAL_ERROR, "internal error")
    assert session.state is s.SessionState.CLOSED


# ---- the client protocol -------------------------------------------------------------------------------------


def _client() -> ClientProtocol:
    """A client that has sent its ws_open and waits for the canister's OpenMessage."""
    client = ClientProtocol(CANISTER, CLIENT, ROOT_DER, client_nonce=NONCE)
    client.connection_made(NOW)
    (event,) = client.receive_frame(encode_handshake(GATEWAY), NOW)
    assert isinstance(event, SendToGateway)
    return client


def _certified(key: str, content: bytes) -> bytes:
    """A CanisterToClientMessage whose content the canister certified and the replica signed, as the IC does."""
    tree = hashtree.witness(
        {b"websocket": {key.encode(): hashlib.sha256(content).digest()}}, [[b"websocket", key.encode()]]
    )
    state = {b"time": leb128(NOW), b"canister": {CANISTER.bytes: {b"certified_data": hashtree.reconstruct(tree)}}}
    return encode_canister_to_client(key, content, sign_certificate(hashtree.build(state), ROOT_SK), cbor.encode(tree))


def _assert_failed_cleanly(events: list[Any]) -> None:
    errors = [e.error for e in events if isinstance(e, ErrorOccurred)]
    assert not [e for e in errors if isinstance(e, InternalError)], errors
    assert isinstance(events[-1], CloseConnection), events


@EXAMPLES
@given(mutated({"gateway_principal": GATEWAY.bytes}))
def test_client_answers_any_handshake_with_a_close_or_ws_open(handshake: Any) -> None:
    client = ClientProtocol(CANISTER, CLIENT, ROOT_DER, client_nonce=NONCE)
    events = client.receive_frame(cbor.encode(handshake), NOW)
    if not (len(events) == 1 and isinstance(events[0], SendToGateway)):
        _assert_failed_cleanly(events)


@EXAMPLES
@given(mutated(_VALID_TO_CLIENT))
def test_client_answers_any_canister_to_client_message_with_a_close(message: Any) -> None:
    _assert_failed_cleanly(_client().receive_frame(cbor.encode(message), NOW))


_OPEN_CONTENT = encode_service_message(OpenMessage(KEY))
_VALID_OPEN_MESSAGE = cbor.decode(encode_websocket_message(WebsocketMessage(KEY, 1, NOW, True, _OPEN_CONTENT)))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(_VALID_OPEN_MESSAGE))
def test_client_answers_any_certified_payload_with_a_close(message: Any) -> None:
    """The certificate and tree hold: the payload itself is what is wrong, so decoding it must fail cleanly."""
    events = _client().receive_frame(_certified(message_key(GATEWAY, 0), cbor.encode(message)), NOW)
    if any(isinstance(e, ErrorOccurred) for e in events):
        _assert_failed_cleanly(events)
    else:  # the change left a valid OpenMessage (another timestamp, say)
        assert events == [Opened()], events


WRONG_SERVICE_CONTENTS = [
    encode_service_message(KeepAliveMessage(1)),
    candid.encode(
        candid.parse_args("(variant { OpenMessage : record { client_key : text } })"),
        [{"OpenMessage": {"client_key": "x"}}],
    ),
    candid.encode(candid.parse_args("(text)"), ["OpenMessage"]),
    b"DIDL\x00\x00",
    b"not candid",
]


@pytest.mark.parametrize("content", WRONG_SERVICE_CONTENTS)
def test_client_answers_service_messages_of_another_type_with_a_close(content: bytes) -> None:
    message = encode_websocket_message(WebsocketMessage(KEY, 1, NOW, True, content))
    _assert_failed_cleanly(_client().receive_frame(_certified(message_key(GATEWAY, 0), message), NOW))


def test_the_clients_last_resort_guard_reports_an_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from icws_fast.protocol import client as client_module

    def broken(_: bytes) -> Principal:
        raise AttributeError("a bug")

    monkeypatch.setattr(client_module, "decode_handshake", broken)
    client = ClientProtocol(CANISTER, CLIENT, ROOT_DER)
    error, close = client.receive_frame(encode_handshake(GATEWAY), NOW)
    assert isinstance(error, ErrorOccurred) and isinstance(error.error, InternalError)
    assert isinstance(error.error.__cause__, AttributeError)
    assert isinstance(close, CloseConnection)
