"""Property and fuzz tests of the Candid codec: random types and values round-trip, and hostile
bytes (random or mutated valid messages) raise nothing but CandidError."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from icws_fast.errors import CandidError
from icws_fast.ic import candid
from icws_fast.ic.candid import (
    Field,
    OptType,
    PrimType,
    RecordType,
    Some,
    Type,
    VariantType,
    VecType,
    decode,
    encode,
    idl_hash,
    parse_args,
    parse_type,
)
from icws_fast.ic.principal import Principal
from icws_fast.protocol.types import WS_TYPES_DID
from tests.vectors import load_vectors

PRIMS = [
    candid.NULL,
    candid.BOOL,
    candid.NAT,
    candid.INT,
    candid.NAT8,
    candid.NAT16,
    candid.NAT32,
    candid.NAT64,
    candid.INT8,
    candid.INT16,
    candid.INT32,
    candid.INT64,
    candid.FLOAT32,
    candid.FLOAT64,
    candid.TEXT,
    candid.RESERVED,
    candid.PRINCIPAL,
]

labels = st.one_of(
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,7}", fullmatch=True),
    st.text(min_size=1, max_size=4),
    st.integers(0, 2**32 - 1),
)


def _label_id(label: str | int) -> int:
    return label if isinstance(label, int) else idl_hash(label)


def fields_of(
    children: st.SearchStrategy[Type],
    min_size: int,
    keys: st.SearchStrategy[str | int] = labels,
    max_size: int = 4,
) -> st.SearchStrategy[list[Field]]:
    """Record or variant fields with distinct ids, their keys drawn from ``keys``."""
    pairs = st.lists(
        st.tuples(keys, children), min_size=min_size, max_size=max_size, unique_by=lambda p: _label_id(p[0])
    )
    return pairs.map(lambda ps: [Field(_label_id(k), k, t) for k, t in ps])


def composite_types(
    children: st.SearchStrategy[Type],
    fields: Callable[[st.SearchStrategy[Type], int], st.SearchStrategy[list[Field]]] = fields_of,
) -> st.SearchStrategy[Type]:
    """One level of opt, vec, record, tuple record and variant types over ``children``."""
    return st.one_of(
        children.map(OptType),
        children.map(VecType),
        fields(children, 0).map(RecordType),
        st.lists(children, min_size=1, max_size=3).map(
            lambda ts: RecordType([Field(i, i, t) for i, t in enumerate(ts)])
        ),
        fields(children, 1).map(VariantType),
    )


types = st.recursive(st.sampled_from(PRIMS), composite_types, max_leaves=10)

_FIXED_RANGES = {
    candid.NAT8: (0, 2**8 - 1),
    candid.NAT16: (0, 2**16 - 1),
    candid.NAT32: (0, 2**32 - 1),
    candid.NAT64: (0, 2**64 - 1),
    candid.INT8: (-(2**7), 2**7 - 1),
    candid.INT16: (-(2**15), 2**15 - 1),
    candid.INT32: (-(2**31), 2**31 - 1),
    candid.INT64: (-(2**63), 2**63 - 1),
}


def values_of(t: Type) -> st.SearchStrategy[Any]:
    """Python values of type ``t`` in the codec's mapping (what decode returns)."""
    if isinstance(t, PrimType):
        if t in (candid.NULL, candid.RESERVED):
            return st.none()
        if t is candid.BOOL:
            return st.booleans()
        if t is candid.NAT:
            return st.integers(0, 2**100)
        if t is candid.INT:
            return st.integers(-(2**100), 2**100)
        if t in _FIXED_RANGES:
            lo, hi = _FIXED_RANGES[t]
            return st.integers(lo, hi)
        if t is candid.FLOAT32:
            return st.floats(width=32, allow_nan=False)
        if t is candid.FLOAT64:
            return st.floats(allow_nan=False)
        if t is candid.TEXT:
            return st.text(max_size=8)
        return st.binary(max_size=29).map(Principal)
    if isinstance(t, OptType):
        inner = values_of(t.inner)
        if isinstance(t.inner, OptType) or t.inner in (candid.NULL, candid.RESERVED):
            inner = inner.map(Some)
        return st.one_of(st.none(), inner)
    if isinstance(t, VecType):
        if t.inner is candid.NAT8:
            return st.binary(max_size=12)
        return st.lists(values_of(t.inner), max_size=3)
    if isinstance(t, RecordType):
        if t.is_tuple:
            return st.tuples(*(values_of(f.type) for f in t.fields))
        return st.fixed_dictionaries({f.key: values_of(f.type) for f in t.fields})
    assert isinstance(t, VariantType)
    return st.one_of(*(values_of(f.type).map(lambda v, k=f.key: {k: v}) for f in t.fields))


