"""The Candid codec against the shared vectors, the official suite's edge cases, and itself."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from icws_fast.errors import CandidError
from icws_fast.ic import candid
from icws_fast.ic.candid import (
    FuncRef,
    FuncType,
    NamedType,
    OptType,
    RecordType,
    ServiceType,
    Some,
    Type,
    VariantType,
    VecType,
    decode,
    encode,
    idl_hash,
    parse_args,
    parse_did,
    parse_type,
)
from icws_fast.ic.principal import Principal
from icws_fast.ic.request_id import leb128, sleb128
from tests.vectors import load_vectors

VECTORS = load_vectors("candid")


NULLISH = (candid.NULL, candid.RESERVED)


def resolve(t: Type) -> Type:
    while isinstance(t, NamedType):
        t = t.definition
    return t


def from_json(value: Any, t: Type) -> Any:
    """The Python value of a vector's JSON rendering (README: candid.json) at type ``t``."""
    t = resolve(t)
    if t is candid.RESERVED or value is None:
        return None
    if isinstance(t, OptType):
        assert set(value) == {"opt"}
        inner = from_json(value["opt"], t.inner)
        return Some(inner) if isinstance(resolve(t.inner), OptType) or resolve(t.inner) in NULLISH else inner
    if isinstance(value, dict) and "float" in value:
        return float(value["float"])
    if isinstance(value, dict) and "blob" in value:
        return bytes.fromhex(value["blob"])
    if isinstance(value, dict) and "principal" in value:
        return Principal.from_text(value["principal"])
    if isinstance(value, dict) and "service" in value:
        return Principal.from_text(value["service"])
    if isinstance(value, dict) and "func" in value:
        return FuncRef(Principal.from_text(value["func"]["principal"]), value["func"]["method"])
    if isinstance(t, VecType):
        items = [from_json(v, t.inner) for v in value]
        return bytes(items) if resolve(t.inner) is candid.NAT8 else items
    if isinstance(t, RecordType):
        fields = value["record"]
        by_id = {f.id: f for f in t.fields}
        out: dict[Any, Any] = {}
        for name, v in fields.items():
            fid = int(name) if name.isdigit() else idl_hash(name)
            f = by_id[fid]
            out[f.key] = from_json(v, f.type)
        for f in t.fields:
            out.setdefault(f.key, None)
        return tuple(out[i] for i in range(len(t.fields))) if t.is_tuple else out
    if isinstance(t, VariantType):
        ((name, v),) = value["variant"].items()
        fid = int(name) if name.isdigit() else idl_hash(name)
        (f,) = [f for f in t.fields if f.id == fid]
        return {f.key: from_json(v, f.type)}
    return value


def vector_types(record: dict[str, Any]) -> list[Type]:
    defs = "\n".join(record["type_defs"]) if record.get("type_defs") else None
    return parse_args(record["type"], defs)


@pytest.mark.parametrize("record", VECTORS, ids=[r["id"] for r in VECTORS])
def test_vector(record: dict[str, Any]) -> None:
    types = vector_types(record)
    data = bytes.fromhex(record["hex"])
    if not record["valid"]:
        with pytest.raises(CandidError):
            decode(data, types)
        return
    values = decode(data, types)
    assert len(values) == len(types)
    if record["value"] is not None:
        expected = [from_json(v, t) for v, t in zip(record["value"], types, strict=True)]
        assert values == expected
    if record.get("equivalent_hex"):
        assert decode(bytes.fromhex(record["equivalent_hex"]), types) == values
    if record["kind"] == "encode_and_decode":
        assert encode(types, values) == data


def test_vectors_cover_both_kinds() -> None:
    assert {r["kind"] for r in VECTORS} == {"decode", "encode_and_decode"}
    assert any(not r["valid"] for r in VECTORS)


# --- The official suite's assertions that the shared vectors leave out --------------------

OFFICIAL_DEFS = """
type Opt = opt Opt;
type Vec = vec Vec;
type EmptyRecord = record { EmptyRecord };
type OptRec = opt record { OptRec };
type List = opt record { head : int; tail : List };
type List1 = opt List2;
type List2 = record { head : int; tail : List1 };
type EmptyVariant = variant { 0: EmptyVariant };
type VariantList = variant { nil; cons: record { head : int; tail : VariantList } };
"""

