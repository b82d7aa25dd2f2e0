# cython: language_level=3
"""Compiled twin of :mod:`icws_fast.ic.hashtree`: ``reconstruct``, ``lookup_path`` and the hash helpers.

Same signatures, results and errors as ``reconstruct_pure`` / ``lookup_path_pure``
(including the node checks and the ``MAX_NODE_DEPTH`` limit) and as the pure
``leaf_hash`` / ``fork_hash`` / ``labeled_hash`` (which :class:`HashedTree`, the
devnet and the CDK call once per node they build). SHA-256 runs here in
C on stack buffers: a node's hash is written straight into its parent's hashing
state, so reconstructing a tree allocates one bytes object (the root hash) instead
of a hashlib object and a digest per node.

SHA-256 comes from the OpenSSL library that Python's own ``hashlib`` has already
loaded (found with ``dlopen(RTLD_NOLOAD)``, so no new dependency and no OpenSSL
headers at build time; OpenSSL uses the CPU's SHA extensions). When that library is
not found, or fails a known-answer test at import, a portable C SHA-256 (FIPS 180-4)
in this module is used instead. ``SHA256_BACKEND`` says which one is active.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport PyLong_AsLong, PyLong_CheckExact
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_CheckExact, PyTuple_GET_ITEM, PyTuple_GET_SIZE
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

from icws_fast.errors import HashTreeError


cdef extern from "<dlfcn.h>" nogil:
    void *dlopen(const char *filename, int flags)
    void *dlsym(void *handle, const char *symbol)
    int RTLD_NOW
    int RTLD_NOLOAD


# OpenSSL's SHA256_Init / SHA256_Update / SHA256_Final. The context is opaque here: SHA256_CTX is
# 112 bytes in OpenSSL 1.1 and 3.x (a stable public struct); 128 bytes leave a margin while keeping
# the frame of the recursive hash_node small (it bounds the C stack a deep tree can use).
ctypedef int (*ossl_init_t)(void *ctx) noexcept nogil
ctypedef int (*ossl_update_t)(void *ctx, const void *data, size_t n) noexcept nogil
ctypedef int (*ossl_final_t)(uint8_t *out, void *ctx) noexcept nogil

cdef ossl_init_t ossl_init = NULL
cdef ossl_update_t ossl_update = NULL
cdef ossl_final_t ossl_final = NULL


cdef union HashState:
    Sha256 soft
    uint64_t ossl[16]

# Mirrors icws_fast.ic.hashtree (that module imports this one, so the values are repeated, not imported).
cdef enum:
    MAX_NODE_DEPTH = 512
    EMPTY = 0
    FORK = 1
    LABELED = 2
    LEAF = 3
    PRUNED = 4

cdef const char *FORK_DOMAIN = b"\x10ic-hashtree-fork"
cdef const char *LABELED_DOMAIN = b"\x13ic-hashtree-labeled"
cdef const char *LEAF_DOMAIN = b"\x10ic-hashtree-leaf"
cdef const char *EMPTY_DOMAIN = b"\x11ic-hashtree-empty"
cdef Py_ssize_t[5] ARITY = [1, 3, 3, 2, 2]

cdef uint32_t[64] K = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]
cdef uint32_t[8] H0 = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
]


cdef inline uint32_t rotr(uint32_t x, int n) noexcept nogil:
    return (x >> n) | (x << (32 - n))


cdef void sha_compress(Sha256 *s, const uint8_t *block) noexcept nogil:
    cdef uint32_t w[64]
    cdef uint32_t a, b, c, d, e, f, g, h, t1, t2
    cdef int i
    for i in range(16):
        w[i] = ((<uint32_t>block[4 * i]) << 24) | ((<uint32_t>block[4 * i + 1]) << 16) \
            | ((<uint32_t>block[4 * i + 2]) << 8) | (<uint32_t>block[4 * i + 3])
    for i in range(16, 64):
        w[i] = (w[i - 16] + (rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3)) + w[i - 7]
                + (rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10)))
    a = s.h[0]; b = s.h[1]; c = s.h[2]; d = s.h[3]
    e = s.h[4]; f = s.h[5]; g = s.h[6]; h = s.h[7]
    for i in range(64):
        t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i]
        t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))
        h = g; g = f; f = e; e = d + t1
        d = c; c = b; b = a; a = t1 + t2
    s.h[0] += a; s.h[1] += b; s.h[2] += c; s.h[3] += d
    s.h[4] += e; s.h[5] += f; s.h[6] += g; s.h[7] += h


cdef void sha_init(Sha256 *s) noexcept nogil:
    memcpy(s.h, H0, sizeof(H0))
    s.buflen = 0
    s.total = 0


cdef void sha_update(Sha256 *s, const uint8_t *data, size_t n) noexcept nogil:
    cdef size_t take
    s.total += n
    if s.buflen:
        take = 64 - s.buflen
        if take > n:
            take = n
        memcpy(s.buf + s.buflen, data, take)
        s.buflen += take
        data += take
        n -= take
        if s.buflen < 64:
            return
        sha_compress(s, s.buf)
        s.buflen = 0
    while n >= 64:
        sha_compress(s, data)
        data += 64
        n -= 64
    if n:
        memcpy(s.buf, data, n)
        s.buflen = n


cdef void sha_final(Sha256 *s, uint8_t *out) noexcept nogil:
    cdef uint64_t bits = s.total * 8
    cdef int i
    s.buf[s.buflen] = 0x80
    s.buflen += 1
    if s.buflen > 56:
        while s.buflen < 64:
            s.buf[s.buflen] = 0
            s.buflen += 1
        sha_compress(s, s.buf)
        s.buflen = 0
    while s.buflen < 56:
        s.buf[s.buflen] = 0
        s.buflen += 1
    for i in range(8):
        s.buf[56 + i] = <uint8_t>(bits >> (56 - 8 * i))
    sha_compress(s, s.buf)
    for i in range(8):
        out[4 * i] = <uint8_t>(s.h[i] >> 24)
        out[4 * i + 1] = <uint8_t>(s.h[i] >> 16)
        out[4 * i + 2] = <uint8_t>(s.h[i] >> 8)
        out[4 * i + 3] = <uint8_t>s.h[i]


cdef inline void h_init(HashState *s) noexcept nogil:
    if ossl_init != NULL:
        ossl_init(s.ossl)
    else:
        sha_init(&s.soft)


cdef inline void h_update(HashState *s, const uint8_t *data, size_t n) noexcept nogil:
    if ossl_update != NULL:
        ossl_update(s.ossl, data, n)
    else:
        sha_update(&s.soft, data, n)


cdef inline void h_final(HashState *s, uint8_t *out) noexcept nogil:
    if ossl_final != NULL:
        ossl_final(out, s.ossl)
    else:
        sha_final(&s.soft, out)


cdef inline void h_bytes(HashState *s, object value) noexcept:
    # Callers have checked PyBytes_CheckExact(value).
    h_update(s, <const uint8_t *>PyBytes_AS_STRING(value), <size_t>PyBytes_GET_SIZE(value))


cdef bint load_openssl():
    """Bind OpenSSL's SHA-256 from the libcrypto already in the process; False (unbound) if unusable."""
    global ossl_init, ossl_update, ossl_final
    cdef void *lib = NULL
    cdef HashState s
    cdef uint8_t out[32]
    import _hashlib  # noqa: F401  (makes sure Python's libcrypto is loaded)

    for name in (b"libcrypto.so.3", b"libcrypto.so.1.1", b"libcrypto.so"):
        lib = dlopen(name, RTLD_NOW | RTLD_NOLOAD)
        if lib != NULL:
            break
    if lib == NULL:
        return False
    ossl_init = <ossl_init_t>dlsym(lib, b"SHA256_Init")
    ossl_update = <ossl_update_t>dlsym(lib, b"SHA256_Update")
    ossl_final = <ossl_final_t>dlsym(lib, b"SHA256_Final")
    if ossl_init != NULL and ossl_update != NULL and ossl_final != NULL:
        h_init(&s)
        h_update(&s, <const uint8_t *>b"abc", 3)
        h_final(&s, out)
        if out[:32] == bytes.fromhex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"):
            return True
    ossl_init = NULL
    ossl_update = NULL
    ossl_final = NULL
    return False


