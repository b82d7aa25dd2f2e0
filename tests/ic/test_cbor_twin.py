"""The compiled CBOR twins give exactly the pure results: vector blobs, generated values, hostile bytes.

For decoding, "exactly" means the same value with the same types all the way down (bool is not
int, bytes is not str, Tag is not a tuple, floats bit for bit) and the same map key order, or a
CborError with the same message, for every input. For encoding it means the same bytes, or the
same exception type and message.
"""

from __future__ import annotations

import contextlib
import enum
import gc
import importlib
import random
import struct
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icws_fast.errors import CborError
from icws_fast.ic import cbor as pure_cbor
from icws_fast.ic import hashtree
from icws_fast.ic.principal import Principal
from tests import twins
from tests.vectors import VECTORS, load_vectors

_decode = twins.twin(pure_cbor, "decode")
_encode = twins.twin(pure_cbor, "encode")
pytestmark = pytest.mark.skipif(_decode.compiled is None, reason=_decode.skip_reason)

pure_decode: Callable[..., Any] = _decode.pure
fast_decode: Any = _decode.compiled  # None in a pure run, where every test here is skipped
pure_encode: Callable[..., bytes] = _encode.pure
fast_encode: Any = _encode.compiled


def _typed(value: Any) -> Any:
    """``value`` as nested tuples that only compare equal when types, float bits and key order match."""
    kind = type(value).__name__
    if isinstance(value, pure_cbor.Tag):
        return (kind, value.tag, _typed(value.value))
    if isinstance(value, list):
        return (kind, [_typed(item) for item in value])
    if isinstance(value, dict):
        return (kind, [(_typed(k), _typed(v)) for k, v in value.items()])
    if isinstance(value, float):
        return (kind, struct.pack(">d", value))
    return (kind, value)


def _outcome(decode: Callable[..., Any], data: Any, **kwargs: Any) -> tuple[str, Any]:
    """The typed value, or the CborError message; any other exception escapes and fails the test."""
    try:
        return ("ok", _typed(decode(data, **kwargs)))
    except CborError as exc:
        return ("CborError", str(exc))


def _assert_same(data: Any, **kwargs: Any) -> tuple[str, Any]:
    expected = _outcome(pure_decode, data, **kwargs)
    assert _outcome(fast_decode, data, **kwargs) == expected, bytes(data).hex()
    return expected