# (hex after DIDL, argument types, expected values or None for must-fail)
OFFICIAL: list[tuple[str, str, list[Any] | None]] = [
    ("0000", "(Opt)", [None]),  # missing argument at opt
    ("016e000100010100", "(opt opt opt empty)", [Some(Some(None))]),
    ("026e016e000100010100", "(Opt)", [Some(Some(None))]),  # mutual recursion
    ("016d7c010000", "(vec int8)", [[]]),  # empty vector of a non-subtype
    ("016d00010002 0000", "(Vec)", [[[], []]]),
    ("016d00010002 0000", "(vec vec opt empty)", [[[], []]]),
    ("016d7f0100e807", "(vec opt nat)", [[None] * 1000]),
    ("026d016c00010005", "(vec record {})", [[{}] * 5]),
    ("016c0003000000", "(record {}, record {}, record {})", [{}, {}, {}]),
    ("016c01017c01002a", "(record {1:opt int})", [{1: 42}]),
    ("016c01017c01002a", "(record {1:reserved})", [{1: None}]),
    ("016c000100", "(record {2:null})", [{2: None}]),
    ("016c02007c017e01002a01", "(record {1:bool})", [{1: True}]),
    ("026d016c01000101 0001", "(vec EmptyRecord)", None),
    ("016c02007c017e01002a", "(record {int})", None),
    ("016c02007c017e01002a0100", "(record {int})", None),
    ("016c02007c0101002a01", "(record {})", None),
    ("016c02007c01002a01", "(record {})", None),
    ("016c02007c017e027e01002a0100", "(record {})", None),
    ("016c020001017e01000000", "(record {})", None),
    ("016c020001017e017c2a", "(reserved)", None),
    ("00017f", "(opt empty)", [None]),
    ("016e6f010000", "(opt empty)", [None]),
    ("016e7e01000102", "(opt bool)", None),
    ("00017e00", "(opt bool)", [False]),
    ("00017e02", "(opt bool)", None),
    ("016e7f010000", "(opt opt null)", [None]),
    ("00017e01", "(opt opt bool)", [Some(True)]),
    ("00017e01", "(Opt)", None),  # bool at `fix opt`: infinite, must fail
    ("016e00010001010100", "(Opt)", [Some(Some(Some(None)))]),
    ("016c0100000100", "(OptRec)", None),
    ("00017d05", "(opt text)", [None]),
    ("016e7e01000101", "(opt nat)", [None]),
    ("016e7e01000102", "(opt nat)", None),
    ("026e016e7e0100010101", "(opt nat)", [None]),
    ("026e016e7e0100010101", "(opt opt nat)", [Some(None)]),
    ("026e016b01007e0100010001", "(opt variant { 0 : int })", [None]),
    ("016c000100", "(record { foo : reserved })", [{"foo": None}]),
    ("016b000100", "(variant {})", None),
    ("016b01007f01000000", "(variant {0:int})", None),  # trailing byte / type mismatch
    ("016b01007f010000", "(variant {0:int})", None),
    ("016b02007f017c0100012a", "(variant {0:int; 1:int})", [{1: 42}]),
    ("016b02007f017f010000", "(variant {0})", [{0: None}]),
    ("016b02007f017f010000", "(opt variant {0})", [{0: None}]),
    ("016b02007f017f010001", "(opt variant {0})", [None]),
    ("016b02007f007f010000", "(variant {0})", None),
    ("016b03007f017f017f010000", "(variant {0})", None),
    ("016b03007f017fffffffff0f7f010000", "(variant {0;1;4294967295})", [{0: None}]),
    ("016b03007fffffffff0f7f017f010000", "(variant {0;1;4294967295})", None),
    ("016b029cc20171e58eb4026f01000004676f6f64", "(variant { ok: text; err: empty })", [{"ok": "good"}]),
    ("016b0100000100000000000000000000000000", "(EmptyVariant)", None),
    ("016b0180e497d0127c0100002a", "(reserved)", None),
    ("016b02007f017c0100012a00", "(variant {0; 1:int})", None),
    ("016b0200010 17c0100012a", "(variant {0:reserved; 1:int})", None),
    ("016b02007f01000 0", "(variant {0; 1})", None),
    ("026e016c02a0d2aca8047c90eddae704000100 00", "(List)", [None]),
    (
        "026e016c02a0d2aca8047c90eddae7040001000101010200",
        "(List1)",
        [{"head": 1, "tail": {"head": 2, "tail": None}}],
    ),
    (
        "026c02a0d2aca8047c90eddae704016e00 0101 0101010200",
        "(List)",
        [{"head": 1, "tail": {"head": 2, "tail": None}}],
    ),
    (
        "026b02d1a7cf027ff1f3928e04016c02a0d2aca8047c90eddae704000100 00",
        "(VariantList, opt VariantList, null, reserved, opt int)",
        [{"nil": None}, None, None, None, None],
    ),
    ("026b02d1a7cf027ff1f3928e04016c02a0d2aca8047c90eddae704000100 00", "(VariantList, opt int, vec int)", None),
    ("000170", "(null)", None),
    ("00027070", "(null, null)", None),
    ("0002707d05", "(null, nat)", None),
    ("016c0100700100", "(record { 0 : reserved })", [(None,)]),
    ("016c0100700100", "(record { 0 : null })", None),
    ("016b010070010000", "(variant { 0 : null })", None),
    ("016d70010001", "(vec reserved)", [[None]]),
    ("016d70010001", "(vec null)", None),
    ("016e70010001", "(opt null)", [None]),
    ("00017d05", "(null)", None),
    ("00027d7d0506", "(nat, nat, null)", [5, 6, None]),
    ("016c01007d010005", "(record { 1 : null })", [{1: None}]),
    ("016c01017d010005", "(record { 0 : null })", [(None,)]),
    ("01670002007e000001", "(opt empty, bool)", [None, True]),
    ("016703414243 02007e 0500 68656c6c6f 01", "(opt empty, bool)", [None, True]),
    # headers
    ("016e6f00", "()", []),
    ("016e00", "()", None),
    ("0100 00", "()", None),
    ("026e010000", "()", None),
    ("00037f7f", "()", None),
    ("00027f7f7f", "()", None),
    ("00016e7f00", "()", None),
    ("016800", "()", None),
    ("026d7f0000", "()", None),
    ("016e6f6e6f00", "()", None),
    ("016e0201 0000", "(opt int)", None),
    ("016e7c0100022a", "(opt int)", None),
    ("016e7c0100ff", "(opt int)", None),
    ("016e7c0100002a", "(opt int)", None),
    # references
    ("0001680103caffee", "(principal)", [Principal(bytes.fromhex("caffee"))]),
    ("0001680102caff", "(principal)", [Principal(bytes.fromhex("caff"))]),
    ("0168010001 03caffee", "(principal)", None),
    ("0001680103caffee", "(service {})", None),
    ("0001690103caffee", "(service {})", None),
    ("026a0171017d006901 03666f6f00010101 03caffee", "(principal)", [Principal(bytes.fromhex("caffee"))]),
    ("0169000100 0103caffee", "(principal)", [Principal(bytes.fromhex("caffee"))]),
    ("00016f0103caffee", "(principal)", None),
    ("026901016d01 6a00010100 010001 03caffee", "(principal)", [Principal(bytes.fromhex("caffee"))]),
    ("016a0000000100 010103caffee0161", "(principal)", None),
    ("016c000100", "(principal)", None),
    ("016e7d010000", "(principal)", None),
    (
        "026a0171017d00690303666f6f0004666f6f3200010101 03caffee",
        "(service { foo : (text) -> (nat); foo2 : (text) -> (nat) })",
        None,
    ),
    (
        "026a0171017d00690204666f6f320003666f6f00010101 03caffee",
        "(service { foo : (text) -> (nat); foo2 : (text) -> (nat) })",
        None,
    ),
    (
        "026a0171017d00690209666f6f62617262617a0006666f6f62617200010101 03caffee",
        "(service { foobar : (text) -> (nat); foobarbaz : (text) -> (nat) })",
        None,
    ),
    ("026a0171017d00690103e228a100010101 03caffee", "(reserved)", None),
    ("026a0171017d00690203666f6f0003666f6f00010101 03caffee", "(service { foo : (text) -> (nat) })", None),
    ("026a0171017d00690103666f6f68010101 03caffee", "(service { foo: () -> () })", None),
    ("026e7e690103666f6f00010101 03caffee", "(service { foo: () -> () })", None),
    ("02690103666f6f016e7e010101 03caffee", "(service { foo: () -> () })", None),
    (
        "0569020366 6f6f0104f09f9082026a000001026a010301040101 6e7c 6c00 010001 00",
        '(service {"🐂":(opt int)->(record{}) query; foo:()->() oneway})',
        [Principal.management()],
    ),
    ("016a0000000100 010103caffee0161", "(func () -> ())", [FuncRef(Principal(bytes.fromhex("caffee")), "a")]),
    ("016a0000000100 010003caffee0161", "(func () -> ())", None),
    (
        "026a027c7d0101010169000100 010100 04f09f9082",
        "(func (int,nat) -> (service {}) query)",
        [FuncRef(Principal.management(), "🐂")],
    ),
    (
        "016a0171017d0103 0100 010103caffee03666f6f",
        "(func (text) -> (nat) composite_query)",
        [FuncRef(Principal(bytes.fromhex("caffee")), "foo")],
    ),
    ("016a0171017d018001 0100 010103caffee03666f6f", "(func (text) -> (nat) query)", None),
    ("00016a010103caffee0161", "(func () -> ())", None),
    ("016a0169017d00 0100 010103caffee03666f6f", "(func (service {}) -> (nat))", None),
    ("016a0171017d0103 0100 010103caffee03666f6f", "(func (text) -> (nat))", None),
    ("01690001000103caffee", "(service { foo : (text) -> (nat) })", None),
    ("026a0171017d0101690103666f6f00010101 03caffee", "(service { foo : (text) -> (nat) })", None),
    ("026a0171017d00690103666f6f00010101 03caffee", "(service { foo : (text) -> (nat) query })", None),
    ("026a0171017d00690103666f6f00010101 03caffee", "(service {})", [Principal(bytes.fromhex("caffee"))]),
    ("016a0000000100 010103caffee03666f6f", "(func (text) -> (nat))", None),
    (
        "016a0171017d000100 010103caffee03666f6f",
        "(func (text, opt text) -> ())",
        [FuncRef(Principal(bytes.fromhex("caffee")), "foo")],
    ),
    # overshooting lengths
    ("8094ebdc0300", "()", None),
    ("008094ebdc03", "()", None),
    ("0001718094ebdc034d6f746f6b6f", "(text)", None),
    ("000168018094ebdc034d6f746f6b6f", "(principal)", None),
    ("016c8094ebdc03007f007f", "()", None),
    ("016b8094ebdc03007f007f", "()", None),
    ("016d7e01008094ebdc03000000", "(vec bool)", None),
    ("01678094ebdc030000", "()", None),
    ("0167000100 8094ebdc030000", "()", None),
]


