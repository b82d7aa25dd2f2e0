"""Byte-level helpers of the fan-out hot path (pure twin of ``icws_fast._ext._fanout``).

A poll returns one certificate and one witness tree for a whole batch, and every
CanisterToClientMessage of the batch carries both. Encoding the message map
``{"key", "content", "cert", "tree"}`` (serde_cbor field order, no self-describe tag,
exactly what the Rust gateway writes) with a generic CBOR encoder would copy the
cert and tree into a fresh structure per message; instead the ``cert``/``tree`` map
entries are encoded once per batch (:func:`batch_suffix`) and each message is one
``bytes.join`` of a constant prefix, the key, the content and that suffix.
The same compiled module also holds the twin of
:func:`icws_fast.protocol.session.envelope_span`.
"""

from __future__ import annotations

from collections.abc import Sequence

from icws_fast import _ext
from icws_fast.ic.cbor import _head

# CBOR map(4) + text "key": the constant start of every CanisterToClientMessage.
_MESSAGE_PREFIX = b"\xa4\x63key"
_CONTENT_LABEL = b"\x67content"
_CERT_LABEL = b"\x64cert"
_TREE_LABEL = b"\x64tree"


def batch_suffix(cert: bytes, tree: bytes) -> bytes:
    """The encoded ``cert`` and ``tree`` map entries shared by every message of one batch."""
    return b"".join((_CERT_LABEL, _head(2, len(cert)), cert, _TREE_LABEL, _head(2, len(tree)), tree))


def encode_message(key: bytes, content: bytes, suffix: bytes) -> bytes:
    """One CanisterToClientMessage from its UTF-8 ``key``, its ``content`` and the batch ``suffix``."""
    return b"".join((_MESSAGE_PREFIX, _head(3, len(key)), key, _CONTENT_LABEL, _head(2, len(content)), content, suffix))


def encode_batch(keys: Sequence[bytes], contents: Sequence[bytes], cert: bytes, tree: bytes) -> list[bytes]:
    """The CanisterToClientMessage frames of one batch, in order (``keys[i]`` goes with ``contents[i]``)."""
    if len(keys) != len(contents):
        raise ValueError("keys and contents differ in length")
    suffix = batch_suffix(cert, tree)
    return [encode_message(key, content, suffix) for key, content in zip(keys, contents, strict=True)]


_compiled = _ext.compiled("_fanout")
if _compiled is not None:
    batch_suffix = _compiled.batch_suffix
    encode_message = _compiled.encode_message
    encode_batch = _compiled.encode_batch
