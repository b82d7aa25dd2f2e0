"""CBOR decode, both twins (``icws_fast.ic.cbor.decode_pure`` and ``icws_fast._ext._cbor.decode``).

Beyond agreement, a decoded value must survive encode -> decode unchanged, and both
encoders must write the same bytes for it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

from fuzz import fixtures
from fuzz.harness import Violation, same, twins
from icws_fast import _ext
from icws_fast.ic import cbor

PREFIX = 0
_COMPILED = _ext.compiled("_cbor")
_DECODE = _COMPILED.decode if _COMPILED else None
_ENCODE = _COMPILED.encode if _COMPILED else None
_SHALLOW_PURE = functools.partial(cbor.decode_pure, max_depth=4)
_SHALLOW_COMPILED = functools.partial(_DECODE, max_depth=4) if _DECODE else None


def one_input(data: bytes) -> None:
    # A shallow limit makes every depth check fire on ordinary inputs.
    twins("decode(max_depth=4)", _SHALLOW_PURE, _SHALLOW_COMPILED, data)
    value = twins("decode", cbor.decode_pure, _DECODE, data)
    encoded = twins("encode", cbor.encode_pure, _ENCODE, value)
    if not same(cbor.decode_pure(encoded), value):
        raise Violation(f"decode(encode(v)) != v for v = {value!r:.200}")


def seeds() -> Iterator[bytes]:
    for name, field in (("certificates", "cbor_hex"), ("hash_trees", "cbor_hex"), ("envelopes", "envelope_cbor_hex")):
        for record in fixtures.records(name):
            if record.get(field):
                yield bytes.fromhex(record[field])
    yield cbor.encode([1, -1, 1 << 64, -(1 << 64) - 1, 1.5, None, True, "é", b"\x00", {"a": [{}]}, cbor.Tag(42, [])])
