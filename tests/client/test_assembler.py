"""MessageAssembler: how both client flavours join a gateway message's frames within MAX_MESSAGE_SIZE."""

from __future__ import annotations

import pytest

from icws_fast.client._common import MAX_MESSAGE_SIZE, MessageAssembler
from icws_fast.errors import ProtocolError


def test_a_single_frame_is_the_message_itself() -> None:
    assembler = MessageAssembler()
    frame = b"one frame"
    assert assembler.feed(frame, True) is frame


def test_fragments_are_joined_and_the_next_message_starts_afresh() -> None:
    assembler = MessageAssembler()
    assert assembler.feed(b"ab", False) is None
    assert assembler.feed(b"", False) is None
    assert assembler.feed(b"cd", True) == b"abcd"
    assert assembler.feed(b"ef", True) == b"ef"


def test_a_message_may_be_exactly_the_limit() -> None:
    assembler = MessageAssembler()
    assert assembler.feed(bytes(MAX_MESSAGE_SIZE - 1), False) is None
    assert len(assembler.feed(b"x", True) or b"") == MAX_MESSAGE_SIZE


@pytest.mark.parametrize("split", [0, 1, MAX_MESSAGE_SIZE])
def test_one_byte_over_the_limit_is_refused(split: int) -> None:
    assembler = MessageAssembler()
    data = bytes(MAX_MESSAGE_SIZE + 1)
    with pytest.raises(ProtocolError, match=f"exceeds {MAX_MESSAGE_SIZE} bytes"):
        if split:
            assembler.feed(data[:split], False)
        assembler.feed(data[split:], True)
