# cython: language_level=3
"""Compiled twin of :mod:`icws_fast.ic.hashtree`: ``reconstruct``, ``lookup_path``, ``read_witness`` and the
hash helpers.

Same signatures, results and errors as ``reconstruct_pure`` / ``lookup_path_pure``
(including the node checks and the ``MAX_NODE_DEPTH`` limit) and as the pure
``leaf_hash_pure`` / ``fork_hash_pure`` / ``labeled_hash_pure`` (which :class:`HashedTree`,
the devnet and the CDK call once per node they build). Node hashes are written into C
buffers on the stack, so reconstructing a tree allocates one bytes object (the root
hash) instead of a hashlib object and a digest per node.

``read_witness`` (a verifier reads one witness per certified batch) walks the tree's CBOR
bytes once: it checks each node's shape, hashes it, looks the label up in the root's
forest and collects the leaves of the forest found there, creating no object but the root
hash and those leaves. It answers only for the trees it reads with certainty (definite
lengths, one-byte node tags, the self-describe tag at the start only); anything else, valid
or not, goes to ``read_witness_pure``, which gives the canonical result or error.

SHA-256 is OpenSSL's, through its EVP interface (a build dependency: the libssl-dev
headers, linked with libcrypto; OpenSSL uses the CPU's SHA extensions). One digest
context is reused for every hash: a node's hash is computed only after its children's
are done, so no two hashes are ever in progress at once, and every caller holds the GIL.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport PyLong_AsLong, PyLong_CheckExact
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_CheckExact, PyTuple_GET_ITEM, PyTuple_GET_SIZE
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcmp, memcpy

from icws_fast.errors import HashTreeError


cdef extern from *:
    """
    #include <openssl/evp.h>
    /* SHA-256 fetched once: OpenSSL 3 looks the legacy EVP_sha256() up in its providers on every init. */
    static const EVP_MD *icws_sha256_md(void) {
    #if OPENSSL_VERSION_NUMBER >= 0x30000000L
        return EVP_MD_fetch(NULL, "SHA256", NULL);
    #else
        return EVP_sha256();
    #endif
    }
    """
    ctypedef struct EVP_MD
    ctypedef struct EVP_MD_CTX
    const EVP_MD *sha256_md "icws_sha256_md"() nogil
    EVP_MD_CTX *EVP_MD_CTX_new() nogil
    int EVP_DigestInit_ex(EVP_MD_CTX *ctx, const EVP_MD *type, void *engine) nogil
    int EVP_DigestUpdate(EVP_MD_CTX *ctx, const void *data, size_t n) nogil
    int EVP_DigestFinal_ex(EVP_MD_CTX *ctx, unsigned char *out, unsigned int *size) nogil


cdef const EVP_MD *SHA256 = sha256_md()
cdef EVP_MD_CTX *CTX = EVP_MD_CTX_new()
if SHA256 == NULL or CTX == NULL:
    raise ImportError("OpenSSL's SHA-256 is not available to icws_fast._ext._hashtree")

# Mirrors icws_fast.ic.hashtree (that module imports this one, so the values are repeated, not imported).
cdef enum:
    MAX_DEPTH = 256
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


cdef enum:
    # Inputs up to this size are hashed with one EVP update from a stack copy: every Fork and Empty node, and
    # the Labeled and Leaf nodes of IC trees but for big leaves. Each EVP call costs more than copying them.
    CONTIGUOUS = 256


cdef int sha256(const char *domain, size_t domain_len, const void *a, size_t a_len, const void *b, size_t b_len,
                uint8_t *out) except -1:
    """SHA-256 of ``domain`` followed by ``a`` and ``b`` (either may be empty) into the 32 bytes at ``out``."""
    cdef unsigned char buf[CONTIGUOUS]
    cdef size_t n = domain_len + a_len + b_len
    cdef bint ok = EVP_DigestInit_ex(CTX, SHA256, NULL)
    if n <= CONTIGUOUS:
        memcpy(buf, domain, domain_len)
        if a_len:
            memcpy(buf + domain_len, a, a_len)
        if b_len:
            memcpy(buf + domain_len + a_len, b, b_len)
        ok = ok and EVP_DigestUpdate(CTX, buf, n)
    else:
        ok = ok and EVP_DigestUpdate(CTX, domain, domain_len) and EVP_DigestUpdate(CTX, a, a_len)
        ok = ok and EVP_DigestUpdate(CTX, b, b_len)
    if not (ok and EVP_DigestFinal_ex(CTX, out, NULL)):
        raise MemoryError("OpenSSL's SHA-256 failed")
    return 0


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
    cdef uint8_t left[32]
    cdef uint8_t right[32]
    cdef int tag
    if depth <= 0:
        raise HashTreeError("hash tree nested too deeply")
    tag = node_tag(node)
    if tag == FORK:
        hash_node(<object>PyTuple_GET_ITEM(node, 1), left, depth - 1)
        hash_node(<object>PyTuple_GET_ITEM(node, 2), right, depth - 1)
        sha256(FORK_DOMAIN, 17, left, 32, right, 32, out)
    elif tag == LABELED:
        label = node_bytes(node, 1)
        hash_node(<object>PyTuple_GET_ITEM(node, 2), right, depth - 1)
        sha256(LABELED_DOMAIN, 20, PyBytes_AS_STRING(label), <size_t>PyBytes_GET_SIZE(label), right, 32, out)
    elif tag == LEAF:
        value = node_bytes(node, 1)
        sha256(LEAF_DOMAIN, 17, PyBytes_AS_STRING(value), <size_t>PyBytes_GET_SIZE(value), NULL, 0, out)
    elif tag == PRUNED:
        digest = node_bytes(node, 1)
        if PyBytes_GET_SIZE(digest) != 32:
            raise HashTreeError(f"a pruned hash is 32 bytes, got {PyBytes_GET_SIZE(digest)}")
        memcpy(out, PyBytes_AS_STRING(digest), 32)
    else:
        sha256(EMPTY_DOMAIN, 18, NULL, 0, NULL, 0, out)
    return 0


cdef bytes as_bytes(object value):
    """``value`` as bytes: itself when it is bytes, a copy of any other buffer (TypeError otherwise)."""
    if PyBytes_CheckExact(value):
        return <bytes>value
    return bytes(memoryview(value))


cdef bytes digest(const char *domain, size_t domain_len, bytes a, bytes b):
    """The hash of ``domain``, ``a`` and ``b`` (None: nothing) as a bytes object."""
    cdef uint8_t out[32]
    sha256(
        domain, domain_len,
        PyBytes_AS_STRING(a), <size_t>PyBytes_GET_SIZE(a),
        NULL if b is None else PyBytes_AS_STRING(b), 0 if b is None else <size_t>PyBytes_GET_SIZE(b),
        out,
    )
    return PyBytes_FromStringAndSize(<char *>out, 32)


def leaf_hash(value):
    """The hash of a Leaf holding ``value``."""
    return digest(LEAF_DOMAIN, 17, as_bytes(value), None)


def fork_hash(left_hash, right_hash):
    """The hash of a Fork whose children hash to ``left_hash`` and ``right_hash``."""
    return digest(FORK_DOMAIN, 17, as_bytes(left_hash), as_bytes(right_hash))


def labeled_hash(label, subtree_hash):
    """The hash of a Labeled node whose subtree hashes to ``subtree_hash`` (a ``str`` label is UTF-8)."""
    if isinstance(label, str):
        label = (<str>label).encode("utf-8")
    elif not isinstance(label, (bytes, bytearray, memoryview)):
        raise TypeError(f"a hash tree label is bytes or str, not {type(label).__name__}")
    return digest(LABELED_DOMAIN, 20, as_bytes(label), as_bytes(subtree_hash))


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


# -- read_witness ---------------------------------------------------------------------------------------------------

# The pure twin and the result type, resolved on first use (see ``result``).
cdef object _read_witness_pure = None
cdef object _Witness = None

cdef enum Role:
    # Where a node lies for read_witness: in the root's flattened forest (where the label is looked up), in the
    # flattened forest of the subtree found at the label (whose leaves are read), or elsewhere.
    IN_ROOT_FOREST
    IN_FOUND_FOREST
    ELSEWHERE

cdef struct Reader:
    const unsigned char *p
    Py_ssize_t size
    Py_ssize_t pos
    const unsigned char *label  # the label looked up in the root's forest
    Py_ssize_t label_len
    bint searching  # no labeled node of the root's forest at or above the label read yet
    bint ordered  # the labels of the found forest read so far increase
    const unsigned char *previous  # the last label of the found forest (NULL: none yet)
    Py_ssize_t previous_len
    const unsigned char *leaf  # the value of the last Leaf read
    Py_ssize_t leaf_len


cdef inline int compare(const unsigned char *a, Py_ssize_t na, const unsigned char *b, Py_ssize_t nb) noexcept:
    """Python's bytes order of two byte strings."""
    cdef int c = memcmp(a, b, na if na < nb else nb)
    if c:
        return c
    return (na > nb) - (na < nb)


