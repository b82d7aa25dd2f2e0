"""icws_fast._ext._wsbatch: the compiled ``decode_get_messages_result`` and ``decode_polled_batch`` against the pure
ones in protocol.types.

Every test compares each pair on the same bytes: the same value with the same classes, or the same exception class
and message. Replies come from the pure encoder, from the CDK running in process, from hand-built headers in the
Rust CDK's type-table order and the older or gateway forms, and from random and mutated bytes.
"""

from __future__ import annotations

import gc
import importlib
import random
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icws_fast.errors import ProtocolDecodeError, ProtocolError
from icws_fast.ic import candid
from icws_fast.ic.leb128 import leb128, sleb128
from icws_fast.ic.principal import Principal
from icws_fast.protocol import types as t
from tests import twins
from tests.cdk.cdk_harness import LocalHost

_twin = twins.twin(t, "decode_get_messages_result")
_polled = twins.twin(t, "decode_polled_batch")
pytestmark = pytest.mark.skipif(_twin.compiled is None, reason=_twin.skip_reason)
pure_decode = _twin.pure
fast_decode: Any = _twin.compiled  # None in a pure run, where every test here is skipped
pure_polled = _polled.pure
fast_polled: Any = _polled.compiled
# The compiled module itself, for its header recogniser and cache size (None in a pure run).
wsbatch: Any = None if _twin.compiled is None else importlib.import_module(_twin.compiled.__module__)

GATEWAY = Principal(b"\x22" * 29)
RESULT_TYPES = candid.parse_args("(CanisterWsGetMessagesResult)", t.WS_TYPES_DID)

# Field ids of the Candid types, and the type codes, for hand-built headers.
H = {name: candid.idl_hash(name) for name in (
    "Ok", "Err", "messages", "cert", "tree", "is_end_of_queue", "key", "content", "client_key", "client_principal",
    "client_nonce", "extra",
)}  # fmt: skip
BOOL, NAT, NAT8, NAT64, TEXT, PRINCIPAL = -2, -4, -5, -8, -15, -24
OPT, VEC, RECORD, VARIANT = -18, -19, -20, -21


def outcome(decode: Any, data: Any) -> tuple[Any, ...]:
    """What ``decode`` does with ``data``: the value with the class of every part, or the exception and message."""
    try:
        batch = decode(data)
    except Exception as exc:  # the comparison is the point, whatever the class
        return ("raised", type(exc), str(exc))
    shape = (
        type(batch),
        type(batch.messages),
        type(batch.cert),
        type(batch.tree),
        type(batch.is_end_of_queue),
        [
            (type(m), type(m.client_key), type(m.client_key.client_principal), type(m.key), type(m.content))
            for m in batch.messages
        ],
        [type(m.client_key.client_nonce) for m in batch.messages],
    )
    return ("value", batch, shape)


def polled_outcome(decode: Any, data: Any) -> tuple[Any, ...]:
    """What ``decode`` (a ``decode_polled_batch``) does with ``data``, as :func:`outcome` tells it."""
    try:
        batch = decode(data)
    except Exception as exc:  # the comparison is the point, whatever the class
        return ("raised", type(exc), str(exc))
    shape = (type(batch), [type(part) for part in batch], [[type(x) for x in part] for part in batch[:3]])
    return ("value", batch, shape)


def assert_same(data: Any) -> tuple[Any, ...]:
    """Both twins of both decoders agree on ``data``; the outcome of ``decode_get_messages_result``."""
    expected = outcome(pure_decode, data)
    assert outcome(fast_decode, data) == expected
    assert polled_outcome(fast_polled, data) == polled_outcome(pure_polled, data)
    return expected


def header(entries: list[tuple[int, Any]], args: list[int]) -> bytes:
    """``DIDL`` and a type table: entries are ``(OPT | VEC, ref)`` or ``(RECORD | VARIANT, [(name, ref), ...])``."""
    out = bytearray(b"DIDL") + leb128(len(entries))
    for opcode, body in entries:
        out += sleb128(opcode)
        if opcode in (OPT, VEC):
            out += sleb128(body)
        else:
            out += leb128(len(body))
            for name, ref in sorted(body, key=lambda field: H[field[0]]):
                out += leb128(H[name]) + sleb128(ref)
    out += leb128(len(args))
    for ref in args:
        out += sleb128(ref)
    return bytes(out)