@pytest.mark.parametrize(
    ("hex_tail", "types", "expected"), OFFICIAL, ids=[f"{i}:{c[1]}" for i, c in enumerate(OFFICIAL)]
)
def test_official_suite(hex_tail: str, types: str, expected: list[Any] | None) -> None:
    data = b"DIDL" + bytes.fromhex(hex_tail.replace(" ", ""))
    arg_types = parse_args(types, OFFICIAL_DEFS)
    if expected is None:
        with pytest.raises(CandidError):
            decode(data, arg_types)
    else:
        assert decode(data, arg_types) == expected


# --- Decoding bombs: each must fail fast ------------------------------------------------

_CHAIN = "".join(f"6c0200{i:02x}01{i:02x}" for i in range(1, 20))
SPACE_BOMBS = [
    ("016d7f01008094ebdc03", ["()", "(vec opt nat)", "(opt nat)"]),
    ("016d7001008094ebdc03", ["()", "(vec reserved)", "(opt nat)"]),
    ("046c03007f010102026c0100706c006d0001038094ebdc03", ["()", "(vec record {null;record{reserved};record{}})"]),
    ("026d016d7f010005ffff3fffff3fffff3fffff3fffff3f", ["()", "(vec vec null)", "(vec opt nat)"]),
    ("026d016c00010080ade204", ["()", "(vec record {})", "(opt nat)"]),
    ("176c02017f027f6c0201000200" + _CHAIN + "6e146d1501160201 01", ["()"]),
    ("176c02017f027f6c0201000200" + _CHAIN + "6e146d15011605 0101010101", ["(vec opt record {})"]),
]


