# cython: language_level=3
# C-level API of icws_fast._ext._hashtree, for other Cython modules to cimport: a streaming
# SHA-256 on caller-owned state, and the hash of a hash tree node written into a 32-byte buffer.

from libc.stdint cimport uint8_t, uint32_t, uint64_t


cdef struct Sha256:
    uint32_t h[8]
    uint8_t buf[64]
    size_t buflen
    uint64_t total


cdef void sha_init(Sha256 *s) noexcept nogil
cdef void sha_compress(Sha256 *s, const uint8_t *block) noexcept nogil
cdef void sha_update(Sha256 *s, const uint8_t *data, size_t n) noexcept nogil
cdef void sha_final(Sha256 *s, uint8_t *out) noexcept nogil
cdef int hash_node(object node, uint8_t *out, int depth) except -1
