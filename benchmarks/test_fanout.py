"""Fan-out encoding: one batch of 50 messages (1 KiB content, a realistic cert and tree) as WebSocket frames.

Compares the spliced encoding (pure and compiled) with encoding each message map generically,
which is what a gateway does that copies cert and tree into every message; and hands the batch out
(``deliver_shares``, pure and compiled) to 50 recipients, one message each (K=100, round robin) and to 5.
"""

from __future__ import annotations

from typing import Any

import pytest

from icws_fast.gateway import fanout
from icws_fast.ic import cbor
from tests import twins

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


def _frames(impl: Any) -> bytes:
    return impl.encode_frames(KEYS, CONTENTS, impl.batch_suffix(CERT, TREE))


def _payloads(frames: bytes) -> list[bytes]:
    """The payloads of back-to-back unmasked frames whose lengths take the 16-bit form, as here."""
    out, pos = [], 0
    while pos < len(frames):
        length = int.from_bytes(frames[pos + 2 : pos + 4], "big")
        out.append(frames[pos + 4 : pos + 4 + length])
        pos += 4 + length
    return out


@pytest.mark.parametrize("impl", twins.implementations(fanout, "batch_suffix", "encode_frames"))
def test_splice(benchmark, impl):
    frames = benchmark(_frames, impl)
    assert _payloads(frames) == _generic()


class _Sink:
    """A recipient that drops its frames: the socket write is not the fan-out's."""

    __slots__ = ()

    def deliver(self, frames: bytes, count: int) -> None:
        pass


def _shares(recipients: int) -> dict[_Sink, tuple[list[bytes], list[bytes]]]:
    shares: dict[_Sink, tuple[list[bytes], list[bytes]]] = {}
    sinks = [_Sink() for _ in range(recipients)]
    for i, (key, content) in enumerate(zip(KEYS, CONTENTS, strict=True)):
        keys, contents = shares.setdefault(sinks[i % recipients], ([], []))
        keys.append(key)
        contents.append(content)
    return shares


@pytest.mark.parametrize("recipients", [5, 50])
@pytest.mark.parametrize("impl", twins.implementations(fanout, "batch_suffix", "deliver_shares"))
def test_deliver_shares(benchmark, impl, recipients):
    sent, _ = benchmark(impl.deliver_shares, _shares(recipients), impl.batch_suffix(CERT, TREE))
    assert sent == len(KEYS)