def rust_order_entries(end_field: list[tuple[str, int]]) -> list[tuple[int, Any]]:
    """The type table as the Rust CDK writes it: every type before its parts, the blob type shared."""
    return [
        (VARIANT, [("Ok", 1), ("Err", TEXT)]),
        (RECORD, [("messages", 2), ("cert", 4), ("tree", 4), *end_field]),
        (VEC, 3),
        (RECORD, [("key", TEXT), ("content", 4), ("client_key", 5)]),
        (VEC, NAT8),
        (RECORD, [("client_principal", PRINCIPAL), ("client_nonce", NAT64)]),
        *([(OPT, BOOL)] if end_field == [("is_end_of_queue", 6)] else []),
    ]


def rust_order_header(end_field: list[tuple[str, int]]) -> bytes:
    return header(rust_order_entries(end_field), [0])


def split(reply: bytes) -> tuple[bytes, bytes]:
    """A reply of the pure encoder as (header, values)."""
    found = wsbatch._recognise(reply)
    assert found is not None
    return reply[: found[0]], reply[found[0] :]


def make_batch(rng: random.Random, n: int, *, clients: int = 3, end: bool = False) -> t.CanisterOutputCertifiedMessages:
    keys = [t.ClientKey(Principal(rng.randbytes(rng.randint(0, 29))), rng.getrandbits(64)) for _ in range(clients)]
    messages = [
        t.CanisterOutputMessage(rng.choice(keys), f"{GATEWAY}_{i:020d}", rng.randbytes(rng.randint(0, 300)))
        for i in range(n)
    ]
    return t.CanisterOutputCertifiedMessages(messages, rng.randbytes(rng.randint(0, 2000)), rng.randbytes(400), end)


# ---------------------------------------------------------------------------------------------------------------
# Valid replies


@pytest.mark.parametrize("n", [0, 1, 50])
def test_batches_of_the_pure_encoder(n: int) -> None:
    rng = random.Random(n)
    for clients in (1, 3, 50):
        batch = make_batch(rng, n, clients=clients, end=rng.random() < 0.5)
        reply = t.encode_get_messages_result(batch)
        assert assert_same(reply)[1] == batch
        assert wsbatch._recognise(reply) is not None


