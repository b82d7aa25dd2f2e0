# cython: language_level=3
"""Compiled twin of :mod:`icws_fast.gateway.fanout` (same functions, same results).

Each message is built with one allocation: the final size is known up front, so the
bytes object is created empty and filled with memcpy, no intermediate joins.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memcmp, memcpy

from icws_fast.errors import CborError

cdef const char *MESSAGE_PREFIX = b"\xa4\x63key"
cdef const char *CONTENT_LABEL = b"\x67content"
cdef const char *CERT_LABEL = b"\x64cert"
cdef const char *TREE_LABEL = b"\x64tree"


cdef Py_ssize_t cbor_head_size(unsigned long long n) noexcept:
    if n < 24:
        return 1
    if n < 0x100:
        return 2
    if n < 0x10000:
        return 3
    if n < 0x100000000:
        return 5
    return 9


cdef Py_ssize_t write_cbor_head(unsigned char *out, int major, unsigned long long n) noexcept:
    cdef unsigned char m = <unsigned char>(major << 5)
    cdef Py_ssize_t size = cbor_head_size(n)
    cdef Py_ssize_t i
    if size == 1:
        out[0] = m | <unsigned char>n
        return 1
    out[0] = m | (23 + (1 if size == 2 else 2 if size == 3 else 3 if size == 5 else 4))
    for i in range(size - 1, 0, -1):
        out[i] = <unsigned char>(n & 0xFF)
        n >>= 8
    return size


def batch_suffix(bytes cert not None, bytes tree not None):
    """The encoded ``cert`` and ``tree`` map entries shared by every message of one batch."""
    cdef Py_ssize_t cert_len = PyBytes_GET_SIZE(cert)
    cdef Py_ssize_t tree_len = PyBytes_GET_SIZE(tree)
    cdef Py_ssize_t size = 5 + cbor_head_size(cert_len) + cert_len + 5 + cbor_head_size(tree_len) + tree_len
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    cdef unsigned char *p = <unsigned char *>PyBytes_AS_STRING(out)
    memcpy(p, CERT_LABEL, 5)
    p += 5
    p += write_cbor_head(p, 2, cert_len)
    memcpy(p, PyBytes_AS_STRING(cert), cert_len)
    p += cert_len
    memcpy(p, TREE_LABEL, 5)
    p += 5
    p += write_cbor_head(p, 2, tree_len)
    memcpy(p, PyBytes_AS_STRING(tree), tree_len)
    return out


cdef bytes _encode_message(bytes key, bytes content, bytes suffix):
    cdef Py_ssize_t key_len = PyBytes_GET_SIZE(key)
    cdef Py_ssize_t content_len = PyBytes_GET_SIZE(content)
    cdef Py_ssize_t suffix_len = PyBytes_GET_SIZE(suffix)
    cdef Py_ssize_t size = (
        5 + cbor_head_size(key_len) + key_len + 8 + cbor_head_size(content_len) + content_len + suffix_len
    )
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    cdef unsigned char *p = <unsigned char *>PyBytes_AS_STRING(out)
    memcpy(p, MESSAGE_PREFIX, 5)
    p += 5
    p += write_cbor_head(p, 3, key_len)
    memcpy(p, PyBytes_AS_STRING(key), key_len)
    p += key_len
    memcpy(p, CONTENT_LABEL, 8)
    p += 8
    p += write_cbor_head(p, 2, content_len)
    memcpy(p, PyBytes_AS_STRING(content), content_len)
    p += content_len
    memcpy(p, PyBytes_AS_STRING(suffix), suffix_len)
    return out


def encode_message(bytes key not None, bytes content not None, bytes suffix not None):
    """One CanisterToClientMessage from its UTF-8 ``key``, its ``content`` and the batch ``suffix``."""
    return _encode_message(key, content, suffix)


def encode_batch(keys, contents, bytes cert not None, bytes tree not None):
    """The CanisterToClientMessage frames of one batch, in order (``keys[i]`` goes with ``contents[i]``)."""
    cdef Py_ssize_t n = len(keys)
    cdef Py_ssize_t i
    if len(contents) != n:
        raise ValueError("keys and contents differ in length")
    cdef bytes suffix = batch_suffix(cert, tree)
    cdef list frames = [None] * n
    cdef object key, content
    for i in range(n):
        key, content = keys[i], contents[i]
        # _encode_message reads the bytes' buffers directly: anything else (None included) must stop here.
        if type(key) is not bytes or type(content) is not bytes:
            raise TypeError("keys and contents must be bytes")
        frames[i] = _encode_message(key, content, suffix)
    return frames


cdef Py_ssize_t _read_head(const unsigned char *data, Py_ssize_t end, Py_ssize_t pos,
                           int *major, unsigned long long *arg) except -1:
    cdef int info
    cdef Py_ssize_t width, i
    if pos >= end:
        raise CborError("truncated ClientRequest")
    major[0] = data[pos] >> 5
    info = data[pos] & 0x1F
    pos += 1
    if info < 24:
        arg[0] = info
        return pos
    if info > 27:
        raise CborError("ClientRequest uses an indefinite or reserved length")
    width = 1 << (info - 24)
    if pos + width > end:
        raise CborError("truncated ClientRequest")
    arg[0] = 0
    for i in range(width):
        arg[0] = (arg[0] << 8) | data[pos + i]
    return pos + width


def envelope_span(bytes data not None):
    """The (start, end) offsets of the ``envelope`` value in a ClientRequest ``{"envelope": ...}``."""
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(data)
    cdef Py_ssize_t end = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t pos = 0
    cdef int major
    cdef unsigned long long arg
    if end >= 3 and p[0] == 0xD9 and p[1] == 0xD9 and p[2] == 0xF7:
        pos = 3
    pos = _read_head(p, end, pos, &major, &arg)
    if major != 5 or arg != 1:
        raise CborError("a ClientRequest must be a CBOR map with the single key 'envelope'")
    pos = _read_head(p, end, pos, &major, &arg)
    if major != 3 or arg != 8 or pos + 8 > end or memcmp(p + pos, b"envelope", 8) != 0:
        raise CborError("a ClientRequest must be a CBOR map with the single key 'envelope'")
    pos += 8
    if pos >= end:
        raise CborError("a ClientRequest has no envelope value")
    return pos, end
