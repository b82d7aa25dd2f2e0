"""The committed image of a canister's Wasm memory, kept in step with the live memory page by page.

A trap must undo what a message wrote to memory, and a query must leave none of its writes. Copying
the whole memory before every message costs a full copy per message (Motoko's heap is tens of MB);
instead the host keeps the *committed* image and, when a message ends, compares the live memory with
it page by page (``memcmp``, no allocation): a committed message copies its dirty pages into the
image, a rolled-back one copies them back into the live memory. A message then costs one read-only
pass over memory plus the pages it changed.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Final

import wasmtime

#: The unit of comparison and copy (the Wasm page size).
PAGE: Final = 65536

_libc = ctypes.CDLL("msvcrt" if sys.platform == "win32" else None)
_memcmp = _libc.memcmp
_memcmp.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
_memcmp.restype = ctypes.c_int


class MemoryImage:
    """The last committed contents of ``memory`` (see the module docstring)."""

    def __init__(self, memory: wasmtime.Memory, store: wasmtime.Store) -> None:
        self._memory = memory
        self._store = store
        self._buffer = ctypes.create_string_buffer(0)
        self._size = 0
        self.commit()

    def _live(self) -> tuple[int, int]:
        size = self._memory.data_len(self._store)
        return ctypes.addressof(self._memory.data_ptr(self._store).contents), size

    def _reserve(self, size: int) -> None:
        if size > len(self._buffer):
            bigger = ctypes.create_string_buffer(max(size, 2 * len(self._buffer)))
            ctypes.memmove(bigger, self._buffer, self._size)
            self._buffer = bigger

    def _sync(self, *, to_image: bool) -> int:
        """Copy the pages where the live memory and the image differ; returns how many were copied."""
        live, size = self._live()
        image = ctypes.addressof(self._buffer)
        dirty = 0
        common = min(size, self._size)
        for offset in range(0, common, PAGE):
            length = min(PAGE, common - offset)
            if _memcmp(live + offset, image + offset, length):
                if to_image:
                    ctypes.memmove(image + offset, live + offset, length)
                else:
                    ctypes.memmove(live + offset, image + offset, length)
                dirty += 1
        if size > self._size:  # the memory grew in this message
            self._reserve(size)
            image = ctypes.addressof(self._buffer)
            if to_image:
                ctypes.memmove(image + self._size, live + self._size, size - self._size)
            else:  # Wasm memory cannot shrink: the grown part is zeroed and stays
                ctypes.memset(live + self._size, 0, size - self._size)
                ctypes.memset(image + self._size, 0, size - self._size)
            dirty += (size - self._size + PAGE - 1) // PAGE
            self._size = size
        return dirty

    def commit(self) -> int:
        """The live memory becomes the committed image; returns the number of dirty pages."""
        return self._sync(to_image=True)

    def roll_back(self) -> int:
        """Undo every change since the last commit; returns the number of dirty pages."""
        return self._sync(to_image=False)

    def contents(self) -> bytes:
        """A copy of the committed image."""
        return ctypes.string_at(self._buffer, self._size)

    def load(self, data: bytes) -> None:
        """Replace memory and image with ``data`` (growing the memory if needed; the rest is zeroed)."""
        _, size = self._live()
        if len(data) > size:
            self._memory.grow(self._store, (len(data) - size + PAGE - 1) // PAGE)
        live, size = self._live()
        ctypes.memmove(live, data, len(data))
        ctypes.memset(live + len(data), 0, size - len(data))
        self.commit()
