/* Argument conversion shared by the Cython extensions' hot paths. Included
 * by Cython-generated C, after Python.h. */
#ifndef HCLTDX_PYCONV_H
#define HCLTDX_PYCONV_H

#include <limits.h>
#include <pthread.h>
#include <stdint.h>

#define HCLTDX_LIKELY(x) __builtin_expect(!!(x), 1)
#define HCLTDX_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* An int (or int subclass) in 0..2**64-1 into *out: 0. Anything else: -1,
 * with no exception set; the caller's cold path names what was wrong. */
static inline int hcltdx_u64_of(PyObject *o, unsigned long long *out)
{
    unsigned long long v;
    if (!PyLong_Check(o))
        return -1;
#if PY_VERSION_HEX >= 0x030C0000
    /* Compact ints (below 2**62 in magnitude) from their digits; larger ones
     * go to CPython. */
    if (PyUnstable_Long_IsCompact((PyLongObject *)o)) {
        Py_ssize_t c = PyUnstable_Long_CompactValue((PyLongObject *)o);
        if (c < 0)
            return -1;
        *out = (unsigned long long)c;
        return 0;
    }
#elif PYLONG_BITS_IN_DIGIT == 30
    {
        /* CPython 3.10/3.11: |ob_size| digits of 30 bits, the sign in
         * ob_size's sign, 0 without digits. Every u64 has at most three
         * digits, the third below 16; so every int is decided here. */
        Py_ssize_t size = Py_SIZE(o);
        const digit *d = ((PyLongObject *)o)->ob_digit;
        switch (size) {
        case 0:
            *out = 0;
            return 0;
        case 1:
            *out = d[0];
            return 0;
        case 2:
            *out = (unsigned long long)d[0] | ((unsigned long long)d[1] << 30);
            return 0;
        case 3:
            if (d[2] >> 4)
                return -1; /* 2**64 or more */
            *out = (unsigned long long)d[0] | ((unsigned long long)d[1] << 30) |
                   ((unsigned long long)d[2] << 60);
            return 0;
        default:
            return -1; /* negative, or 2**90 or more */
        }
    }
#endif
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

/* The calling thread's id, the value PyThread_get_thread_ident() returns on
 * POSIX ((unsigned long)pthread_self()), without the call into libpython. */
static inline unsigned long hcltdx_thread_id(void)
{
    return (unsigned long)pthread_self();
}

/* The value of an int (a PyLong or a subclass: the caller has checked) in
 * 0..2**30-1 into *out: 1, read straight from a one-digit object. Anything
 * else: 0, with no exception set (larger values are for hcltdx_u64_of). */
static inline int hcltdx_long_small(PyObject *o, uint32_t *out)
{
#if PY_VERSION_HEX >= 0x030C0000
    if (PyUnstable_Long_IsCompact((PyLongObject *)o)) {
        Py_ssize_t v = PyUnstable_Long_CompactValue((PyLongObject *)o);
        if (v >= 0 && v < (1 << 30)) {
            *out = (uint32_t)v;
            return 1;
        }
    }
    return 0;
#else
    switch (Py_SIZE(o)) {
    case 0:
        *out = 0;
        return 1;
    case 1: /* one digit: below 2**PyLong_SHIFT <= 2**30 */
        *out = (uint32_t)((PyLongObject *)o)->ob_digit[0];
        return 1;
    default:
        return 0;
    }
#endif
}

#endif
