"""The sans-IO gateway session: every path through the state machine, with real signed envelopes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icws_fast.errors import CallPending, CborError, EnvelopeError, ProtocolError, RejectError, TransportError
from icws_fast.ic import cbor
from icws_fast.ic.envelope import build_envelope, parse_envelope, verify_envelope
from icws_fast.ic.identity import Ed25519Identity
from icws_fast.ic.principal import Principal
from icws_fast.ic.request_id import request_id
from icws_fast.protocol import session as s
from icws_fast.protocol.relay import relay_outcome
from icws_fast.protocol.types import (
    MAX_CLOSE_REASON,
    ClientKey,
    decode_handshake,
    encode_client_request,
    encode_ws_open_args,
)
from tests import twins
from tests.gateway.gw_rawclient import message_request, open_request, signed_request

CANISTER = Principal.from_text("rrkah-fqaaa-aaaaa-aaaaq-cai")
OTHER_CANISTER = Principal.from_text("ryjl3-tyaaa-aaaaa-aaaba-cai")
GATEWAY = Ed25519Identity.from_seed(b"\x07" * 32).sender


def new_session(**kw: object) -> s.GatewaySession:
    return s.GatewaySession(GATEWAY, now=0.0, open_timeout_s=10.0, **kw)  # type: ignore[arg-type]


def opened(identity: Ed25519Identity, nonce: int = 5) -> tuple[s.GatewaySession, list[s.Action]]:
    session = new_session()
    return session, session.receive(open_request(identity, CANISTER, GATEWAY, nonce))


def only_close(actions: list[s.Action]) -> s.Close:
    closes = [a for a in actions if isinstance(a, s.Close)]
    assert len(closes) == 1, actions
    assert not any(isinstance(a, (s.Relay, s.Register, s.SendToClient)) for a in actions)
    return closes[0]


def test_handshake_names_the_gateway():
    (action,) = new_session().handshake()
    assert isinstance(action, s.SendToClient)
    assert decode_handshake(action.data) == GATEWAY


def test_valid_open_registers_then_relays_the_envelope_unchanged():
    identity = Ed25519Identity.generate()
    frame = open_request(identity, CANISTER, GATEWAY, 42)
    session = new_session()
    actions = session.receive(frame)
    assert [type(a) for a in actions] == [s.Register, s.Relay]
    register, relay = actions
    assert register == s.Register(CANISTER, ClientKey(identity.sender, 42))
    assert relay.is_open and relay.canister_id == CANISTER
    assert frame.endswith(relay.envelope_bytes)
    assert cbor.decode(frame)["envelope"] == cbor.decode(relay.envelope_bytes)
    assert relay.envelope.method_name == "ws_open" and relay.envelope.sender == identity.sender
    assert session.state is s.SessionState.SETUP
    assert session.client_key == ClientKey(identity.sender, 42)


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x00\x01garbage",
        b"\xd9\xd9\xf7",
        cbor.encode({"envelope": 5}),
        cbor.encode({"envelope": {"content": {}}}),
        cbor.encode({"envelope": {"content": {"request_type": "call"}}, "extra": 1}),
        cbor.encode([1, 2, 3]),
        b"\xa1\x68envelope" + b"\x81" * 10_000 + b"\x00",
    ],
)
def test_garbage_first_message_closes_with_policy_violation(frame):
    session = new_session()
    close = only_close(session.receive(frame))
    assert close.code == s.CLOSE_POLICY_VIOLATION
    assert session.state is s.SessionState.CLOSED
    assert session.receive(frame) == []


def test_text_frame_closes_with_unsupported_data():
    assert only_close(new_session().receive(b"hello", binary=False)).code == s.CLOSE_UNSUPPORTED_DATA


def test_first_message_must_be_ws_open_call():
    identity = Ed25519Identity.generate()
    arg = encode_ws_open_args(1, GATEWAY)
    query = signed_request(identity, CANISTER, "ws_open", arg, request_type="query")
    assert "call envelope" in only_close(new_session().receive(query)).reason
    other_method = signed_request(identity, CANISTER, "ws_message", arg)
    assert "ws_open" in only_close(new_session().receive(other_method)).reason


def test_open_naming_another_gateway_is_refused():
    identity = Ed25519Identity.generate()
    other = Ed25519Identity.generate().sender
    close = only_close(new_session().receive(open_request(identity, CANISTER, other, 1)))
    assert "gateway principal" in close.reason


def test_open_with_bad_candid_is_refused():
    identity = Ed25519Identity.generate()
    close = only_close(new_session().receive(signed_request(identity, CANISTER, "ws_open", b"DIDL\x00\x00")))
    assert close.code == s.CLOSE_POLICY_VIOLATION


def test_canister_allow_list():
    identity = Ed25519Identity.generate()
    session = new_session(allowed_canisters=frozenset({OTHER_CANISTER}))
    assert "canister" in only_close(session.receive(open_request(identity, CANISTER, GATEWAY, 1))).reason
    session = new_session(allowed_canisters=frozenset({CANISTER}))
    assert session.receive(open_request(identity, CANISTER, GATEWAY, 1))[0] == s.Register(
        CANISTER, ClientKey(identity.sender, 1)
    )


def test_forged_signature_is_refused():
    identity = Ed25519Identity.generate()
    request = cbor.decode(open_request(identity, CANISTER, GATEWAY, 1))
    request["envelope"]["sender_sig"] = bytes(64)
    close = only_close(new_session().receive(cbor.encode(request)))
    assert "invalid ws_open" in close.reason
    # Without signature checks the same envelope gets through to the IC (which would refuse it).
    assert isinstance(new_session(verify_signatures=False).receive(cbor.encode(request))[1], s.Relay)


def test_anonymous_open_is_refused():
    envelope = cbor.encode(
        {
            "content": {
                "request_type": "call",
                "sender": b"\x04",
                "canister_id": CANISTER.bytes,
                "method_name": "ws_open",
                "arg": encode_ws_open_args(1, GATEWAY),
                "ingress_expiry": 2**63,
            }
        }
    )
    assert only_close(new_session().receive(encode_client_request(envelope))).code == s.CLOSE_POLICY_VIOLATION


def test_message_before_open_is_a_protocol_violation():
    identity = Ed25519Identity.generate()
    session, _ = opened(identity)
    actions = session.receive(message_request(identity, CANISTER, ClientKey(identity.sender, 5), 1, b"x"))
    assert [type(a) for a in actions] == [s.Close, s.Unregister]
    assert actions[1] == s.Unregister(CANISTER, ClientKey(identity.sender, 5))


def test_open_session_relays_messages_of_its_client_and_canister_only():
    identity = Ed25519Identity.generate()
    key = ClientKey(identity.sender, 5)
    session, _ = opened(identity)
    session.delivered()
    assert session.state is s.SessionState.OPEN
    frame = message_request(identity, CANISTER, key, 1, b"hello")
    (relay,) = session.receive(frame)
    assert isinstance(relay, s.Relay) and (relay.canister_id, relay.is_open) == (CANISTER, False)
    assert relay.envelope_bytes == frame[-len(relay.envelope_bytes) :]
    assert relay.envelope.request_id == parse_envelope(relay.envelope_bytes).request_id

    for bad, reason in (
        (message_request(identity, OTHER_CANISTER, key, 2, b"x"), "another canister"),
        (message_request(Ed25519Identity.generate(), CANISTER, key, 2, b"x"), "another sender"),
        (signed_request(identity, CANISTER, "ws_message", b"", request_type="query"), "call envelopes only"),
        (signed_request(identity, CANISTER, "ws_close", b""), "expected a call of ws_message"),
        (b"\xff", "invalid client request"),
    ):
        session, _ = opened(identity)
        session.delivered()
        actions = session.receive(bad)
        assert [type(a) for a in actions] == [s.Close, s.Unregister]
        assert reason in actions[0].reason and actions[0].code == s.CLOSE_POLICY_VIOLATION


def test_failed_open_closes_once_and_unregisters_once():
    identity = Ed25519Identity.generate()
    session, (_, relay) = opened(identity)
    assert isinstance(relay, s.Relay)
    actions = session.relay_result(relay, relay_outcome(ProtocolError("Anonymous principal not allowed")))
    assert [type(a) for a in actions] == [s.Close, s.Unregister]
    assert actions[0].code == s.CLOSE_INTERNAL_ERROR
    assert actions[0].reason == "ws_open failed: canister_error: Anonymous principal not allowed"
    assert session.connection_lost() == []
    assert session.relay_result(relay, relay_outcome(TransportError("late"))) == []


@pytest.mark.parametrize("error", [None, CallPending(b"\x01" * 32)], ids=["replied", "pending"])
def test_accepted_relays_keep_the_session(error):
    identity = Ed25519Identity.generate()
    session, (_, relay) = opened(identity)
    assert session.relay_result(relay, relay_outcome(error)) == []
    assert session.state is s.SessionState.SETUP


def test_relay_failure_closes_the_session():
    identity = Ed25519Identity.generate()
    key = ClientKey(identity.sender, 5)
    session, _ = opened(identity)
    session.delivered()
    (relay,) = session.receive(message_request(identity, CANISTER, key, 1, b"hello"))
    outcome = relay_outcome(RejectError(4, "no"))
    actions = session.relay_result(relay, outcome)
    assert [type(a) for a in actions] == [s.Close, s.Unregister]
    assert actions[0].reason == "ws_message failed: rejected (code 4): no"


def test_connection_lost_unregisters_only_registered_sessions():
    assert new_session().connection_lost() == []
    identity = Ed25519Identity.generate()
    session, _ = opened(identity)
    assert session.connection_lost() == [s.Unregister(CANISTER, ClientKey(identity.sender, 5))]
    assert session.connection_lost() == []


def test_open_timeout():
    session = new_session()
    assert session.tick(9.9) == []
    assert only_close(session.tick(10.0)).reason == "no ws_open message in time"
    identity = Ed25519Identity.generate()
    session, _ = opened(identity)
    assert session.tick(1e9) == []


def test_gateway_close_and_reason_truncation():
    identity = Ed25519Identity.generate()
    session, _ = opened(identity)
    actions = session.close(s.CLOSE_GOING_AWAY, "é" * 200)
    assert actions[0].code == s.CLOSE_GOING_AWAY
    assert len(actions[0].reason.encode()) <= MAX_CLOSE_REASON
    assert session.close(1000, "again") == []


SPANS = twins.implementations(s, "envelope_span")


@pytest.mark.parametrize("impl", SPANS)
def test_envelope_span(impl):
    span = impl.envelope_span
    envelope = {"content": {"request_type": "call", "arg": b"\x00" * 300}, "sender_sig": b"s" * 64}
    for self_describe in (True, False):
        frame = cbor.encode({"envelope": envelope}, self_describe=self_describe)
        start, end = span(frame)
        assert cbor.decode(frame[start:end]) == envelope
    # Non-shortest heads are still one map with one "envelope" key.
    frame = b"\xb8\x01\x78\x08envelope" + cbor.encode(envelope, self_describe=False)
    start, end = span(frame)
    assert cbor.decode(frame[start:end]) == envelope


@pytest.mark.parametrize("impl", SPANS)
@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\xd9\xd9\xf7",
        b"\xa1",
        b"\xa2\x68envelope\xa0\x61x\x00",
        b"\xa1\x68envelopf\xa0",
        b"\xa1\x68envelope",
        b"\xbf\x68envelope\xa0\xff",
        b"\xa1\x7f\xff",
        b"\xa1\x1b" + b"\xff" * 8,
        b"\xa1\x7b" + b"\xff" * 8 + b"envelope\xa0",
        b"\x80",
        b"\xa1\x48envelope\xa0",
    ],
)
def test_envelope_span_rejects_other_shapes(impl, frame):
    with pytest.raises(CborError):
        impl.envelope_span(frame)


@given(st.binary(max_size=24).map(lambda tail: b"\xa1\x68envelope" + tail) | st.binary(max_size=16))
@settings(max_examples=300)
def test_envelope_span_twins_agree(frame):
    """Same span or same CborError message, on client requests and on anything else."""
    twins.assert_agree(s, "envelope_span", frame)
    twins.assert_agree(s, "envelope_span", b"\xd9\xd9\xf7" + frame)


_VALID_OPEN = open_request(Ed25519Identity.from_seed(b"\x01" * 32), CANISTER, GATEWAY, 1)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_escape_as_exceptions(data):
    for session_state in ("init", "open"):
        session = new_session(verify_signatures=False)
        if session_state == "open":
            session.receive(_VALID_OPEN)
            session.delivered()
        actions = session.receive(data)
        assert all(isinstance(a, (s.Close, s.Unregister, s.Relay, s.Register)) for a in actions)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(_VALID_OPEN) - 1), st.integers(0, 255), st.integers(0, len(_VALID_OPEN)))
def test_mutated_open_frames_are_handled(position, value, cut):
    frame = bytearray(_VALID_OPEN)
    frame[position] = value
    for candidate in (bytes(frame), bytes(frame[:cut])):
        actions = new_session().receive(candidate)
        assert actions and isinstance(actions[0], (s.Close, s.Register))


def _message_with_extra_field(
    identity: Ed25519Identity, key: ClientKey, extra: object, *, signed: bool = True
) -> bytes:
    """A ws_message ClientRequest whose signed content holds ``sender_info``, a field this code does not know."""
    frame = message_request(identity, CANISTER, key, 1, b"hello")
    content = dict(parse_envelope(cbor.decode(frame)["envelope"]).content)
    content["sender_info"] = extra
    if not signed:  # a value no request id covers cannot be signed: the signature is never reached
        return encode_client_request(cbor.encode({"content": content, "sender_sig": b"\x00" * 64}))
    return encode_client_request(build_envelope(identity, content))


def test_an_unknown_content_field_is_relayed_byte_for_byte():
    identity = Ed25519Identity.generate()
    key = ClientKey(identity.sender, 5)
    session, _ = opened(identity)
    session.delivered()
    sender_info = {"info": b"\x01\x02", "signer": b"\x03" * 29, "sig": b"\x04" * 64}
    frame = _message_with_extra_field(identity, key, sender_info)
    (relay,) = session.receive(frame)
    assert isinstance(relay, s.Relay)
    assert frame.endswith(relay.envelope_bytes)
    assert cbor.decode(relay.envelope_bytes)["content"]["sender_info"] == sender_info
    # The request id covers the field, so the IC's deduplication and the sender's signature see it.
    assert relay.envelope.request_id == request_id(cbor.decode(relay.envelope_bytes)["content"])
    verify_envelope(relay.envelope)
    # A replica (the devnet) stays strict.
    with pytest.raises(EnvelopeError, match="unknown fields"):
        parse_envelope(relay.envelope_bytes)


@pytest.mark.parametrize("extra", [1.5, -1, {"k": [None]}, {7: b""}], ids=["float", "negative", "null", "int_key"])
def test_an_unknown_content_field_no_request_id_covers_closes_the_session(extra):
    identity = Ed25519Identity.generate()
    session, _ = opened(identity)
    session.delivered()
    close = only_close(
        session.receive(_message_with_extra_field(identity, ClientKey(identity.sender, 5), extra, signed=False))
    )
    assert close.code == s.CLOSE_POLICY_VIOLATION
    assert "no request id covers" in close.reason
