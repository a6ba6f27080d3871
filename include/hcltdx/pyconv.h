/* Argument conversion shared by the Cython extensions' hot paths. Included
 * by Cython-generated C, after Python.h. */
#ifndef HCLTDX_PYCONV_H
#define HCLTDX_PYCONV_H

#include <limits.h>
#include <stddef.h>
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

/* A new reference to the int of value v (NULL with MemoryError set if it
 * cannot be allocated). CPython 3.10/3.11: an int above the small-int cache
 * is built as CPython's own constructor builds it (PyObject_Malloc of the
 * header and 1-3 30-bit digits, least significant first, no leading zero
 * digit; the header as PyObject_InitVar sets it), without its digit-counting
 * loop; values up to 256 come from CPython's cache. Elsewhere:
 * PyLong_FromUnsignedLongLong. */
static inline PyObject *hcltdx_long_of_u64(unsigned long long v)
{
#if PY_VERSION_HEX < 0x030C0000 && PYLONG_BITS_IN_DIGIT == 30
    if (HCLTDX_LIKELY(v > 256)) {
        Py_ssize_t n = v < (1ULL << 30) ? 1 : v < (1ULL << 60) ? 2 : 3;
        PyLongObject *o = (PyLongObject *)PyObject_Malloc(offsetof(PyLongObject, ob_digit) +
                                                          (size_t)n * sizeof(digit));
        if (HCLTDX_UNLIKELY(o == NULL))
            return PyErr_NoMemory();
        o->ob_digit[0] = (digit)(v & PyLong_MASK);
        if (n > 1)
            o->ob_digit[1] = (digit)((v >> PyLong_SHIFT) & PyLong_MASK);
        if (n > 2)
            o->ob_digit[2] = (digit)(v >> (2 * PyLong_SHIFT));
#if !defined(Py_REF_DEBUG) && !defined(Py_TRACE_REFS)
        /* What PyObject_InitVar does for a static type in a release build:
         * size, type, one reference. (Its tracemalloc step gives a traced
         * block the current traceback, which a block PyObject_Malloc has just
         * returned already has.) */
        Py_SET_SIZE(o, n);
        Py_SET_TYPE(o, &PyLong_Type);
        Py_SET_REFCNT(o, 1);
        return (PyObject *)o;
#else
        return (PyObject *)PyObject_InitVar((PyVarObject *)o, &PyLong_Type, n);
#endif
    }
    return PyLong_FromLong((long)v);
#else
    return PyLong_FromUnsignedLongLong(v);
#endif
}

/* The value of an int (a PyLong or a subclass: the caller has checked) in
 * 0..2**30-1 into *out: 1, read from its one digit (none for 0). Anything
 * else: 0, with no exception set (the caller's slow path decides). */
static inline int hcltdx_u30_of(PyObject *o, uint32_t *out)
{
#if PY_VERSION_HEX >= 0x030C0000
    if (PyUnstable_Long_IsCompact((PyLongObject *)o)) {
        Py_ssize_t c = PyUnstable_Long_CompactValue((PyLongObject *)o);
        if (c >= 0 && c < (1 << 30)) {
            *out = (uint32_t)c;
            return 1;
        }
    }
    return 0;
#else
    Py_ssize_t size = Py_SIZE(o);
    if ((size_t)size > 1)
        return 0; /* negative, or 2**30 or more */
    *out = size ? (uint32_t)((PyLongObject *)o)->ob_digit[0] : 0;
    return 1;
#endif
}

/* The calling thread's id, the value PyThread_get_thread_ident() returns on
 * POSIX ((unsigned long)pthread_self()), without the call into libpython.
 * On x86-64 Linux the thread pointer (%fs:0, which the TLS ABI has point at
 * itself) is the thread's descriptor, which glibc and musl return from
 * pthread_self(): one load, no call. hcltdx._core checks the two agree when
 * it is imported. */
static inline unsigned long hcltdx_thread_id(void)
{
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__) && \
    __GNUC__ >= 11
    return (unsigned long)__builtin_thread_pointer();
#else
    return (unsigned long)pthread_self();
#endif
}

/* Field codes of the items [start, n) of a list's or tuple's item array:
 * each item whose type is `field_type` or exactly int, with a value whose
 * bits 15-63 and bit 0 are clear, becomes codes[i] = raw | hi[raw >> 13].
 * Returns the index of the first item that is anything else (for the
 * caller's checks and error), or n when all were converted. No Python code
 * runs and no reference changes hands: the items are borrowed. */
static inline Py_ssize_t hcltdx_codes_of_items(PyObject *const *items, Py_ssize_t start,
                                               Py_ssize_t n, PyTypeObject *field_type,
                                               const uint64_t *hi, uint64_t *restrict codes)
{
    for (Py_ssize_t i = start; i < n; i++) {
        PyObject *o = items[i];
        PyTypeObject *t = Py_TYPE(o);
        uint32_t raw;
        if (HCLTDX_UNLIKELY(t != field_type && t != &PyLong_Type))
            return i;
        if (HCLTDX_UNLIKELY(!hcltdx_u30_of(o, &raw) || (raw & ~(uint32_t)0x7FFE)))
            return i;
        codes[i] = raw | hi[raw >> 13];
    }
    return n;
}


#endif
