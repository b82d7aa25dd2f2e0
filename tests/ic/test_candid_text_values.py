"""Candid values written as text (``parse_value_args``; the devnet's ``--init-arg``), read at expected types."""

from __future__ import annotations

import pytest

from icws_fast.errors import CandidError
from icws_fast.ic import candid
from icws_fast.ic.principal import Principal


def values(text: str, types: str) -> list[object]:
    return candid.parse_value_args(text, candid.parse_args(types))


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
    ],
)
def test_bad_text_is_a_candid_error(text: str, types: str, message: str) -> None:
    with pytest.raises(CandidError, match=message):
        values(text, types)