cdef inline int read_argument(Reader *r, int major, uint64_t *out) noexcept:
    """The argument of the definite-length head of type ``major`` at the position, moving past it; -1 for any
    other head (or a truncated one)."""
    cdef unsigned char info
    cdef Py_ssize_t width, i
    cdef uint64_t value = 0
    if r.pos >= r.size or r.p[r.pos] >> 5 != major:
        return -1
    info = r.p[r.pos] & 0x1F
    r.pos += 1
    if info < 24:
        out[0] = info
        return 0
    if info > 27:
        return -1
    width = 1 << (info - 24)
    if width > r.size - r.pos:
        return -1
    for i in range(width):
        value = (value << 8) | r.p[r.pos + i]
    r.pos += width
    out[0] = value
    return 0


cdef inline int read_string(Reader *r, const unsigned char **start, Py_ssize_t *length) noexcept:
    """The definite-length byte string at the position, moving past it; -1 for anything else."""
    cdef uint64_t n
    if read_argument(r, 2, &n) < 0 or n > <uint64_t>(r.size - r.pos):
        return -1
    start[0] = r.p + r.pos
    length[0] = <Py_ssize_t>n
    r.pos += <Py_ssize_t>n
    return 0


cdef int read_node(Reader *r, int depth, Role role, dict leaves, uint8_t *out, int *tag) except -1:
    """Read the node at the position (``depth`` levels may still nest) and write its hash to ``out``, its tag to
    ``tag``; 0, or 1 when the fast path cannot tell (``read_witness_pure`` decides)."""
    cdef uint64_t n
    cdef uint8_t left[32]
    cdef uint8_t right[32]
    cdef const unsigned char *s
    cdef Py_ssize_t length
    cdef int child_tag, c
    cdef Role child_role
    # parse() refuses a node below MAX_DEPTH levels; a node tag is a one-byte unsigned integer.
    if depth <= 0 or read_argument(r, 4, &n) < 0 or r.pos >= r.size or r.p[r.pos] > PRUNED:
        return 1
    tag[0] = r.p[r.pos]
    r.pos += 1
    if <Py_ssize_t>n != ARITY[tag[0]]:
        return 1
    if tag[0] == FORK:
        if read_node(r, depth - 1, role, leaves, left, &child_tag) or read_node(r, depth - 1, role, leaves, right, &child_tag):
            return 1
        sha256(FORK_DOMAIN, 17, left, 32, right, 32, out)
    elif tag[0] == LABELED:
        if read_string(r, &s, &length) < 0:
            return 1
        child_role = ELSEWHERE
        if role == IN_ROOT_FOREST and r.searching:
            # find_label: the first label at or above the one looked up ends the search.
            c = compare(s, length, r.label, r.label_len)
            r.searching = False
            if c == 0:
                child_role = IN_FOUND_FOREST
            elif c < 0:
                r.searching = True
        elif role == IN_FOUND_FOREST:
            if r.previous != NULL and compare(s, length, r.previous, r.previous_len) <= 0:
                r.ordered = False
            r.previous, r.previous_len = s, length
        if read_node(r, depth - 1, child_role, leaves, right, &child_tag):
            return 1
        if role == IN_FOUND_FOREST and child_tag == LEAF:
            leaves[PyBytes_FromStringAndSize(<const char *>s, length)] = PyBytes_FromStringAndSize(
                <const char *>r.leaf, r.leaf_len
            )
        sha256(LABELED_DOMAIN, 20, s, <size_t>length, right, 32, out)
    elif tag[0] == LEAF:
        if read_string(r, &s, &length) < 0:
            return 1
        r.leaf, r.leaf_len = s, length
        sha256(LEAF_DOMAIN, 17, s, <size_t>length, NULL, 0, out)
    elif tag[0] == PRUNED:
        if read_string(r, &s, &length) < 0 or length != 32:
            return 1
        memcpy(out, s, 32)
    else:
        sha256(EMPTY_DOMAIN, 18, NULL, 0, NULL, 0, out)
    return 0