principals = st.binary(max_size=29).map(Principal)
client_keys = st.builds(t.ClientKey, principals, st.integers(0, t.MAX_NAT64))
messages = st.builds(t.CanisterOutputMessage, client_keys, st.text(max_size=40), st.binary(max_size=200))
batches = st.builds(
    t.CanisterOutputCertifiedMessages, st.lists(messages, max_size=60), st.binary(max_size=300),
    st.binary(max_size=300), st.booleans(),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(batches)
def test_random_batches(batch: t.CanisterOutputCertifiedMessages) -> None:
    assert assert_same(t.encode_get_messages_result(batch))[1] == batch


def test_shared_client_keys_are_equal_to_fresh_ones() -> None:
    """Messages to one client key share its object; each still equals the pure decoder's own."""
    key = t.ClientKey(Principal(b"\x05" * 29), 9)
    other = t.ClientKey(Principal(b"\x05" * 28), int.from_bytes(b"\x05" + b"\x00" * 7, "little"))
    batch = t.CanisterOutputCertifiedMessages(
        [t.CanisterOutputMessage(k, f"k_{i}", b"") for i, k in enumerate([key, other, key, other])], b"", b"", True
    )
    decoded = fast_decode(t.encode_get_messages_result(batch))
    assert decoded == batch
    assert [m.client_key for m in decoded.messages] == [key, other, key, other]


def test_decoded_tuples_hash_like_fresh_ones() -> None:
    """The named tuples the twin builds hash and compare like constructed ones (the gateway keys dicts by them)."""
    key = t.ClientKey(Principal(b"\x07" * 29), 3)
    batch = t.CanisterOutputCertifiedMessages([t.CanisterOutputMessage(key, "k_1", b"x")], b"c", b"t", True)
    decoded = fast_decode(t.encode_get_messages_result(batch))
    assert hash(decoded.messages[0].client_key) == hash(key)
    assert hash(decoded.messages[0]) == hash(batch.messages[0])
    assert {key: 1}[decoded.messages[0].client_key] == 1
    assert str(decoded.messages[0].client_key) == str(key)


def test_more_client_keys_than_the_cache_holds() -> None:
    """Replies naming more distinct clients than the twin keeps between replies still decode the same."""
    for start in range(0, 2 * wsbatch.CLIENT_KEY_CACHE_SIZE + 1000, 1000):
        keys = [t.ClientKey(Principal(i.to_bytes(4, "big")), i) for i in range(start, start + 1000)]
        batch = t.CanisterOutputCertifiedMessages(
            [t.CanisterOutputMessage(key, f"k_{i}", b"") for i, key in enumerate(keys)], b"", b"", True
        )
        assert assert_same(t.encode_get_messages_result(batch))[1] == batch


def test_replies_of_the_cdk_in_process() -> None:
    """What the devnet sends the gateway: the CDK's ws_get_messages result encoded with the method's own types."""
    from icws_fast.devnet.canisters.pingpong import PingPongCanister

    host = LocalHost(PingPongCanister())
    spec = PingPongCanister.exported_methods()["ws_get_messages"]
    clients = [Principal(bytes([i]) * 29) for i in range(1, 4)]
    for i, client in enumerate(clients):
        host.open(client, i, GATEWAY)
    for round_ in range(40):
        host.call("send", clients[round_ % 3], clients[round_ % 3], bytes([round_]) * round_)
    replies = []
    nonce = 0
    while True:
        value = host.call("ws_get_messages", GATEWAY, {"nonce": nonce})
        reply = candid.encode(list(spec.ret_types), [value])
        batch = assert_same(reply)[1]
        replies.append(reply)
        if not batch.messages:
            break
        nonce = t.parse_message_nonce(batch.messages[-1].key) + 1
    assert len(replies) > 1
    # Not a gateway: the CDK answers an empty Ok batch.
    assert assert_same(candid.encode(list(spec.ret_types), [host.call("ws_get_messages", clients[0], {"nonce": 0})]))


def test_rust_type_table_order() -> None:
    batch = make_batch(random.Random(7), 5, end=False)
    _, values = split(t.encode_get_messages_result(batch))
    reply = rust_order_header([("is_end_of_queue", BOOL)]) + values
    assert wsbatch._recognise(reply) is not None
    assert assert_same(reply)[1] == batch


def test_reply_without_is_end_of_queue_reads_as_the_end() -> None:
    """CDK < 0.3.1: no is_end_of_queue field; its values end after the tree."""
    batch = make_batch(random.Random(8), 3, end=False)
    _, values = split(t.encode_get_messages_result(batch))
    reply = rust_order_header([]) + values[:-1]
    assert wsbatch._recognise(reply) is not None
    assert assert_same(reply)[1] == batch._replace(is_end_of_queue=True)


@pytest.mark.parametrize(("value", "end"), [(b"\x00", True), (b"\x01\x00", False), (b"\x01\x01", True)])
def test_is_end_of_queue_as_opt_bool(value: bytes, end: bool) -> None:
    batch = make_batch(random.Random(9), 2)
    _, values = split(t.encode_get_messages_result(batch))
    reply = rust_order_header([("is_end_of_queue", 6)]) + values[:-1] + value
    assert wsbatch._recognise(reply) is not None
    assert assert_same(reply)[1] == batch._replace(is_end_of_queue=end)


@pytest.mark.parametrize("text", ["", "caller is not a registered gateway", "ünïcødé ✓", "x" * 5000])
def test_err_replies(text: str) -> None:
    reply = candid.encode(RESULT_TYPES, [{"Err": text}])
    result = assert_same(reply)
    assert result == ("raised", ProtocolError, f"ws_get_messages failed: {text}")
    # Trailing bytes after the text are a decode error, as in the pure decoder.
    assert assert_same(reply + b"\x00")[0] == "raised"


END = [("is_end_of_queue", BOOL)]


@pytest.mark.parametrize(
    ("entries", "args", "extra_values"),
    [
        # An extra field in the Ok record (Candid skips it).
        ([(VARIANT, [("Ok", 1), ("Err", TEXT)]), *rust_order_entries([*END, ("extra", NAT)])[1:]], [0], b""),
        # An unused table entry.
        ([*rust_order_entries(END), (OPT, NAT)], [0], b""),
        # A variant with Ok only.
        ([(VARIANT, [("Ok", 1)]), *rust_order_entries(END)[1:]], [0], b""),
        # A second argument after the result.
        (rust_order_entries(END), [0, BOOL], b"\x01"),
    ],
)
def test_other_headers_go_to_the_pure_decoder(
    entries: list[tuple[int, Any]], args: list[int], extra_values: bytes
) -> None:
    batch = make_batch(random.Random(10), 4)
    _, values = split(t.encode_get_messages_result(batch))
    if any(name == "extra" for opcode, body in entries if opcode == RECORD for name, _ in body):
        values = values[:-1] + b"\x05" + values[-1:]  # extra : nat, between tree and is_end_of_queue by id
    reply = header(entries, args) + values + extra_values
    assert wsbatch._recognise(reply) is None
    assert assert_same(reply)[1] == batch


@pytest.mark.parametrize("data", [b"", b"DID", b"DIDL", b"DIDM\x00\x00", b"DIDL\x00\x00", b"DIDL\x00\x01\x7e\x01"])
def test_short_and_foreign_messages(data: bytes) -> None:
    assert assert_same(data)[0] == "raised"


def test_other_buffer_types_and_non_bytes() -> None:
    reply = t.encode_get_messages_result(make_batch(random.Random(11), 3))
    for data in (bytearray(reply), memoryview(reply), memoryview(b"xx" + reply)[2:], "not bytes", None, 3):
        assert_same(data)


# ---------------------------------------------------------------------------------------------------------------
# Hostile replies


def _mutations(rng: random.Random, data: bytes, count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        b = bytearray(data)
        kind = rng.randrange(5)
        i = rng.randrange(len(b))
        if kind == 0:
            b[i] ^= 1 << rng.randrange(8)
        elif kind == 1:
            b[i] = rng.choice((0x00, 0x01, 0x02, 0x1D, 0x1E, 0x7F, 0x80, 0xFF))
        elif kind == 2:
            del b[i:]
        elif kind == 3:
            b[i:i] = rng.randbytes(rng.randint(1, 3))
        else:
            del b[i : i + rng.randint(1, 3)]
        out.append(bytes(b))
    return out


@pytest.mark.parametrize("form", ["ours", "rust", "old", "opt", "err"])
def test_mutated_replies(form: str) -> None:
    rng = random.Random(form)
    batch = make_batch(rng, 4, clients=2)
    reply = t.encode_get_messages_result(batch)
    _, values = split(reply)
    if form == "rust":
        reply = rust_order_header([("is_end_of_queue", BOOL)]) + values
    elif form == "old":
        reply = rust_order_header([]) + values[:-1]
    elif form == "opt":
        reply = rust_order_header([("is_end_of_queue", 6)]) + values[:-1] + b"\x01\x00"
    elif form == "err":
        reply = candid.encode(RESULT_TYPES, [{"Err": "nope ✓"}])
    outcomes = {"value": 0, "raised": 0}
    for data in _mutations(rng, reply, 1500):
        outcomes[assert_same(data)[0]] += 1
    assert outcomes["raised"] > 0


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=120))
def test_random_bytes_after_a_known_header(tail: bytes) -> None:
    reply = t.encode_get_messages_result(make_batch(random.Random(12), 1))
    head, _ = split(reply)
    assert_same(head + tail)
    assert_same(b"DIDL" + tail)