@pytest.mark.parametrize(("hex_tail", "types"), SPACE_BOMBS)
def test_space_bombs_fail(hex_tail: str, types: list[str]) -> None:
    data = b"DIDL" + bytes.fromhex(hex_tail.replace(" ", ""))
    for t in types:
        with pytest.raises(CandidError):
            decode(data, t)


def test_space_bomb_chain_is_well_formed() -> None:
    # The 2^20-null chain above must be a real type table (so the test fails for the right reason).
    header = b"DIDL" + bytes.fromhex("176c02017f027f6c0201000200" + _CHAIN + "6e146d150116020000")
    assert decode(header, "()") == []


def test_deep_nesting_fails_cleanly() -> None:
    n = 5000
    table = b"".join(b"\x6e" + sleb128(i + 1) for i in range(n - 1)) + b"\x6e\x7f"
    data = b"DIDL" + leb128(n) + table + b"\x01\x00" + b"\x01" * (n - 1) + b"\x00"
    for t in ("()", "(reserved)", "(opt nat)"):
        with pytest.raises(CandidError):
            decode(data, t)
    nested = "opt " * 5000 + "nat"
    with pytest.raises(CandidError):
        parse_type(nested)


def test_recursive_value_too_deep() -> None:
    # A List of 10 000 elements: every level costs stack, so the decoder refuses it.
    table = bytes.fromhex("026e016c02a0d2aca8047c90eddae70400")
    data = b"DIDL" + table + b"\x01\x00" + b"\x01\x00" * 10_000 + b"\x00"
    with pytest.raises(CandidError):
        decode(data, parse_args("(List)", OFFICIAL_DEFS))
    short = b"DIDL" + table + b"\x01\x00" + b"\x01\x00" * 50 + b"\x00"
    (value,) = decode(short, parse_args("(List)", OFFICIAL_DEFS))
    length = 0
    while value is not None:
        length += 1
        value = value["tail"]
    assert length == 50


def test_huge_nat_is_linear() -> None:
    digits = 200_000
    data = b"DIDL\x00\x01\x7d" + b"\xff" * digits + b"\x01"
    (value,) = decode(data, "(nat)")
    assert value == (1 << (7 * digits + 1)) - 1
    (neg,) = decode(b"DIDL\x00\x01\x7c" + b"\x80" * digits + b"\x7f", "(int)")
    assert neg == -(1 << (7 * digits))


