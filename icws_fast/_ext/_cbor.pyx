# cython: language_level=3
"""Compiled twin of :func:`icws_fast.ic.cbor.decode` (same signature, results, errors and messages).

The decoder walks a ``const unsigned char *`` over one bytes object with C integers for
positions and lengths; Python objects are created only for the decoded values themselves
(``PyBytes_FromStringAndSize`` for byte strings, ``PyUnicode_DecodeUTF8`` for text, lists
filled in place). Every check of the pure decoder happens here in the same order, so both
raise :class:`~icws_fast.errors.CborError` with the same message on the same input.

Nesting is bounded twice, as in the pure decoder: by ``max_depth``, and by the interpreter's
recursion limit, since the decoder recurses on the C stack. Every container or tag level counts
against that limit through ``Py_EnterRecursiveCall`` (as CPython's own JSON decoder does), and
running out raises ``CborError("CBOR nested too deeply")``, the pure decoder's error when Python
recursion runs out (the pure decoder spends two Python frames a level, so it gets there first).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Contains, PyDict_SetItem
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.long cimport PyLong_FromLongLong, PyLong_FromUnsignedLongLong
from cpython.ref cimport Py_INCREF
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport uint64_t

from icws_fast.errors import CborError


cdef extern from *:
    """
    /* Py_EnterRecursiveCall returns nonzero, RecursionError set, when the recursion limit is hit. */
    static int icws_cbor_enter_nesting(void) {
        return Py_EnterRecursiveCall(" while decoding CBOR") ? -1 : 0;
    }
    """
    int enter_nesting "icws_cbor_enter_nesting"() except -1
    void Py_LeaveRecursiveCall()


cdef extern from "Python.h":
    # Public since Python 3.11; the struct module's ">e", ">f" and ">d" formats use the same functions.
    double PyFloat_Unpack2(const char *p, int le) except? -1.0
    double PyFloat_Unpack4(const char *p, int le) except? -1.0
    double PyFloat_Unpack8(const char *p, int le) except? -1.0


# Mirrors icws_fast.ic.cbor (that module imports this one, so the values are repeated, not imported).
cdef enum:
    SELF_DESCRIBE_TAG = 55799
    DEFAULT_MAX_DEPTH = 256
    BREAK = 0xFF


cdef struct Decoder:
    const unsigned char *data
    Py_ssize_t pos
    Py_ssize_t end
    Py_ssize_t max_depth


# icws_fast.ic.cbor.Tag, resolved on first use: importing it at load time would be circular when this
# module is imported before icws_fast.ic.cbor.
cdef object _Tag = None


cdef object make_tag(uint64_t tag, object value):
    global _Tag
    if _Tag is None:
        from icws_fast.ic.cbor import Tag

        _Tag = Tag
    return _Tag(PyLong_FromUnsignedLongLong(tag), value)


cdef Py_ssize_t need(Decoder *d, uint64_t n) except -1:
    """Consume ``n`` bytes and return the offset of the first; CborError when fewer remain."""
    cdef Py_ssize_t start = d.pos
    if n > <uint64_t>(d.end - start):
        raise CborError(f"truncated CBOR: need {n} bytes at offset {start}, have {d.end - start}")
    d.pos = start + <Py_ssize_t>n
    return start


cdef inline uint64_t be(const unsigned char *p, int size) noexcept nogil:
    cdef uint64_t value = 0
    cdef int i
    for i in range(size):
        value = (value << 8) | p[i]
    return value


cdef int argument(Decoder *d, int info, uint64_t *out) except -1:
    """The argument of a head whose additional information is ``info`` (after the initial byte)."""
    cdef Py_ssize_t p
    if info < 24:
        out[0] = <uint64_t>info
    elif info == 24:
        out[0] = d.data[need(d, 1)]
    elif info == 25:
        p = need(d, 2)
        out[0] = be(d.data + p, 2)
    elif info == 26:
        p = need(d, 4)
        out[0] = be(d.data + p, 4)
    elif info == 27:
        p = need(d, 8)
        out[0] = be(d.data + p, 8)
    else:
        raise CborError(f"reserved additional information {info} at offset {d.pos - 1}")
    return 0


cdef bytes chunks(Decoder *d, int major):
    """The concatenated chunks of an indefinite-length byte or text string, up to its break."""
    cdef list parts = []
    cdef unsigned char ib
    cdef uint64_t n
    cdef Py_ssize_t p
    while True:
        ib = d.data[need(d, 1)]
        if ib == BREAK:
            return b"".join(parts)
        if ib >> 5 != major or ib & 0x1F == 31:
            raise CborError("bad chunk in indefinite-length string")
        argument(d, ib & 0x1F, &n)
        p = need(d, n)
        parts.append(PyBytes_FromStringAndSize(<const char *>d.data + p, <Py_ssize_t>n))


cdef bint not_break(Decoder *d) except -1:
    """False (consuming it) at a break byte, True before any other item of an indefinite container."""
    if d.pos >= d.end:
        raise CborError("truncated indefinite-length item")
    if d.data[d.pos] == BREAK:
        d.pos += 1
        return False
    return True


cdef int map_entry(Decoder *d, dict result, Py_ssize_t depth) except -1:
    key = item(d, depth + 1)
    if not isinstance(key, (str, bytes, int)):
        raise CborError(f"unsupported CBOR map key type {type(key).__name__}")
    if PyDict_Contains(result, key):
        raise CborError(f"duplicate CBOR map key {key!r}")
    PyDict_SetItem(result, key, item(d, depth + 1))
    return 0


cdef object nested(Decoder *d, int major, int info, Py_ssize_t depth):
    """An array (major 4), map (major 5) or tagged item (major 6), its head's initial byte read."""
    cdef uint64_t n, i
    cdef list items
    cdef dict result
    if major == 4:
        if info == 31:
            items = []
            while not_break(d):
                items.append(item(d, depth + 1))
            return items
        argument(d, info, &n)
        if n > <uint64_t>(d.end - d.pos):
            raise CborError(f"array of {n} items overshoots the input")
        items = PyList_New(<Py_ssize_t>n)
        for i in range(n):
            # A list whose later slots are still NULL is safe to drop if a later item fails.
            value = item(d, depth + 1)
            Py_INCREF(value)
            PyList_SET_ITEM(items, <Py_ssize_t>i, value)
        return items
    if major == 5:
        result = {}
        if info == 31:
            while not_break(d):
                map_entry(d, result, depth)
            return result
        argument(d, info, &n)
        # 2 * n > remaining, without overflowing for n near 2**64.
        if n > <uint64_t>(d.end - d.pos) // 2:
            raise CborError(f"map of {n} entries overshoots the input")
        for i in range(n):
            map_entry(d, result, depth)
        return result
    # major 6
    argument(d, info, &n)
    if n == SELF_DESCRIBE_TAG:
        return item(d, depth + 1)
    value = item(d, depth + 1)
    if n == 2 or n == 3:
        if not PyBytes_CheckExact(value):
            raise CborError("bignum tag must wrap a byte string")
        magnitude = int.from_bytes(value, "big")
        return magnitude if n == 2 else -1 - magnitude
    return make_tag(n, value)


