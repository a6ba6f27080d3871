# Declarations of include/hcltdx/pyconv.h (hot-path argument conversion).

from libc.stdint cimport uint32_t
from cpython.object cimport PyObject

cdef extern from "hcltdx/pyconv.h":
    bint HCLTDX_LIKELY(bint) noexcept nogil
    bint HCLTDX_UNLIKELY(bint) noexcept nogil
    int hcltdx_u64_of(object o, unsigned long long *out) noexcept
    unsigned long hcltdx_thread_id() noexcept nogil
    int hcltdx_long_small(PyObject *o, uint32_t *out) noexcept nogil
