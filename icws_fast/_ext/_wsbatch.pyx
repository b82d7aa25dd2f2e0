# cython: language_level=3
"""Compiled twins of :func:`icws_fast.protocol.types.decode_get_messages_result` and ``decode_polled_batch``, of
:func:`icws_fast.protocol.certified.check_messages` and of :func:`icws_fast.protocol.poller.route_shares`.

The gateway decodes one ``ws_get_messages`` reply per poll, with ``decode_polled_batch``: flat lists of each
message's route key (the client key's bytes, a slice of the reply), key and content, and the nonces read from the
keys, without an object per message. ``decode_get_messages_result`` gives the same reply as named tuples, for
everyone else. Each twin returns the same value as its pure function (the same classes, equal fields) and raises
the same exception with the same message for every input, because it only ever answers when it is certain and
hands everything else to the pure decoder:

* The header (type table and argument types) must have exactly the shape the CDKs emit for
  ``(CanisterWsGetMessagesResult)``: one argument, ``variant { Ok; Err : text }`` with the Ok record's fields
  ``messages``, ``cert``, ``tree`` and ``is_end_of_queue`` as ``bool``, ``opt bool`` or absent (CDK < 0.3.1), and
  nothing else in the table. The table order is free (the Rust CDK lists a type before its parts, our encoder
  after them), so headers are recognised by a structural match, once; the last ``RECENT_HEADERS`` recognised
  headers are kept and later replies are matched against them by a byte comparison (header parsing is
  prefix-determined, so an identical prefix is an identical header). A header of any other shape (extra fields or
  arguments, Candid subtyping, unused table entries) is the pure decoder's.
* The values are then read straight from the bytes with C integers, bounds-checked before any allocation:
  LEB128 lengths and counts, UTF-8 keys, blobs, principals, little-endian nat64 nonces, the bool. Any anomaly
  (truncation, trailing bytes, invalid UTF-8, a bool byte above 1, an opaque or over-long principal, a LEB128
  number over 9 bytes, an unknown variant index; for ``decode_polled_batch``, a key that does not end in
  ``_<nonce>``) also goes to the pure decoder, which produces the canonical
  :class:`~icws_fast.errors.ProtocolDecodeError`.

So the fast path succeeds only on input the pure decoder accepts with the same value: the element budget of
:func:`icws_fast.ic.candid.decode` (100 000 plus 4 per byte) cannot run out on the vector of messages, which takes
at least ``MIN_MESSAGE_SIZE`` bytes an element, and the value nests only five levels deep. An ``Err`` reply raises
:class:`~icws_fast.errors.ProtocolError` with the pure decoder's text, after the same trailing-bytes check.

``check_messages`` hashes each content with ``_hashtree``'s SHA-256 and compares it with the certified hash; it
answers only when every message holds (and its arguments are exact dicts, lists and bytes): any other call is
the pure function's, which raises the canonical error. ``route_shares`` does the poller's routing and those checks
in one pass over the batch, on the same terms: a message that fails its check, or arguments of other types, hand
the whole call to the pure function (nothing was handed out yet: the result is only returned).

In ``decode_get_messages_result``, messages that name the same client key, in one reply or in later ones, share
one ``ClientKey`` (and ``Principal``) object: both are immutable, and the same clients are polled over and over.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_CheckExact, PyDict_GetItem, PyDict_SetItem
from cpython.list cimport PyList_Append, PyList_CheckExact, PyList_GET_ITEM, PyList_GET_SIZE
from cpython.long cimport PyLong_FromUnsignedLongLong
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport UINT64_MAX, uint8_t, uint64_t
from libc.string cimport memcmp

from icws_fast._ext._hashtree cimport sha256

from icws_fast.errors import DecodeError, ProtocolError
from icws_fast.ic.candid import idl_hash
from icws_fast.ic.leb128 import decode_leb128, decode_sleb128
from icws_fast.ic.principal import MAX_LENGTH as PRINCIPAL_MAX_LENGTH
from icws_fast.ic.principal import Principal

__all__ = ["check_messages", "decode_get_messages_result", "decode_polled_batch", "route_shares"]


# How a recognised header types the ``is_end_of_queue`` field of the Ok record.
cdef enum EndOfQueue:
    EOQ_ABSENT    # CDK < 0.3.1: no such field, which reads as the end of the queue
    EOQ_BOOL      # ``bool``, as the CDKs send it
    EOQ_OPT_BOOL  # ``opt bool``, as the Rust gateway declares it

cdef enum:
    # Type codes (SLEB128) of the primitive types in the expected type, and the opcodes of its table entries.
    T_BOOL = -2
    T_NAT8 = -5
    T_NAT64 = -8
    T_TEXT = -15
    T_PRINCIPAL = -24
    OP_OPT = -18
    OP_VEC = -19
    OP_RECORD = -20
    OP_VARIANT = -21
    # Smallest encoded CanisterOutputMessage: empty key and content (1 + 1), principal tag and empty principal
    # (1 + 1), nonce (8). A count above remaining / MIN_MESSAGE_SIZE cannot be satisfied, so it is refused before
    # any list grows.
    MIN_MESSAGE_SIZE = 12
    NONCE_SIZE = 8
    # The most digits a message key's nonce has (``_NONCE_DIGITS`` of icws_fast.protocol.types).
    NONCE_DIGITS = 20
    # Largest table and records worth matching: the expected type has 9 composite nodes and 4 fields at most.
    # They only bound the work a hostile header costs before it is handed to the pure decoder.
    MAX_TABLE = 16
    MAX_FIELDS = 8
    # Variant indexes in the wire order of ``variant { Ok; Err }`` (idl_hash("Ok") < idl_hash("Err")).
    VARIANT_OK = 0
    VARIANT_ERR = 1

RECENT_HEADERS = 8
"""How many recognised headers are kept (replies of one canister all share one)."""

CLIENT_KEY_CACHE_SIZE = 4096
"""How many client keys are kept between replies (each costs a few hundred bytes)."""


def _record(opcode, *fields):
    """An expected record or variant: ``fields`` are ``(name, type)`` in wire order, which is by field id."""
    ids = [idl_hash(name) for name, _ in fields]
    # The value decoder reads fields in the order written here, so it must be the wire order.
    if ids != sorted(set(ids)):
        raise AssertionError(f"fields out of wire order: {[name for name, _ in fields]}")
    return (opcode, tuple(zip(ids, [t for _, t in fields])))


# The expected type, in the wire order the value decoder follows. An entry is a primitive type code or
# ``(opcode, inner)`` for opt and vec or ``(opcode, ((field id, type), ...))`` for record and variant.
_BLOB = (OP_VEC, T_NAT8)
_CLIENT_KEY = _record(OP_RECORD, ("client_principal", T_PRINCIPAL), ("client_nonce", T_NAT64))
_MESSAGE = _record(OP_RECORD, ("key", T_TEXT), ("content", _BLOB), ("client_key", _CLIENT_KEY))
_BATCH_FIELDS = (("messages", (OP_VEC, _MESSAGE)), ("cert", _BLOB), ("tree", _BLOB))
_RESULT_TYPES = tuple(
    (eoq, _record(OP_VARIANT, ("Ok", _record(OP_RECORD, *_BATCH_FIELDS, *end_field)), ("Err", T_TEXT)))
    for eoq, end_field in (
        (EOQ_BOOL, [("is_end_of_queue", T_BOOL)]),
        (EOQ_ABSENT, []),
        (EOQ_OPT_BOOL, [("is_end_of_queue", (OP_OPT, T_BOOL))]),
    )
)

# Recognised headers, most recent first: ``(header bytes after the magic, EndOfQueue)``.
cdef list _recent = []

# The pure decoder and the classes of icws_fast.protocol.types, resolved on first use: types.py imports this
# module through the _ext seam while it is being defined (its public name is bound to this module's function,
# the pure one is ``decode_get_messages_result_pure``).
cdef object _pure = None
cdef object _pure_flat = None
cdef object _ClientKey = None
cdef object _Message = None
cdef object _Batch = None
cdef object _Polled = None


cdef type named_tuple(type cls, tuple fields):
    """``cls``, checked to be a named tuple of exactly ``fields``: the decoder fills its slots by position."""
    if not issubclass(cls, tuple) or getattr(cls, "_fields", None) != fields:
        raise ImportError(f"{cls.__qualname__} is not a named tuple of {fields}")
    return cls


cdef int resolve_types() except -1:
    global _pure, _pure_flat, _ClientKey, _Message, _Batch, _Polled
    if _pure is None:
        from icws_fast.protocol import types

        pure = types.decode_get_messages_result_pure
        _pure_flat = types.decode_polled_batch_pure
        _ClientKey = named_tuple(types.ClientKey, ("client_principal", "client_nonce"))
        _Message = named_tuple(types.CanisterOutputMessage, ("client_key", "key", "content"))
        _Batch = named_tuple(types.CanisterOutputCertifiedMessages, ("messages", "cert", "tree", "is_end_of_queue"))
        _Polled = named_tuple(
            types.PolledBatch,
            (
                "route_keys", "keys", "contents", "first_nonce", "last_nonce", "consecutive", "cert", "tree",
                "is_end_of_queue",
            ),
        )
        _pure = pure
    return 0


cdef extern from *:
    """
    /* ``cls(*items)`` for a named tuple class ``cls``: what its Python-level __new__ does, tuple.__new__(cls,
       items), without that frame and the keyword-argument parsing. Through the tp_new slot, so that every
       invariant CPython keeps for tuple subclasses (such as the hash cache of 3.14) is kept. */
    static PyObject *icws_wsbatch_new_named(PyObject *cls, PyObject *items) {
        PyObject *args = PyTuple_Pack(1, items);
        if (args == NULL) return NULL;
        PyObject *result = PyTuple_Type.tp_new((PyTypeObject *)cls, args, NULL);
        Py_DECREF(args);
        return result;
    }
    """
    object new_named "icws_wsbatch_new_named"(object cls, tuple items)


# Client keys decoded so far, by the principal's bytes followed by the nonce's (the length fixes the split): a
# gateway polls the same clients over and over, and ClientKey and Principal are immutable, so replies share them.
# Cleared when full, which bounds it against a canister that names ever new clients.
cdef dict _client_keys = {}


def _matches(list table, ref, expected, set used):
    """Whether table reference ``ref`` is exactly the expected type; adds the table entries it uses to ``used``."""
    if type(expected) is int:
        return ref == expected
    if not 0 <= ref < len(table):
        return False
    opcode, body = table[ref]
    if opcode != expected[0]:
        return False
    used.add(ref)
    if opcode == OP_OPT or opcode == OP_VEC:
        return _matches(table, body, expected[1], used)
    fields = expected[1]
    return len(body) == len(fields) and all(
        field_id == expected_id and _matches(table, field_ref, field_type, used)
        for (field_id, field_ref), (expected_id, field_type) in zip(body, fields)
    )


def _recognise(bytes data):
    """``(header end, EndOfQueue)`` when the header after the magic has the expected shape, else None.

    Only opt, vec, record and variant entries are read, every one must be used by the match, and the single
    argument must be the result variant; the pure decoder accepts every header this accepts.
    """
    try:
        count, pos = decode_leb128(data, 4)
        if count > MAX_TABLE:
            return None
        table = []
        for _ in range(count):
            opcode, pos = decode_sleb128(data, pos)
            if opcode == OP_OPT or opcode == OP_VEC:
                ref, pos = decode_sleb128(data, pos)
                table.append((opcode, ref))
            elif opcode == OP_RECORD or opcode == OP_VARIANT:
                nfields, pos = decode_leb128(data, pos)
                if nfields > MAX_FIELDS:
                    return None
                fields = []
                for _ in range(nfields):
                    field_id, pos = decode_leb128(data, pos)
                    ref, pos = decode_sleb128(data, pos)
                    fields.append((field_id, ref))
                table.append((opcode, tuple(fields)))
            else:
                return None
        nargs, pos = decode_leb128(data, pos)
        if nargs != 1:
            return None
        arg, pos = decode_sleb128(data, pos)
    except DecodeError:  # a truncated number: the pure decoder words the error
        return None
    for eoq, expected in _RESULT_TYPES:
        used = set()
        if _matches(table, arg, expected, used) and len(used) == count:
            return pos, eoq
    return None


cdef inline Py_ssize_t read_leb(const unsigned char *p, Py_ssize_t size, Py_ssize_t pos, uint64_t *out) noexcept:
    """The unsigned LEB128 number at ``p[pos]`` into ``out``; the position after it, or -1 when it is truncated
    or longer than 9 bytes (over 63 bits: no length or count of a message that fits in memory)."""
    cdef uint64_t value = 0
    cdef unsigned int shift = 0
    cdef unsigned char b
    while pos < size:
        b = p[pos]
        pos += 1
        value |= <uint64_t>(b & 0x7F) << shift
        if b < 0x80:
            out[0] = value
            return pos
        shift += 7
        if shift >= 63:
            return -1
    return -1


cdef inline Py_ssize_t read_length(const unsigned char *p, Py_ssize_t size, Py_ssize_t pos, Py_ssize_t *out) noexcept:
    """A LEB128 length whose bytes all follow in the buffer; the position after the number, or -1."""
    cdef uint64_t n
    pos = read_leb(p, size, pos, &n)
    if pos < 0 or n > <uint64_t>(size - pos):
        return -1
    out[0] = <Py_ssize_t>n
    return pos


cdef inline object read_blob(const unsigned char *p, Py_ssize_t size, Py_ssize_t *pos):
    """The ``blob`` at ``pos[0]`` (a LEB128 length, then the bytes), moving ``pos[0]`` past it; None if it overruns."""
    cdef Py_ssize_t length
    cdef Py_ssize_t start = read_length(p, size, pos[0], &length)
    if start < 0:
        return None
    pos[0] = start + length
    return PyBytes_FromStringAndSize(<const char *>p + start, length)


cdef inline object read_text(const unsigned char *p, Py_ssize_t size, Py_ssize_t *pos):
    """The ``text`` at ``pos[0]``, moving ``pos[0]`` past it; None if it overruns or is not UTF-8."""
    cdef Py_ssize_t length
    cdef Py_ssize_t start = read_length(p, size, pos[0], &length)
    if start < 0:
        return None
    try:
        text = PyUnicode_DecodeUTF8(<const char *>p + start, length, NULL)
    except UnicodeDecodeError:
        return None
    pos[0] = start + length
    return text


cdef inline uint64_t read_u64_le(const unsigned char *p) noexcept:
    cdef uint64_t value = 0
    cdef int i
    for i in range(NONCE_SIZE - 1, -1, -1):
        value = (value << 8) | p[i]
    return value


cdef inline Py_ssize_t key_nonce(const unsigned char *p, Py_ssize_t length, uint64_t *out) noexcept:
    """The nonce of the message key at ``p`` (the decimal digits after its last ``_``, as ``parse_message_nonce``
    reads it) into ``out``; 0, or -1 when the key has none, more than ``NONCE_DIGITS`` digits, or one over nat64."""
    cdef Py_ssize_t start = length
    cdef uint64_t value = 0
    cdef unsigned int digit
    while start > 0 and p[start - 1] != b'_':
        start -= 1
    if start == 0 or not 1 <= length - start <= NONCE_DIGITS:
        return -1
    for i in range(start, length):
        digit = p[i] - 0x30  # '0'
        if digit > 9 or value > (UINT64_MAX - digit) // 10:
            return -1
        value = value * 10 + digit
    out[0] = value
    return 0


cdef inline bint is_utf8(const unsigned char *p, Py_ssize_t length):
    """Whether the bytes at ``p`` are UTF-8 (ASCII is checked in place; anything else by CPython's decoder)."""
    cdef Py_ssize_t i
    for i in range(length):
        if p[i] >= 0x80:
            try:
                PyUnicode_DecodeUTF8(<const char *>p, length, NULL)
            except UnicodeDecodeError:
                return False
            return True
    return True


cdef object decode_values(const unsigned char *p, Py_ssize_t size, Py_ssize_t pos, EndOfQueue eoq, bint flat):
    """The result at ``p[pos:size]`` after a recognised header, or None for the pure decoder to decide.

    ``flat``: a :class:`~icws_fast.protocol.types.PolledBatch` (a key without a nonce is also the pure decoder's),
    else a :class:`~icws_fast.protocol.types.CanisterOutputCertifiedMessages`. An ``Err`` reply raises
    :class:`~icws_fast.errors.ProtocolError`.
    """
    cdef uint64_t index, nonce, first = 0, previous = 0
    cdef Py_ssize_t n, i, length, principal_start, key_start, key_length
    cdef PyObject *cached
    cdef object key, content, client_key, cert, tree, end
    cdef bint present, consecutive = True
    cdef list messages, route_keys, keys, contents

    pos = read_leb(p, size, pos, &index)
    if pos < 0:
        return None
    if index == VARIANT_ERR:
        text = read_text(p, size, &pos)
        if text is None or pos != size:
            return None
        raise ProtocolError(f"ws_get_messages failed: {text}")
    if index != VARIANT_OK:
        return None

    pos = read_length(p, size, pos, &n)
    if pos < 0 or n > (size - pos) // MIN_MESSAGE_SIZE:
        return None
    messages, route_keys, keys, contents = [], [], [], []
    for i in range(n):
        # key : text
        if flat:
            key_start = read_length(p, size, pos, &key_length)
            if key_start < 0 or not is_utf8(p + key_start, key_length):
                return None
            if key_nonce(p + key_start, key_length, &nonce) < 0:
                return None
            if i == 0:
                first = nonce
            elif previous == UINT64_MAX or nonce != previous + 1:
                consecutive = False
            previous = nonce
            pos = key_start + key_length
            key = PyBytes_FromStringAndSize(<const char *>p + key_start, key_length)
        else:
            key = read_text(p, size, &pos)
            if key is None:
                return None
        content = read_blob(p, size, &pos)  # content : blob
        if content is None:
            return None
        # client_key : record { client_principal : principal; client_nonce : nat64 }, a transparent reference
        if pos >= size or p[pos] != 1:
            return None
        pos = read_length(p, size, pos + 1, &length)
        if pos < 0 or length > PRINCIPAL_MAX_LENGTH or size - pos - length < NONCE_SIZE:
            return None
        # The principal's bytes and the nonce that follows them identify the key (the length fixes the split).
        principal_start = pos
        pos += length + NONCE_SIZE
        ck_bytes = PyBytes_FromStringAndSize(<const char *>p + principal_start, pos - principal_start)
        if flat:
            PyList_Append(route_keys, ck_bytes)
            PyList_Append(keys, key)
            PyList_Append(contents, content)
            continue
        cached = PyDict_GetItem(_client_keys, ck_bytes)
        if cached is NULL:
            client_key = new_named(
                _ClientKey,
                (
                    Principal(PyBytes_FromStringAndSize(<const char *>p + principal_start, length)),
                    PyLong_FromUnsignedLongLong(read_u64_le(p + pos - NONCE_SIZE)),
                ),
            )
            if len(_client_keys) >= CLIENT_KEY_CACHE_SIZE:
                _client_keys.clear()
            PyDict_SetItem(_client_keys, ck_bytes, client_key)
        else:
            client_key = <object>cached
        PyList_Append(messages, new_named(_Message, (client_key, key, content)))

    cert = read_blob(p, size, &pos)
    if cert is None:
        return None
    tree = read_blob(p, size, &pos)
    if tree is None:
        return None

    present = eoq != EOQ_ABSENT
    if eoq == EOQ_OPT_BOOL:
        if pos >= size or p[pos] > 1:
            return None
        present = p[pos] == 1  # null reads as the end of the queue, like an absent field
        pos += 1
    end = True
    if present:
        if pos >= size or p[pos] > 1:
            return None
        end = p[pos] == 1
        pos += 1
    if pos != size:
        return None
    if flat:
        return new_named(
            _Polled,
            (
                route_keys, keys, contents,
                PyLong_FromUnsignedLongLong(first), PyLong_FromUnsignedLongLong(previous), consecutive,
                cert, tree, end,
            ),
        )
    return new_named(_Batch, (messages, cert, tree, end))


cdef object decode(object data, bint flat):
    """What ``decode_get_messages_result`` (``flat`` false) or ``decode_polled_batch`` returns for ``data``."""
    cdef const unsigned char *p
    cdef Py_ssize_t size, header_size
    cdef bytes header
    resolve_types()
    pure = _pure_flat if flat else _pure
    if not PyBytes_CheckExact(data):
        return pure(data)
    p = <const unsigned char *>PyBytes_AS_STRING(data)
    size = PyBytes_GET_SIZE(data)
    if size < 4 or memcmp(p, b"DIDL", 4) != 0:
        return pure(data)
    for header, eoq in _recent:
        header_size = PyBytes_GET_SIZE(header)
        if header_size <= size - 4 and memcmp(p + 4, PyBytes_AS_STRING(header), header_size) == 0:
            break
    else:
        found = _recognise(data)
        if found is None:
            return pure(data)
        header_end, eoq = found
        header = data[4:header_end]
        _recent.insert(0, (header, eoq))
        del _recent[RECENT_HEADERS:]
    result = decode_values(p, size, 4 + PyBytes_GET_SIZE(header), eoq, flat)
    if result is None:
        return pure(data)
    return result


def decode_get_messages_result(data):
    """Parse a ``ws_get_messages`` reply; an ``Err`` reply raises :class:`~icws_fast.errors.ProtocolError`.

    Same results and errors as the pure :func:`icws_fast.protocol.types.decode_get_messages_result`; see the
    module docstring for which replies are decoded here and which by the pure decoder.
    """
    return decode(data, False)


def decode_polled_batch(data):
    """A ``ws_get_messages`` reply read for the poller: same results and errors as the pure
    :func:`icws_fast.protocol.types.decode_polled_batch` (see the module docstring)."""
    return decode(data, True)


cdef inline bint certified_content(dict hashes, object key, object content):
    """Whether ``hashes[key]`` is the SHA-256 of ``content`` (exact bytes both; anything else is False)."""
    cdef uint8_t digest[32]
    cdef PyObject *certified
    if not (PyBytes_CheckExact(key) and PyBytes_CheckExact(content)):
        return False
    certified = PyDict_GetItem(hashes, key)
    if certified is NULL or not PyBytes_CheckExact(<object>certified) or PyBytes_GET_SIZE(<object>certified) != 32:
        return False
    sha256(PyBytes_AS_STRING(content), <size_t>PyBytes_GET_SIZE(content), NULL, 0, NULL, 0, digest)
    return memcmp(digest, PyBytes_AS_STRING(<object>certified), 32) == 0


cdef object _check_messages_pure = None


def check_messages(hashes, keys, contents):
    """Raise unless ``hashes`` certifies each ``(keys[i], contents[i])``: same results and errors as the pure
    :func:`icws_fast.protocol.certified.check_messages` (see the module docstring)."""
    global _check_messages_pure
    cdef Py_ssize_t i, n
    if _check_messages_pure is None:
        from icws_fast.protocol.certified import check_messages_pure

        _check_messages_pure = check_messages_pure
    if not (PyDict_CheckExact(hashes) and PyList_CheckExact(keys) and PyList_CheckExact(contents)):
        return _check_messages_pure(hashes, keys, contents)
    n = PyList_GET_SIZE(keys)
    if PyList_GET_SIZE(contents) != n:
        return _check_messages_pure(hashes, keys, contents)
    for i in range(n):
        if not certified_content(hashes, <object>PyList_GET_ITEM(keys, i), <object>PyList_GET_ITEM(contents, i)):
            return _check_messages_pure(hashes, keys, contents)
    return None


cdef object _route_shares_pure = None


def route_shares(routes, route_keys, keys, contents, hashes):
    """Share out one batch's messages to their recipients, checking each one handed out: same results and errors
    as the pure :func:`icws_fast.protocol.poller.route_shares` (see the module docstring)."""
    global _route_shares_pure
    cdef Py_ssize_t i, n
    cdef PyObject *found
    cdef object route, recipient, key, content
    cdef tuple share
    cdef dict shares = {}
    cdef list reached = []
    if _route_shares_pure is None:
        from icws_fast.protocol.poller import route_shares_pure

        _route_shares_pure = route_shares_pure
    if not (
        PyDict_CheckExact(routes) and PyList_CheckExact(route_keys) and PyList_CheckExact(keys)
        and PyList_CheckExact(contents) and (hashes is None or PyDict_CheckExact(hashes))
    ):
        return _route_shares_pure(routes, route_keys, keys, contents, hashes)
    n = PyList_GET_SIZE(route_keys)
    if PyList_GET_SIZE(keys) != n or PyList_GET_SIZE(contents) != n:
        return _route_shares_pure(routes, route_keys, keys, contents, hashes)
    for i in range(n):
        # Bounds-checked indexing: a recipient's __hash__ is Python code that may, in principle, shrink the lists.
        route = (<list>route_keys)[i]
        if not PyBytes_CheckExact(route):  # bytes hash without running Python code
            return _route_shares_pure(routes, route_keys, keys, contents, hashes)
        found = PyDict_GetItem(<dict>routes, route)
        if found is NULL:
            continue
        recipient = <object>found
        key = (<list>keys)[i]
        content = (<list>contents)[i]
        if hashes is not None and not certified_content(<dict>hashes, key, content):
            return _route_shares_pure(routes, route_keys, keys, contents, hashes)
        found = PyDict_GetItem(shares, recipient)
        if found is NULL:
            share = ([], [])
            PyDict_SetItem(shares, recipient, share)
            PyList_Append(reached, route)
        else:
            share = <tuple>found
        PyList_Append(<list>share[0], key)
        PyList_Append(<list>share[1], content)
    return shares, reached
