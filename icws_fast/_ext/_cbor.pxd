# cython: language_level=3
# C-level API of icws_fast._ext._cbor, for other Cython modules to cimport: decode one CBOR item from
# a buffer they hold (no bytes object needed), with the same results and CborError as decode().

cdef object decode_buffer(const unsigned char *data, Py_ssize_t size, Py_ssize_t max_depth)
