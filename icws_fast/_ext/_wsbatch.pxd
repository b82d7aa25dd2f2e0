# cython: language_level=3
# C-level API of icws_fast._ext._wsbatch, for other Cython modules to cimport: the values of a
# ws_get_messages reply whose header has already been recognised, decoded from a buffer they hold.

# How a recognised header types the ``is_end_of_queue`` field of the Ok record.
cdef enum EndOfQueue:
    EOQ_ABSENT    # CDK < 0.3.1: no such field, which reads as the end of the queue
    EOQ_BOOL      # ``bool``, as the CDKs send it
    EOQ_OPT_BOOL  # ``opt bool``, as the Rust gateway declares it


cdef object decode_values(const unsigned char *data, Py_ssize_t size, Py_ssize_t pos, EndOfQueue eoq)