def read_witness(data, label):
    """The root hash and the leaves at ``label`` of a CBOR tree (see ``icws_fast.ic.hashtree.read_witness_pure``)."""
    global _read_witness_pure, _Witness
    cdef Reader r
    cdef uint8_t root[32]
    cdef int tag
    cdef dict leaves = {}
    if _Witness is None:
        from icws_fast.ic.hashtree import Witness, read_witness_pure

        _read_witness_pure, _Witness = read_witness_pure, Witness
    if not (PyBytes_CheckExact(data) and PyBytes_CheckExact(label)):
        return _read_witness_pure(data, label)
    r.p = <const unsigned char *>PyBytes_AS_STRING(data)
    r.size = PyBytes_GET_SIZE(data)
    r.pos = 0
    r.label = <const unsigned char *>PyBytes_AS_STRING(label)
    r.label_len = PyBytes_GET_SIZE(label)
    r.searching = True
    r.ordered = True
    r.previous = NULL
    r.previous_len = 0
    if r.size >= 3 and memcmp(r.p, b"\xd9\xd9\xf7", 3) == 0:  # the self-describe tag
        r.pos = 3
    if read_node(&r, MAX_DEPTH, IN_ROOT_FOREST, leaves, root, &tag) or r.pos != r.size:
        return _read_witness_pure(data, label)
    return _Witness(PyBytes_FromStringAndSize(<char *>root, 32), leaves, r.ordered)
