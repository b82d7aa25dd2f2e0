# cython: language_level=3
# What other compiled modules take from _hashtree (``cimport``ed): its SHA-256, so that they hash with the same
# OpenSSL digest context instead of one of their own.

from libc.stdint cimport uint8_t


cdef int sha256(const char *domain, size_t domain_len, const void *a, size_t a_len, const void *b, size_t b_len,
                uint8_t *out) except -1