# --- Encoding -----------------------------------------------------------------------------


def test_encode_ws_types() -> None:
    did = parse_did(WS_DID)
    t = did.types["CanisterWsGetMessagesResult"]
    key = {"client_principal": Principal.anonymous(), "client_nonce": 7}
    msgs = [{"client_key": key, "key": f"gw_{i}", "content": bytes([i]) * 10} for i in range(3)]
    value = {"Ok": {"messages": msgs, "cert": b"c", "tree": b"t", "is_end_of_queue": True}}
    data = encode([t], [value])
    assert decode(data, [t]) == [value]
    assert decode(encode([t], [{"Err": "nope"}]), [t]) == [{"Err": "nope"}]
    # A reader that only knows some of the fields skips the rest.
    partial = parse_type("variant { Ok : record { is_end_of_queue : bool; messages : vec record { key : text } } }")
    assert decode(data, [partial]) == [
        {"Ok": {"is_end_of_queue": True, "messages": [{"key": f"gw_{i}"} for i in range(3)]}}
    ]


def test_encode_dedups_and_orders_like_agent_js() -> None:
    t = parse_args("(vec record { int; text }, vec record { int; text }, opt nat, opt nat)")
    data = encode(t, [[(1, "a")], [], None, 5])
    assert data.startswith(bytes.fromhex("4449444c036c02007c01716d006e7d0401010202"))
    assert decode(data, t) == [[(1, "a")], [], None, 5]


def test_encode_recursive_type() -> None:
    t = parse_args("(List, VariantList)", OFFICIAL_DEFS)
    lst = {"head": 1, "tail": {"head": -2, "tail": None}}
    vl = {"cons": {"head": 1, "tail": {"nil": None}}}
    data = encode(t, [lst, vl])
    assert decode(data, t) == [lst, vl]
    # The official suite's encoding of the same list type (with its table order) decodes equally.
    official = bytes.fromhex("4449444c026e016c02a0d2aca8047c90eddae7040001000101010200")
    assert decode(official, parse_args("(List)", OFFICIAL_DEFS)) == [{"head": 1, "tail": {"head": 2, "tail": None}}]


@pytest.mark.parametrize(
    ("types", "values"),
    [
        ("(nat)", [-1]),
        ("(nat)", [True]),
        ("(nat)", ["1"]),
        ("(int)", [1.0]),
        ("(nat8)", [256]),
        ("(int8)", [-129]),
        ("(nat64)", [1 << 64]),
        ("(float32)", [1e300]),
        ("(float64)", ["x"]),
        ("(text)", [b"x"]),
        ("(text)", ["\ud800"]),
        ("(bool)", [1]),
        ("(null)", [0]),
        ("(empty)", [None]),
        ("(principal)", ["aaaaa-aa"]),
        ("(blob)", ["abc"]),
        ("(blob)", [[256]]),
        ("(vec nat)", [{1, 2}]),
        ("(opt opt nat)", [5]),
        ("(record { a : nat })", [{}]),
        ("(record { a : nat })", [{"a": 1, "b": 2}]),
        ("(record { a : nat })", [[1]]),
        ("(record { nat; text })", [(1,)]),
        ("(variant { a; b })", [{"a": None, "b": None}]),
        ("(variant { a; b })", [{"c": None}]),
        ("(variant { a; b })", ["a"]),
        ("(func () -> ())", [Principal.anonymous()]),
        ("(service {})", ["aaaaa-aa"]),
        ("(nat, nat)", [1]),
    ],
)
def test_encode_rejects_bad_values(types: str, values: list[Any]) -> None:
    with pytest.raises(CandidError):
        encode(types, values)


def test_encode_conveniences() -> None:
    assert decode(
        encode("(record { a : opt nat; b : null; c : nat })", [{"c": 1}]), "(record { a : opt nat; c : nat })"
    ) == [{"a": None, "c": 1}]
    assert encode("(blob)", [[1, 2]]) == encode("(blob)", [b"\x01\x02"]) == encode("(blob)", [bytearray(b"\x01\x02")])
    assert encode("(record { nat; text })", [[1, "a"]]) == encode("(record { nat; text })", [(1, "a")])
    assert encode("(record { nat; text })", [{0: 1, 1: "a"}]) == encode("(record { nat; text })", [(1, "a")])
    assert encode("(reserved)", ["anything"]) == b"DIDL\x00\x01\x70"
    assert decode(encode("(opt opt nat)", [Some(None)]), "(opt opt nat)") == [Some(None)]
    assert decode(encode("(opt opt nat)", [Some(3)]), "(opt opt nat)") == [Some(3)]
    assert decode(encode("(opt null)", [Some(None)]), "(opt null)") == [Some(None)]
    ref = FuncRef(Principal.anonymous(), "go")
    assert decode(encode("(func (nat) -> () oneway)", [ref]), "(func (nat) -> () oneway)") == [ref]
    svc = Principal.from_text("w7x7r-cok77-xa")
    assert decode(encode("(service { a : () -> () })", [svc]), "(service {})") == [svc]
    assert decode(encode("(float32, float64)", [1.5, 2]), "(float32, float64)") == [1.5, 2.0]


