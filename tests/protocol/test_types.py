"""icws_fast.protocol.types: round trips, the shared ic-websocket vectors, official byte layouts, hostile input."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import pytest

from icws_fast.errors import CertificateError, DecodeError, ProtocolDecodeError, ProtocolError
from icws_fast.ic import candid, cbor, hashtree
from icws_fast.ic.certificate import Certificate
from icws_fast.ic.principal import Principal
from icws_fast.protocol import types as t
from tests.vectors import load_vectors

CLIENT = Principal.from_text("kj67s-b5v2y-ahlkr-kmume-xbow6-zwbtj-j4j3m-ae46e-qqrcu-uxiby-yae")
GATEWAY = Principal.from_text("sqdfl-mr4km-2hfjy-gajqo-xqvh7-hf4mf-nra4i-3it6l-neaw4-soolw-tae")
KEY = t.ClientKey(CLIENT, 385892949151814926)

CERT_RECORDS = {r["id"]: r for r in load_vectors("certificates")}
WS_CERT_RECORDS = [r for r in CERT_RECORDS.values() if "ws_message" in r or "ws_messages" in r]
ICWS_CANDID = [r for r in load_vectors("candid") if r["id"].startswith("icws-")]


def _ws_messages(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [record["ws_message"]] if "ws_message" in record else list(record["ws_messages"])


# ---------------------------------------------------------------------------------------------------------------
# Round trips


def test_websocket_message_round_trip_and_layout() -> None:
    msg = t.WebsocketMessage(KEY, 7, 1_700_000_000_000_000_000, False, b"\x00hello")
    data = t.encode_websocket_message(msg)
    assert data.startswith(cbor.SELF_DESCRIBE_PREFIX)
    assert t.decode_websocket_message(data) == msg
    # serde writes the fields in declaration order; the certified bytes depend on it.
    assert list(cbor.decode(data)) == ["client_key", "sequence_num", "timestamp", "is_service_message", "content"]
    assert cbor.decode(data)["client_key"]["client_principal"] == CLIENT.bytes


def test_websocket_message_encoding_equals_the_generic_cbor_of_the_struct() -> None:
    """The spliced fast encoder writes exactly what a serde-like generic encoder writes, for any field values."""
    rng = random.Random(1)
    for _ in range(300):
        key = t.ClientKey(
            Principal(rng.randbytes(rng.randint(0, 29))), rng.choice((0, 23, 24, 255, 256, 1 << 32, t.MAX_NAT64))
        )
        msg = t.WebsocketMessage(
            key,
            rng.choice((0, 1, 23, 24, 65535, 65536, t.MAX_NAT64)),
            rng.randint(0, t.MAX_NAT64),
            rng.random() < 0.5,
            rng.randbytes(rng.choice((0, 1, 23, 24, 255, 256, 70000))),
        )
        generic = cbor.encode(
            {
                "client_key": {"client_principal": key.client_principal.bytes, "client_nonce": key.client_nonce},
                "sequence_num": msg.sequence_num,
                "timestamp": msg.timestamp,
                "is_service_message": msg.is_service_message,
                "content": msg.content,
            }
        )
        assert t.encode_websocket_message(msg) == generic
        assert t.decode_websocket_message(generic) == msg


def test_handshake_round_trip() -> None:
    data = t.encode_handshake(GATEWAY)
    assert data == cbor.encode({"gateway_principal": GATEWAY.bytes})
    assert t.decode_handshake(data) == GATEWAY
    # Without the self-describe tag too (any CBOR encoder may be on the other side).
    assert t.decode_handshake(cbor.encode({"gateway_principal": GATEWAY.bytes}, self_describe=False)) == GATEWAY


def test_canister_to_client_round_trip_without_tag() -> None:
    data = t.encode_canister_to_client("k_00000000000000000001", b"c", b"cert", b"tree")
    # The Rust gateway relays with serde_cbor::to_vec: no self-describe tag, fields in declaration order.
    assert not data.startswith(cbor.SELF_DESCRIBE_PREFIX)
    assert list(cbor.decode(data)) == ["key", "content", "cert", "tree"]
    assert t.decode_canister_to_client(data) == t.CanisterToClientMessage(
        "k_00000000000000000001", b"c", b"cert", b"tree"
    )


def test_client_request_embeds_the_envelope_as_a_map() -> None:
    envelope = {
        "content": {"request_type": "call", "canister_id": b"\x01", "method_name": "ws_open", "arg": b"DIDL\x00\x00"},
        "sender_pubkey": b"pk",
        "sender_sig": b"sig",
    }
    envelope_cbor = cbor.encode(envelope)
    from_bytes = t.encode_client_request(envelope_cbor)
    from_map = t.encode_client_request(envelope)
    assert from_bytes == from_map
    assert cbor.decode(from_bytes) == {"envelope": envelope}
    decoded = t.decode_client_request(from_bytes)
    assert decoded.startswith(cbor.SELF_DESCRIBE_PREFIX)
    assert cbor.decode(decoded) == envelope


@pytest.mark.parametrize(
    "msg",
    [
        t.OpenMessage(KEY),
        t.AckMessage(0),
        t.AckMessage(t.MAX_NAT64),
        t.KeepAliveMessage(12),
        *(t.CloseMessage(reason) for reason in t.CloseMessageReason),
    ],
)
def test_service_message_round_trip(msg: t.ServiceMessage) -> None:
    assert t.decode_service_message(t.encode_service_message(msg)) == msg


def test_method_argument_and_result_round_trips() -> None:
    assert t.decode_ws_open_args(t.encode_ws_open_args(5, GATEWAY)) == (5, GATEWAY)
    assert t.decode_ws_close_args(t.encode_ws_close_args(KEY)) == KEY
    assert t.decode_get_messages_args(t.encode_get_messages_args(42)) == 42
    msg = t.WebsocketMessage(KEY, 1, 2, True, b"x")
    assert t.decode_ws_message_args(t.encode_ws_message_args(msg)) == msg
    t.decode_unit_result(t.encode_unit_result())
    with pytest.raises(ProtocolError, match=r"^boom$"):
        t.decode_unit_result(t.encode_unit_result("boom"))

    batch = t.CanisterOutputCertifiedMessages(
        [t.CanisterOutputMessage(KEY, t.message_key(GATEWAY, 3), b"content")], b"cert", b"tree", False
    )
    assert t.decode_get_messages_result(t.encode_get_messages_result(batch)) == batch
    err = candid.encode(candid.parse_args("(variant { Ok : null; Err : text })"), [{"Err": "nope"}])
    with pytest.raises(ProtocolError, match="nope"):
        t.decode_get_messages_result(err)


# Produced here with @dfinity/candid 2.4.1 (IDL.encode with the JS SDK's IDL from src/idl.ts), the encoder of the
# official client: its ws_message arguments and a KeepAliveMessage.
JS_WS_MESSAGE_ARGS = bytes.fromhex(
    "4449444c056d7b6c02fa80a2940568bbd1eacd0e786c0588ecfba70178b99adecb0100ebb49ce90301d6a9bbae0a78e8f5c3be0a7e6c01c1b4"
    "cc02026e7f020304010000000000000003616263011db5d60075aa2a65184b85d6f66c19a53c4ed80273c484222a52e80e30020e9585bb97f7"
    "5a0502000000000000000000"
)
JS_KEEP_ALIVE = bytes.fromhex(
    "4449444c066c02fa80a2940568bbd1eacd0e786c01ebb49ce903006c01d888abb90a786b04cdc2dabb047fc9c68ea0057fd7aba29c0a7f999d"
    "afab0d7f6c01c49ff4e40f036b04fdbd95cc0101bfd397b409028ff2d1ef0a049eb7f0ad0b020105010300000000000000"
)


def test_javascript_sdk_encodings() -> None:
    assert t.decode_ws_message_args(JS_WS_MESSAGE_ARGS) == t.WebsocketMessage(KEY, 1, 2, False, b"abc")
    assert t.decode_service_message(JS_KEEP_ALIVE) == t.KeepAliveMessage(3)
    # Same type table layout as agent-js, so our service messages are byte-identical to the JS client's.
    assert t.encode_service_message(t.KeepAliveMessage(3)) == JS_KEEP_ALIVE


def test_ws_message_args_decode_at_the_canister_app_type() -> None:
    """The JS SDK sends ``opt null``; a canister reads its ``opt AppMessage`` as absent."""
    msg = t.WebsocketMessage(KEY, 1, 2, False, b"app")
    canister_args = candid.parse_args(
        "(CanisterWsMessageArguments, opt AppMessage)",
        t.WS_TYPES_DID + "type AppMessage = record { text : text; timestamp : nat64 };",
    )
    args, app = candid.decode(t.encode_ws_message_args(msg), canister_args)
    assert app is None
    assert t.WebsocketMessage.from_candid(args["msg"]) == msg


def test_get_messages_result_from_an_old_cdk_without_end_of_queue() -> None:
    old = candid.parse_args(
        "(variant { Ok : record { messages : vec CanisterOutputMessage; cert : blob; tree : blob }; Err : text })",
        t.WS_TYPES_DID,
    )
    data = candid.encode(old, [{"Ok": {"messages": [], "cert": b"c", "tree": b"t"}}])
    assert t.decode_get_messages_result(data) == t.CanisterOutputCertifiedMessages([], b"c", b"t", True)


def test_interface_text_matches_the_official_types() -> None:
    for name in (
        "ClientKey",
        "WebsocketMessage",
        "CanisterOutputMessage",
        "CanisterOutputCertifiedMessages",
        "CanisterWsOpenArguments",
        "CanisterWsOpenResult",
        "CanisterWsCloseArguments",
        "CanisterWsCloseResult",
        "CanisterWsMessageArguments",
        "CanisterWsMessageResult",
        "CanisterWsGetMessagesArguments",
        "CanisterWsGetMessagesResult",
        "WebsocketServiceMessageContent",
        "CloseMessageReason",
    ):
        assert name in t.WS_CANDID_TYPES


# ---------------------------------------------------------------------------------------------------------------
# Message keys


def test_message_key_format_and_order() -> None:
    assert t.message_key(GATEWAY, 0) == f"{GATEWAY}_00000000000000000000"
    assert t.message_key(GATEWAY, t.MAX_NAT64) == f"{GATEWAY}_18446744073709551615"
    keys = [t.message_key(GATEWAY, n) for n in (0, 1, 9, 10, 99, 100, 12345678901234567890)]
    assert keys == sorted(keys)
    for n in (0, 1, 10**19, t.MAX_NAT64):
        assert t.parse_message_nonce(t.message_key(GATEWAY, n)) == n
    with pytest.raises(ValueError):
        t.message_key(GATEWAY, -1)
    with pytest.raises(ValueError):
        t.message_key(GATEWAY, t.MAX_NAT64 + 1)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "abc",
        "abc_",
        "_",
        "a_1_x",
        "a_-1",
        "a_+1",
        "a_ 1",
        "a_1.0",
        "a_١٢",
        "a_18446744073709551616",
        "a_" + "1" * 21,
    ],
)
def test_parse_message_nonce_rejects_bad_keys(key: str) -> None:
    with pytest.raises(ProtocolDecodeError):
        t.parse_message_nonce(key)


# ---------------------------------------------------------------------------------------------------------------
# Shared vectors


@pytest.mark.parametrize("record", ICWS_CANDID, ids=lambda r: str(r["id"]))
def test_icws_candid_vectors(record: dict[str, Any]) -> None:
    data = bytes.fromhex(record["hex"])
    if not record["valid"]:
        with pytest.raises(ProtocolDecodeError):
            t.decode_service_message(data)
        return
    if record["type"] != "(WebsocketServiceMessageContent)":
        # An application message: decoded by the app's type, here with the vector's own definitions.
        types = candid.parse_args(record["type"], "\n".join(record.get("type_defs", [])))
        assert candid.decode(data, types) is not None
        return
    decoded = t.decode_service_message(data)
    ((tag, body),) = record["value"][0]["variant"].items()
    fields = body["record"]
    if tag == "OpenMessage":
        key = fields["client_key"]["record"]
        expected: t.ServiceMessage = t.OpenMessage(
            t.ClientKey(Principal.from_text(key["client_principal"]["principal"]), key["client_nonce"])
        )
    elif tag == "AckMessage":
        expected = t.AckMessage(fields["last_incoming_sequence_num"])
    elif tag == "KeepAliveMessage":
        expected = t.KeepAliveMessage(fields["last_incoming_sequence_num"])
    else:
        ((reason, _),) = fields["reason"]["variant"].items()
        expected = t.CloseMessage(t.CloseMessageReason(reason))
    assert decoded == expected
    # Our encoding may lay out the type table differently, but must decode to the same value.
    assert t.decode_service_message(t.encode_service_message(decoded)) == decoded


@pytest.mark.parametrize("record", WS_CERT_RECORDS, ids=lambda r: str(r["id"]))
def test_icws_certified_message_vectors(record: dict[str, Any]) -> None:
    cert = Certificate.from_cbor(bytes.fromhex(record["cbor_hex"]))
    check = next(c for c in record["checks"] if c["expected"] == "valid")
    cert.verify(
        bytes.fromhex(record["root_key_der_hex"]),
        Principal.from_text(check["canister_id"]),
        now_ns=check["now_ns"],
        max_age_ns=check["max_cert_skew_s"] * 1_000_000_000,
    )
    certified_data = cert.lookup_value(
        [b"canister", Principal.from_text(check["canister_id"]).bytes, b"certified_data"]
    )
    for ws in _ws_messages(record):
        content = bytes.fromhex(ws["content_hex"])
        tree = hashtree.parse(bytes.fromhex(ws["tree_cbor_hex"]))
        found = hashtree.lookup_path(tree, [t.LABEL_WEBSOCKET, ws["key"].encode()])
        valid = (
            hashtree.reconstruct(tree) == certified_data
            and found.status == "Found"
            and found.value == hashlib.sha256(content).digest()
        )
        assert valid == (ws["expected"] == "valid")
        if not valid:
            continue
        assert t.parse_message_nonce(ws["key"]) == int(ws["key"].rpartition("_")[2])
        top_level = cbor.decode(content)
        if "is_service_message" not in top_level:
            # The 2023-07 record predates the 0.3 message layout (client key as raw bytes, no flag): we reject it.
            with pytest.raises(ProtocolDecodeError):
                t.decode_websocket_message(content)
            continue
        msg = t.decode_websocket_message(content)
        # Byte for byte what the Rust CDK produced, so a client's hash check holds for our canisters too.
        assert t.encode_websocket_message(msg) == content
        assert msg.is_service_message
        service = t.decode_service_message(msg.content)
        assert isinstance(service, (t.OpenMessage, t.AckMessage))
        if isinstance(service, t.OpenMessage):
            assert service.client_key == msg.client_key

    for ws in _ws_messages(record):
        for negative in ws.get("negative_cases", []):
            key, content = ws["key"], bytes.fromhex(ws["content_hex"])
            canister = Principal.from_text(check["canister_id"])
            change = negative["change"]
            if change.startswith("key = "):
                key = change.split('"')[1]
            elif change.startswith("content = "):
                content = bytes.fromhex(change.split(" = ")[1])
            else:
                canister = Principal.from_text(change.split(" = ")[1])
            tree = hashtree.parse(bytes.fromhex(ws["tree_cbor_hex"]))
            try:
                data = cert.lookup_value([b"canister", canister.bytes, b"certified_data"])
            except CertificateError:
                assert negative["expected"].startswith("error")
                continue
            found = hashtree.lookup_path(tree, [t.LABEL_WEBSOCKET, key.encode()])
            assert hashtree.reconstruct(tree) != data or found.value != hashlib.sha256(content).digest()


# ---------------------------------------------------------------------------------------------------------------
# Hostile input


def _valid_frames() -> dict[str, bytes]:
    msg = t.WebsocketMessage(KEY, 3, 4, True, t.encode_service_message(t.KeepAliveMessage(2)))
    return {
        "websocket_message": t.encode_websocket_message(msg),
        "handshake": t.encode_handshake(GATEWAY),
        "client_request": t.encode_client_request({"content": {"request_type": "call"}, "sender_sig": b"s"}),
        "canister_to_client": t.encode_canister_to_client("k_1", b"c", b"x", b"y"),
        "service_message": t.encode_service_message(t.OpenMessage(KEY)),
        "ws_open_args": t.encode_ws_open_args(1, GATEWAY),
        "ws_message_args": t.encode_ws_message_args(msg),
        "ws_close_args": t.encode_ws_close_args(KEY),
        "get_messages_args": t.encode_get_messages_args(9),
        "get_messages_result": t.encode_get_messages_result(
            t.CanisterOutputCertifiedMessages([t.CanisterOutputMessage(KEY, "k_1", b"c")], b"x", b"y", True)
        ),
        "unit_result": t.encode_unit_result(),
    }


DECODERS = {
    "websocket_message": t.decode_websocket_message,
    "handshake": t.decode_handshake,
    "client_request": t.decode_client_request,
    "canister_to_client": t.decode_canister_to_client,
    "service_message": t.decode_service_message,
    "ws_open_args": t.decode_ws_open_args,
    "ws_message_args": t.decode_ws_message_args,
    "ws_close_args": t.decode_ws_close_args,
    "get_messages_args": t.decode_get_messages_args,
    "get_messages_result": t.decode_get_messages_result,
    "unit_result": t.decode_unit_result,
}


def _mutations(data: bytes, rng: random.Random, count: int) -> list[bytes]:
    out = [b"", data[:-1], data + b"\x00", data[: len(data) // 2], data[3:]]
    for _ in range(count):
        buf = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(3)
            pos = rng.randrange(len(buf)) if buf else 0
            if op == 0 and buf:
                buf[pos] = rng.randrange(256)
            elif op == 1:
                buf.insert(pos, rng.randrange(256))
            elif buf:
                del buf[pos]
        out.append(bytes(buf))
    out.extend(rng.randbytes(rng.randint(1, 64)) for _ in range(count // 4))
    return out


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_decoders_raise_only_protocol_errors_on_hostile_bytes(name: str) -> None:
    rng = random.Random(name)
    decode = DECODERS[name]
    valid = _valid_frames()[name]
    decode(valid)
    for data in _mutations(valid, rng, 400):
        try:
            decode(data)
        except ProtocolError as exc:
            # Malformed bytes are decode errors; only a well-formed Err reply is a plain ProtocolError.
            assert isinstance(exc, DecodeError) or name in ("get_messages_result", "unit_result")


@pytest.mark.parametrize(
    "obj",
    [
        [],
        {"client_key": {}, "sequence_num": 1, "timestamp": 1, "is_service_message": False, "content": b""},
        {
            "client_key": {"client_principal": b"\x00" * 30, "client_nonce": 1},
            "sequence_num": 1,
            "timestamp": 1,
            "is_service_message": False,
            "content": b"",
        },
        {
            "client_key": {"client_principal": CLIENT.bytes, "client_nonce": -1},
            "sequence_num": 1,
            "timestamp": 1,
            "is_service_message": False,
            "content": b"",
        },
        {
            "client_key": {"client_principal": CLIENT.bytes, "client_nonce": 1},
            "sequence_num": 1 << 64,
            "timestamp": 1,
            "is_service_message": False,
            "content": b"",
        },
        {
            "client_key": {"client_principal": CLIENT.bytes, "client_nonce": 1},
            "sequence_num": True,
            "timestamp": 1,
            "is_service_message": 0,
            "content": "text",
        },
        {
            "client_key": {"client_principal": CLIENT.to_text(), "client_nonce": 1},
            "sequence_num": 1,
            "timestamp": 1,
            "is_service_message": False,
            "content": b"",
        },
        {
            "client_key": {"client_principal": CLIENT.bytes, "client_nonce": 1},
            "sequence_num": 1,
            "timestamp": 1,
            "is_service_message": False,
            "content": b"",
            "extra": 1,
        },
    ],
)
def test_websocket_message_shape_errors(obj: Any) -> None:
    with pytest.raises(ProtocolDecodeError):
        t.decode_websocket_message(cbor.encode(obj))


@pytest.mark.parametrize(
    ("decode", "obj"),
    [
        (t.decode_handshake, {"gateway_principal": "aaaaa-aa"}),
        (t.decode_handshake, {}),
        (t.decode_client_request, {"envelope": b"bytes"}),
        (t.decode_client_request, {"envelope": {"sender_sig": b""}}),
        (t.decode_client_request, {"envelope": {"content": []}}),
        (t.decode_canister_to_client, {"key": b"k", "content": b"", "cert": b"", "tree": b""}),
        (t.decode_canister_to_client, {"key": "k", "content": b"", "cert": b""}),
    ],
)
def test_frame_shape_errors(decode: Any, obj: Any) -> None:
    with pytest.raises(ProtocolDecodeError):
        decode(cbor.encode(obj))


def test_deeply_nested_cbor_is_rejected() -> None:
    with pytest.raises(ProtocolDecodeError):
        t.decode_websocket_message(b"\x81" * 100_000 + b"\x00")
    nested: Any = b"x"
    for _ in range(20):
        nested = [nested]
    with pytest.raises(ProtocolDecodeError):
        t.decode_client_request(cbor.encode({"envelope": {"content": {"request_type": "call"}, "deep": nested}}))


def test_client_request_with_a_delegation_chain_decodes() -> None:
    delegation = {"delegation": {"pubkey": b"k", "expiration": 1, "targets": [b"\x01", b"\x02"]}, "signature": b"s"}
    envelope = {
        "content": {"request_type": "call", "arg": b""},
        "sender_pubkey": b"p",
        "sender_sig": b"s",
        "sender_delegation": [delegation, delegation],
    }
    assert cbor.decode(t.decode_client_request(t.encode_client_request(envelope))) == envelope
