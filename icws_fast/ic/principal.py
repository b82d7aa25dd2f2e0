"""IC principals: bytes, the checksummed textual form, and the well-known kinds."""

from __future__ import annotations

import base64
import functools
import hashlib
import zlib
from typing import Final

from icws_fast.errors import InvalidPrincipal

MAX_LENGTH: Final = 29
#: Longest textual form: 4 checksum bytes + 29 bytes in base32 (53 characters) and 10 dashes.
MAX_TEXT_LENGTH: Final = 63
_ANONYMOUS_TAG: Final = 0x04
_SELF_AUTHENTICATING_TAG: Final = 0x02
_ALPHABET: Final = frozenset("abcdefghijklmnopqrstuvwxyz234567")


@functools.total_ordering
class Principal:
    """An IC principal (at most 29 bytes). Immutable and hashable."""

    __slots__ = ("_bytes", "_text")

    def __init__(self, data: bytes) -> None:
        if len(data) > MAX_LENGTH:
            raise InvalidPrincipal(f"principal too long: {len(data)} bytes (max {MAX_LENGTH})")
        self._bytes = bytes(data)
        self._text: str | None = None

    @classmethod
    def from_bytes(cls, data: bytes) -> Principal:
        return cls(data)

    @classmethod
    def from_text(cls, text: str) -> Principal:
        """Parse the textual form; reject bad alphabet, grouping, checksum or length."""
        if not isinstance(text, str):
            raise InvalidPrincipal("principal text must be a str")
        if len(text) > MAX_TEXT_LENGTH:
            # Checked first so that hostile megabytes are neither decoded nor copied into the error message.
            raise InvalidPrincipal(f"principal text too long: {len(text)} characters (max {MAX_TEXT_LENGTH})")
        lowered = text.lower()
        groups = lowered.split("-")
        if any(len(g) != 5 for g in groups[:-1]) or not 1 <= len(groups[-1]) <= 5:
            raise InvalidPrincipal(f"bad grouping in principal text {text!r}")
        raw = "".join(groups)
        if not set(raw) <= _ALPHABET:
            raise InvalidPrincipal(f"bad characters in principal text {text!r}")
        if len(raw) % 8 in (1, 3, 6):
            raise InvalidPrincipal(f"bad base32 length in principal text {text!r}")
        try:
            decoded = base64.b32decode(raw.upper() + "=" * (-len(raw) % 8))
        except ValueError as exc:
            raise InvalidPrincipal(f"bad base32 in principal text {text!r}") from exc
        if len(decoded) < 4:
            raise InvalidPrincipal(f"principal text too short: {text!r}")
        checksum, data = decoded[:4], decoded[4:]
        if zlib.crc32(data).to_bytes(4, "big") != checksum:
            raise InvalidPrincipal(f"bad checksum in principal text {text!r}")
        principal = cls(data)
        if principal.to_text() != lowered:
            # Non-canonical encodings (stray bits in the last character) must not alias.
            raise InvalidPrincipal(f"non-canonical principal text {text!r}")
        return principal

    @classmethod
    def anonymous(cls) -> Principal:
        return cls(bytes([_ANONYMOUS_TAG]))

    @classmethod
    def management(cls) -> Principal:
        return cls(b"")

    @classmethod
    def self_authenticating(cls, der_public_key: bytes) -> Principal:
        """The principal of a sender key: SHA-224 of its DER encoding, then the tag 0x02."""
        return cls(hashlib.sha224(der_public_key).digest() + bytes([_SELF_AUTHENTICATING_TAG]))

    @property
    def bytes(self) -> bytes:
        return self._bytes

    @property
    def is_anonymous(self) -> bool:
        return self._bytes == bytes([_ANONYMOUS_TAG])

    def to_text(self) -> str:
        if self._text is None:
            checksum = zlib.crc32(self._bytes).to_bytes(4, "big")
            encoded = base64.b32encode(checksum + self._bytes).decode("ascii").lower().rstrip("=")
            self._text = "-".join(encoded[i : i + 5] for i in range(0, len(encoded), 5))
        return self._text

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return f"Principal({self.to_text()!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Principal) and other._bytes == self._bytes

    def __hash__(self) -> int:
        return hash(self._bytes)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Principal):
            return NotImplemented
        return self._bytes < other._bytes
