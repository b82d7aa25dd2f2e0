"""The structure-aware mutator: it must keep inputs within size, mostly well-formed, and never fail."""

from __future__ import annotations

import random

import pytest

from fuzz import harness, mutator
from icws_fast.errors import CborError
from icws_fast.ic import cbor


def _byte_mutate(data: bytes, max_size: int) -> bytes:
    """A stand-in for libFuzzer's byte mutator (only reachable inside a fuzzing run): flip one byte."""
    if not data:
        return b"\x00"
    i = len(data) // 2
    return (data[:i] + bytes([data[i] ^ 0x5A]) + data[i + 1 :])[:max_size]


@pytest.mark.parametrize("name", harness.TARGETS)
def test_mutations_of_every_seed_stay_in_bounds(name: str) -> None:
    target = harness.load(name)
    mutate = mutator.custom_mutator(target.prefix, _byte_mutate)
    seeds = list(target.seeds())
    assert seeds, f"target {name} has no seeds"
    changed = 0
    for i in range(400):
        seed = seeds[i % len(seeds)]
        out = mutate(seed, 4096 + len(seed), i)
        assert len(out) <= 4096 + len(seed)
        changed += out != seed
    assert changed > 300


def test_structural_mutations_keep_most_inputs_decodable() -> None:
    seed = cbor.encode({"content": {"request_type": "call", "arg": b"DIDL\x00\x00", "ingress_expiry": 1 << 60}})
    decodable = 0
    kinds: set[type] = set()
    for i in range(500):
        out = mutator.mutate_cbor(seed, 8192, random.Random(i), _byte_mutate)
        assert out is not None
        try:
            value = cbor.decode_pure(out)
        except CborError:
            continue
        decodable += 1
        content = value.get("content") if isinstance(value, dict) else None
        if isinstance(content, dict):
            kinds.update(type(v) for v in content.values())
    assert decodable > 250
    # Fields get values of other CBOR types, not only other values of their own type.
    assert {int, bytes, str, list, dict, bool, type(None), float, cbor.Tag} <= kinds


def test_encoder_writes_what_strict_decoders_refuse() -> None:
    """Duplicate keys, overlong heads and indefinite lengths are all produced (and rejected by the decoder)."""
    model = mutator.CMap([["a", 1], ["a", 2]])
    assert mutator.encode(model, random.Random(0), 100) == b"\xa2\x61a\x01\x61a\x02"
    with pytest.raises(CborError, match="duplicate"):
        cbor.decode_pure(b"\xa2\x61a\x01\x61a\x02")
    outputs = {mutator.encode([b"xy" * 20], random.Random(seed), 1000) for seed in range(400)}
    assert any(o is not None and o[1] == 0x5F for o in outputs)  # an indefinite-length byte string
    assert any(o is not None and o[:2] == b"\x98\x01" for o in outputs)  # an overlong array head
    assert mutator.encode([b"x" * 100], random.Random(0), 50) is None