@st.composite
def typed_values(draw: st.DrawFn) -> tuple[list[Type], list[Any]]:
    ts = draw(st.lists(types, max_size=3))
    return ts, [draw(values_of(t)) for t in ts]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(typed_values())
def test_round_trip(case: tuple[list[Type], list[Any]]) -> None:
    ts, values = case
    data = encode(ts, values)
    assert decode(data, ts) == values
    # Through the text form: printing a type and parsing it back gives the same codec.
    reparsed = [parse_type(str(t)) for t in ts]
    assert encode(reparsed, values) == data
    assert decode(data, reparsed) == values
    # Skipping every argument, and reading each as reserved or as an opt that cannot hold it.
    assert decode(data, []) == []
    assert decode(data, [candid.RESERVED] * len(ts)) == [None] * len(ts)
    assert decode(data, [OptType(candid.EMPTY)] * len(ts)) == [None] * len(ts)


@settings(max_examples=200, deadline=None)
@given(types.filter(lambda t: not isinstance(t, OptType) and t not in (candid.NULL, candid.RESERVED)), st.data())
def test_plain_value_coerces_to_opt(t: Type, data: st.DataObject) -> None:
    # The spec's rule `not (null <: t), t <: t'  =>  t <: opt t'`: the value arrives present.
    value = data.draw(values_of(t))
    assert decode(encode([t], [value]), [OptType(t)]) == [value]
    assert decode(encode([t], [value]), [OptType(OptType(t))]) == [Some(value)]


# --- fuzzing --------------------------------------------------------------------------------

WS_DEFS = WS_TYPES_DID + "type List = opt record { head : int; tail : List };\n"
FUZZ_TYPES = [
    parse_args(text, WS_DEFS)
    for text in (
        "()",
        "(reserved)",
        "(opt nat)",
        "(nat, text)",
        "(vec opt nat)",
        "(record { 0 : opt int; 1 : bool })",
        "(variant { ok : text; err : text })",
        "(CanisterWsGetMessagesResult)",
        "(List)",
        "(principal, blob)",
        "(func (text) -> (nat), service {})",
        "(opt opt record { int; vec vec null })",
    )
]
_ALLOWED = (CandidError,)


def _corpus() -> list[tuple[bytes, list[Type]]]:
    corpus: list[tuple[bytes, list[Type]]] = []
    for record in load_vectors("candid"):
        defs = "\n".join(record["type_defs"]) if record.get("type_defs") else None
        corpus.append((bytes.fromhex(record["hex"]), parse_args(record["type"], defs)))
    ws = FUZZ_TYPES[7]
    key = {"client_principal": Principal.anonymous(), "client_nonce": 3}
    msgs = [{"client_key": key, "key": f"k{i}", "content": b"x" * i} for i in range(3)]
    value = {"Ok": {"messages": msgs, "cert": b"cert", "tree": b"tree", "is_end_of_queue": False}}
    corpus.append((encode(ws, [value]), ws))
    lst = FUZZ_TYPES[8]
    corpus.append((encode(lst, [{"head": 1, "tail": {"head": -5, "tail": None}}]), lst))
    return corpus


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(pos, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[pos:pos] = bytes([rng.choice((0x00, 0x01, 0x7F, 0x80, 0xFF, rng.randrange(256)))])
        elif op == 2 and buf:
            del buf[min(pos, len(buf) - 1)]
        elif op == 3:
            del buf[pos:]
        elif op == 4 and buf:
            buf[min(pos, len(buf) - 1)] = rng.choice((0x6C, 0x6D, 0x6E, 0x6B, 0x80, 0xFF, 0x00))
        else:
            start = rng.randrange(len(buf) + 1)
            buf[pos:pos] = buf[start : start + rng.randint(1, 8)]
    return bytes(buf)


def _try_decode(data: bytes, ts: list[Type]) -> None:
    with contextlib.suppress(*_ALLOWED):
        decode(data, ts)


def test_fuzz_mutated_messages() -> None:
    rng = random.Random(20261122)
    corpus = _corpus()
    for _ in range(6000):
        data, own_types = rng.choice(corpus)
        mutated = _mutate(rng, data)
        _try_decode(mutated, own_types)
        _try_decode(mutated, rng.choice(FUZZ_TYPES))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64), st.sampled_from(FUZZ_TYPES))
def test_fuzz_random_bytes(tail: bytes, ts: list[Type]) -> None:
    _try_decode(b"DIDL" + tail, ts)
    _try_decode(tail, ts)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_fuzz_parser(text: str) -> None:
    for parse in (parse_type, parse_args, candid.parse_did):
        with contextlib.suppress(CandidError):
            parse(text)
