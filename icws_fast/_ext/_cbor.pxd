# cython: language_level=3
# The CBOR head writer of the compiled encoders, shared by _cbor and _fanout (``cimport``ed; inline, so each
# module gets its own copy of the code and no call crosses modules). The bytes are those of
# icws_fast.ic.cbor.write_head: the shortest head of major type ``major`` with argument ``n``.

from libc.stdint cimport uint64_t


cdef inline Py_ssize_t head_size(uint64_t n) noexcept nogil:
    """The length of the shortest head whose argument is ``n``: 1, 2, 3, 5 or 9 bytes."""
    if n < 24:
        return 1
    if n < 0x100:
        return 2
    if n < 0x10000:
        return 3
    if n >> 32 == 0:
        return 5
    return 9


cdef inline Py_ssize_t put_head(unsigned char *out, int major, uint64_t n) noexcept nogil:
    """Write the head to ``out`` (room for ``head_size(n)`` bytes, at most 9) and return its length."""
    cdef Py_ssize_t size = head_size(n)
    cdef Py_ssize_t i
    cdef unsigned char m = <unsigned char>(major << 5)
    if size == 1:
        out[0] = m | <unsigned char>n
        return 1
    # Additional information 24, 25, 26, 27: a 1-, 2-, 4- or 8-byte big-endian argument follows.
    out[0] = m | <unsigned char>(24 if size == 2 else 25 if size == 3 else 26 if size == 5 else 27)
    for i in range(size - 1, 0, -1):
        out[i] = <unsigned char>(n & 0xFF)
        n >>= 8
    return size
