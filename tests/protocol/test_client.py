"""The sans-IO client state machine against messages certified as the CDK and the replica certify them.

Every failure a verifying client must catch is produced for real (wrong signing key, another canister,
mismatched tree, unknown key, stale certificate, bad sequence numbers...) and must end in an error event
and a close with the JS SDK's code and reason, never in an exception.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from icws_fast.errors import CandidError, CertificateError, IcwsError, ProtocolError, SequenceError
from icws_fast.ic import bls, candid
from icws_fast.ic.certificate import (
    REASON_INVALID_SIGNATURE,
    REASON_PATH_NOT_FOUND,
    REASON_TIME_IN_FUTURE,
    REASON_TIME_TOO_OLD,
)
from icws_fast.ic.identity import AnonymousIdentity, Ed25519Identity
from icws_fast.ic.principal import Principal
from icws_fast.protocol.certified import (
    REASON_CONTENT_MISMATCH,
    REASON_KEY_NOT_FOUND,
    REASON_TREE_MISMATCH,
    BatchVerifier,
    check_message,
)
from icws_fast.protocol.client import (
    CLOSE_BY_APPLICATION,
    CLOSE_ERROR,
    CLOSE_NORMAL,
    REASON_ACK_ERROR,
    REASON_ACK_TIMEOUT,
    REASON_CANISTER_CLOSE,
    REASON_OPEN_TIMEOUT,
    REASON_RECEIVE_ERROR,
    REASON_SERVICE_ERROR,
    ClientProtocol,
    ClientState,
    CloseConnection,
    ErrorOccurred,
    MessageReceived,
    Opened,
    SendToGateway,
)
from icws_fast.protocol.types import (
    COMMUNICATION_LATENCY_BOUND_MS,
    MAX_CLOSE_REASON,
    ClientKey,
    CloseMessageReason,
    KeepAliveMessage,
    OpenMessage,
    encode_canister_to_client,
    truncate_reason,
)
from tests.client.icws_sim import NS, OTHER_SK, ROOT_KEY_DER, T0, SimCanister
from tests.vectors import load_vectors

ACK_INTERVAL_MS = 2_000
ACK_EXPIRY_NS = (ACK_INTERVAL_MS + COMMUNICATION_LATENCY_BOUND_MS) * 1_000_000
MS = 1_000_000


def make_client(**kw: Any) -> ClientProtocol:
    kw.setdefault("ack_interval_ms", ACK_INTERVAL_MS)
    return ClientProtocol(SimCanister().canister_id, Ed25519Identity.generate(), ROOT_KEY_DER, **kw)


def only_frame(events: list[Any]) -> bytes:
    assert len(events) == 1 and isinstance(events[0], SendToGateway), events
    frame: bytes = events[0].data
    return frame


def assert_failed(events: list[Any], reason: str, error_type: type[IcwsError] = IcwsError) -> IcwsError:
    assert len(events) == 2, events
    assert isinstance(events[0], ErrorOccurred) and isinstance(events[0].error, error_type), events
    assert events[1] == CloseConnection(CLOSE_ERROR, reason)
    return events[0].error


class Session:
    """A client opened against a simulated canister: the usual starting point of a test."""

    def __init__(self, now_ns: int = T0, **kw: Any) -> None:
        self.canister = SimCanister()
        self.client = make_client(**kw)
        self.key = self.client.client_key
        self.client.connection_made(now_ns)
        self.open_request = self.canister.receive(
            only_frame(self.client.receive_frame(self.canister.handshake(), now_ns)), now_ns
        )
        (frame,) = self.canister.relay([self.canister.open(self.key, now_ns)], cert_time_ns=now_ns)
        assert self.client.receive_frame(frame, now_ns) == [Opened()]

    def deliver(self, messages: list[tuple[str, bytes]], now_ns: int, **kw: Any) -> list[Any]:
        kw.setdefault("cert_time_ns", now_ns)
        events: list[Any] = []
        for frame in self.canister.relay(messages, **kw):
            events += self.client.receive_frame(frame, now_ns)
        return events


# ---- the happy path ------------------------------------------------------------------------------------


def test_handshake_sends_a_signed_ws_open_for_this_gateway() -> None:
    canister = SimCanister()
    client = make_client(client_nonce=12345)
    assert client.state is ClientState.HANDSHAKE
    frame = only_frame(client.receive_frame(canister.handshake(), T0))
    got = canister.receive(frame, T0)  # checks the envelope signature and expiry as the IC does
    assert got.method == "ws_open"
    assert got.open_args == (12345, canister.gateway)
    assert got.envelope.sender == client.identity.sender
    assert got.envelope.nonce is not None and len(got.envelope.nonce) == 16
    assert client.state is ClientState.OPENING
    assert client.gateway_principal == canister.gateway
    assert client.client_key == ClientKey(client.identity.sender, 12345)


def test_random_client_nonce_and_distinct_request_ids() -> None:
    a, b = make_client(), make_client()
    assert a.client_key.client_nonce != b.client_key.client_nonce
    canister = SimCanister()
    frames = [only_frame(c.receive_frame(canister.handshake(), T0)) for c in (a, b)]
    assert canister.receive(frames[0], T0).envelope.request_id != canister.receive(frames[1], T0).envelope.request_id


def test_open_then_application_messages_both_ways() -> None:
    s = Session()
    assert s.client.is_open
    assert s.client.next_deadline_ns is None  # nothing sent yet: no ack is awaited
    now = T0 + NS
    events = s.deliver([s.canister.app(s.key, {"text": "ping", "timestamp": 7}, now)], now)
    assert events == [MessageReceived({"text": "ping", "timestamp": 7}, 2, now)]

    for i in (1, 2):
        frame = only_frame(s.client.send({"text": f"hello {i}", "timestamp": i}, now + i))
        got = s.canister.receive(frame, now)
        assert got.method == "ws_message"
        assert got.message is not None
        assert got.message.sequence_num == i
        assert got.message.timestamp == now + i
        assert got.message.client_key == s.key
        assert not got.message.is_service_message
        assert got.value == {"text": f"hello {i}", "timestamp": i}
    assert s.client.next_deadline_ns == now + 1 + ACK_EXPIRY_NS


def test_a_batch_shares_one_certificate() -> None:
    s = Session()
    now = T0 + NS
    batch = [s.canister.app(s.key, {"text": str(i), "timestamp": i}, now) for i in range(5)]
    events = s.deliver(batch, now)
    assert [e.value["text"] for e in events] == ["0", "1", "2", "3", "4"]
    assert [e.sequence_num for e in events] == [2, 3, 4, 5, 6]


def test_ack_is_answered_with_a_keep_alive() -> None:
    s = Session()
    now = T0 + NS
    s.canister.receive(only_frame(s.client.send({"text": "a", "timestamp": 0}, now)), now)
    later = now + ACK_INTERVAL_MS * MS
    frame = only_frame(s.deliver([s.canister.ack(s.key, 1, later)], later))
    got = s.canister.receive(frame, later)
    assert got.message is not None and got.message.is_service_message
    assert got.message.sequence_num == 2  # service messages share the outgoing counter
    assert got.service == KeepAliveMessage(2)  # the open message and the ack were received
    # The keep-alive itself now awaits an ack, counted from this ack.
    assert s.client.next_deadline_ns == later + ACK_EXPIRY_NS


def test_application_close_and_canister_close() -> None:
    s = Session()
    assert s.client.close() == [CloseConnection(CLOSE_NORMAL, "")]
    assert s.client.state is ClientState.CLOSED
    assert s.client.close() == []

    s = Session()
    events = s.deliver([s.canister.close(s.key, CloseMessageReason.ClosedByApplication, T0)], T0)
    assert events == [CloseConnection(CLOSE_BY_APPLICATION, "ClosedByApplication")]

    s = Session()
    events = s.deliver([s.canister.close(s.key, CloseMessageReason.WrongSequenceNumber, T0)], T0)
    assert "WrongSequenceNumber" in str(assert_failed(events, REASON_CANISTER_CLOSE, ProtocolError))


def test_nothing_happens_after_close() -> None:
    s = Session()
    s.client.close()
    (frame,) = s.canister.relay([s.canister.app(s.key, {"text": "x", "timestamp": 0}, T0)], cert_time_ns=T0)
    assert s.client.receive_frame(frame, T0) == []
    assert s.client.tick(T0 + 10**15) == []
    with pytest.raises(ProtocolError):
        s.client.send({"text": "x", "timestamp": 0}, T0)


def test_send_before_open_and_bad_values() -> None:
    client = make_client()
    with pytest.raises(ProtocolError):
        client.send({"text": "x", "timestamp": 0}, T0)
    s = Session()
    with pytest.raises(IcwsError):
        s.client.send({"text": 1}, T0)
    assert s.client.is_open  # a bad value from the application does not break the connection


def test_anonymous_identity_is_refused() -> None:
    with pytest.raises(ValueError, match="anonymous"):
        ClientProtocol(SimCanister().canister_id, AnonymousIdentity(), ROOT_KEY_DER)


def test_custom_message_type() -> None:
    s = SimCanister(app_type="vec nat8")
    client = ClientProtocol(s.canister_id, Ed25519Identity.generate(), ROOT_KEY_DER, "vec nat8")
    s.receive(only_frame(client.receive_frame(s.handshake(), T0)), T0)
    key = client.client_key
    frames = s.relay([s.open(key, T0), s.app(key, b"\x01\x02", T0)], cert_time_ns=T0)
    assert [e for f in frames for e in client.receive_frame(f, T0)] == [Opened(), MessageReceived(b"\x01\x02", 2, T0)]
    assert s.receive(only_frame(client.send(b"xyz", T0)), T0).value == b"xyz"


# ---- verification failures -------------------------------------------------------------------------------


def _app(s: Session) -> tuple[str, bytes]:
    return s.canister.app(s.key, {"text": "x", "timestamp": 0}, T0)


@pytest.mark.parametrize(
    ("relay_kw", "reason"),
    [
        ({"signing_key": OTHER_SK}, REASON_INVALID_SIGNATURE),
        ({"certified_canister": Principal.from_text("bkyz2-fmaaa-aaaaa-qaaaq-cai")}, REASON_PATH_NOT_FOUND),
        ({"certified_data": b"\x00" * 32}, REASON_TREE_MISMATCH),
        ({"cert_time_ns": T0 - 301 * NS}, REASON_TIME_TOO_OLD),
        ({"cert_time_ns": T0 + 301 * NS}, REASON_TIME_IN_FUTURE),
    ],
    ids=["bad-signature", "wrong-canister", "tree-mismatch", "stale", "future"],
)
def test_certificate_failures_close_the_connection(relay_kw: dict[str, Any], reason: str) -> None:
    s = Session()
    events = s.deliver([_app(s)], T0, **relay_kw)
    error = assert_failed(events, REASON_RECEIVE_ERROR, CertificateError)
    assert isinstance(error, CertificateError) and error.reason == reason
    assert s.client.state is ClientState.CLOSED


def test_max_certificate_age_is_configurable() -> None:
    s = Session(max_certificate_age_s=1000)
    assert not [e for e in s.deliver([_app(s)], T0, cert_time_ns=T0 - 900 * NS) if not isinstance(e, MessageReceived)]


def test_wrong_root_key() -> None:
    canister = SimCanister()
    client = ClientProtocol(
        canister.canister_id, Ed25519Identity.generate(), bls.der_encode_public_key(bls.public_key(OTHER_SK))
    )
    canister.receive(only_frame(client.receive_frame(canister.handshake(), T0)), T0)
    (frame,) = canister.relay([canister.open(client.client_key, T0)], cert_time_ns=T0)
    error = assert_failed(client.receive_frame(frame, T0), REASON_RECEIVE_ERROR, CertificateError)
    assert isinstance(error, CertificateError) and error.reason == REASON_INVALID_SIGNATURE


def test_message_key_not_in_tree_and_tampered_content() -> None:
    s = Session()
    key, content = _app(s)
    (frame,) = s.canister.relay([(key, content)], cert_time_ns=T0)
    cert, tree = _cert_and_tree(frame)
    other_key = key[:-1] + "9"
    error = assert_failed(
        s.client.receive_frame(encode_canister_to_client(other_key, content, cert, tree), T0), REASON_RECEIVE_ERROR
    )
    assert isinstance(error, CertificateError) and error.reason == REASON_KEY_NOT_FOUND

    s = Session()
    key, content = _app(s)
    (frame,) = s.canister.relay([(key, content)], cert_time_ns=T0)
    cert, tree = _cert_and_tree(frame)
    tampered = content[:-1] + bytes([content[-1] ^ 1])
    error = assert_failed(
        s.client.receive_frame(encode_canister_to_client(key, tampered, cert, tree), T0), REASON_RECEIVE_ERROR
    )
    assert isinstance(error, CertificateError) and error.reason == REASON_CONTENT_MISMATCH


def _cert_and_tree(frame: bytes) -> tuple[bytes, bytes]:
    from icws_fast.protocol.types import decode_canister_to_client

    msg = decode_canister_to_client(frame)
    return msg.cert, msg.tree


# ---- sequence numbers and service messages ----------------------------------------------------------------


def test_a_gap_in_sequence_numbers_is_a_sequence_error() -> None:
    s = Session()
    s.canister.sequence[s.key] += 2  # the canister skips numbers 2 and 3
    error = assert_failed(s.deliver([_app(s)], T0), REASON_RECEIVE_ERROR, SequenceError)
    assert isinstance(error, SequenceError) and (error.expected, error.received) == (2, 4)
    assert str(error) == "received sequence number 4, expected 2 (2 messages lost)"


def test_duplicate_message_is_a_sequence_error() -> None:
    s = Session()
    (frame,) = s.canister.relay([_app(s)], cert_time_ns=T0)
    assert isinstance(s.client.receive_frame(frame, T0)[0], MessageReceived)
    error = assert_failed(s.client.receive_frame(frame, T0), REASON_RECEIVE_ERROR, SequenceError)
    assert isinstance(error, SequenceError) and (error.expected, error.received) == (3, 2)
    assert str(error) == "received sequence number 2, expected 3 (a duplicate, or out of order)"


def test_reordered_messages_are_a_sequence_error() -> None:
    s = Session()
    (second,), (third,) = (s.canister.relay([_app(s)], cert_time_ns=T0) for _ in range(2))
    error = assert_failed(s.client.receive_frame(third, T0), REASON_RECEIVE_ERROR, SequenceError)
    assert isinstance(error, SequenceError) and (error.expected, error.received) == (2, 3)
    assert str(error) == "received sequence number 3, expected 2 (1 message lost)"
    assert s.client.receive_frame(second, T0) == []  # closed: nothing more is delivered


def test_message_for_another_client_is_rejected() -> None:
    s = Session()
    other = ClientKey(Ed25519Identity.generate().sender, 1)
    message = s.canister.app(s.key, {"text": "x", "timestamp": 0}, T0, addressed_to=other)
    assert "another client" in str(assert_failed(s.deliver([message], T0), REASON_RECEIVE_ERROR, ProtocolError))


def test_first_message_must_be_the_open_message_for_this_client() -> None:
    canister = SimCanister()
    client = make_client()
    client.receive_frame(canister.handshake(), T0)
    events = client.receive_frame(canister.relay([canister.ack(client.client_key, 0, T0)], cert_time_ns=T0)[0], T0)
    assert_failed(events, REASON_SERVICE_ERROR, ProtocolError)

    canister = SimCanister()
    client = make_client()
    client.receive_frame(canister.handshake(), T0)
    message = canister.app(client.client_key, {"text": "early", "timestamp": 0}, T0)
    events = client.receive_frame(canister.relay([message], cert_time_ns=T0)[0], T0)
    assert_failed(events, REASON_RECEIVE_ERROR, ProtocolError)

    canister = SimCanister()
    client = make_client()
    client.receive_frame(canister.handshake(), T0)
    other = ClientKey(client.client_key.client_principal, client.client_key.client_nonce + 1)
    message = canister.service(client.client_key, OpenMessage(other), T0)
    events = client.receive_frame(canister.relay([message], cert_time_ns=T0)[0], T0)
    assert_failed(events, REASON_SERVICE_ERROR, ProtocolError)


def test_unexpected_service_messages() -> None:
    s = Session()
    assert_failed(s.deliver([s.canister.open(s.key, T0)], T0), REASON_SERVICE_ERROR, ProtocolError)
    s = Session()
    assert_failed(s.deliver([s.canister.service(s.key, KeepAliveMessage(1), T0)], T0), REASON_SERVICE_ERROR)
    s = Session()
    # Garbage where a Candid service message belongs.
    message = s.canister.queue(s.key, b"DIDL\x00\x01\x7f", is_service=True, now_ns=T0)
    assert_failed(s.deliver([message], T0), REASON_SERVICE_ERROR)


def test_application_message_that_does_not_decode() -> None:
    s = Session()
    message = s.canister.queue(s.key, b"not candid", is_service=False, now_ns=T0)
    events = s.deliver([message], T0)
    error = events[0].error
    assert isinstance(error, CandidError)
    assert events[1] == CloseConnection(CLOSE_ERROR, truncate_reason(f"{REASON_RECEIVE_ERROR}: {error}"))


@pytest.mark.parametrize(
    ("app_type", "value", "named"),
    [
        (
            "record { text : text; count : nat32 }",
            {"text": "x", "count": 1},
            "field 'timestamp' of type nat64 is missing",
        ),
        ("record { text : nat; timestamp : nat64 }", {"text": 1, "timestamp": 0}, "field 'text': a value of type nat"),
    ],
    ids=["missing-field", "field-of-another-type"],
)
def test_a_message_of_another_type_names_the_field(app_type: str, value: Any, named: str) -> None:
    s = Session()
    content = candid.encode([candid.parse_type(app_type)], [value])
    message = s.canister.queue(s.key, content, is_service=False, now_ns=T0)
    events = s.deliver([message], T0)
    error = events[0].error
    assert isinstance(error, CandidError) and named in str(error)
    assert events[1] == CloseConnection(CLOSE_ERROR, f"{REASON_RECEIVE_ERROR}: {error}")
    assert named in events[1].reason and len(events[1].reason.encode()) <= MAX_CLOSE_REASON


# ---- acks and timeouts -------------------------------------------------------------------------------------


def test_ack_timeout() -> None:
    s = Session()
    s.client.send({"text": "a", "timestamp": 0}, T0)
    deadline = T0 + ACK_EXPIRY_NS
    assert s.client.next_deadline_ns == deadline
    assert s.client.tick(deadline - 1) == []
    error = assert_failed(s.client.tick(deadline), REASON_ACK_TIMEOUT, ProtocolError)
    assert "[1]" in str(error)


def test_ack_restarts_the_timeout_and_keeps_later_messages_pending() -> None:
    s = Session()
    s.client.send({"text": "a", "timestamp": 0}, T0)
    s.client.send({"text": "b", "timestamp": 0}, T0 + NS)
    t1 = T0 + 2 * NS
    only_frame(s.deliver([s.canister.ack(s.key, 1, t1)], t1))  # keep-alive #3
    assert s.client.next_deadline_ns == t1 + ACK_EXPIRY_NS
    error = assert_failed(s.client.tick(t1 + ACK_EXPIRY_NS), REASON_ACK_TIMEOUT)
    assert "[2, 3]" in str(error)


def test_ack_arriving_after_the_expiry_is_a_timeout() -> None:
    s = Session()
    s.client.send({"text": "a", "timestamp": 0}, T0)
    s.client.send({"text": "b", "timestamp": 0}, T0)
    late = T0 + ACK_EXPIRY_NS
    assert_failed(s.deliver([s.canister.ack(s.key, 1, late)], late), REASON_ACK_TIMEOUT)


def test_full_ack_clears_the_deadline() -> None:
    s = Session()
    s.client.send({"text": "a", "timestamp": 0}, T0)
    s.deliver([s.canister.ack(s.key, 1, T0 + NS)], T0 + NS)  # keep-alive #2 pending
    s.deliver([s.canister.ack(s.key, 2, T0 + 2 * NS)], T0 + 2 * NS)  # keep-alive #3 pending
    assert s.client.next_deadline_ns == T0 + 2 * NS + ACK_EXPIRY_NS
    assert s.client.is_open


def test_ack_of_a_message_never_sent() -> None:
    s = Session()
    s.client.send({"text": "a", "timestamp": 0}, T0)
    error = assert_failed(s.deliver([s.canister.ack(s.key, 5, T0)], T0), REASON_ACK_ERROR, ProtocolError)
    assert "beyond" in str(error)


def test_open_timeout_after_the_handshake() -> None:
    canister = SimCanister()
    client = make_client(open_timeout_ms=60_000)
    client.connection_made(T0)
    client.receive_frame(canister.handshake(), T0 + NS)
    deadline = T0 + NS + 60 * NS  # restarted by the handshake
    assert client.next_deadline_ns == deadline
    assert client.tick(deadline - 1) == []
    assert "OpenMessage" in str(assert_failed(client.tick(deadline), REASON_OPEN_TIMEOUT, ProtocolError))


def test_open_timeout_without_a_handshake() -> None:
    client = make_client(open_timeout_ms=1_000)
    assert client.next_deadline_ns is None
    client.connection_made(T0)
    assert "handshake" in str(assert_failed(client.tick(T0 + NS), REASON_OPEN_TIMEOUT, ProtocolError))


# ---- hostile bytes -------------------------------------------------------------------------------------------


def test_garbage_frames_never_raise() -> None:
    rng = random.Random(1234)
    s = Session()
    (valid,) = s.canister.relay([_app(s)], cert_time_ns=T0)
    samples = [b"", b"\xff", b"\xd9\xd9\xf7", s.canister.handshake()]
    for _ in range(300):
        mutated = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        samples.append(bytes(mutated))
        samples.append(valid[: rng.randrange(len(valid))])
        samples.append(rng.randbytes(rng.randrange(1, 64)))
    for sample in samples:
        for client in (make_client(), Session().client):
            events = client.receive_frame(sample, T0)  # must not raise
            assert all(
                isinstance(e, (SendToGateway, Opened, MessageReceived, ErrorOccurred, CloseConnection)) for e in events
            )


def test_bad_handshake() -> None:
    client = make_client()
    assert_failed(client.receive_frame(b"\xa0", T0), REASON_RECEIVE_ERROR)
    assert client.state is ClientState.CLOSED


# ---- the JS SDK's recorded messages --------------------------------------------------------------------------


def _root_keys() -> dict[str, bytes]:
    return {r["root_key_name"]: bytes.fromhex(r["root_key_der_hex"]) for r in load_vectors("certificates")}


WS_RECORDS = [r for r in load_vectors("certificates") if "ws_message" in r or "ws_messages" in r]


@pytest.mark.parametrize("record", WS_RECORDS, ids=[r["id"] for r in WS_RECORDS])
def test_recorded_ic_websocket_messages(record: dict[str, Any]) -> None:
    keys = _root_keys()
    cert = bytes.fromhex(record["cbor_hex"])
    messages = record.get("ws_messages") or [record["ws_message"]]

    def verify(check: dict[str, Any], canister: Principal, tree_hex: str, key: str, content: bytes) -> None:
        verifier = BatchVerifier(keys[check["root_key_name"]], max_age_ns=300 * NS)
        hashes = verifier.verify(cert, bytes.fromhex(tree_hex), canister, check["now_ns"])
        check_message(hashes, key.encode(), content)

    for check in record["checks"]:
        canister = Principal.from_text(check["canister_id"])
        for message in messages:
            args = (check, canister, message["tree_cbor_hex"], message["key"], bytes.fromhex(message["content_hex"]))
            if check["expected"] == "valid" and message["expected"] == "valid":
                verify(*args)
            else:
                with pytest.raises(CertificateError):
                    verify(*args)
        for case in (messages[0].get("negative_cases") or []) if check["expected"] == "valid" else []:
            field, _, value = case["change"].partition(" = ")
            key, content = messages[0]["key"], bytes.fromhex(messages[0]["content_hex"])
            canister = Principal.from_text(check["canister_id"])
            if field == "key":
                key = value.strip('"')
            elif field == "content":
                content = bytes.fromhex(value)
            else:
                canister = Principal.from_text(value)
            with pytest.raises(CertificateError):
                verify(check, canister, messages[0]["tree_cbor_hex"], key, content)
