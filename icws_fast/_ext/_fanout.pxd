# Compiled twin of icws_fast.gateway.fanout: C-level helpers other Cython modules may cimport.

cdef Py_ssize_t cbor_head_size(unsigned long long n) noexcept
cdef Py_ssize_t write_cbor_head(unsigned char *out, int major, unsigned long long n) noexcept