def test_decode_input_checks() -> None:
    with pytest.raises(CandidError):
        decode(b"DIDM\x00\x00", "()")
    with pytest.raises(CandidError):
        decode(b"DID", "()")
    assert decode(memoryview(b"DIDL\x00\x01\x7d\x05"), "(nat)") == [5]
    assert decode(bytearray(b"DIDL\x00\x01\x7d\x05"), parse_args("(nat)")) == [5]
    with pytest.raises(CandidError):
        decode(b"DIDL\x00\x00", "(nat)")  # a missing argument that is not optional


def test_decode_cache_distinguishes_headers() -> None:
    t = parse_args("(opt nat)")
    a = encode("(nat)", [7])
    b = encode("(opt nat)", [9])
    c = encode("(text)", ["x"])
    for _ in range(3):
        assert decode(a, t) == [7]
        assert decode(b, t) == [9]
        assert decode(c, t) == [None]
    # A header that is a prefix of a cached one must not hit the cache.
    assert decode(b"DIDL\x00\x01\x7d\x05", t) == [5]
    with pytest.raises(CandidError):
        decode(b"DIDL\x00\x01\x7d", t)


def test_fixed_width_vectors() -> None:
    cases = {
        "nat16": [0, 65535],
        "int16": [-32768, 32767],
        "nat32": [1, 2**32 - 1],
        "int32": [-(2**31)],
        "nat64": [0, 2**64 - 1],
        "int64": [-(2**63), 2**63 - 1],
        "float32": [0.5, -2.0],
        "float64": [1e300],
        "int8": [-128, 127],
        "bool": [True, False, True],
    }
    for name, values in cases.items():
        data = encode(f"(vec {name})", [values])
        assert decode(data, f"(vec {name})") == [values]
        assert decode(data, "()") == []  # skipped
        assert decode(data, "(opt vec text)") == ([None] if values else [[]])
    with pytest.raises(CandidError):
        decode(b"DIDL\x01\x6d\x7e\x01\x00\x02\x01\x02", "(vec bool)")
    with pytest.raises(CandidError):
        decode(b"DIDL\x01\x6d\x78\x01\x00\x02" + b"\x00" * 15, "()")


# --- Candid text --------------------------------------------------------------------------

WS_DID = """
// IC WebSocket CDK interface
type ClientPrincipal = principal;
type GatewayPrincipal = principal;
type ClientKey = record { client_principal : ClientPrincipal; client_nonce : nat64 };
type WebsocketMessage = record {
  client_key : ClientKey; sequence_num : nat64; timestamp : nat64; is_service_message : bool; content : blob };
type CanisterOutputMessage = record { client_key : ClientKey; key : text; content : blob };
type CanisterOutputCertifiedMessages = record {
  messages : vec CanisterOutputMessage; cert : blob; tree : blob; is_end_of_queue : bool };
type CanisterWsOpenArguments = record { client_nonce : nat64; gateway_principal : GatewayPrincipal };
type CanisterWsOpenResult = variant { Ok : null; Err : text };
type CanisterWsGetMessagesArguments = record { nonce : nat64 };
type CanisterWsGetMessagesResult = variant { Ok : CanisterOutputCertifiedMessages; Err : text };
/* block /* nested */ comment */
service : (opt record { x : nat }) -> {
  ws_open : (CanisterWsOpenArguments) -> (CanisterWsOpenResult);
  ws_get_messages : (CanisterWsGetMessagesArguments) -> (CanisterWsGetMessagesResult) query;
  "quoted name" : (to : principal, amount : nat) -> () oneway;
  cq : () -> (record { nat; text }) composite_query;
}
"""


def test_parse_did() -> None:
    did = parse_did(WS_DID)
    assert did.service is not None
    assert list(did.service.methods) == sorted(["ws_open", "ws_get_messages", "quoted name", "cq"])
    get = did.service.methods["ws_get_messages"]
    assert isinstance(get, FuncType) and get.modes == ("query",)
    assert did.service.methods["quoted name"].modes == ("oneway",)  # type: ignore[attr-defined]
    cq = did.service.methods["cq"]
    assert isinstance(cq, FuncType) and cq.modes == ("composite_query",)
    ret = cq.rets[0]
    assert isinstance(ret, RecordType) and ret.is_tuple
    assert did.init is not None and isinstance(did.init[0], OptType)
    assert resolve(did.types["ClientPrincipal"]) is candid.PRINCIPAL
    rec = resolve(did.types["CanisterOutputCertifiedMessages"])
    assert isinstance(rec, RecordType)
    assert [f.key for f in rec.fields] == sorted(["messages", "cert", "tree", "is_end_of_queue"], key=idl_hash)
    assert resolve(next(f.type for f in rec.fields if f.key == "cert")) is not None
    service_ref = parse_did("type S = service { a : () -> () }; service : S")
    assert service_ref.service is not None and list(service_ref.service.methods) == ["a"]


