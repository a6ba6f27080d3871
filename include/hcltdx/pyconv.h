/* Argument conversion shared by the Cython extensions' hot paths. Included
 * by Cython-generated C, after Python.h. */
#ifndef HCLTDX_PYCONV_H
#define HCLTDX_PYCONV_H

#include <limits.h>

#define HCLTDX_LIKELY(x) __builtin_expect(!!(x), 1)
#define HCLTDX_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* An int (or int subclass) in 0..2**64-1 into *out: 0. Anything else: -1,
 * with no exception set; the caller's cold path names what was wrong. */
static inline int hcltdx_u64_of(PyObject *o, unsigned long long *out)
{
    unsigned long long v;
    if (!PyLong_Check(o))
        return -1;
#if ULONG_MAX == ULLONG_MAX
    /* Same range and errors; CPython's unsigned long conversion walks the
     * digits directly, where the long long one goes through a byte array
     * for every value above 2**30 (hundreds of instructions). */
    v = PyLong_AsUnsignedLong(o);
#else
    v = PyLong_AsUnsignedLongLong(o);
#endif
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear(); /* only OverflowError: negative or too large */
        return -1;
    }
    *out = v;
    return 0;
}

#endif