SHA256_BACKEND = "openssl" if load_openssl() else "builtin"


def set_sha256_backend(name):
    """Switch SHA-256 to ``"builtin"`` or ``"openssl"`` (tests use it to cover both); returns the backend.

    Asking for ``"openssl"`` when it cannot be loaded raises ValueError. Not thread-safe: call it
    only while no reconstruction runs.
    """
    global SHA256_BACKEND, ossl_init, ossl_update, ossl_final
    if name == "builtin":
        ossl_init = NULL
        ossl_update = NULL
        ossl_final = NULL
    elif name != "openssl" or not load_openssl():
        raise ValueError(f"SHA-256 backend {name!r} is not available")
    SHA256_BACKEND = name
    return name


cdef int node_tag(object node) except -1:
    """The tag of a well-formed node; HashTreeError exactly where the pure ``_tag`` raises it."""
    cdef Py_ssize_t n
    cdef long tag
    if not PyTuple_CheckExact(node) or PyTuple_GET_SIZE(node) == 0:
        raise HashTreeError("a hash tree node is a non-empty tuple")
    n = PyTuple_GET_SIZE(node)
    first = <object>PyTuple_GET_ITEM(node, 0)
    if not PyLong_CheckExact(first) or first < EMPTY or first > PRUNED:
        raise HashTreeError(f"malformed hash tree node (tag {first!r}, {n} elements)")
    tag = PyLong_AsLong(first)
    if n != ARITY[tag]:
        raise HashTreeError(f"malformed hash tree node (tag {first!r}, {n} elements)")
    return <int>tag


