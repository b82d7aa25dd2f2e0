"""Fan-out encoding: one batch of 50 messages (1 KiB content, a realistic cert and tree).

Compares the spliced encoding (pure and compiled) with encoding each message map generically,
which is what a gateway does that copies cert and tree into every message.
"""

from __future__ import annotations

import importlib

import pytest

from icws_fast.gateway import fanout
from icws_fast.ic import cbor

KEYS = [f"zqfso-syaaa-aaaaq-aaafq-cai_{i:020d}".encode() for i in range(50)]
CONTENTS = [bytes([i]) * 1024 for i in range(50)]
CERT = b"c" * 1600
TREE = b"t" * 900


def _generic() -> list[bytes]:
    return [
        cbor.encode({"key": k.decode(), "content": c, "cert": CERT, "tree": TREE}, self_describe=False)
        for k, c in zip(KEYS, CONTENTS, strict=True)
    ]


def test_generic_cbor_per_message(benchmark):
    frames = benchmark(_generic)
    assert len(frames) == 50


def test_splice_module(benchmark):
    frames = benchmark(fanout.encode_batch, KEYS, CONTENTS, CERT, TREE)
    assert frames == _generic()


def test_splice_compiled(benchmark):
    try:
        compiled = importlib.import_module("icws_fast._ext._fanout")
    except ImportError:
        pytest.skip("compiled extension not built")
    frames = benchmark(compiled.encode_batch, KEYS, CONTENTS, CERT, TREE)
    assert frames == _generic()