def test_parse_type_forms() -> None:
    t = parse_type('record { 5 : nat; text; "☃" : bool; 0x10 : int; 1_000 : null }')
    assert isinstance(t, RecordType)
    assert {f.key: f.id for f in t.fields} == {5: 5, 6: 6, "☃": idl_hash("☃"), 16: 16, 1000: 1000}
    v = parse_type("variant { a; b : nat; 3; 4 : text; }")
    assert isinstance(v, VariantType) and [f.key for f in v.fields] == sorted(
        ["a", "b", 3, 4], key=lambda k: k if isinstance(k, int) else idl_hash(k)
    )
    assert parse_type("blob") is candid.BLOB
    f = parse_type("func (nat) -> (text) query")
    assert isinstance(f, FuncType) and f.modes == ("query",)
    s = parse_type("service { m : (nat) -> () }")
    assert isinstance(s, ServiceType)
    assert parse_args("()") == []
    assert [str(t) for t in parse_args("(nat, opt text,)")] == ["nat", "opt text"]
    assert parse_type("X", "type X = nat;") is parse_type("X", "type X = nat;")
    assert str(parse_type("record { a : opt vec nat; nat8 }")) == "record { a : opt vec nat; 98 : nat8 }"
    assert str(parse_type("record { nat; text }")) == "record { nat; text }"
    assert idl_hash("foo") == 5097222 and idl_hash("bar") == 4895187
    positional = parse_type("record { 0 : nat; nat }")  # an unnamed field takes the previous id + 1
    assert isinstance(positional, RecordType) and positional.is_tuple
    assert "A" in parse_did("type A = nat").types  # the last `;` is optional


@pytest.mark.parametrize(
    "text",
    [
        "",
        "nat nat",
        "record { a : nat; a : text }",
        "variant { a; a }",
        "record { 4294967296 : nat }",
        "vec",
        "Undefined",
        "opt",
        "record { a : nat",
        '"text"',
        "func (nat) -> (nat) oneway",
        "func () -> () query query",
        "record { a : nat } }",
        "@",
        '"\\q"',
        "type",
    ],
)
def test_parse_errors(text: str) -> None:
    with pytest.raises(CandidError):
        parse_type(text)


@pytest.mark.parametrize(
    "did",
    [
        "type A = B; type B = A;",
        "type A = A;",
        "type A = nat; type A = text;",
        'import "x.did";',
        "type nat = text;",
        "service : nat",
        "service : { a : () -> () }; service : {}",
        "type A = nat; junk",
        "/* unterminated",
        'type A = record { "\\ff" : nat };',
        "service : { a : () -> (); a : () -> () }",
    ],
)
def test_parse_did_errors(did: str) -> None:
    with pytest.raises(CandidError):
        parse_did(did)


def test_string_escapes() -> None:
    t = parse_type('record { "a\\u{2603}\\n\\t\\"\\\\\\e2\\98\\83" : nat }')
    assert isinstance(t, RecordType)
    assert t.fields[0].key == 'a☃\n\t"\\☃'


def test_types_print_and_reparse() -> None:
    text = (
        'record { a : opt vec nat; b : variant { x; y : record { nat; text } }; "q q" : func (nat) -> () query;'
        " s : service { m : () -> () } }"
    )
    t = parse_type(text)
    again = parse_type(str(t))
    data = encode(
        [t], [{"a": [1], "b": {"y": (1, "z")}, "q q": FuncRef(Principal.anonymous(), "m"), "s": Principal.anonymous()}]
    )
    assert decode(data, [again]) == decode(data, [t])


def test_packed_struct_formats_match_spec() -> None:
    # nat64 and float64 are little-endian.
    assert encode("(nat64)", [1]) == b"DIDL\x00\x01\x78" + struct.pack("<Q", 1)
    assert encode("(float64)", [1.5]) == b"DIDL\x00\x01\x72" + struct.pack("<d", 1.5)


def test_wide_wire_types_fail_fast() -> None:
    # Five levels of 1000-field records: printing or walking this type naively is exponential.
    levels, width = 5, 1000
    table = b""
    for level in range(levels):
        table += b"\x6c" + leb128(width) + b"".join(leb128(i) + sleb128(level + 1) for i in range(width))
    table += b"\x6c\x00"
    data = b"DIDL" + leb128(levels + 1) + table + b"\x01\x00"
    for t in ("(nat)", "(opt nat)", "()", "(reserved)"):
        with pytest.raises(CandidError) as info:
            decode(data, t)
        assert len(str(info.value)) < 2000


