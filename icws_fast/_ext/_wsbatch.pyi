"""Typed interface of the compiled ``ws_get_messages`` decoder (``_wsbatch.pyx``): the signature of
``icws_fast.protocol.types.decode_get_messages_result_pure`` (``tests/test_ext_stubs.py`` compares them)."""

from typing import Final

from icws_fast.protocol.types import CanisterOutputCertifiedMessages

RECENT_HEADERS: Final[int]
CLIENT_KEY_CACHE_SIZE: Final[int]

def decode_get_messages_result(data: bytes | bytearray | memoryview) -> CanisterOutputCertifiedMessages: ...
