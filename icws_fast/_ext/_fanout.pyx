# cython: language_level=3
"""Compiled twin of :mod:`icws_fast.gateway.fanout` (same functions, same results).

Each message is built with one allocation: the final size is known up front, so the
bytes object is created empty and filled with memcpy, no intermediate joins.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint64_t
from libc.string cimport memcmp, memcpy

from icws_fast._ext._cbor cimport head_size, put_head

from icws_fast.errors import CborError

cdef const char *MESSAGE_PREFIX = b"\xa4\x63key"
cdef const char *CONTENT_LABEL = b"\x67content"
cdef const char *CERT_LABEL = b"\x64cert"
cdef const char *TREE_LABEL = b"\x64tree"


cdef inline Py_ssize_t field_size(Py_ssize_t label_len, Py_ssize_t value_len) noexcept:
    """The size of a map entry written by :func:`put_field`."""
    return label_len + head_size(value_len) + value_len


cdef inline Py_ssize_t put_field(unsigned char *p, const char *label, Py_ssize_t label_len, int major,
                                 bytes value) noexcept:
    """Write ``label`` (the encoded bytes before the value) then ``value`` as a CBOR string of ``major`` (2 bytes, 3 text);
    return the bytes written."""
    cdef Py_ssize_t value_len = PyBytes_GET_SIZE(value)
    cdef Py_ssize_t head_len
    memcpy(p, label, label_len)
    head_len = put_head(p + label_len, major, value_len)
    memcpy(p + label_len + head_len, PyBytes_AS_STRING(value), value_len)
    return label_len + head_len + value_len


def batch_suffix(bytes cert not None, bytes tree not None):
    """The encoded ``cert`` and ``tree`` map entries shared by every message of one batch."""
    cdef bytes out = PyBytes_FromStringAndSize(
        NULL, field_size(5, PyBytes_GET_SIZE(cert)) + field_size(5, PyBytes_GET_SIZE(tree))
    )
    cdef unsigned char *p = <unsigned char *>PyBytes_AS_STRING(out)
    p += put_field(p, CERT_LABEL, 5, 2, cert)
    put_field(p, TREE_LABEL, 5, 2, tree)
    return out


cdef inline Py_ssize_t message_size(bytes key, bytes content, Py_ssize_t suffix_len) noexcept:
    return field_size(5, PyBytes_GET_SIZE(key)) + field_size(8, PyBytes_GET_SIZE(content)) + suffix_len


cdef inline Py_ssize_t ws_header_size(Py_ssize_t length) noexcept:
    if length < 126:
        return 2
    if length < 0x10000:
        return 4
    return 10


cdef Py_ssize_t write_ws_header(unsigned char *out, Py_ssize_t length) noexcept:
    """An unmasked, final, binary frame's header (RFC 6455 section 5.2), as a server sends it."""
    cdef Py_ssize_t size = ws_header_size(length)
    cdef Py_ssize_t i
    out[0] = 0x82
    if size == 2:
        out[1] = <unsigned char>length
        return 2
    out[1] = 126 if size == 4 else 127
    for i in range(size - 1, 1, -1):
        out[i] = <unsigned char>(length & 0xFF)
        length >>= 8
    return size


cdef void write_message(unsigned char *p, bytes key, bytes content, bytes suffix) noexcept:
    p += put_field(p, MESSAGE_PREFIX, 5, 3, key)
    p += put_field(p, CONTENT_LABEL, 8, 2, content)
    memcpy(p, PyBytes_AS_STRING(suffix), PyBytes_GET_SIZE(suffix))


cdef bytes _encode_message(bytes key, bytes content, bytes suffix):
    cdef bytes out = PyBytes_FromStringAndSize(NULL, message_size(key, content, PyBytes_GET_SIZE(suffix)))
    write_message(<unsigned char *>PyBytes_AS_STRING(out), key, content, suffix)
    return out


