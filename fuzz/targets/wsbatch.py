"""The ``ws_get_messages`` reply decoders and the content check, both twins (``protocol.types`` / ``_ext._wsbatch``).

Input: the Candid reply as a canister (or a replica in between) sends it, read as the gateway's poller reads
it (``decode_polled_batch``: route keys, keys and their nonces) and as named tuples
(``decode_get_messages_result``, whose keys then go through ``parse_message_nonce``). The polled messages are
then checked (``check_messages``) against hashes that certify every other one, and routed to some of their clients
with those checks (``route_shares``, ``protocol.poller``).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

from fuzz import fixtures
from fuzz.harness import twins
from icws_fast import _ext
from icws_fast.errors import IcwsError, ProtocolDecodeError
from icws_fast.ic import candid
from icws_fast.protocol.certified import check_messages_pure
from icws_fast.protocol.poller import route_shares_pure
from icws_fast.protocol.types import (
    CanisterOutputCertifiedMessages,
    CanisterOutputMessage,
    ClientKey,
    WebsocketMessage,
    decode_get_messages_result_pure,
    decode_polled_batch_pure,
    encode_get_messages_result,
    encode_websocket_message,
    message_key,
    parse_message_nonce,
)

PREFIX = 0
_COMPILED = _ext.compiled("_wsbatch")
_DECODE = _COMPILED.decode_get_messages_result if _COMPILED else None
_POLLED = _COMPILED.decode_polled_batch if _COMPILED else None
_CHECK = _COMPILED.check_messages if _COMPILED else None
_ROUTE = _COMPILED.route_shares if _COMPILED else None
# The reply of a CDK before 0.3.1: no is_end_of_queue.
_OLD_RESULT = candid.parse_args(
    "(variant { Ok : record { messages : vec record { client_key : record { client_principal : principal;"
    " client_nonce : nat64 }; key : text; content : blob }; cert : blob; tree : blob }; Err : text })"
)


def one_input(data: bytes) -> None:
    with contextlib.suppress(IcwsError):  # a key without a nonce is an error here only
        polled = twins("decode_polled_batch", decode_polled_batch_pure, _POLLED, data)
        hashes = {
            key: hashlib.sha256(content).digest() if i % 2 else b"\x00" * 32
            for i, (key, content) in enumerate(zip(polled.keys, polled.contents, strict=True))
        }
        # Every other client connected (recipients are small ints here), without checks and with them.
        routes = {route: i % 3 for i, route in enumerate(polled.route_keys[::2])}
        args = (routes, polled.route_keys, polled.keys, polled.contents)
        twins("route_shares", route_shares_pure, _ROUTE, *args, None)
        with contextlib.suppress(IcwsError):  # a message of a connected client that is not certified
            twins("route_shares", route_shares_pure, _ROUTE, *args, hashes)
        for start in (1, 0):  # the certified messages, then the others (an error ends the loop)
            keys, contents = polled.keys[start::2], polled.contents[start::2]
            twins("check_messages", check_messages_pure, _CHECK, hashes, keys, contents)
    batch = twins("decode_get_messages_result", decode_get_messages_result_pure, _DECODE, data)
    for message in batch.messages:
        with contextlib.suppress(ProtocolDecodeError):
            parse_message_nonce(message.key)


def seeds() -> Iterator[bytes]:
    key = ClientKey(fixtures.CLIENT.sender, fixtures.CLIENT_NONCE)
    messages = []
    for nonce in range(3):
        content = encode_websocket_message(WebsocketMessage(key, nonce + 1, fixtures.NOW_NS, False, b"DIDL\x00\x00"))
        messages.append(CanisterOutputMessage(key, message_key(fixtures.GATEWAY, nonce), content))
    cert, tree = fixtures.certify_message(messages[0].key, messages[0].content)
    for end in (True, False):
        yield encode_get_messages_result(CanisterOutputCertifiedMessages(messages, cert, tree, end))
    yield encode_get_messages_result(CanisterOutputCertifiedMessages([], cert, tree, True))
    yield candid.encode(
        _OLD_RESULT, [{"Ok": {"messages": [m.to_candid() for m in messages], "cert": cert, "tree": tree}}]
    )
    yield candid.encode(_OLD_RESULT, [{"Err": "the gateway is not registered"}])
    for record in fixtures.records("certificates"):
        for item in record.get("ws_messages") or ([record["ws_message"]] if record.get("ws_message") else []):
            vector = CanisterOutputMessage(key, item["key"], bytes.fromhex(item["content_hex"]))
            batch = CanisterOutputCertifiedMessages(
                [vector], bytes.fromhex(record["cbor_hex"]), bytes.fromhex(item["tree_cbor_hex"]), True
            )
            yield encode_get_messages_result(batch)