cdef inline object node_bytes(object node, Py_ssize_t index):
    value = <object>PyTuple_GET_ITEM(node, index)
    if not PyBytes_CheckExact(value):
        raise HashTreeError(f"expected bytes in a hash tree node, got {type(value).__name__}")
    return value


cdef int hash_node(object node, uint8_t *out, int depth) except -1:
    """Write the 32-byte hash of ``node`` to ``out``."""
    cdef HashState s
    cdef uint8_t left[32]
    cdef uint8_t right[32]
    cdef int tag
    if depth <= 0:
        raise HashTreeError("hash tree nested too deeply")
    tag = node_tag(node)
    if tag == FORK:
        hash_node(<object>PyTuple_GET_ITEM(node, 1), left, depth - 1)
        hash_node(<object>PyTuple_GET_ITEM(node, 2), right, depth - 1)
        h_init(&s)
        h_update(&s, <const uint8_t *>FORK_DOMAIN, 17)
        h_update(&s, left, 32)
        h_update(&s, right, 32)
        h_final(&s, out)
    elif tag == LABELED:
        label = node_bytes(node, 1)
        hash_node(<object>PyTuple_GET_ITEM(node, 2), right, depth - 1)
        h_init(&s)
        h_update(&s, <const uint8_t *>LABELED_DOMAIN, 20)
        h_bytes(&s, label)
        h_update(&s, right, 32)
        h_final(&s, out)
    elif tag == LEAF:
        value = node_bytes(node, 1)
        h_init(&s)
        h_update(&s, <const uint8_t *>LEAF_DOMAIN, 17)
        h_bytes(&s, value)
        h_final(&s, out)
    elif tag == PRUNED:
        digest = node_bytes(node, 1)
        if PyBytes_GET_SIZE(digest) != 32:
            raise HashTreeError(f"a pruned hash is 32 bytes, got {PyBytes_GET_SIZE(digest)}")
        memcpy(out, PyBytes_AS_STRING(digest), 32)
    else:
        h_init(&s)
        h_update(&s, <const uint8_t *>EMPTY_DOMAIN, 18)
        h_final(&s, out)
    return 0


cdef bytes as_bytes(object value):
    """``value`` as bytes: itself when it is bytes, a copy of any other buffer (TypeError otherwise)."""
    if PyBytes_CheckExact(value):
        return <bytes>value
    return bytes(memoryview(value))


cdef bytes digest3(const char *domain, size_t domain_len, bytes a, bytes b):
    cdef HashState s
    cdef uint8_t out[32]
    h_init(&s)
    h_update(&s, <const uint8_t *>domain, domain_len)
    h_bytes(&s, a)
    if b is not None:
        h_bytes(&s, b)
    h_final(&s, out)
    return PyBytes_FromStringAndSize(<char *>out, 32)