def test_huge_declared_lengths_allocate_nothing() -> None:
    """Counts and lengths far beyond the message are refused before anything is allocated."""
    head, _ = split(t.encode_get_messages_result(make_batch(random.Random(13), 0)))
    for values in (
        b"\x00" + leb128(1 << 62),  # messages
        b"\x00\x01" + leb128(1 << 62),  # a key
        b"\x00\x00" + leb128(1 << 62),  # cert
        b"\x00\x00\x00" + leb128(1 << 62),  # tree
        b"\x01" + leb128(1 << 62),  # the Err text
        b"\x00" + b"\xff" * 20 + b"\x01",  # a count longer than any LEB128 the fast path reads
    ):
        assert assert_same(head + values)[0] == "raised"


def _values(
    *,
    variant: bytes = b"\x00",
    count: bytes = b"\x01",
    key: bytes = b"\x03k_7",
    content: bytes = b"\x02hi",
    principal: bytes = b"\x01\x02\xab\xcd",
    nonce: bytes = (2**64 - 2).to_bytes(8, "little"),
    cert: bytes = b"\x01c",
    tree: bytes = b"\x02tr",
    end: bytes = b"\x00",
) -> bytes:
    """The values of a one-message Ok reply (fields in wire order), each part replaceable."""
    return variant + count + key + content + principal + nonce + cert + tree + end