def _hex_fields(node: Any) -> Iterator[bytes]:
    """The bytes of every hex string in a vector file (keys ``hex`` and ``*_hex``), at any nesting."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str) and (key == "hex" or key.endswith("_hex")):
                try:
                    yield bytes.fromhex(value)
                except ValueError:
                    continue
            else:
                yield from _hex_fields(value)
    elif isinstance(node, list):
        for item in node:
            yield from _hex_fields(item)


def _nested_bytes(value: Any) -> Iterator[bytes]:
    """Every byte string inside a decoded value (certificates nest CBOR in bytes: delegations, ranges)."""
    if isinstance(value, bytes):
        yield value
    elif isinstance(value, pure_cbor.Tag):
        yield from _nested_bytes(value.value)
    elif isinstance(value, list):
        for item in value:
            yield from _nested_bytes(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _nested_bytes(key)
            yield from _nested_bytes(item)


VECTOR_FILES = sorted(path.stem for path in VECTORS.glob("*.json"))


def test_seam_binds_the_compiled_twins() -> None:
    assert pure_cbor.decode is fast_decode and pure_cbor.encode is fast_encode
    assert pure_decode.__module__ == pure_encode.__module__ == "icws_fast.ic.cbor"
    assert fast_decode.__module__ == fast_encode.__module__ == "icws_fast._ext._cbor"


def test_cbor_vectors_decode_identically() -> None:
    decoded = 0
    for name in ("certificates", "hash_trees", "envelopes"):
        for record in load_vectors(name):
            blobs = [bytes.fromhex(record[key]) for key in ("cbor_hex", "envelope_cbor_hex") if key in record]
            messages = [record["ws_message"]] if "ws_message" in record else record.get("ws_messages", [])
            for message in messages:
                blobs += [bytes.fromhex(message["content_hex"]), bytes.fromhex(message["tree_cbor_hex"])]
            for blob in blobs:
                status, _ = _assert_same(blob)
                assert status == "ok", (name, record["id"])
                decoded += 1
    assert decoded >= 40


@pytest.mark.parametrize("name", VECTOR_FILES)
def test_every_vector_hex_field_and_nested_bytes(name: str) -> None:
    """All hex data of a vector file (most of it not CBOR) and every byte string inside what decodes."""
    records = load_vectors(name)
    seen: set[bytes] = set()
    pending = list(_hex_fields(records))
    while pending:
        blob = pending.pop()
        if blob in seen:
            continue
        seen.add(blob)
        _assert_same(blob)
        _assert_same(memoryview(blob))
        try:
            value = pure_decode(blob)
        except CborError:
            continue
        pending.extend(_nested_bytes(value))


def _cases(*lines: str) -> list[str]:
    """Hex test inputs written several to a line."""
    return [case for line in lines for case in line.split()]


# RFC 8949 appendix A, definite and indefinite lengths, all float widths, simple values.
WELL_FORMED = _cases(
    "00 17 1818 1903e8 1a000f4240 1b000000e8d4a51000 1bffffffffffffffff",
    "20 3903e7 3b7fffffffffffffff 3b8000000000000000 3bffffffffffffffff",
    "c249010000000000000000 c349010000000000000000 c240 c34100",
    "f90000 f98000 f93c00 f97bff f97c00 f97e00 f9fc00 f90001",
    "fa47c35000 fa7f800000 fa7fc00000 fb3ff199999999999a fb7ff8000000000001",
    "f4 f5 f6 f7 40 4401020304 60 6449455446 62c3bc 80 a0",
    "8301820203820405 a201020304 a26161016162820203 c11a514b67b0",
    "5f42010243030405ff 5fff 7f657374726561646d696e67ff 7f62c3bcff 7f61c361bcff",
    "9f018202039f0405ffff 9fff bf61610161629f0203ffff bfff d9d9f7d9d9f700 d9d9f79f00ff",
)
# Map keys: bool is an int key (so True after 1 is a duplicate), bignum keys are ints, others are rejected.
MAP_KEYS = _cases(
    "a2f500f401 a2010af50b a2c2420100004100 a14100f6 a16100f6 a11bffffffffffffffff00",
    "a20000 a1f6f6 a1f4f6 a1f900f6 a18000 a1a000 a1c10000 a1d9d9f70000",
)
# Reserved and unsupported heads, stray breaks, trailing bytes, truncation, overshooting lengths (and "").
MALFORMED = _cases(
    "1c 1d 1e 1f 3f dc df00 f8 f820 f0 f3 fc ff 00ff 0000",
    "18 19ff 1affffff 1bffffffffffffff 41 5b 5bffffffffffffffff 62c3",
    "62c328 62eda080 7f61c3617cff 5f4101 5f6161ff 5f5f4100ffff 5f00ff 7f 9f 9f00",
    "bf00 bf0000 82 8200 9bffffffffffffffff 9b7fffffffffffffff bb7fffffffffffffff",
    "bbffffffffffffffff a2010101 c2f6 c282 c3a0 c2 d9d9f7 d9d9f7ff 8bff a1ff00 a100ff",
)


@pytest.mark.parametrize("case", [*WELL_FORMED, *MAP_KEYS, *MALFORMED, ""])
def test_edge_cases(case: str) -> None:
    _assert_same(bytes.fromhex(case))


def test_messages_are_the_pure_ones() -> None:
    # Spot checks that the comparison itself sees messages (and that both reject what they should).
    assert _assert_same(b"\xff") == ("CborError", "unexpected break at offset 0")
    assert _assert_same(b"\x00\x00") == ("CborError", "1 trailing bytes after CBOR item")
    assert _assert_same(b"\xa2\x01\x00\xf5\x00")[0] == "CborError"  # 1 and True are the same key


def test_input_types() -> None:
    blob = bytes.fromhex("d9d9f7a26161016162820203")
    expected = _assert_same(blob)
    for data in (bytearray(blob), memoryview(blob), memoryview(b"xx" + blob)[2:], memoryview(bytearray(blob))):
        assert _assert_same(data) == expected
    noncontiguous = memoryview(bytes(b for byte in blob for b in (byte, 0)))[::2]
    assert _assert_same(noncontiguous) == expected

    class Blob(bytes):
        pass

    assert _assert_same(Blob(blob)) == expected
    for wrong in ("text", None, 1.5):
        with pytest.raises(TypeError):
            pure_decode(wrong)
        with pytest.raises(TypeError):
            fast_decode(wrong)


def _nested(depth: int, open_byte: bytes = b"\x81") -> bytes:
    return open_byte * depth + b"\x00"


@pytest.mark.parametrize("max_depth", [-1, 0, 1, 2, 5, 256])
@pytest.mark.parametrize("opener", [b"\x81", b"\x9f", b"\xa1\x00", b"\xc1", b"\xd9\xd9\xf7", b"\xbf\x00"])
def test_depth_limit(max_depth: int, opener: bytes) -> None:
    for depth in sorted({0, 1, max(max_depth - 1, 0), max(max_depth, 0), max_depth + 1, max_depth + 2}):
        # Indefinite containers need their breaks; the outcome still has to match when they are missing.
        data = _nested(depth, opener)
        _assert_same(data, max_depth=max_depth)
        _assert_same(data + b"\xff" * depth, max_depth=max_depth)


def test_default_depth_limit_is_256() -> None:
    assert _assert_same(_nested(256))[0] == "ok"
    assert _assert_same(_nested(257)) == ("CborError", "CBOR nested deeper than 256")


def test_nesting_beyond_any_limit_is_a_cbor_error() -> None:
    # Far deeper than both Python's recursion limit and the compiled decoder's MAX_NESTING.
    data = _nested(100_000)
    for decode in (pure_decode, fast_decode):
        with pytest.raises(CborError, match="CBOR nested too deeply"):
            decode(data, max_depth=1_000_000)


def test_deep_nesting_in_a_small_thread_stack() -> None:
    """The compiled decoder does not recurse: its deepest input fits in a thread with a 64 kB stack."""
    outcomes: list[Any] = []

    def run() -> None:
        for opener in (b"\x81", b"\x9f", b"\xa1\x00", b"\xbf\x00", b"\xc1", b"\xd9\xd9\xf7"):
            closing = b"\xff" * 1000 if opener in (b"\x9f", b"\xbf\x00") else b""
            outcomes.append(fast_decode(_nested(1000, opener) + closing, max_depth=5000) is not None)
            try:
                fast_decode(_nested(1001, opener), max_depth=5000)
            except CborError as exc:
                outcomes.append(str(exc))

    previous = threading.stack_size(64 * 1024)
    try:
        thread = threading.Thread(target=run)
        thread.start()
    finally:
        threading.stack_size(previous)
    thread.join()
    assert outcomes == [True, "CBOR nested too deeply"] * 6


_keys = st.one_of(st.integers(min_value=-(1 << 70), max_value=1 << 70), st.text(max_size=8), st.binary(max_size=8))
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(1 << 65), max_value=1 << 65),
    st.floats(allow_nan=True, allow_infinity=True),
    st.binary(max_size=40),
    st.text(max_size=20),
)
_values = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(_keys, children, max_size=6),
        st.builds(
            pure_cbor.Tag,
            st.integers(min_value=0, max_value=(1 << 64) - 1).filter(lambda t: t not in (2, 3, 55799)),
            children,
        ),
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(value=_values, self_describe=st.booleans())
def test_generated_values_round_trip(value: Any, self_describe: bool) -> None:
    data = pure_cbor.encode(value, self_describe=self_describe)
    status, typed = _assert_same(data)
    assert status == "ok"
    assert typed == _typed(value)


@settings(max_examples=300, deadline=None)
@given(value=_values, data=st.data())
def test_mutated_encodings(value: Any, data: st.DataObject) -> None:
    blob = bytearray(pure_cbor.encode(value))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        action = data.draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        at = data.draw(st.integers(min_value=0, max_value=len(blob)))
        if action == "cut":
            del blob[at:]
        elif action == "insert":
            blob[at:at] = data.draw(st.binary(min_size=1, max_size=9))
        elif at < len(blob):
            if action == "flip":
                blob[at] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
            elif action == "set":
                blob[at] = data.draw(st.sampled_from([0x00, 0x18, 0x1B, 0x1F, 0x5F, 0x7F, 0x9F, 0xBF, 0xF9, 0xFF]))
            else:
                del blob[at]
    _assert_same(bytes(blob))
    _assert_same(blob)


@settings(max_examples=500, deadline=None)
@given(blob=st.binary(max_size=64))
def test_random_bytes(blob: bytes) -> None:
    _assert_same(blob)


def test_seeded_random_and_head_soup() -> None:
    """Uniform random bytes, and streams built from CBOR heads (which get deeper into the decoder)."""
    rng = random.Random(20261122)
    heads = [bytes([ib]) for ib in range(256)]
    heads += [b"\x18\x20", b"\x19\x00\x02", b"\x1a\x00\x00\x00\x01", b"\xd9\xd9\xf7"]
    for _ in range(4000):
        _assert_same(rng.randbytes(rng.randrange(0, 24)))
        _assert_same(b"".join(rng.choice(heads) for _ in range(rng.randrange(1, 16))))


def test_witness_of_a_message_batch() -> None:
    mapping = {b"websocket": {b"key-%04d" % i: bytes([i % 256]) * 32 for i in range(200)}}
    tree = hashtree.witness(mapping, [[b"websocket", b"key-%04d" % i] for i in range(50, 100)])
    blob = hashtree.to_cbor(tree)
    assert _assert_same(blob)[0] == "ok"
    assert hashtree.reconstruct(hashtree.parse(fast_decode(blob))) == hashtree.reconstruct(tree)


def test_no_leak_on_success_or_failure() -> None:
    """Decoding and encoding, succeeding and failing, leave no objects behind."""
    good = bytes.fromhex(load_vectors("certificates")[0]["cbor_hex"])
    # Truncated, bad UTF-8 after a filled list slot, duplicate key, bignum of a list.
    bad = [good[:-1], good[: len(good) // 2], b"\x84\x01\x41\xaa\x61\xff", b"\xa2\x61a\x00\x61a\x00"]
    bad.append(b"\xc2\x82\x00\x00")
    # Nesting deeper than the decoder's frames on the C stack: frames on the heap, freed on both paths.
    deep = [_nested(200), _nested(100, b"\xa1\x61a"), _nested(150, b"\x9f") + b"\xff" * 150]
    bad += [_nested(200)[:-1], _nested(100, b"\xbf\x00"), _nested(100, b"\xa1\x61a")[:-1] + b"\xa2\x00\x00\x00"]

    unencodable = [1, {"a": [b"x", object()]}]

    def churn() -> None:
        for _ in range(500):
            fast_encode(fast_decode(good))
            with contextlib.suppress(TypeError):
                fast_encode(unencodable)
            for blob in deep:
                fast_decode(blob)
            for blob in bad:
                try:
                    fast_decode(blob)
                except CborError:
                    continue
                raise AssertionError(f"{blob.hex()} decoded")

    churn()  # warm caches (interned strings, the lazily imported Tag, exception machinery)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        churn()
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    diff = after.filter_traces(ignore).compare_to(before.filter_traces(ignore), "lineno")
    growth = sum(stat.size_diff for stat in diff)
    # A leak of one object per decode would be over 100 kB here; what remains is the interpreter's noise.
    assert growth < 8_000, growth


def _encoded(encode: Callable[..., bytes], value: Any, **kwargs: Any) -> tuple[str, Any]:
    """The encoding, or the exception's type and message (any exception: both must fail alike)."""
    try:
        return ("ok", encode(value, **kwargs))
    except Exception as exc:  # the comparison is the test
        return (type(exc).__name__, str(exc))


