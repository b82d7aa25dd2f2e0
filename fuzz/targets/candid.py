"""Candid decode of arbitrary bytes against fixed types, the IC WebSocket types and the vectors' types.

Input: one byte choosing the expected argument types, then the message. A Candid message
carries its own type table, so byte mutations of the table give wrong wire types for every
field of the expected type. Every input is also decoded with no expected types (type table
and skipping of every value).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from fuzz import fixtures
from icws_fast.errors import CandidError
from icws_fast.ic import candid
from icws_fast.protocol.types import WS_CANDID_TYPES

PREFIX = 1

_FIXED = (
    "(nat)",
    "(int)",
    "(nat8, nat16, nat32, nat64)",
    "(int8, int16, int32, int64)",
    "(float32, float64)",
    "(text)",
    "(blob)",
    "(principal)",
    "(reserved)",
    "(empty)",
    "(opt opt nat)",
    "(vec record { nat; text })",
    "(record { a : nat; b : opt text; c : vec bool })",
    "(variant { A; B : int; C : record { nat } })",
    "(func (nat) -> (text) query)",
    "(service { m : (nat) -> () })",
    "(List)",
)
_LIST_DEFS = "type List = opt record { head : int; tail : List };"


def _types() -> tuple[list[list[candid.Type]], dict[str, int]]:
    """The expected types a mode byte selects (modulo their number), and the index of each vector's type."""
    types = [candid.parse_args(text, _LIST_DEFS) for text in _FIXED]
    types += [[t] for _, t in sorted(WS_CANDID_TYPES.items())]
    index: dict[str, int] = {}
    for record in fixtures.records("candid"):
        try:
            types.append(candid.parse_args(record["type"], "\n".join(record.get("type_defs") or ())))
        except CandidError:
            continue  # a record that tests the type parser; its message is still decoded at the fixed types
        index[record["id"]] = len(types) - 1
    return types, index


_TYPES, _VECTOR_TYPE = _types()


def one_input(data: bytes) -> None:
    if not data:
        return
    message = data[1:]
    with contextlib.suppress(CandidError):
        candid.decode(message, [])
    candid.decode(message, _TYPES[data[0] % len(_TYPES)])


def seeds() -> Iterator[bytes]:
    for number, record in enumerate(fixtures.records("candid")):
        message = bytes.fromhex(record["hex"])
        if record["id"] in _VECTOR_TYPE and _VECTOR_TYPE[record["id"]] < 256:
            yield bytes([_VECTOR_TYPE[record["id"]]]) + message
        yield bytes([number % len(_FIXED)]) + message
