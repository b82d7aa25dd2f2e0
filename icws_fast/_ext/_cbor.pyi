"""Typed interface of the compiled CBOR twins (``_cbor.pyx``): the signatures of ``icws_fast.ic.cbor``'s
``encode_pure`` and ``decode_pure`` (``tests/test_ext_stubs.py`` compares them)."""

from typing import Any, Final

DEF_MAX_BIGNUM_BYTES: Final[int]

def encode(obj: Any, *, self_describe: bool = ...) -> bytes: ...
def decode(data: bytes | bytearray | memoryview, *, max_depth: int = ...) -> Any: ...
