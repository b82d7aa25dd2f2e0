"""Candid values written as text (``parse_value_args``; the devnet's ``--init-arg``), read at expected types."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icws_fast.errors import CandidError
from icws_fast.ic import candid
from icws_fast.ic.principal import Principal

#: Definitions the argument types below may name: a recursive type lets value text nest without bound.
DEFS = "type Nest = opt Nest; type Tree = record { label : text; children : vec Tree };"


def values(text: str, types: str) -> list[object]:
    return candid.parse_value_args(text, candid.parse_args(types, DEFS))


def test_numbers_with_annotations_and_separators() -> None:
    assert values("(50 : nat64, 300_000 : nat64)", "(nat64, nat64)") == [50, 300_000]
    assert values("(-5, 0x1F, +7 : int8, 08)", "(int, nat, int8, nat)") == [-5, 31, 7, 8]
    assert values("(1.5, 2)", "(float64, float32)") == [1.5, 2.0]


def test_text_blob_principal_bool_null() -> None:
    parsed = values(
        '("a\\"b\\n\\u{1F600}\\41", blob "\\00\\ffz", principal "aaaaa-aa", true, null)',
        "(text, blob, principal, bool, null)",
    )
    assert parsed == ['a"b\n\U0001f600A', b"\x00\xffz", Principal.from_text("aaaaa-aa"), True, None]


def test_opt_vec_record_variant() -> None:
    types = "(opt record { name : text; 1 : vec nat8; tags : vec text }, variant { A; B : int }, opt opt nat)"
    parsed = values(
        '(opt record { name = "x"; 1 = vec { 1; 2 }; tags = vec { "t" } }, variant { B = -3 }, opt null)', types
    )
    assert parsed == [{"name": "x", 1: b"\x01\x02", "tags": ["t"]}, {"B": -3}, candid.Some(None)]
    assert values("(null, variant { A })", "(opt nat, variant { A; B : int })") == [None, {"A": None}]
    # Tuples are records with positional fields.
    assert values('(record { 1; "two" })', "(record { nat; text })") == [{0: 1, 1: "two"}]


def test_trailing_optional_arguments_may_be_omitted() -> None:
    assert values("(1)", "(nat, opt text)") == [1, None]


def test_the_encoding_is_the_candid_encoding_of_the_values() -> None:
    types = candid.parse_args("(nat64, nat64)")
    parsed = candid.parse_value_args("(3 : nat64, 61_000 : nat64)", types)
    assert candid.encode(types, parsed) == candid.encode(types, [3, 61_000])


@pytest.mark.parametrize(
    ("text", "types", "message"),
    [
        ("(256)", "(nat8)", "out of range for nat8"),
        ("(-1)", "(nat)", "out of range for nat"),
        ("(1.5)", "(nat)", "not an integer"),
        ('("x")', "(nat)", "expected a nat value"),
        ("(1, 2)", "(nat)", "more values"),
        ("()", "(nat)", r"argument\(s\) expected"),
        ("(1", "(nat)", "found end of input"),
        ("(1) x", "(nat)", "unexpected text"),
        ("(record { a = 1 })", "(record { a : nat; b : nat })", "misses fields"),
        ("(variant { C })", "(variant { A; B })", "has no field"),
        ('(principal "not a principal")', "(principal)", "bad principal"),
        ("(@)", "(nat)", "unexpected character .@. at offset 1"),
        ('("\\zz")', "(text)", "bad escape"),
        ('("\\u{12")', "(text)", "bad unicode escape"),
        ('("\\e4")', "(text)", "not UTF-8"),
        ("(" * 500 + "1" + ")" * 500, "(nat)", "too deeply"),
        ("(0x_)", "(nat)", "not an integer"),
        ("(0x1F)", "(float64)", "not a float64"),
        ('("\\u{FFFFFFFFFF}")', "(text)", "bad unicode escape"),
        # An unclosed ``\u{`` once sent the escape reader round forever.
        ('("\\u{")', "(text)", "bad unicode escape"),
        ('("\\u{1F600")', "(text)", "bad unicode escape"),
        ('(blob "\\u{")', "(blob)", "bad unicode escape"),
        ("(principal 5)", "(principal)", "expected a quoted principal"),
        ("(blob vec)", "(blob)", "expected a quoted blob"),
        ("(5)", "(opt nat)", "expected opt or null"),
        ("(1 /* open", "(nat)", "unterminated comment"),
        ("(" + "opt " * 200 + "null)", "(Nest)", "too deeply"),
    ],
)
def test_bad_text_is_a_candid_error(text: str, types: str, message: str) -> None:
    with pytest.raises(CandidError, match=message):
        values(text, types)


def test_recursive_types_and_comments() -> None:
    assert values("(" + "opt " * 3 + "null)", "(Nest)") == [candid.Some(candid.Some(candid.Some(None)))]
    tree = values('(record { label = "a"; children = vec { record { label = "b"; children = vec {} } } })', "(Tree)")
    assert tree == [{"label": "a", "children": [{"label": "b", "children": []}]}]
    assert values("( /* count */ 7 // seven\n)", "(nat)") == [7]


ROUND_TRIPS = [
    ("(50 : nat64, 300_000 : nat64)", "(nat64, nat64)"),
    ("(-5, 0x1F, +7 : int8, 08)", "(int, nat, int8, nat)"),
    ("(-128, 127, 18_446_744_073_709_551_615, -9_223_372_036_854_775_808)", "(int8, int8, nat64, int64)"),
    ("(1.5, -2.5e-1, 1_000.25)", "(float64, float32, float64)"),  # float32 exact: -0.25
    (
        '("a\\"b\\n\\u{1F600}\\41", blob "\\00\\ffz", principal "aaaaa-aa", true, null)',
        "(text, blob, principal, bool, null)",
    ),
    (
        '(opt record { name = "x"; 1 = vec { 1; 2 }; tags = vec { "t" } }, variant { B = -3 }, opt null)',
        "(opt record { name : text; 1 : vec nat8; tags : vec text }, variant { A; B : int }, opt opt nat)",
    ),
    ('(vec { record { 0 = 1; 1 = "a" }; record { 2; "b" } })', "(vec record { nat; text })"),
    ('(variant { "quoted name" = 7 }, variant { A })', '(variant { "quoted name" : nat8 }, variant { A; B })'),
    ('(opt record { owner = principal "aaaaa-aa"; name = "x" })', "(opt record { owner : principal; name : text })"),
    ("(1)", "(nat, opt text, null)"),
    ("(" + "opt " * 40 + "null)", "(Nest)"),
    ('(record { label = "r"; children = vec { record { label = "c"; children = vec {} } } })', "(Tree)"),
]


@pytest.mark.parametrize(("text", "types"), ROUND_TRIPS)
def test_parsed_values_round_trip_through_the_binary_encoding(text: str, types: str) -> None:
    arg_types = candid.parse_args(types, DEFS)
    parsed = candid.parse_value_args(text, arg_types)
    assert candid.decode(candid.encode(arg_types, parsed), arg_types) == [_decoded(v) for v in parsed]


def _decoded(value: object) -> object:
    """``value`` as decode returns it: a tuple record (keys exactly 0..n-1) comes back as a tuple."""
    if isinstance(value, dict):
        if value and list(value) == list(range(len(value))):
            return tuple(_decoded(v) for v in value.values())
        return {k: _decoded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decoded(v) for v in value]
    if isinstance(value, candid.Some):
        return candid.Some(_decoded(value.value))
    return value


_PIECES = [*'(){};:=,"\\ -+.0123456789abefx_u', "opt ", "vec ", "record ", "variant ", "null", "blob ", "true"]
_PIECES += ["principal ", '"aaaaa-aa"', "\\u{", "}", "/*", "*/", "//", "\n", "A", "label", "children"]
_FUZZ_TYPES = ["(nat)", "(opt vec nat8)", "(record { a : nat; b : opt text })", "(variant { A; B : int8 })"]
_FUZZ_TYPES += ["(text, blob)", "(float64, int)", "(Nest)", "(Tree)", "(principal, bool)"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=30), st.sampled_from(_FUZZ_TYPES), st.booleans())
def test_any_text_parses_or_raises_candid_error(pieces: list[str], types: str, opened: bool) -> None:
    text = ("(" if opened else "") + "".join(pieces)
    arg_types = candid.parse_args(types, DEFS)
    try:
        parsed = candid.parse_value_args(text, arg_types)
    except CandidError:
        return
    # Whatever parses is a value of the types: it encodes.
    candid.encode(arg_types, parsed)