cdef object item(Decoder *d, Py_ssize_t depth):
    cdef unsigned char ib
    cdef int major, info
    cdef uint64_t n
    cdef Py_ssize_t p
    cdef const char *data
    if depth > d.max_depth:
        raise CborError(f"CBOR nested deeper than {d.max_depth}")
    ib = d.data[need(d, 1)]
    major = ib >> 5
    info = ib & 0x1F
    if 4 <= major <= 6:
        enter_nesting()
        try:
            return nested(d, major, info, depth)
        finally:
            Py_LeaveRecursiveCall()
    if major == 0:
        argument(d, info, &n)
        return PyLong_FromUnsignedLongLong(n)
    if major == 1:
        argument(d, info, &n)
        if n < (<uint64_t>1 << 63):
            return PyLong_FromLongLong(-1 - <long long>n)
        return -1 - PyLong_FromUnsignedLongLong(n)
    if major == 2 or major == 3:
        if info == 31:
            raw = chunks(d, major)
            if major == 2:
                return raw
            p = 0
            n = <uint64_t>PyBytes_GET_SIZE(raw)
            data = <const char *>PyBytes_AS_STRING(raw)
        else:
            argument(d, info, &n)
            p = need(d, n)
            data = <const char *>d.data
            if major == 2:
                return PyBytes_FromStringAndSize(data + p, <Py_ssize_t>n)
        try:
            return PyUnicode_DecodeUTF8(data + p, <Py_ssize_t>n, NULL)
        except UnicodeDecodeError as exc:
            raise CborError(f"invalid UTF-8 in CBOR text: {exc}") from None
    # major 7
    if info == 20:
        return False
    if info == 21:
        return True
    if info == 22 or info == 23:
        return None
    if info == 25:
        p = need(d, 2)
        return PyFloat_Unpack2(<const char *>d.data + p, 0)
    if info == 26:
        p = need(d, 4)
        return PyFloat_Unpack4(<const char *>d.data + p, 0)
    if info == 27:
        p = need(d, 8)
        return PyFloat_Unpack8(<const char *>d.data + p, 0)
    if info == 31:
        raise CborError(f"unexpected break at offset {d.pos - 1}")
    raise CborError(f"unsupported simple value {info} at offset {d.pos - 1}")


cdef object decode_buffer(const unsigned char *data, Py_ssize_t size, Py_ssize_t max_depth):
    """Decode exactly one CBOR item from ``size`` bytes at ``data`` (which must stay alive and unchanged)."""
    cdef Decoder d
    d.data = data
    d.pos = 0
    d.end = size
    d.max_depth = max_depth
    try:
        value = item(&d, 0)
    except RecursionError:
        raise CborError("CBOR nested too deeply") from None
    if d.pos != d.end:
        raise CborError(f"{d.end - d.pos} trailing bytes after CBOR item")
    return value


def decode(data, *, Py_ssize_t max_depth=DEFAULT_MAX_DEPTH):
    """Decode exactly one CBOR item; trailing bytes are an error (see ``icws_fast.ic.cbor.decode``)."""
    # A bytes object is read in place; anything else is copied first, as the pure decoder does, so a
    # bytearray cannot change size under the decoder.
    cdef bytes raw = <bytes>data if PyBytes_CheckExact(data) else bytes(data)
    return decode_buffer(<const unsigned char *>PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw), max_depth)
