"""Byte-level helpers of the fan-out hot path (pure twin of ``icws_fast._ext._fanout``).

A poll returns one certificate and one witness tree for a whole batch, and every
CanisterToClientMessage of the batch carries both. Encoding the message map
``{"key", "content", "cert", "tree"}`` (serde_cbor field order, no self-describe tag,
exactly what the Rust gateway writes) with a generic CBOR encoder would copy the
cert and tree into a fresh structure per message; instead the ``cert``/``tree`` map
entries are encoded once per batch (:func:`batch_suffix`) and each message is one
``bytes.join`` of a constant prefix, the key, the content and that suffix.
:func:`encode_frames` goes one step further and returns the WebSocket frames of all
the messages a batch holds for one client as one buffer, so the gateway writes a
client's share of a batch with one call (one ``send`` syscall) instead of one per message;
:func:`deliver_shares` does that for every recipient of a batch in one call.
The same compiled module also holds the twin of
:func:`icws_fast.protocol.session.envelope_span`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from icws_fast import _ext
from icws_fast.ic.cbor import write_head

# CBOR map(4) + text "key": the constant start of every CanisterToClientMessage.
_MESSAGE_PREFIX = b"\xa4\x63key"
_CONTENT_LABEL = b"\x67content"
_CERT_LABEL = b"\x64cert"
_TREE_LABEL = b"\x64tree"
# FIN + opcode 2: a complete binary message in one frame.
_WS_FIN_BINARY = 0x82


def batch_suffix_pure(cert: bytes, tree: bytes) -> bytes:
    """The encoded ``cert`` and ``tree`` map entries shared by every message of one batch."""
    return b"".join((_CERT_LABEL, write_head(2, len(cert)), cert, _TREE_LABEL, write_head(2, len(tree)), tree))


def encode_message_pure(key: bytes, content: bytes, suffix: bytes) -> bytes:
    """One CanisterToClientMessage from its UTF-8 ``key``, its ``content`` and the batch ``suffix``."""
    return b"".join(
        (_MESSAGE_PREFIX, write_head(3, len(key)), key, _CONTENT_LABEL, write_head(2, len(content)), content, suffix)
    )


def _ws_header(length: int) -> bytes:
    """The header of an unmasked, final, binary WebSocket frame (RFC 6455 section 5.2): what a server sends."""
    if length < 126:
        return bytes((_WS_FIN_BINARY, length))
    if length < 0x10000:
        return bytes((_WS_FIN_BINARY, 126)) + length.to_bytes(2, "big")
    return bytes((_WS_FIN_BINARY, 127)) + length.to_bytes(8, "big")


def encode_frames_pure(keys: Sequence[bytes], contents: Sequence[bytes], suffix: bytes) -> bytes:
    """The WebSocket frames of the CanisterToClientMessages ``(keys[i], contents[i])`` of one batch, back to back.

    ``suffix`` is the batch's :func:`batch_suffix`. Each message is one binary frame, as the clients expect;
    the buffer goes to the client's transport in one write.
    """
    if len(keys) != len(contents):
        raise ValueError("keys and contents differ in length")
    parts: list[bytes] = []
    for key, content in zip(keys, contents, strict=True):
        message = encode_message_pure(key, content, suffix)
        parts += (_ws_header(len(message)), message)
    return b"".join(parts)


class Recipient(Protocol):
    """A client connection the poller delivers to."""

    def deliver(self, frames: bytes, count: int) -> None:
        """Send ``count`` CanisterToClientMessages, its share of one batch, as WebSocket frames (never blocks).

        ``frames`` are complete binary frames (:func:`encode_frames`), written to the socket as they are. A
        recipient gets one call per batch, and judges there whether its client keeps up (the backlog left from the
        earlier batches), since one batch may legitimately be larger than any per-client limit.
        """


def deliver_shares_pure(
    shares: Mapping[Recipient, tuple[Sequence[bytes], Sequence[bytes]]], suffix: bytes
) -> tuple[int, int]:
    """Hand each recipient its share ``(keys, contents)`` of one batch as frames (:func:`encode_frames`, ``suffix``
    the batch's :func:`batch_suffix`), with one :meth:`Recipient.deliver` call each, in the order of ``shares``.

    Returns the messages and the frame bytes handed out.
    """
    sent = 0
    sent_bytes = 0
    for recipient, (keys, contents) in shares.items():
        frames = encode_frames_pure(keys, contents, suffix)
        recipient.deliver(frames, len(keys))
        sent += len(keys)
        sent_bytes += len(frames)
    return sent, sent_bytes


# The compiled twins (icws_fast/_ext/_fanout.pyx) take over unless ICWS_FAST_PURE=1.
batch_suffix = _ext.twin("_fanout", batch_suffix_pure)
encode_message = _ext.twin("_fanout", encode_message_pure)
encode_frames = _ext.twin("_fanout", encode_frames_pure)
deliver_shares = _ext.twin("_fanout", deliver_shares_pure)