def leaf_hash(value):
    """The hash of a Leaf holding ``value``."""
    return digest3(LEAF_DOMAIN, 17, as_bytes(value), None)


def fork_hash(left_hash, right_hash):
    """The hash of a Fork whose children hash to ``left_hash`` and ``right_hash``."""
    return digest3(FORK_DOMAIN, 17, as_bytes(left_hash), as_bytes(right_hash))


def labeled_hash(label, subtree_hash):
    """The hash of a Labeled node whose subtree hashes to ``subtree_hash`` (a ``str`` label is UTF-8)."""
    if isinstance(label, str):
        label = (<str>label).encode("utf-8")
    elif not isinstance(label, (bytes, bytearray, memoryview)):
        raise TypeError(f"a hash tree label is bytes or str, not {type(label).__name__}")
    return digest3(LABELED_DOMAIN, 20, as_bytes(label), as_bytes(subtree_hash))


def reconstruct(node):
    """The root hash of ``node`` (see ``icws_fast.ic.hashtree.reconstruct_pure``)."""
    cdef uint8_t out[32]
    hash_node(node, out, MAX_NODE_DEPTH)
    return PyBytes_FromStringAndSize(<char *>out, 32)


cdef int compare_labels(object a, object b) noexcept:
    """memcmp order of two bytes objects, shorter first on a common prefix (Python's bytes order)."""
    cdef Py_ssize_t na = PyBytes_GET_SIZE(a)
    cdef Py_ssize_t nb = PyBytes_GET_SIZE(b)
    cdef int c = memcmp(PyBytes_AS_STRING(a), PyBytes_AS_STRING(b), na if na < nb else nb)
    if c:
        return c
    return (na > nb) - (na < nb)


# Status strings and the result type come from the pure module, resolved on first use: importing
# it here at load time would be circular when this module is imported first.
cdef object _LookupResult = None


cdef object result(str status, object value=None):
    global _LookupResult
    if _LookupResult is None:
        from icws_fast.ic.hashtree import LookupResult

        _LookupResult = LookupResult
    return _LookupResult(status, value)


cdef object find_label(object label, object tree, bint *found):
    """``find_label(label, flatten_forks(tree))``: the subtree (``found`` set), or a LookupResult otherwise."""
    cdef PyObject *stack[MAX_NODE_DEPTH + 1]
    cdef Py_ssize_t top = 1
    cdef Py_ssize_t count = 0
    cdef int prev_tag = -1
    cdef int tag, c
    stack[0] = <PyObject *>tree
    while top:
        top -= 1
        node = <object>stack[top]
        tag = node_tag(node)
        if tag == FORK:
            if top >= MAX_NODE_DEPTH:
                raise HashTreeError("hash tree nested too deeply")
            # Borrowed references: every node stays alive through the tree that holds it.
            stack[top] = PyTuple_GET_ITEM(node, 2)
            stack[top + 1] = PyTuple_GET_ITEM(node, 1)
            top += 2
            continue
        if tag == EMPTY:
            continue
        if tag == LABELED:
            c = compare_labels(node_bytes(node, 1), label)
            if c == 0:
                found[0] = True
                return <object>PyTuple_GET_ITEM(node, 2)
            if c > 0:
                return result("Absent" if prev_tag == -1 or prev_tag == LABELED else "Unknown")
        count += 1
        prev_tag = tag
    if count == 0 or prev_tag == LABELED or (count == 1 and prev_tag == LEAF):
        return result("Absent")
    return result("Unknown")


def lookup_path(tree, path):
    """The spec's ``lookup_path`` (see ``icws_fast.ic.hashtree.lookup_path_pure``)."""
    cdef int tag
    cdef bint found
    node = tree
    for label in path:
        if isinstance(label, str):
            label = (<str>label).encode("utf-8")
        elif not PyBytes_CheckExact(label):
            if not isinstance(label, (bytes, bytearray, memoryview)):
                raise TypeError(f"a hash tree label is bytes or str, not {type(label).__name__}")
            label = bytes(label)
        found = False
        answer = find_label(label, node, &found)
        if not found:
            return answer
        node = answer
    tag = node_tag(node)
    if tag == LEAF:
        return result("Found", node_bytes(node, 1))
    if tag == EMPTY:
        return result("Absent")
    if tag == PRUNED:
        return result("Unknown")
    return result("Error")