EXPECTED = t.CanisterOutputCertifiedMessages(
    [t.CanisterOutputMessage(t.ClientKey(Principal(b"\xab\xcd"), 2**64 - 2), "k_7", b"hi")], b"c", b"tr", False
)


@pytest.mark.parametrize(
    ("parts", "ok"),
    [
        ({}, True),
        # LEB128 numbers in non-shortest form decode to the same value; past 9 bytes the pure decoder reads them.
        ({"variant": b"\x80\x00"}, True),
        ({"key": b"\x83\x00k_7"}, True),
        ({"count": b"\x81" + b"\x80" * 8 + b"\x00"}, True),
        ({"cert": b"\x81\x80\x80\x00c"}, True),
        ({"end": b"\x00\x00"}, False),  # a trailing byte
        ({"end": b"\x02"}, False),
        ({"end": b""}, False),
        ({"variant": b"\x02"}, False),
        ({"principal": b"\x00"}, False),  # an opaque reference
        ({"principal": b"\x02\x02\xab\xcd"}, False),
        ({"principal": b"\x01\x1e" + b"\x01" * 30}, False),  # longer than a principal can be
        ({"principal": b"\x01\x1d" + b"\x01" * 29}, True),
        ({"key": b"\x01\xff"}, False),
        ({"key": b"\x03\xed\xa0\x80"}, False),  # a UTF-16 surrogate
        ({"key": b"\x04\xf0\x9f\x98\x80"}, True),
        ({"count": b"\x02"}, False),
        ({"count": b"\x00", "key": b"", "content": b"", "principal": b"", "nonce": b""}, True),
        ({"nonce": b"\x00" * 7}, False),
        ({"tree": b"\x03tr"}, False),
    ],
)
def test_value_anomalies(parts: dict[str, bytes], ok: bool) -> None:
    head, _ = split(t.encode_get_messages_result(EXPECTED))
    result = assert_same(head + _values(**parts))
    assert result[0] == ("value" if ok else "raised")
    if not parts:
        assert result[1] == EXPECTED


def test_no_leak_on_success_or_failure() -> None:
    """Decoding (either way), succeeding, bailing out to the pure decoder half-way or answering Err, leaves no
    objects behind."""
    good = t.encode_get_messages_result(make_batch(random.Random(15), 20, clients=4))
    head, _ = split(good)
    # Truncated, or with a trailing byte: the fast path bails out after building every message; bad UTF-8 in a
    # key or an over-long principal: part-way through a message.
    bad = [good[:-1], good + b"\x00", head + _values(key=b"\x01\xff"), head + _values(principal=b"\x01\x1e")]
    err = candid.encode(RESULT_TYPES, [{"Err": "no"}])

    def churn() -> None:
        for _ in range(300):
            for decode in (fast_decode, fast_polled):
                decode(good)
                with pytest.raises(ProtocolError):
                    decode(err)
                for data in bad:
                    with pytest.raises(ProtocolDecodeError):
                        decode(data)

    churn()  # warm caches (recognised headers, client keys, the pure decoder's plan)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        churn()
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, pytest.__file__)]
    diff = after.filter_traces(ignore).compare_to(before.filter_traces(ignore), "lineno")
    growth = sum(stat.size_diff for stat in diff)
    # A leak of one object per decode would be over 50 kB here; what remains is the interpreter's noise.
    assert growth < 8_000, growth


# ---------------------------------------------------------------------------------------------------------------
# decode_polled_batch: the message keys' nonces