def _assert_same_encoding(value: Any, **kwargs: Any) -> tuple[str, Any]:
    expected = _encoded(pure_encode, value, **kwargs)
    assert _encoded(fast_encode, value, **kwargs) == expected, repr(value)[:200]
    return expected


class _Level(enum.IntEnum):
    HIGH = 300


class _Text(str):
    pass


class _Blob(bytes):
    pass


class _Map(dict[Any, Any]):
    pass


def _view(raw: bytes) -> memoryview:
    return memoryview(raw)


_encodables = st.recursive(
    st.one_of(
        _scalars,
        st.binary(max_size=10).map(bytearray),
        st.binary(max_size=10).map(_view),
        st.binary(max_size=29).map(Principal),
        st.sampled_from([_Level.HIGH, _Text("tx"), _Blob(b"bx"), 1 << 64, -(1 << 64) - 1, 10**40]),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.lists(children, max_size=5).map(tuple),
        st.dictionaries(st.one_of(_keys, st.booleans(), st.none()), children, max_size=5),
        st.dictionaries(_keys, children, max_size=3).map(_Map),
        st.builds(pure_cbor.Tag, st.integers(min_value=0, max_value=(1 << 64) - 1), children),
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(value=_encodables, self_describe=st.booleans())
def test_generated_values_encode_identically(value: Any, self_describe: bool) -> None:
    status, _ = _assert_same_encoding(value, self_describe=self_describe)
    assert status == "ok"


def test_vector_values_encode_identically() -> None:
    for name in ("certificates", "hash_trees", "envelopes"):
        for record in load_vectors(name):
            for key in ("cbor_hex", "envelope_cbor_hex"):
                if key in record:
                    value = pure_decode(bytes.fromhex(record[key]))
                    assert _assert_same_encoding(value)[0] == "ok"
                    assert _assert_same_encoding(value, self_describe=False)[0] == "ok"


def test_witness_encodes_identically() -> None:
    mapping = {b"websocket": {b"key-%04d" % i: bytes([i % 256]) * 32 for i in range(200)}}
    tree = hashtree.witness(mapping, [[b"websocket", b"key-%04d" % i] for i in range(50, 100)])
    assert fast_encode(tree) == pure_encode(tree) == hashtree.to_cbor(tree)


@pytest.mark.parametrize(
    "value",
    [
        object(),
        {1, 2},
        [1, object()],
        {"k": 1j},
        "\ud800",
        pure_cbor.Tag(-1, 0),
        pure_cbor.Tag(1 << 64, 0),
        pure_cbor.Tag(1.5, 0),  # type: ignore[arg-type]
        pure_cbor.Tag(True, b""),
        memoryview(b"\x00" * 8).cast("I"),  # len() counts 2 items: both must encode the 8 bytes
    ],
    ids=repr,
)
def test_unusual_values_encode_or_fail_identically(value: Any) -> None:
    _assert_same_encoding(value)


def test_cyclic_value_is_a_recursion_error() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    for encode in (pure_encode, fast_encode):
        with pytest.raises(RecursionError):
            encode(cycle)


def test_multibyte_memoryview_encodes_all_its_bytes() -> None:
    view = memoryview(bytes(range(8))).cast("I")
    for encode in (pure_encode, fast_encode):
        assert pure_cbor.decode(encode(view)) == bytes(range(8))


def test_bignum_limit_is_the_same() -> None:
    assert importlib.import_module(fast_decode.__module__).DEF_MAX_BIGNUM_BYTES == pure_cbor.MAX_BIGNUM_BYTES
