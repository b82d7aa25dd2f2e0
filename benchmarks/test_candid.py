"""Candid: encoding and decoding the IC WebSocket poll result, plus the small service messages.

Workload: a ``CanisterWsGetMessagesResult`` holding 50 messages (principal client keys, 40-byte
gateway keys, 200-byte CBOR contents), which the CDK encodes and the gateway decodes on every
poll; and one ``WebsocketServiceMessageContent`` (an ack) for the per-message cost floor.

Run: ``.venv/bin/pytest benchmarks/test_candid.py --benchmark-only --benchmark-enable``
"""

from __future__ import annotations

from typing import Any

from pytest_benchmark.fixture import BenchmarkFixture

from icws_fast.ic import candid
from icws_fast.ic.principal import Principal
from icws_fast.protocol.types import SERVICE_MESSAGES_DID, WS_TYPES_DID

# The CDK's own interface, so the benchmark measures the messages the gateway really decodes.
WS_DID = WS_TYPES_DID + SERVICE_MESSAGES_DID
RESULT = candid.parse_args("(CanisterWsGetMessagesResult)", WS_DID)
SERVICE = candid.parse_args("(WebsocketServiceMessageContent)", WS_DID)

CLIENT = Principal.from_text("sqdfl-mr4km-2hfjy-gajqo-xqvh7-hf4mf-nra4i-3it6l-neaw4-soolw-tae")
GATEWAY = "i3gux-m3hwt-5mh2w-t7wwm-fwx5j-6z6ht-hxguo-t4rfw-qp24z-g5ivt-2qe"


def _batch(n: int) -> dict[str, Any]:
    messages = [
        {
            "client_key": {"client_principal": CLIENT, "client_nonce": 0x1234_5678_9ABC_DEF0},
            "key": f"{GATEWAY}_{i:020d}",
            "content": bytes([0xD9, 0xD9, 0xF7]) + bytes(i % 256 for _ in range(197)),
        }
        for i in range(n)
    ]
    return {"Ok": {"messages": messages, "cert": b"\xd9" * 1400, "tree": b"\xd9" * 900, "is_end_of_queue": False}}


BATCH = _batch(50)
BATCH_BYTES = candid.encode(RESULT, [BATCH])
ACK = {"AckMessage": {"last_incoming_sequence_num": 42}}
ACK_BYTES = candid.encode(SERVICE, [ACK])


def test_encode_get_messages_result_50(benchmark: BenchmarkFixture) -> None:
    data = benchmark(candid.encode, RESULT, [BATCH])
    assert data == BATCH_BYTES


def test_decode_get_messages_result_50(benchmark: BenchmarkFixture) -> None:
    (value,) = benchmark(candid.decode, BATCH_BYTES, RESULT)
    assert value == BATCH


def test_encode_service_message(benchmark: BenchmarkFixture) -> None:
    assert benchmark(candid.encode, SERVICE, [ACK]) == ACK_BYTES


def test_decode_service_message(benchmark: BenchmarkFixture) -> None:
    assert benchmark(candid.decode, ACK_BYTES, SERVICE) == [ACK]


def test_decode_get_messages_first_sight(benchmark: BenchmarkFixture) -> None:
    """Parsing the type table and compiling the decoder (what a new header costs once)."""

    def fresh() -> list[Any]:
        candid.decoder._decode_plan.cache_clear()
        return candid.decode(BATCH_BYTES, RESULT)

    assert benchmark(fresh) == [BATCH]