def _keyed_reply(keys: list[str], clients: int = 2) -> bytes:
    client_keys = [t.ClientKey(Principal(bytes([i + 1]) * (20 + i)), 2**64 - 1 - i) for i in range(clients)]
    messages = [t.CanisterOutputMessage(client_keys[i % clients], key, b"m%d" % i) for i, key in enumerate(keys)]
    return t.encode_get_messages_result(t.CanisterOutputCertifiedMessages(messages, b"cert", b"tree", False))


def test_polled_batch_of_a_full_reply() -> None:
    batch = make_batch(random.Random(16), 50, clients=5)
    polled = fast_polled(t.encode_get_messages_result(batch))
    assert polled == pure_polled(t.encode_get_messages_result(batch))
    assert polled.route_keys == [t.route_key(m.client_key) for m in batch.messages]
    assert polled.keys == [m.key.encode() for m in batch.messages]
    assert polled.contents == [m.content for m in batch.messages]
    assert (polled.first_nonce, polled.last_nonce, polled.consecutive) == (0, 49, True)
    assert (polled.cert, polled.tree, polled.is_end_of_queue) == (batch.cert, batch.tree, batch.is_end_of_queue)


def test_route_keys_tell_every_client_apart() -> None:
    """Principals of different lengths whose bytes run on into the nonce still give different route keys."""
    keys = [t.ClientKey(Principal(b"\x05" * 29), 9), t.ClientKey(Principal(b"\x05" * 28), 5 + (9 << 8))]
    assert len({t.route_key(key) for key in keys}) == 2
    messages = [t.CanisterOutputMessage(key, f"g_{i}", b"") for i, key in enumerate(keys)]
    reply = t.encode_get_messages_result(t.CanisterOutputCertifiedMessages(messages, b"", b"", True))
    assert fast_polled(reply).route_keys == [t.route_key(key) for key in keys]


@pytest.mark.parametrize(
    ("keys", "first", "last", "consecutive"),
    [
        ([], 0, 0, True),
        (["g_00000000000000000007"], 7, 7, True),
        (["g_7", "g_08", "g_009"], 7, 9, True),  # the digits are read, not the zero padding
        (["a_b_1", "_2", "x_y_3"], 1, 3, True),  # the last "_" counts; the prefix is not compared
        (["g_5", "g_7", "g_6"], 5, 6, False),
        (["g_5", "g_5"], 5, 5, False),
        (["g_3", "g_2"], 3, 2, False),
        ([f"g_{2**64 - 2}", f"g_{2**64 - 1}"], 2**64 - 2, 2**64 - 1, True),
        ([f"g_{2**64 - 1}", "g_0"], 2**64 - 1, 0, False),  # no wrap-around
        (["ünï_1", "✓_2"], 1, 2, True),
    ],
)
def test_polled_batch_nonces(keys: list[str], first: int, last: int, consecutive: bool) -> None:
    reply = _keyed_reply(keys)
    assert polled_outcome(fast_polled, reply) == polled_outcome(pure_polled, reply)
    polled = fast_polled(reply)
    assert (polled.first_nonce, polled.last_nonce, polled.consecutive) == (first, last, consecutive)


@pytest.mark.parametrize(
    "key",
    ["g", "g_", "g1", "g_x", "g_-1", "g_+1", "g_1 ", "g_ 1", "g_١", "g_１", f"g_{2**64}", "g_" + "0" * 21, "g_1_"],
)
def test_polled_batch_refuses_a_key_without_a_nonce(key: str) -> None:
    """Anywhere in the batch, a key that does not end in _<nonce> is parse_message_nonce's error."""
    for keys in ([key], ["g_1", key], ["g_1", "g_2", key, "g_4"]):
        reply = _keyed_reply(keys)
        result = polled_outcome(fast_polled, reply)
        assert result == polled_outcome(pure_polled, reply)
        assert result[:2] == ("raised", ProtocolDecodeError) and f"message key {key!r}" in result[2]
    assert fast_polled(_keyed_reply(["g_" + "0" * 19 + "1"])).first_nonce == 1  # 20 digits are fine


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.integers(0, t.MAX_NAT64), st.text(max_size=25)), max_size=30))
def test_random_message_keys(parts: list[int | str]) -> None:
    keys = [f"g_{part}" if isinstance(part, int) else part for part in parts]
    reply = _keyed_reply(keys, clients=3)
    assert polled_outcome(fast_polled, reply) == polled_outcome(pure_polled, reply)
