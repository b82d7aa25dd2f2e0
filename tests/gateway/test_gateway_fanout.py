"""The fan-out splice (the module's binding and the compiled twin) against the generic CBOR encoder."""

from __future__ import annotations

import importlib
import os

import pytest

from icws_fast.gateway import fanout
from icws_fast.ic import cbor

SIZES = [0, 1, 23, 24, 255, 256, 65535, 65536, 70000]


def _implementations() -> list[object]:
    impls: list[object] = [fanout]
    try:
        impls.append(importlib.import_module("icws_fast._ext._fanout"))
    except ImportError:
        if os.environ.get("ICWS_FAST_REQUIRE_EXT"):
            raise
    return impls


IMPLS = _implementations()


@pytest.mark.parametrize("impl", IMPLS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("size", SIZES)
def test_message_matches_generic_encoding(impl, size):
    key = ("k" * (size % 300)).encode()
    content = bytes(range(256)) * (size // 256) + bytes(size % 256)
    cert, tree = b"\xd9\xd9\xf7" + b"c" * size, b"t" * (size // 2)
    suffix = impl.batch_suffix(cert, tree)
    frame = impl.encode_message(key, content, suffix)
    expected = cbor.encode({"key": key.decode(), "content": content, "cert": cert, "tree": tree}, self_describe=False)
    assert frame == expected
    assert cbor.decode(frame) == {"key": key.decode(), "content": content, "cert": cert, "tree": tree}


@pytest.mark.parametrize("impl", IMPLS, ids=lambda m: m.__name__)
def test_batch_shares_suffix_and_keeps_order(impl):
    keys = [f"gw_{i:020d}".encode() for i in range(50)]
    contents = [bytes([i]) * i for i in range(50)]
    frames = impl.encode_batch(keys, contents, b"CERT", b"TREE")
    assert [cbor.decode(f)["key"] for f in frames] == [k.decode() for k in keys]
    assert all(f.endswith(impl.batch_suffix(b"CERT", b"TREE")) for f in frames)
    with pytest.raises(ValueError):
        impl.encode_batch(keys, contents[:-1], b"", b"")


def test_pure_and_compiled_agree():
    if len(IMPLS) < 2:
        pytest.skip("compiled extension not built")
    pure, compiled = IMPLS
    for size in SIZES:
        args = (b"key" * (size % 50), b"x" * size, b"c" * size, b"t")
        assert pure.encode_batch([args[0]], [args[1]], args[2], args[3]) == compiled.encode_batch(
            [args[0]], [args[1]], args[2], args[3]
        )


@pytest.mark.parametrize("impl", IMPLS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("bad", [None, "text", 5])
def test_non_bytes_are_a_type_error(impl, bad):
    with pytest.raises(TypeError):
        impl.encode_batch([bad], [b"x"], b"", b"")
    with pytest.raises(TypeError):
        impl.encode_batch([b"k"], [bad], b"", b"")
    with pytest.raises(TypeError):
        impl.batch_suffix(bad, b"")
