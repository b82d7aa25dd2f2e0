"""Typed interface of the compiled ``ws_get_messages`` decoders and message checks (``_wsbatch.pyx``): the
signatures of ``icws_fast.protocol.types.decode_get_messages_result_pure`` and ``decode_polled_batch_pure`` and of
``icws_fast.protocol.certified.check_messages_pure`` and ``icws_fast.protocol.poller.route_shares_pure``
(``tests/test_ext_stubs.py`` compares them)."""

from collections.abc import Mapping, Sequence
from typing import Final

from icws_fast.protocol.poller import R
from icws_fast.protocol.types import CanisterOutputCertifiedMessages, PolledBatch

RECENT_HEADERS: Final[int]
CLIENT_KEY_CACHE_SIZE: Final[int]

def decode_get_messages_result(data: bytes | bytearray | memoryview) -> CanisterOutputCertifiedMessages: ...
def decode_polled_batch(data: bytes | bytearray | memoryview) -> PolledBatch: ...
def check_messages(hashes: Mapping[bytes, bytes], keys: Sequence[bytes], contents: Sequence[bytes]) -> None: ...
def route_shares(
    routes: Mapping[bytes, R],
    route_keys: Sequence[bytes],
    keys: Sequence[bytes],
    contents: Sequence[bytes],
    hashes: Mapping[bytes, bytes] | None,
) -> tuple[dict[R, tuple[list[bytes], list[bytes]]], list[bytes]]: ...
