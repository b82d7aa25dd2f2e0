"""The fan-out splice (the pure functions and their compiled twins) against the generic CBOR encoder."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from icws_fast.gateway import fanout
from icws_fast.ic import cbor
from tests import twins

SIZES = [0, 1, 23, 24, 255, 256, 65535, 65536, 70000]


# The pure functions and, in the compiled run, their compiled twins (never the public names, which are one of them).
IMPLS = twins.implementations(fanout, "batch_suffix", "encode_message", "encode_frames")


@pytest.mark.parametrize("impl", IMPLS)
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


def _read_frames(data: bytes) -> list[bytes]:
    """The payloads of back-to-back server frames (RFC 6455 section 5.2), checking each header."""
    payloads = []
    pos = 0
    while pos < len(data):
        assert data[pos] == 0x82, "FIN + binary opcode"
        length = data[pos + 1]
        assert length & 0x80 == 0, "a server never masks"
        pos += 2
        if length == 126:
            length = int.from_bytes(data[pos : pos + 2], "big")
            assert length >= 126, "the shortest length encoding"
            pos += 2
        elif length == 127:
            length = int.from_bytes(data[pos : pos + 8], "big")
            assert length >= 0x10000, "the shortest length encoding"
            pos += 8
        payloads.append(data[pos : pos + length])
        pos += length
    assert pos == len(data)
    return payloads


@pytest.mark.parametrize("impl", IMPLS)
def test_frames_share_suffix_and_keep_order(impl):
    keys = [f"gw_{i:020d}".encode() for i in range(50)]
    contents = [bytes([i]) * i for i in range(50)]
    suffix = impl.batch_suffix(b"CERT", b"TREE")
    payloads = _read_frames(impl.encode_frames(keys, contents, suffix))
    assert payloads == [impl.encode_message(k, c, suffix) for k, c in zip(keys, contents, strict=True)]
    assert [cbor.decode(p)["key"] for p in payloads] == [k.decode() for k in keys]
    assert impl.encode_frames([], [], suffix) == b""
    with pytest.raises(ValueError):
        impl.encode_frames(keys, contents[:-1], suffix)


@pytest.mark.parametrize("impl", IMPLS)
def test_frame_lengths_at_every_header_boundary(impl):
    # A message is 15 bytes plus its content head and content here: sweep the 7-, 16- and 64-bit lengths' edges.
    sizes = [*range(100, 130), *range(65490, 65540)]
    contents = [b"\x00" * size for size in sizes]
    payloads = _read_frames(impl.encode_frames([b"k"] * len(sizes), contents, b""))
    assert payloads == [impl.encode_message(b"k", c, b"") for c in contents]
    assert {len(p) for p in payloads} >= {125, 126, 65535, 65536}


def test_pure_and_compiled_agree():
    for size in SIZES:
        keys, contents = [b"key" * (size % 50), b"k"], [b"x" * size, b""]
        twins.assert_agree(fanout, "batch_suffix", b"c" * size, b"t")
        suffix = fanout.batch_suffix_pure(b"c" * size, b"t")
        twins.assert_agree(fanout, "encode_message", keys[0], contents[0], suffix)
        twins.assert_agree(fanout, "encode_frames", keys, contents, suffix)
    twins.assert_agree(fanout, "encode_frames", [b"k"], [], b"")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("bad", [None, "text", 5])
def test_non_bytes_are_a_type_error(impl, bad):
    with pytest.raises(TypeError):
        impl.encode_frames([bad], [b"x"], b"")
    with pytest.raises(TypeError):
        impl.encode_frames([b"k"], [bad], b"")
    with pytest.raises(TypeError):
        impl.batch_suffix(bad, b"")


class Recorder:
    """A recipient that keeps what it is handed (and, when told, fails or changes the shares while handed)."""

    def __init__(self, log: list[tuple[str, bytes, int]], name: str, action=None) -> None:
        self.log, self.name, self.action = log, name, action

    def deliver(self, frames: bytes, count: int) -> None:
        self.log.append((self.name, frames, count))
        if self.action is not None:
            self.action()


def _delivered(deliver_shares, make_shares, suffix):
    """What ``deliver_shares`` returned or raised, and what each recipient was handed (by name)."""
    log: list[tuple[str, bytes, int]] = []
    result = twins.outcome(deliver_shares, make_shares(log), suffix)
    if result[:2] == ("raised", TypeError):
        result = result[:2]  # the encode_frames twins word a type error each their own way (see above)
    return result, log


def _share_cases():
    keys = [f"gw_{i:020d}".encode() for i in range(6)]
    contents = [bytes([i]) * (i * 50) for i in range(6)]

    def plain(log):
        return {Recorder(log, "a"): (keys[:3], contents[:3]), Recorder(log, "b"): (keys[3:4], contents[3:4])}

    def empty_share(log):
        return {Recorder(log, "a"): ([], []), Recorder(log, "b"): (tuple(keys), tuple(contents))}

    def fails(log):
        def boom():
            raise ConnectionError("gone")

        return {Recorder(log, "a"): (keys[:1], contents[:1]), Recorder(log, "b", boom): (keys[1:2], contents[1:2])}

    def grows(log):
        shares = {}
        shares[Recorder(log, "a", lambda: shares.setdefault(Recorder(log, "c"), ([], [])))] = (keys[:1], contents[:1])
        shares[Recorder(log, "b")] = (keys[1:2], contents[1:2])
        return shares

    def uneven(log):
        return {Recorder(log, "a"): (keys[:1], contents[:1]), Recorder(log, "b"): (keys[:2], contents[:1])}

    def not_bytes(log):
        return {Recorder(log, "a"): (keys[:1], contents[:1]), Recorder(log, "b"): (["text"], [b"x"])}

    def not_a_pair(log):
        return {Recorder(log, "a"): (keys[:1], contents[:1], b"extra")}

    def proxy(log):
        return MappingProxyType(plain(log))

    return [plain, empty_share, fails, grows, uneven, not_bytes, not_a_pair, proxy, lambda log: {}]


@pytest.mark.parametrize("make_shares", _share_cases())
def test_deliver_shares_twins_agree(make_shares):
    suffix = fanout.batch_suffix_pure(b"C" * 300, b"T" * 200)
    compiled = twins.compiled(fanout, "deliver_shares")
    expected, handed = _delivered(fanout.deliver_shares_pure, make_shares, suffix)
    assert _delivered(compiled, make_shares, suffix) == (expected, handed)


@pytest.mark.parametrize("impl", twins.implementations(fanout, "deliver_shares", "encode_frames"))
def test_deliver_shares_hands_each_recipient_its_frames(impl):
    log: list[tuple[str, bytes, int]] = []
    keys = [f"gw_{i:020d}".encode() for i in range(5)]
    contents = [b"x" * i for i in range(5)]
    suffix = fanout.batch_suffix_pure(b"CERT", b"TREE")
    shares = {Recorder(log, "a"): (keys[:2], contents[:2]), Recorder(log, "b"): (keys[2:], contents[2:])}
    sent, sent_bytes = impl.deliver_shares(shares, suffix)
    assert [(name, count) for name, _, count in log] == [("a", 2), ("b", 3)]
    assert log[0][1] == impl.encode_frames(keys[:2], contents[:2], suffix)
    assert log[1][1] == impl.encode_frames(keys[2:], contents[2:], suffix)
    assert (sent, sent_bytes) == (5, len(log[0][1]) + len(log[1][1]))
