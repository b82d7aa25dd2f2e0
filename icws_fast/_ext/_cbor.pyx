# cython: language_level=3
"""Compiled twins of :func:`icws_fast.ic.cbor.decode` and :func:`~icws_fast.ic.cbor.encode`.

Same signatures, results, errors and error messages as the pure functions.

The decoder walks a ``const unsigned char *`` over one bytes object with C integers for
positions and lengths; Python objects are created only for the decoded values themselves
(``PyBytes_FromStringAndSize`` for byte strings, ``PyUnicode_DecodeUTF8`` for text, lists
filled in place). Every check of the pure decoder happens here in the same order, so both
raise :class:`~icws_fast.errors.CborError` with the same message on the same input.

It does not recurse: open arrays, maps and tags are frames on an explicit stack (on the C
stack up to ``LOCAL_FRAMES`` levels, on the heap beyond), so hostile nesting cannot exhaust
the C stack of any thread. Nesting is bounded by ``max_depth`` as in the pure decoder, and by
``MAX_NESTING`` whatever ``max_depth`` says: deeper input raises ``CborError("CBOR nested too
deeply")``, the pure decoder's error when Python's recursion limit runs out (which, at two
Python frames a level, happens at a few hundred levels with the default limit).

The encoder writes heads and payloads straight into one growing C buffer and makes a single
bytes object at the end. Its input is the program's own data, nested at most as deep as
Python's recursion limit allows: every list, dict or Tag level counts against that limit through
``Py_EnterRecursiveCall`` (as CPython's JSON encoder does), so a cyclic value raises
RecursionError, as it does in the pure encoder.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.dict cimport PyDict_CheckExact, PyDict_Contains, PyDict_SetItem, PyDict_Size
from cpython.list cimport PyList_Append, PyList_New, PyList_SET_ITEM
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_AsUnsignedLongLong, PyLong_Check
from cpython.long cimport PyLong_FromLongLong, PyLong_FromUnsignedLongLong
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF
from cpython.unicode cimport PyUnicode_AsUTF8String, PyUnicode_Check, PyUnicode_CheckExact, PyUnicode_DecodeUTF8
from libc.stdint cimport uint64_t
from libc.string cimport memcpy

from icws_fast.errors import CborError


cdef extern from "Python.h":
    # Public since Python 3.11; the struct module's ">e", ">f" and ">d" formats use the same functions.
    double PyFloat_Unpack2(const char *p, int le) except? -1.0
    double PyFloat_Unpack4(const char *p, int le) except? -1.0
    double PyFloat_Unpack8(const char *p, int le) except? -1.0
    int PyFloat_Pack8(double x, char *p, int le) except -1


cdef extern from *:
    """
    /* Py_EnterRecursiveCall returns nonzero, RecursionError set, when the recursion limit is hit. */
    static int icws_cbor_enter_nesting(void) {
        return Py_EnterRecursiveCall(" while encoding CBOR") ? -1 : 0;
    }
    """
    int enter_nesting "icws_cbor_enter_nesting"() except -1
    void Py_LeaveRecursiveCall()


# Mirrors icws_fast.ic.cbor (that module imports this one, so the values are repeated, not imported).
cdef enum:
    SELF_DESCRIBE_TAG = 55799
    DEFAULT_MAX_DEPTH = 256
    BREAK = 0xFF

cdef enum:
    # Frames held in the decoding function's own C stack frame; IC data (certificates, witnesses,
    # envelopes) nests far less, so the heap is only touched for unusual input.
    LOCAL_FRAMES = 48
    # Bounds the heap a hostile input can make the decoder allocate for frames (40 bytes each), and
    # the nesting of what it returns (which Python code then walks recursively).
    MAX_NESTING = 1000

# What an open frame is waiting for.
cdef enum Kind:
    ARRAY         # a definite-length list: ``count`` slots, ``index`` filled
    ARRAY_INDEF   # an indefinite-length list, closed by a break
    MAP           # a definite-length dict: ``count`` entries, ``index`` done
    MAP_INDEF     # an indefinite-length dict, closed by a break (before a key)
    TAG           # the one item a tag wraps


cdef struct Frame:
    Kind kind
    PyObject *container  # owned: the list or dict being filled (NULL for TAG)
    PyObject *key        # owned: a map key waiting for its value, else NULL
    uint64_t count
    uint64_t index       # filled slots / entries; the tag number for TAG


cdef struct Decoder:
    const unsigned char *data
    Py_ssize_t pos
    Py_ssize_t end
    Py_ssize_t max_depth


# icws_fast.ic.cbor.Tag and the pure head writer, resolved on first use: importing them at load time
# would be circular when this module is imported before icws_fast.ic.cbor.
cdef object _Tag = None
cdef object _pure_head = None
cdef object _Principal = None


cdef int resolve_pure() except -1:
    global _Tag, _pure_head, _Principal
    if _Tag is None:
        from icws_fast.ic.cbor import Tag, write_head
        from icws_fast.ic.principal import Principal

        _pure_head = write_head
        _Principal = Principal
        _Tag = Tag
    return 0


cdef object make_tag(uint64_t tag, object value):
    resolve_pure()
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


cdef object scalar(Decoder *d, int major, int info):
    """An item of major type 0, 1, 2, 3 or 7, its initial byte read."""
    cdef uint64_t n
    cdef Py_ssize_t p
    cdef const char *data
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


# Must equal icws_fast.ic.cbor.MAX_BIGNUM_BYTES (a test compares them).
DEF_MAX_BIGNUM_BYTES = 64
cdef Py_ssize_t MAX_BIGNUM_BYTES = DEF_MAX_BIGNUM_BYTES


cdef object untag(uint64_t tag, object value):
    """The value of a tagged item: self-describe is transparent, bignums become ints, the rest Tag."""
    if tag == SELF_DESCRIBE_TAG:
        return value
    if tag == 2 or tag == 3:
        if not PyBytes_CheckExact(value):
            raise CborError("bignum tag must wrap a byte string")
        if PyBytes_GET_SIZE(value) > MAX_BIGNUM_BYTES:
            raise CborError(f"bignum of {PyBytes_GET_SIZE(value)} bytes is over the limit of {MAX_BIGNUM_BYTES}")
        magnitude = int.from_bytes(value, "big")
        return magnitude if tag == 2 else -1 - magnitude
    return make_tag(tag, value)


cdef bint not_break(Decoder *d) except -1:
    """False (consuming it) at a break byte, True before any other item of an indefinite container."""
    if d.pos >= d.end:
        raise CborError("truncated indefinite-length item")
    if d.data[d.pos] == BREAK:
        d.pos += 1
        return False
    return True


cdef object read_item(Decoder *d):
    """Decode one item, iteratively: containers and tags are frames, closed as their last item arrives."""
    cdef Frame local_frames[LOCAL_FRAMES]
    cdef Frame *frames = local_frames
    cdef Frame *grown
    cdef Frame *f
    cdef Py_ssize_t capacity = LOCAL_FRAMES
    cdef Py_ssize_t top = 0  # open frames: the depth of the next item
    cdef unsigned char ib
    cdef int major, info
    cdef uint64_t n
    cdef bint closed
    try:
        while True:
            # Step 1: a break closing the innermost indefinite container, or the next item: a value, or a
            # new frame (then on to its first item).
            closed = False
            if top:
                f = &frames[top - 1]
                if f.kind == ARRAY_INDEF or (f.kind == MAP_INDEF and f.key == NULL):
                    closed = not not_break(d)
            if not closed:
                if top > d.max_depth:
                    raise CborError(f"CBOR nested deeper than {d.max_depth}")
                if top > MAX_NESTING:
                    raise CborError("CBOR nested too deeply")
                ib = d.data[need(d, 1)]
                major = ib >> 5
                info = ib & 0x1F
                if major < 4 or major == 7:
                    value = scalar(d, major, info)
                else:
                    n = 0
                    if info != 31 or major == 6:
                        argument(d, info, &n)
                    if major == 4 and info != 31 and n > <uint64_t>(d.end - d.pos):
                        raise CborError(f"array of {n} items overshoots the input")
                    # 2 * n > remaining, without overflowing for n near 2**64.
                    if major == 5 and info != 31 and n > <uint64_t>(d.end - d.pos) // 2:
                        raise CborError(f"map of {n} entries overshoots the input")
                    if major != 6 and info != 31 and n == 0:
                        value = [] if major == 4 else {}
                    else:
                        if top == capacity:
                            grown = <Frame *>PyMem_Malloc(2 * capacity * sizeof(Frame))
                            if grown == NULL:
                                raise MemoryError()
                            memcpy(grown, frames, capacity * sizeof(Frame))
                            if frames != local_frames:
                                PyMem_Free(frames)
                            frames = grown
                            capacity *= 2
                        f = &frames[top]
                        f.container = NULL
                        f.key = NULL
                        f.count = n
                        f.index = 0
                        if major == 6:
                            f.kind = TAG
                            f.index = n
                        else:
                            container = (PyList_New(<Py_ssize_t>n) if info != 31 else []) if major == 4 else {}
                            Py_INCREF(container)
                            f.container = <PyObject *>container
                            f.kind = (ARRAY if info != 31 else ARRAY_INDEF) if major == 4 else (
                                MAP if info != 31 else MAP_INDEF
                            )
                        top += 1
                        continue
            # Step 2: hand the value (or the container a break closed) to the open frames, closing
            # every frame it completes, until one still waits for more (or the top-level item is done).
            while top:
                f = &frames[top - 1]
                if not closed:
                    if f.kind == TAG:
                        value = untag(f.index, value)
                        top -= 1
                        continue
                    if f.kind == ARRAY:
                        # A list whose later slots are still NULL is safe to drop if a later item fails.
                        Py_INCREF(value)
                        PyList_SET_ITEM(<list>f.container, <Py_ssize_t>f.index, value)
                        f.index += 1
                        if f.index < f.count:
                            break
                    elif f.kind == ARRAY_INDEF:
                        PyList_Append(<list>f.container, value)
                        break
                    elif f.key == NULL:
                        if not (PyUnicode_Check(value) or PyBytes_Check(value) or PyLong_Check(value)):
                            raise CborError(f"unsupported CBOR map key type {type(value).__name__}")
                        if PyDict_Contains(<dict>f.container, value):
                            raise CborError(f"duplicate CBOR map key {value!r}")
                        Py_INCREF(value)
                        f.key = <PyObject *>value
                        break
                    else:
                        PyDict_SetItem(<dict>f.container, <object>f.key, value)
                        Py_DECREF(<object>f.key)
                        f.key = NULL
                        if f.kind == MAP_INDEF:
                            break
                        f.index += 1
                        if f.index < f.count:
                            break
                # The frame's container is complete: it becomes the value for the frame below.
                value = <object>f.container
                Py_DECREF(value)
                f.container = NULL
                top -= 1
                closed = False
            else:
                return value
    finally:
        while top:
            top -= 1
            Py_XDECREF(frames[top].container)
            Py_XDECREF(frames[top].key)
        if frames != local_frames:
            PyMem_Free(frames)


cdef object decode_buffer(const unsigned char *data, Py_ssize_t size, Py_ssize_t max_depth):
    """Decode exactly one CBOR item from ``size`` bytes at ``data`` (which must stay alive and unchanged)."""
    cdef Decoder d
    d.data = data
    d.pos = 0
    d.end = size
    d.max_depth = max_depth
    value = read_item(&d)
    if d.pos != d.end:
        raise CborError(f"{d.end - d.pos} trailing bytes after CBOR item")
    return value


cdef struct Writer:
    char *buf
    Py_ssize_t size
    Py_ssize_t capacity


cdef char *reserve(Writer *w, Py_ssize_t n) except NULL:
    """Room for ``n`` more bytes at the end of the buffer (which grows by doubling)."""
    cdef Py_ssize_t capacity = w.capacity
    cdef char *grown
    if n > w.capacity - w.size:
        while capacity - w.size < n:
            capacity = 2 * capacity if capacity else 256
        grown = <char *>PyMem_Realloc(w.buf, capacity)
        if grown == NULL:
            raise MemoryError()
        w.buf = grown
        w.capacity = capacity
    return w.buf + w.size


cdef int write(Writer *w, const char *data, Py_ssize_t n) except -1:
    memcpy(reserve(w, n), data, n)
    w.size += n
    return 0


cdef int write_head(Writer *w, int major, uint64_t n) except -1:
    w.size += put_head(<unsigned char *>reserve(w, 9), major, n)
    return 0


cdef int write_string(Writer *w, int major, bytes raw) except -1:
    """A byte string (major 2) or text (major 3) whose bytes are ``raw``."""
    write_head(w, major, <uint64_t>PyBytes_GET_SIZE(raw))
    return write(w, PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw))


cdef int write_int(Writer *w, object obj) except -1:
    cdef int overflow = 0
    cdef long long small = PyLong_AsLongLongAndOverflow(obj, &overflow)
    if not overflow:
        if small >= 0:
            return write_head(w, 0, <uint64_t>small)
        return write_head(w, 1, <uint64_t>(-1 - small))
    if 0 <= obj < (1 << 64):
        return write_head(w, 0, PyLong_AsUnsignedLongLong(obj))
    if -(1 << 64) <= obj < 0:
        return write_head(w, 1, PyLong_AsUnsignedLongLong(-1 - obj))
    tag, magnitude = (2, obj) if obj >= 0 else (3, -1 - obj)
    write_head(w, 6, tag)
    return write_string(w, 2, magnitude.to_bytes((magnitude.bit_length() + 7) // 8, "big"))


cdef int write_tag_number(Writer *w, object tag) except -1:
    if PyLong_Check(tag) and 0 <= tag < (1 << 64):
        return write_head(w, 6, PyLong_AsUnsignedLongLong(tag))
    # Anything else fails (or not) exactly as the pure encoder's head writer does with it.
    head = _pure_head(6, tag)
    return write(w, PyBytes_AS_STRING(head), PyBytes_GET_SIZE(head))


cdef int write_nested(Writer *w, object obj) except -1:
    """A list, tuple, dict or Tag: one level of nesting, counted against the recursion limit."""
    enter_nesting()
    try:
        if isinstance(obj, _Tag):  # before tuple: a Tag is one
            write_tag_number(w, obj.tag)
            write_item(w, obj.value)
        elif PyDict_CheckExact(obj):
            write_head(w, 5, <uint64_t>PyDict_Size(obj))
            for key, value in (<dict>obj).items():
                write_item(w, key)
                write_item(w, value)
        elif isinstance(obj, dict):
            write_head(w, 5, <uint64_t>len(obj))
            for key, value in obj.items():
                write_item(w, key)
                write_item(w, value)
        else:
            write_head(w, 4, <uint64_t>len(obj))
            for item in obj:
                write_item(w, item)
    finally:
        Py_LeaveRecursiveCall()
    return 0


cdef int write_item(Writer *w, object obj) except -1:
    """Append the encoding of ``obj``, testing types in the pure encoder's order."""
    cdef char *out
    if obj is True:
        return write(w, b"\xf5", 1)
    if obj is False:
        return write(w, b"\xf4", 1)
    if obj is None:
        return write(w, b"\xf6", 1)
    if PyLong_Check(obj):
        return write_int(w, obj)
    if PyBytes_CheckExact(obj):
        return write_string(w, 2, <bytes>obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        raw = bytes(obj)  # len() of a memoryview counts items, not bytes
        write_head(w, 2, <uint64_t>PyBytes_GET_SIZE(raw))
        return write(w, PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw))
    if PyUnicode_CheckExact(obj):
        return write_string(w, 3, PyUnicode_AsUTF8String(obj))
    if PyUnicode_Check(obj):
        return write_string(w, 3, obj.encode("utf-8"))
    if isinstance(obj, (list, tuple, dict)):
        return write_nested(w, obj)
    if isinstance(obj, _Principal):
        return write_string(w, 2, obj.bytes)
    if isinstance(obj, float):
        out = reserve(w, 9)
        out[0] = <char>0xFB
        PyFloat_Pack8(obj, out + 1, 0)
        w.size += 9
        return 0
    raise TypeError(f"cannot CBOR-encode {type(obj).__name__}")


def encode(obj, *, self_describe=True):
    """Encode ``obj``; prefix the self-describe tag unless ``self_describe`` is false (see ``cbor.encode``)."""
    cdef Writer w
    w.buf = NULL
    w.size = 0
    w.capacity = 0
    resolve_pure()
    try:
        if self_describe:
            write(&w, b"\xd9\xd9\xf7", 3)
        write_item(&w, obj)
        return PyBytes_FromStringAndSize(w.buf, w.size)
    finally:
        PyMem_Free(w.buf)


def decode(data, *, Py_ssize_t max_depth=DEFAULT_MAX_DEPTH):
    """Decode exactly one CBOR item; trailing bytes are an error (see ``icws_fast.ic.cbor.decode``)."""
    # A bytes object is read in place; anything else is copied first, as the pure decoder does, so a
    # bytearray cannot change size under the decoder.
    cdef bytes raw = <bytes>data if PyBytes_CheckExact(data) else bytes(data)
    return decode_buffer(<const unsigned char *>PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw), max_depth)
