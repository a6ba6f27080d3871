/* Argument conversion shared by the Cython extensions' hot paths. Included
 * by Cython-generated C, after Python.h. */
#ifndef HCLTDX_PYCONV_H
#define HCLTDX_PYCONV_H

#define HCLTDX_LIKELY(x) __builtin_expect(!!(x), 1)
#define HCLTDX_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* An int (or int subclass) in 0..2**64-1 into *out: 0. Anything else: -1,
 * with no exception set; the caller's cold path names what was wrong. */
static inline int hcltdx_u64_of(PyObject *o, unsigned long long *out)
{
    unsigned long long v;
    if (!PyLong_Check(o))
        return -1;
    v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear(); /* only OverflowError: negative or too large */
        return -1;
    }
    *out = v;
    return 0;
}

#endif