def test_number_literals() -> None:
    t = parse_type("record { 007 : nat; 0x1_0 : nat; 1_000 : nat }")
    assert isinstance(t, RecordType) and [f.id for f in t.fields] == [7, 16, 1000]
    with pytest.raises(CandidError):
        parse_type("record { " + "9" * 5000 + " : nat }")


def test_service_methods_must_be_functions() -> None:
    with pytest.raises(CandidError):
        parse_did("type F = nat; service : { m : F }")
    ok = parse_did("type F = func (nat) -> (); service : { m : F }")
    assert ok.service is not None
    svc = ok.service
    assert decode(encode([svc], [Principal.anonymous()]), [svc]) == [Principal.anonymous()]
    with pytest.raises(CandidError):
        encode([parse_type("service { m : F }", "type F = nat;")], [Principal.anonymous()])


def test_vec_of_zero_sized_elements_with_2_pow_60_elements() -> None:
    count = leb128(1 << 60)
    for elem in ("7f", "70"):  # null, reserved
        data = b"DIDL\x01\x6d" + bytes.fromhex(elem) + b"\x01\x00" + count
        for t in ("(vec null)", "(vec reserved)", "(vec opt nat)", "()", "(reserved)", "(opt nat)"):
            with pytest.raises(CandidError):
                decode(data, t)
    # Within the budget the same shapes decode.
    small = b"DIDL\x01\x6d\x7f\x01\x00" + leb128(1000)
    assert decode(small, "(vec null)") == [[None] * 1000]


def test_depth_limit_boundary() -> None:
    def nested(levels: int) -> bytes:
        # `type Opt = opt Opt`, value opt opt ... null with `levels` present layers.
        return b"DIDL\x01\x6e\x00\x01\x00" + b"\x01" * levels + b"\x00"

    opt_t = parse_args("(Opt)", OFFICIAL_DEFS)
    (value,) = decode(nested(candid.MAX_DEPTH - 1), opt_t)
    layers = 0
    while value is not None:
        value = value.value
        layers += 1
    assert layers == candid.MAX_DEPTH - 1
    with pytest.raises(CandidError):
        decode(nested(candid.MAX_DEPTH + 1), opt_t)
    with pytest.raises(CandidError):
        decode(nested(candid.MAX_DEPTH + 1), "()")


def test_encode_func_method_must_be_utf8() -> None:
    with pytest.raises(CandidError):
        encode("(func () -> ())", [FuncRef(Principal.anonymous(), "\ud800")])


# A number of 21 000 bits: longer than Python will turn into text (4300 digits), so an error message
# that printed it raised ValueError instead of CandidError.
HUGE = b"\xff" * 3000 + b"\x01"


@pytest.mark.parametrize(
    ("where", "data"),
    [
        ("type table size", b"DIDL" + HUGE),
        ("entry opcode", b"DIDL\x01" + HUGE),
        ("field count", b"DIDL\x01\x6c" + HUGE),
        ("field id", b"DIDL\x01\x6c\x01" + HUGE + b"\x7f\x01\x00"),
        ("type reference", b"DIDL\x00\x01" + HUGE),
        ("variant index", b"DIDL\x01\x6b\x01\x00\x7f\x01\x00" + HUGE),
        ("text length", b"DIDL\x00\x01\x71" + HUGE),
        ("vector length", b"DIDL\x01\x6d\x7d\x01\x00" + HUGE),
    ],
)
def test_huge_wire_numbers_raise_candid_error(where: str, data: bytes) -> None:
    with pytest.raises(CandidError, match="bit number"):
        decode(data, "(reserved)")


@pytest.mark.parametrize(
    ("types", "value"),
    [
        ("(nat8)", 10**5000),
        ("(vec nat8)", [10**5000]),
        ("(variant { a })", {10**5000: None}),
        ("(record { a : nat })", {"a": 1, 10**5000: 2}),
    ],
    ids=["nat8", "blob", "variant tag", "record field"],  # pytest cannot print these ints either
)
def test_encode_error_for_a_huge_int_is_candid_error(types: str, value: object) -> None:
    with pytest.raises(CandidError, match="cannot encode"):
        encode(types, [value])


@pytest.mark.parametrize(
    "text",
    [
        "record { type : nat }",
        "record { principal : nat }",
        "variant { opt }",
        "variant { null : nat }",
        "func (query : nat) -> ()",
        "service { oneway : () -> () }",
    ],
)
def test_keyword_as_unquoted_name_is_rejected(text: str) -> None:
    """The spec: identifiers cannot be keywords; a name that is one must be quoted."""
    with pytest.raises(CandidError, match="quote it"):
        parse_type(text)


def test_quoted_keyword_names_print_quoted() -> None:
    t = parse_type('record { "type" : nat; nat : text; "opt" : variant { "null" } }')
    assert str(parse_type(str(t))) == str(t)
    assert '"type"' in str(t) and '"opt"' in str(t) and '"null"' in str(t) and "nat : text" in str(t)
