# Declarations of include/hcltdx/pyconv.h (hot-path argument conversion).

from libc.stdint cimport uint32_t, uint64_t
from cpython.object cimport PyObject, PyTypeObject

cdef extern from "hcltdx/pyconv.h":
    bint HCLTDX_LIKELY(bint) noexcept nogil
    bint HCLTDX_UNLIKELY(bint) noexcept nogil
    int hcltdx_u64_of(object o, unsigned long long *out) noexcept
    unsigned long hcltdx_thread_id() noexcept nogil
    object hcltdx_long_of_u64(unsigned long long v)
    # On a borrowed pointer (no reference is taken).
    int hcltdx_u30_of_p "hcltdx_u30_of" (PyObject *o, uint32_t *out) noexcept
    int hcltdx_u64_of_p "hcltdx_u64_of" (PyObject *o, unsigned long long *out) noexcept
    Py_ssize_t hcltdx_codes_of_items(PyObject **items, Py_ssize_t start, Py_ssize_t n,
                                     PyTypeObject *field_type, const uint64_t *hi,
                                     uint64_t *codes) noexcept nogil