cdef bytes _encode_frames(keys, contents, bytes suffix):
    """:func:`encode_frames`. One allocation: the sizes are summed first, then every frame is written in place."""
    # Private copies: the sizes summed in the first loop must hold for the second one, whatever the caller does.
    cdef list key_list = list(keys)
    cdef list content_list = list(contents)
    cdef Py_ssize_t n = len(key_list)
    cdef Py_ssize_t i, size, total = 0
    cdef Py_ssize_t suffix_len = PyBytes_GET_SIZE(suffix)
    cdef object key, content
    if len(content_list) != n:
        raise ValueError("keys and contents differ in length")
    for i in range(n):
        key, content = key_list[i], content_list[i]
        # write_message reads the bytes' buffers directly: anything else (None included) must stop here.
        if type(key) is not bytes or type(content) is not bytes:
            raise TypeError("keys and contents must be bytes")
        size = message_size(key, content, suffix_len)
        total += ws_header_size(size) + size
    cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
    cdef unsigned char *p = <unsigned char *>PyBytes_AS_STRING(out)
    for i in range(n):
        key, content = key_list[i], content_list[i]
        size = message_size(key, content, suffix_len)
        p += write_ws_header(p, size)
        write_message(p, key, content, suffix)
        p += size
    return out


def encode_frames(keys, contents, bytes suffix not None):
    """The WebSocket frames of the CanisterToClientMessages ``(keys[i], contents[i])`` of one batch, back to back."""
    return _encode_frames(keys, contents, suffix)


def deliver_shares(shares, bytes suffix not None):
    """Hand each recipient its share ``(keys, contents)`` of one batch as frames, with one ``deliver`` call each, in
    the order of ``shares``; the messages and the frame bytes handed out.

    The loop of the pure twin without the interpreter: the dictionary walk, the unpacking, the encoding and the
    call to each recipient's ``deliver`` (the one step left in Python).
    """
    cdef Py_ssize_t sent = 0, sent_bytes = 0, count
    cdef bytes frames
    for recipient, (keys, contents) in shares.items():
        frames = _encode_frames(keys, contents, suffix)
        count = len(keys)
        recipient.deliver(frames, count)
        sent += count
        sent_bytes += PyBytes_GET_SIZE(frames)
    return sent, sent_bytes


def encode_message(bytes key not None, bytes content not None, bytes suffix not None):
    """One CanisterToClientMessage from its UTF-8 ``key``, its ``content`` and the batch ``suffix``."""
    return _encode_message(key, content, suffix)


cdef Py_ssize_t read_head(const unsigned char *data, Py_ssize_t end, Py_ssize_t pos,
                          int *major, uint64_t *arg) except -1:
    """The definite-length head at ``data[pos]``, as :func:`icws_fast.ic.cbor.read_head` reads it (same errors)."""
    cdef int info
    cdef Py_ssize_t width, i
    if pos >= end:
        raise CborError(f"truncated CBOR: need 1 bytes at offset {pos}, have 0")
    major[0] = data[pos] >> 5
    info = data[pos] & 0x1F
    if info < 24:
        arg[0] = info
        return pos + 1
    if info == 31:
        raise CborError(f"indefinite length at offset {pos} where a definite head is needed")
    if info > 27:
        raise CborError(f"reserved additional information {info} at offset {pos}")
    width = 1 << (info - 24)
    pos += 1
    if width > end - pos:
        raise CborError(f"truncated CBOR: need {width} bytes at offset {pos}, have {end - pos}")
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
    cdef uint64_t arg
    if end >= 3 and p[0] == 0xD9 and p[1] == 0xD9 and p[2] == 0xF7:
        pos = 3
    pos = read_head(p, end, pos, &major, &arg)
    if major != 5 or arg != 1:
        raise CborError("a ClientRequest must be a CBOR map with the single key 'envelope'")
    pos = read_head(p, end, pos, &major, &arg)
    if major != 3 or arg != 8 or pos + 8 > end or memcmp(p + pos, b"envelope", 8) != 0:
        raise CborError("a ClientRequest must be a CBOR map with the single key 'envelope'")
    pos += 8
    if pos >= end:
        raise CborError("a ClientRequest has no envelope value")
    return pos, end
