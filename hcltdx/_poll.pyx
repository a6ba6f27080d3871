# cython: language_level=3
"""Batch VMCS access, polling, snapshots and tdcall replay over the core.

Everything here loops in C over the same backend table the core uses, so it
runs unchanged over the simulator, the stand-in device and a real device.
The public entry points are reached through :class:`hcltdx.TdxRunner`
(``read_vmcs_batch``, ``poll_vmcs``, ``snapshot``, ``recorder``) and
:meth:`hcltdx.Hcl.replay`.
"""

cimport cython
from cpython.exc cimport PyErr_CheckSignals
from cpython.long cimport PyLong_Check, PyLong_CheckExact, PyLong_AsUnsignedLongLong
from libc.errno cimport errno, EINTR, EPROTO, ENOMEM
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int32_t
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memcpy, memcmp, memset
from posix.mman cimport mmap, munmap, MAP_FAILED, PROT_READ, PROT_WRITE, MAP_PRIVATE, MAP_ANONYMOUS
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

from hcltdx.includes.abi cimport mshv_tdcall, tdx_vp_context
from hcltdx.includes.backend cimport hcltdx_backend_ops
cimport numpy as cnp
from hcltdx._core cimport (Hcl, TdxRunner, _Page, trace_entry, trace_ring, hcl_from_ops,
                          io_init, now_ns, transport, vmcs_code, hcltdx_code_hi, backend_error,
                          set_batch_impls, runner_ready)

import functools
import operator
import os

import numpy as np

from hcltdx import abi as _abi
from hcltdx.errors import (BatchError, BatchInterrupted, HclError, PollInterrupted, RecorderFull, ReplayDivergence,
                           VmcsAccessError)
from hcltdx.protocol import GuestVtl
from hcltdx.tdx import TdCallLeaf
from hcltdx.vmx import VmcsField

cnp.import_array()

cdef object _VTL0 = GuestVtl.VTL0
cdef object _VTL1 = GuestVtl.VTL1
cdef type _VmcsFieldType = VmcsField
# The batch loops read a VmcsField member's value straight from the int object.
if not issubclass(VmcsField, int):
    raise ImportError("hcltdx.vmx.VmcsField must be an int subclass")

from hcltdx.includes.pyconv cimport (hcltdx_u64_of, hcltdx_codes_of_items,
                                     HCLTDX_LIKELY, HCLTDX_UNLIKELY)
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_INCREF

cdef extern from "Python.h":
    bint PyList_CheckExact(object o)
    bint PyTuple_CheckExact(object o)
    Py_ssize_t Py_SIZE(object o)
    PyTypeObject PyLong_Type
    # The borrowed items of an exact list or tuple.
    PyObject **_seq_items "PySequence_Fast_ITEMS" (object o)
    PyTypeObject *_type_of "Py_TYPE" (PyObject *o)

cdef extern from "numpy/arrayobject.h":
    # Declared with untyped pointers: numpy's .pxd leaves it out.
    object _np_new_from_descr "PyArray_NewFromDescr" (void *subtype, void *descr, int nd,
                                                       cnp.npy_intp *dims, cnp.npy_intp *strides,
                                                       void *data, int flags, void *obj)

__all__ = [
    "BatchError",
    "PollInterrupted",
    "BatchInterrupted",
    "RecorderFull",
    "ReplayDivergence",
    "Recorder",
    "ReplayState",
    "PRIVATE_REGS_DTYPE",
    "poll_dtype",
    "snapshot_dtype",
    "read_vmcs_batch",
    "write_vmcs_batch",
    "poll_vmcs",
    "snapshot",
    "recorder",
    "replay",
    "field_label",
]

cdef extern from "<time.h>" nogil:
    int clock_nanosleep(int clock_id, int flags, const timespec *request, timespec *remain)
    int TIMER_ABSTIME

cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    int pthread_mutex_init(pthread_mutex_t *m, void *attr)
    int pthread_mutex_destroy(pthread_mutex_t *m)
    int pthread_mutex_lock(pthread_mutex_t *m)
    int pthread_mutex_unlock(pthread_mutex_t *m)

cdef enum:
    LEAF_VP_RD = 9
    LEAF_VP_WR = 10

cdef enum:
    OUT_OK = 0
    OUT_TDX = 1       # a failing TDX status (rax)
    OUT_ERRNO = 2     # the transport failed (errno)
    OUT_SLICE = 3     # time slice over: let Python check signals
    OUT_FULL = 4      # poll buffer full: grow it

cdef uint64_t SLICE_NS = 50000000          # leave the nogil loop this often
cdef uint64_t PROGRESS_NS = 100000000      # call progress() at most this often
cdef uint64_t SPIN_NS = 60000              # finish a wait by spinning (timer slack)
cdef Py_ssize_t POLL_CHUNK = 65536         # initial rows when samples is large
# In-process backends keep the GIL for up to one chunk: 256 calls hold it for
# microseconds, while a release and reacquire costs about 400 instructions per
# batch (6 per field at 64 fields).
cdef Py_ssize_t NOGIL_BATCH = 256          # in-process backends: release above this
cdef Py_ssize_t BATCH_CHUNK = 256          # fields between two signal checks (GIL released)

cdef uint32_t VIRTUAL_APIC_PAGE_ENCODING = 0x2012


# ---- the batch loop ------------------------------------------------------------

cdef struct batch:
    const hcltdx_backend_ops *ops
    void *ctx
    trace_ring *tring
    uint32_t vp
    uint64_t leaf
    Py_ssize_t n
    const uint64_t *codes     # width masks come from the codes (code_mask)
    const uint64_t *masks     # VP.WR only
    const uint64_t *values    # VP.WR only
    uint64_t *out
    Py_ssize_t index          # next field; the failing one on error
    uint64_t rax
    int err
    bint signalled


# A field code (vmcs_code) keeps all there is to know about its field: the
# encoding in bits 0-31, the size (1: 16-bit, 2: 32-bit, 3: 64-bit or natural
# width) in bits 32-34 and the VMCS (36: VTL0, 44: VTL1) in bits 56-63.

cdef inline uint32_t code_raw(uint64_t code) noexcept nogil:
    return <uint32_t>code


cdef inline int code_vtl(uint64_t code) noexcept nogil:
    return 1 if (code >> 56) == 44 else 0


cdef extern from *:
    """
    /* Width mask by the width bits (13-14) of a VMCS encoding: 16-bit,
     * 64-bit, 32-bit, natural width (docs/tdx-abi.md 7.4). */
    static const uint64_t hcltdx_width_masks[4] = {
        0xFFFFull, 0xFFFFFFFFFFFFFFFFull, 0xFFFFFFFFull, 0xFFFFFFFFFFFFFFFFull};
    """
    const uint64_t hcltdx_width_masks[4]


cdef inline uint64_t code_mask(uint64_t code) noexcept nogil:
    """The width mask of a field code (its encoding's width bits)."""
    return hcltdx_width_masks[(code >> 13) & 3]


cdef inline int _batch_loop(batch *b, trace_ring *tring, bint write) noexcept nogil:
    """Fields b.index..n-1 with one leaf; a NULL ``tring`` (a constant at the
    call sites below) drops the trace test out of the loop. EINTR rebuilds
    the same call from the codes and values and retries it (a half-done
    write must not be repeated by Python), remembered in b.signalled."""
    cdef mshv_tdcall io
    cdef int err
    cdef const uint64_t *c = b.codes + b.index
    cdef const uint64_t *end = b.codes + b.n
    cdef uint64_t *o = b.out + b.index
    cdef const hcltdx_backend_ops *ops = b.ops
    cdef void *ctx = b.ctx
    cdef uint32_t vp = b.vp
    while c < end:
        if write:
            io_init(&io, LEAF_VP_WR, 0, c[0], b.values[c - b.codes], b.masks[c - b.codes])
        else:
            io_init(&io, LEAF_VP_RD, 0, c[0], 0, 0)
        err = transport(ops, ctx, tring, vp, &io)
        if HCLTDX_UNLIKELY(err != 0):
            if err == EINTR:
                b.signalled = True
                continue
            b.index = c - b.codes
            b.err = err
            return OUT_ERRNO
        if HCLTDX_UNLIKELY((io.rax >> 32) != 0):
            b.index = c - b.codes
            b.rax = io.rax
            return OUT_TDX
        # c[0] read again rather than kept across the call: one register
        # fewer to save in the loop.
        o[0] = io.r8 & code_mask(c[0])
        c += 1
        o += 1
    b.index = b.n
    return OUT_OK


cdef int _batch_run(batch *b) noexcept nogil:
    """Runs fields b.index..n-1 (see _batch_loop), the leaf and the trace
    ring tested once."""
    if b.leaf == LEAF_VP_RD:
        if b.tring == NULL:
            return _batch_loop(b, NULL, False)
        return _batch_loop(b, b.tring, False)
    if b.tring == NULL:
        return _batch_loop(b, NULL, True)
    return _batch_loop(b, b.tring, True)


# ---- field lists ------------------------------------------------------------------

cdef int _vtl_of(object vtl) except -1:
    if vtl is _VTL0:
        return 0
    if vtl is _VTL1:
        return 1
    if PyLong_Check(vtl) and not isinstance(vtl, bool):
        if vtl == 0:
            return 0
        if vtl == 1:
            return 1
    raise ValueError(f"vtl must be GuestVtl.VTL0 or GuestVtl.VTL1 (0 or 1), got {vtl!r}")


def field_label(raw):
    """Column name of a VMCS field: its catalogue name or ``0x%04x``."""
    name = VmcsField._by_value.get(int(raw))
    return name if name is not None else f"0x{int(raw):04x}"


cdef int _bad_raw(object f, Py_ssize_t i) except -1:
    shown = f"{f!r} (index {i})"
    if isinstance(f, bool) or not (PyLong_Check(f) or isinstance(f, np.integer)):
        raise TypeError(f"fields[{i}] must be a VmcsField or an int encoding, not {type(f).__name__}")
    if f < 0:
        raise ValueError(f"VMCS field {shown} is negative")
    # Bits 15-31 of an encoding are reserved; bit 0 selects the high half of
    # a 64-bit field, which TDG.VP.RD/WR do not address.
    if f > 0x7FFF:
        raise ValueError(f"VMCS field {shown} is out of range: encodings have bits 15-31 clear")
    raise ValueError(f"VMCS field {shown} has access_high set: TDG.VP.RD/WR address "
                     f"64-bit fields as a whole")


cdef inline bint _raw_ok(uint64_t raw) noexcept nogil:
    """Bits 15-63 and bit 0 (access_high) clear."""
    return (raw & ~<uint64_t>0x7FFE) == 0


cdef enum:
    INLINE_CODES = 64          # fields a codebuf holds without malloc

cdef struct codebuf:
    uint64_t *codes            # small, or malloc()ed for more than INLINE_CODES
    Py_ssize_t n
    uint64_t small[INLINE_CODES]


cdef inline void _codebuf_init(codebuf *cb) noexcept:
    cb.codes = cb.small
    cb.n = 0


cdef inline void _codebuf_free(codebuf *cb) noexcept:
    if cb.codes != cb.small:
        free(cb.codes)
    cb.codes = cb.small


cdef inline int _codebuf_alloc(codebuf *cb, Py_ssize_t n) except -1:
    if HCLTDX_UNLIKELY(n > INLINE_CODES):
        _codebuf_grow(cb, n)
    cb.n = n
    return 0


cdef int _codebuf_grow(codebuf *cb, Py_ssize_t n) except -1:
    if <size_t>n > (<size_t>-1) // sizeof(uint64_t):
        raise MemoryError()
    cb.codes = <uint64_t *>malloc(n * sizeof(uint64_t))
    if cb.codes == NULL:
        cb.codes = cb.small
        raise MemoryError()
    return 0


cdef int _bad_fields() except -1:
    raise TypeError("fields must be a sequence of VmcsField/int or a uint32 array")


cdef object _u32_fields(object fields):
    """A numpy array of fields that is not already a contiguous 1-d uint32
    array, checked and converted with numpy (the cold path)."""
    arr = fields
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise TypeError("fields must be a 1-d integer array or a sequence of VmcsField/int")
    if arr.size and (arr.min() < 0 or arr.max() > 0xFFFFFFFF):
        i = int(np.nonzero((arr < 0) | (arr > 0xFFFFFFFF))[0][0])
        _bad_raw(int(arr[i]), i)
    return np.array(arr, dtype=np.uint32, order="C")   # a native, aligned copy


cdef int _slow_field(uint64_t *codes, Py_ssize_t i, object f, const uint64_t *hi) except -1:
    """fields[i] when it is not a plain int or a VmcsField in range."""
    cdef unsigned long long raw
    if type(f) is _VmcsFieldType or PyLong_CheckExact(f):
        return _bad_raw(f, i)
    if PyLong_Check(f) and not isinstance(f, bool):
        if 0 <= f <= 0x7FFF:
            raw = PyLong_AsUnsignedLongLong(f)
            if _raw_ok(raw):
                codes[i] = raw | hi[raw >> 13]
                return 0
    elif isinstance(f, np.integer) and 0 <= f <= 0x7FFF:
        raw = int(f)
        if _raw_ok(raw):
            codes[i] = raw | hi[raw >> 13]
            return 0
    return _bad_raw(f, i)


cdef int _fill_codes(codebuf *cb, object fields, int vtl) except -1:
    """``fields`` (a sequence of VmcsField/ints or an integer array), all
    checked, as field codes of ``vtl`` in ``cb`` (which the caller frees with
    _codebuf_free whatever happens)."""
    cdef Py_ssize_t i, n
    cdef uint32_t raw
    # A checked encoding has bits 15-31 clear, so raw >> 13 is its width and
    # its code is raw | hi[raw >> 13] (vmcs_code's table).
    cdef const uint64_t *hi = hcltdx_code_hi[vtl]
    cdef uint64_t *codes
    cdef const uint32_t *src
    cdef cnp.ndarray a
    cdef PyObject **items
    cdef PyTypeObject *field_type = <PyTypeObject *>_VmcsFieldType
    if cnp.PyArray_Check(fields):
        a = <cnp.ndarray>fields
        # Anything but a 1-d, C-contiguous, aligned uint32 array in native
        # byte order goes through numpy first.
        if HCLTDX_UNLIKELY(cnp.PyArray_TYPE(a) != cnp.NPY_UINT32 or cnp.PyArray_NDIM(a) != 1
                           or not cnp.PyArray_ISCARRAY_RO(a)):
            a = <cnp.ndarray>_u32_fields(fields)
        n = cnp.PyArray_DIM(a, 0)
        _codebuf_alloc(cb, n)
        src = <const uint32_t *>cnp.PyArray_DATA(a)
        codes = cb.codes
        for i in range(n):
            raw = src[i]
            if HCLTDX_UNLIKELY(not _raw_ok(raw)):
                _bad_raw(int(raw), i)
            codes[i] = raw | hi[raw >> 13]
        return 0
    if PyList_CheckExact(fields) or PyTuple_CheckExact(fields):
        seq = fields
    elif isinstance(fields, (str, bytes)):
        return _bad_fields()
    else:
        try:
            seq = list(fields)
        except TypeError:
            raise TypeError("fields must be a sequence of VmcsField/int or a uint32 array") from None
    n = Py_SIZE(seq)
    _codebuf_alloc(cb, n)
    codes = cb.codes
    items = _seq_items(seq)
    i = 0
    while True:
        # VmcsField members and plain ints in range are converted by one C
        # loop over the borrowed items (no Python code runs in it); it stops
        # at the first item anything else must look at.
        i = hcltdx_codes_of_items(items, i, n, field_type, hi, codes)
        if HCLTDX_LIKELY(i == n):
            return 0
        f = <object>items[i]
        _slow_field(codes, i, f, hi)
        items = _seq_again(seq, n, "fields")
        i += 1


cdef PyObject **_seq_again(object seq, Py_ssize_t n, str name) except NULL:
    """The items of an exact list or tuple after Python code ran, which may
    have changed a list (its size, and where its items are)."""
    if HCLTDX_UNLIKELY(Py_SIZE(seq) != n):
        raise RuntimeError(f"{name} changed size while being checked")
    return _seq_items(seq)


@cython.final
cdef class _Codes:
    """Checked field codes kept past one call (polling, snapshots); one VTL
    per entry, so a list may mix both VMCSs."""
    cdef codebuf cb
    cdef uint64_t *codes
    cdef Py_ssize_t n

    def __cinit__(self):
        _codebuf_init(&self.cb)
        self.codes = self.cb.codes

    def __dealloc__(self):
        _codebuf_free(&self.cb)

    cdef int _alloc(self, Py_ssize_t n) except -1:
        _codebuf_alloc(&self.cb, n)
        self.codes = self.cb.codes
        self.n = n
        return 0

    cdef tuple raw_tuple(self):
        return _raw_tuple_of(self.codes, self.n)


cdef tuple _raw_tuple_of(const uint64_t *codes, Py_ssize_t n):
    return tuple([code_raw(codes[i]) for i in range(n)])


cdef _Codes _codes_for(object fields, int vtl):
    """``fields``, all checked, as field codes of ``vtl`` (see _fill_codes)."""
    cdef _Codes c = _Codes.__new__(_Codes)
    _fill_codes(&c.cb, fields, vtl)
    c.codes = c.cb.codes
    c.n = c.cb.n
    return c


cdef _Codes _codes_mixed(tuple raws, tuple vtls):
    cdef _Codes c = _Codes.__new__(_Codes)
    cdef Py_ssize_t i
    c._alloc(len(raws))
    for i in range(len(raws)):
        c.codes[i] = vmcs_code(raws[i], vtls[i])
    return c


cdef tuple _raw_tuple(object fields):
    cdef codebuf cb
    _codebuf_init(&cb)
    try:
        _fill_codes(&cb, fields, 0)
        return _raw_tuple_of(cb.codes, cb.n)
    finally:
        _codebuf_free(&cb)


# ---- running a batch under the runner's rules --------------------------------

cdef int _signals(batch *b, object res) except -1:
    """Runs signal handlers; with ``res`` (the batch's output array), Ctrl-C
    becomes BatchInterrupted carrying the b.index values done."""
    try:
        PyErr_CheckSignals()
    except KeyboardInterrupt as e:
        if res is None:
            raise
        raise BatchInterrupted(b.index, res[:b.index].copy(), b.n) from e
    return 0


cdef int _run_batch(TdxRunner runner, batch *b, bint release, object res) except -1:
    """Runs ``b`` for ``runner`` (which the caller has _enter()ed), releasing
    the GIL around the loop when asked. Returns OUT_OK/OUT_TDX/OUT_ERRNO.
    Signals are handled between chunks and after the loop (see _signals)."""
    cdef Hcl hcl = runner.hcl
    cdef int out
    cdef Py_ssize_t total = b.n
    # Converting the fields may have run Python code that closed the Hcl.
    if HCLTDX_UNLIKELY(hcl.ops == NULL):
        hcl._check_open()
    b.ops = hcl.ops
    b.ctx = hcl.ctx
    b.tring = hcl.tring
    b.vp = runner.vp
    b.signalled = False
    if not release:
        out = _batch_run(b)
    else:
        # In chunks, so that Ctrl-C stops a long batch within one chunk: a
        # KeyboardInterrupt leaves b.index at the first field not done.
        runner.busy = True
        hcl.inflight += 1
        try:
            while True:
                if total - b.index > BATCH_CHUNK:
                    b.n = b.index + BATCH_CHUNK
                with nogil:
                    out = _batch_run(b)
                b.n = total
                if out != OUT_OK or b.index >= total:
                    break
                _signals(b, res)
        finally:
            b.n = total
            hcl.inflight -= 1
            runner.busy = False
    if HCLTDX_UNLIKELY(b.signalled):
        _signals(b, res)
    return out


cdef object _batch_failure(TdxRunner runner, batch *b, const uint64_t *codes, object values,
                           str what):
    cdef Py_ssize_t i = b.index
    field = VmcsField(int(code_raw(codes[i])))
    vtl = code_vtl(codes[i])
    if b.err:
        explained = backend_error(runner.hcl, b.err)
        if explained is not None:
            return explained
        name = field_label(field)
        return OSError(b.err, f"MSHV_VTL_TDCALL ({what} of {name}, vp {runner.vp}, batch index {i}) "
                              f"failed on {runner.hcl.backend}: {os.strerror(b.err)}")
    return BatchError(b.rax, b.leaf, index=i, values=values, vp=runner.vp, field=field,
                      vtl=vtl, total=b.n)


cdef inline bint _release_for(Hcl hcl, Py_ssize_t n) noexcept:
    return hcl.ops != NULL and (hcl.ops.may_block or n > NOGIL_BATCH)


cdef cnp.dtype _U64 = np.dtype(np.uint64)


cdef inline object _new_u64(cnp.npy_intp n):
    """An uninitialized 1-d uint64 array (numpy's C API only)."""
    Py_INCREF(_U64)  # PyArray_NewFromDescr steals the descriptor
    return _np_new_from_descr(<void *>cnp.ndarray, <void *>_U64, 1, &n, NULL, NULL, 0, NULL)


cdef object _u64_array(object a, Py_ssize_t n, str name, const uint64_t *codes):
    """``a`` as a contiguous uint64 array of length n, each value checked
    against the width of its field."""
    cdef Py_ssize_t i
    cdef unsigned long long one
    cdef const uint64_t *mv
    cdef uint64_t *dst
    cdef Py_ssize_t m
    cdef PyObject **items
    cdef PyObject *item
    if cnp.PyArray_Check(a):
        if (cnp.PyArray_TYPE(<cnp.ndarray>a) == cnp.NPY_UINT64 and cnp.PyArray_NDIM(<cnp.ndarray>a) == 1
                and cnp.PyArray_ISCARRAY_RO(<cnp.ndarray>a)):
            out = a   # 1-d, C-contiguous, aligned, native byte order
        else:
            arr = <object>a
            if arr.ndim != 1 or arr.dtype.kind not in "iu":
                raise TypeError(f"{name} must be a 1-d integer array or a sequence of ints")
            if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
                raise ValueError(f"{name} must be non-negative")
            out = np.array(arr, dtype=np.uint64, order="C")   # a native, aligned copy
    else:
        vals = a if PyList_CheckExact(a) or PyTuple_CheckExact(a) else list(a)
        m = Py_SIZE(vals)
        out = _new_u64(m)
        dst = <uint64_t *>cnp.PyArray_DATA(<cnp.ndarray>out)
        items = _seq_items(vals)
        for i in range(m):
            item = items[i]   # borrowed: no Python code runs on the fast path
            if HCLTDX_LIKELY(_type_of(item) == &PyLong_Type and hcltdx_u64_of(<object>item, &one) == 0):
                dst[i] = one  # a plain int in range, converted in C
                continue
            v = <object>item
            if not (PyLong_Check(v) or isinstance(v, np.integer)) or isinstance(v, bool):
                raise TypeError(f"{name}[{i}] must be an int, not {type(v).__name__}")
            if v < 0 or v > 0xFFFFFFFFFFFFFFFF:
                raise ValueError(f"{name}[{i}] must be in 0..2**64-1, got {v!r}")
            if not (PyLong_Check(v) and hcltdx_u64_of(v, &one) == 0):
                one = PyLong_AsUnsignedLongLong(int(v))
            dst[i] = one
            items = _seq_again(vals, m, name)
    if cnp.PyArray_DIM(<cnp.ndarray>out, 0) != n:
        raise ValueError(f"{name} has {out.shape[0]} entries for {n} fields")
    mv = <const uint64_t *>cnp.PyArray_DATA(<cnp.ndarray>out)
    for i in range(n):
        if HCLTDX_UNLIKELY(mv[i] & ~code_mask(codes[i])):
            raw = int(code_raw(codes[i]))
            raise ValueError(
                f"{name}[{i}] = {mv[i]:#x} does not fit the {VmcsField(raw).width_bits}-bit "
                f"field {field_label(raw)}")
    return out


cdef int _check_out(object out, Py_ssize_t n) except -1:
    if (not cnp.PyArray_Check(out) or cnp.PyArray_TYPE(<cnp.ndarray>out) != cnp.NPY_UINT64
            or cnp.PyArray_NDIM(<cnp.ndarray>out) != 1):
        raise TypeError("out must be a 1-d uint64 array")
    if not cnp.PyArray_ISCARRAY(<cnp.ndarray>out):
        raise ValueError("out must be C-contiguous and writable")
    if cnp.PyArray_DIM(<cnp.ndarray>out, 0) != n:
        raise ValueError(f"out has {out.shape[0]} entries for {n} fields")
    return 0


cdef inline void _batch_start(batch *b, uint64_t leaf, codebuf *cb, object res) noexcept:
    """A batch of ``leaf`` over the checked codes in ``cb``, results into the
    uint64 array ``res`` (_run_batch fills in the backend)."""
    b.leaf = leaf
    b.n = cb.n
    b.index = 0
    b.codes = cb.codes
    b.out = <uint64_t *>cnp.PyArray_DATA(<cnp.ndarray>res)
    b.err = 0
    b.rax = 0


cdef object _read_batch(TdxRunner runner, object vtl, object fields, object out):
    """read_vmcs_batch, also reached from TdxRunner.read_vmcs_batch without
    a Python-level call (set_batch_impls)."""
    cdef batch b
    cdef codebuf cb
    cdef int rc
    cdef Py_ssize_t n
    if HCLTDX_UNLIKELY(not runner_ready(runner)):
        runner._enter()
    cdef int v = _vtl_of(vtl)
    _codebuf_init(&cb)
    try:
        _fill_codes(&cb, fields, v)
        n = cb.n
        if out is None:
            res = _new_u64(n)
        else:
            _check_out(out, n)
            res = out
        if n == 0:
            return res
        _batch_start(&b, LEAF_VP_RD, &cb, res)
        rc = _run_batch(runner, &b, _release_for(runner.hcl, n), res)
        if HCLTDX_UNLIKELY(rc != OUT_OK):
            raise _batch_failure(runner, &b, cb.codes, res[:b.index].copy(), "VP.RD")
        return res
    finally:
        _codebuf_free(&cb)


cdef object _write_batch(TdxRunner runner, object vtl, object fields, object masks,
                         object values):
    """write_vmcs_batch (see _read_batch)."""
    cdef batch b
    cdef codebuf cb
    cdef int rc
    cdef Py_ssize_t n
    if HCLTDX_UNLIKELY(not runner_ready(runner)):
        runner._enter()
    cdef int v = _vtl_of(vtl)
    _codebuf_init(&cb)
    try:
        _fill_codes(&cb, fields, v)
        n = cb.n
        m = _u64_array(masks, n, "masks", cb.codes)
        vals = _u64_array(values, n, "values", cb.codes)
        res = _new_u64(n)
        if n == 0:
            return res
        _batch_start(&b, LEAF_VP_WR, &cb, res)
        b.masks = <const uint64_t *>cnp.PyArray_DATA(<cnp.ndarray>m)
        b.values = <const uint64_t *>cnp.PyArray_DATA(<cnp.ndarray>vals)
        rc = _run_batch(runner, &b, _release_for(runner.hcl, n), res)
        if HCLTDX_UNLIKELY(rc != OUT_OK):
            raise _batch_failure(runner, &b, cb.codes, res[:b.index].copy(), "VP.WR")
        return res
    finally:
        _codebuf_free(&cb)


def read_vmcs_batch(TdxRunner runner not None, vtl, fields, out=None):
    """Read every field of ``fields`` (VmcsField/ints or a uint32 array) of
    ``vtl`` in one C loop; returns a uint64 array (``out`` if given), 16- and
    32-bit values zero-extended. Every field is checked before the first
    tdcall. A failing status raises :class:`BatchError` (``out`` holds the
    values read before the failing field)."""
    return _read_batch(runner, vtl, fields, out)


def write_vmcs_batch(TdxRunner runner not None, vtl, fields, masks, values):
    """Write ``values`` under ``masks`` into ``fields`` of ``vtl`` in one C
    loop; returns the previous values (uint64 array). 16/32-bit fields need
    masks and values that fit their width; all is checked before the first
    tdcall. A failing status raises :class:`BatchError`: the fields before
    ``index`` were written and ``values`` holds their previous values."""
    return _write_batch(runner, vtl, fields, masks, values)


set_batch_impls(_read_batch, _write_batch)



# ---- polling ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=256)
def _poll_dtype(tuple raws):
    names = ["t_ns"] + [field_label(r) for r in raws]
    if len(set(names)) != len(names):
        seen = set()
        for r in raws:
            if r in seen:
                raise ValueError(f"VMCS field {field_label(r)} is listed twice")
            seen.add(r)
        raise ValueError("a VMCS field is named t_ns")
    return np.dtype([(n, "<u8") for n in names])


def poll_dtype(fields):
    """The structured dtype :func:`poll_vmcs` returns for ``fields``."""
    return _poll_dtype(_raw_tuple(fields))


cdef struct poll_state:
    batch b
    uint64_t *rows            # row r at rows + r * stride: t_ns, then one u64 per field
    Py_ssize_t stride
    Py_ssize_t capacity       # rows the buffer holds
    Py_ssize_t samples
    Py_ssize_t taken
    Py_ssize_t recorded
    uint64_t interval
    uint64_t next_t
    bint changes_only


cdef bint _wait_until(uint64_t deadline, uint64_t slice_end, bint *signalled) noexcept nogil:
    """Waits for ``deadline``, giving up at ``slice_end``; True once reached."""
    cdef uint64_t target = deadline if deadline < slice_end else slice_end
    cdef uint64_t now = now_ns()
    cdef timespec ts
    if now < target and target - now > SPIN_NS:
        ts.tv_sec = (target - SPIN_NS) // 1000000000
        ts.tv_nsec = (target - SPIN_NS) % 1000000000
        if clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR:
            signalled[0] = True
            return False
    while now_ns() < target:
        pass
    return target == deadline


cdef int _poll_run(poll_state *p, uint64_t slice_end) noexcept nogil:
    cdef uint64_t now, missed
    cdef uint64_t *row
    cdef int out
    while p.taken < p.samples:
        if p.recorded >= p.capacity:
            return OUT_FULL
        if p.interval:
            if not _wait_until(p.next_t, slice_end, &p.b.signalled):
                return OUT_SLICE
        now = now_ns()
        row = p.rows + p.recorded * p.stride
        row[0] = now
        p.b.out = row + 1
        p.b.index = 0
        out = _batch_run(&p.b)
        if out != OUT_OK:
            return out
        p.taken += 1
        if not (p.changes_only and p.recorded > 0
                and memcmp(row + 1, row + 1 - p.stride, p.b.n * sizeof(uint64_t)) == 0):
            p.recorded += 1
        if p.interval:
            # Fixed rate; slots missed while late are skipped, not bunched.
            p.next_t += p.interval
            if p.next_t <= now:
                missed = (now - p.next_t) // p.interval + 1
                p.next_t += missed * p.interval
        # Done is done: no extra trip through Python (nor a progress call
        # with done == total before the final one) when time runs out.
        if p.b.signalled or (now >= slice_end and p.taken < p.samples):
            return OUT_SLICE
    return OUT_OK


cdef object _checked_count(object value, str name):
    if not (PyLong_Check(value) or isinstance(value, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0 or value > 0x7FFFFFFFFFFFFFFF:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return int(value)


def poll_vmcs(TdxRunner runner not None, vtl, fields, samples, interval_ns=0, out=None, *,
              progress=None, changes_only=False):
    """Sample ``fields`` of ``vtl`` ``samples`` times, one sample every
    ``interval_ns`` (0: back to back; fixed rate, late slots skipped), in a C
    loop without the GIL. Returns a structured array: ``t_ns`` (CLOCK_MONOTONIC
    at the start of each sample) and one uint64 column per field, named by
    the catalogue (``0x%04x`` outside it).

    ``changes_only``: keep a row only when a field differs from the last
    kept row (the first is always kept); the result holds the kept rows.
    ``out``: a 1-d array of :func:`poll_dtype` with at least ``samples``
    rows, filled in place (the result is a view of it). ``progress(done,
    total)`` is called with the GIL at most ten times a second and once at
    the end.

    The loop leaves the nogil section every 50 ms to run signal handlers:
    Ctrl-C raises :class:`PollInterrupted` (a KeyboardInterrupt) carrying the
    rows taken so far. A failing status raises :class:`BatchError`.
    """
    cdef poll_state p
    cdef uint64_t[::1] rows
    cdef uint64_t last_progress, slice_end
    cdef int rc
    runner._enter()
    cdef int v = _vtl_of(vtl)
    cdef _Codes c = _codes_for(fields, v)
    n_samples = _checked_count(samples, "samples")
    interval = _checked_count(interval_ns, "interval_ns")
    if progress is not None and not callable(progress):
        raise TypeError("progress must be callable")
    dt = _poll_dtype(c.raw_tuple())
    if out is not None:
        if not isinstance(out, np.ndarray) or out.dtype != dt or out.ndim != 1:
            raise TypeError(f"out must be a 1-d array of dtype {dt}")
        # A packed record dtype counts as aligned for numpy whatever the
        # address; the C loop stores uint64s, so the address is what matters.
        if (not (out.flags.c_contiguous and out.flags.writeable)
                or <size_t>cnp.PyArray_DATA(<cnp.ndarray>out) % sizeof(uint64_t)):
            raise ValueError("out must be C-contiguous, 8-byte aligned and writable")
        if out.shape[0] < n_samples:
            raise ValueError(f"out holds {out.shape[0]} rows for {n_samples} samples")
        buf = out
    else:
        buf = np.empty(min(n_samples, POLL_CHUNK), dtype=dt)
    hcl = runner.hcl
    hcl._check_open()
    memset(&p, 0, sizeof(poll_state))
    p.b.leaf = LEAF_VP_RD
    p.b.n = c.n
    p.b.codes = c.codes
    p.b.ops = hcl.ops
    p.b.ctx = hcl.ctx
    p.b.tring = hcl.tring
    p.b.vp = runner.vp
    p.stride = c.n + 1
    p.samples = n_samples
    p.interval = interval
    p.changes_only = bool(changes_only)
    p.next_t = now_ns()
    last_progress = p.next_t
    runner.busy = True
    hcl.inflight += 1
    try:
        while True:
            if buf.shape[0]:
                rows = buf.view(np.uint64)
                p.rows = &rows[0]
            p.capacity = buf.shape[0]
            with nogil:
                rc = _poll_run(&p, now_ns() + SLICE_NS)
            if rc == OUT_OK:
                break
            if rc == OUT_TDX or rc == OUT_ERRNO:
                err = _batch_failure(runner, &p.b, c.codes, buf.view(np.uint64)[
                    p.recorded * p.stride + 1:p.recorded * p.stride + 1 + p.b.index].copy(), "VP.RD")
                err.samples = buf[:p.recorded].copy()
                raise err
            if rc == OUT_FULL:
                bigger = np.empty(min(n_samples, 2 * buf.shape[0]), dtype=dt)
                bigger[:p.recorded] = buf[:p.recorded]
                buf = bigger
            p.b.signalled = False
            try:
                PyErr_CheckSignals()
                # Ctrl-C often lands while the callback runs Python code.
                if progress is not None and now_ns() - last_progress >= PROGRESS_NS:
                    progress(p.taken, n_samples)
                    last_progress = now_ns()
            except KeyboardInterrupt as e:
                kept = buf[:p.recorded] if out is not None else buf[:p.recorded].copy()
                raise PollInterrupted(kept, p.taken) from e
    finally:
        hcl.inflight -= 1
        runner.busy = False
    if progress is not None:
        progress(p.taken, n_samples)
    if out is not None:
        return out[:p.recorded]
    if p.recorded == buf.shape[0]:
        return buf
    return buf[:p.recorded].copy()


# ---- snapshots ----------------------------------------------------------------------------

PRIVATE_REGS_DTYPE = np.dtype({
    "names": ["rflags", "rip", "ssp", "rvi", "svi", "pad", "msr_kernel_gs_base", "msr_star",
              "msr_lstar", "msr_sfmask", "msr_xss", "msr_tsc_aux", "vp_entry_flags"],
    "formats": ["<u8", "<u8", "<u8", "u1", "u1", ("u1", (6,)), "<u8", "<u8", "<u8", "<u8", "<u8",
                "<u8", "<u8"],
    "offsets": [0, 8, 16, 24, 25, 26, 32, 40, 48, 56, 64, 72, 80],
    "itemsize": 88,
})
"""The 12 fields of :class:`hcltdx.TdxPrivateRegs` as the snapshot holds them
(the padding is a named field so that copies and files keep every byte)."""

cdef struct private_regs:
    uint64_t rflags, rip, ssp
    uint8_t rvi, svi
    uint8_t pad[6]
    uint64_t msr_kernel_gs_base, msr_star, msr_lstar, msr_sfmask, msr_xss, msr_tsc_aux
    uint64_t vp_entry_flags

assert sizeof(private_regs) == PRIVATE_REGS_DTYPE.itemsize
assert (sizeof(tdx_vp_context) == _abi.TDX_VP_CONTEXT_DTYPE.itemsize
        == _abi.TDX_VP_CONTEXT_TSC_DEADLINE_DTYPE.itemsize)


cdef object _readable_catalogue():
    return tuple(int(f) for f in VmcsField.catalogue() if f.read_mask)


cdef object _vmcs_key(object vmcs):
    """``vmcs`` normalized to (vtl0 encodings, vtl1 encodings), None where absent."""
    if vmcs is None:
        return (None, None)
    if isinstance(vmcs, str):
        if vmcs != "all":
            raise ValueError(f"vmcs must be a list of fields, a {{vtl: fields}} dict or 'all', got {vmcs!r}")
        every = _readable_catalogue()
        return (every, every)
    if isinstance(vmcs, dict):
        per = [None, None]
        for vtl, fl in vmcs.items():
            v = _vtl_of(vtl)
            per[v] = _readable_catalogue() if isinstance(fl, str) and fl == "all" else \
                _raw_tuple(fl)
        return tuple(per)
    raws = _raw_tuple(vmcs)
    return (raws, raws)


@cython.final
cdef class _SnapSpec:
    """One snapshot configuration: its dtype, where each part lands in a
    record and the VMCS field codes of both VTLs in one array."""
    cdef readonly object dtype
    cdef readonly object key
    cdef Py_ssize_t off_t, off_context, off_apic0, off_apic1, off_priv, off_vmcs
    cdef _Codes codes

    def __init__(self, *args):
        raise TypeError("_SnapSpec is not supposed to be instantiated from Python")

    @property
    def fields(self):
        """{vtl: [VmcsField, ...]} of the VMCS sub-records."""
        return {v: [VmcsField(r) for r in fl] for v, fl in enumerate(self.key[3:5])
                if fl is not None}


@functools.lru_cache(maxsize=64)
def _spec(bint context, bint apic, bint priv, object vmcs0, object vmcs1, bint tsc):
    cdef _SnapSpec s = _SnapSpec.__new__(_SnapSpec)
    names, formats, offsets = ["t_ns"], ["<u8"], [0]
    off = 8
    s.off_t = 0
    s.off_context = s.off_apic0 = s.off_apic1 = s.off_priv = s.off_vmcs = -1

    def add(name, fmt):
        nonlocal off
        names.append(name)
        formats.append(fmt)
        offsets.append(off)
        o = off
        off += np.dtype(fmt).itemsize
        return o

    if context:
        s.off_context = add("context", _abi.TDX_VP_CONTEXT_TSC_DEADLINE_DTYPE if tsc
                            else _abi.TDX_VP_CONTEXT_DTYPE)
    if apic:
        s.off_apic0 = add("apic_vtl0", _abi.APIC_PAGE_DTYPE)
        s.off_apic1 = add("apic_vtl1", _abi.APIC_PAGE_DTYPE)
    if priv:
        s.off_priv = add("private_regs", PRIVATE_REGS_DTYPE)
    raws, vtls = [], []
    s.off_vmcs = off
    for v, fl in ((0, vmcs0), (1, vmcs1)):
        if fl is not None:
            sub = _poll_dtype(tuple(fl)).descr[1:]
            add(f"vmcs_vtl{v}", np.dtype(sub) if sub else np.dtype({"names": [], "formats": [], "itemsize": 0}))
            raws.extend(fl)
            vtls.extend([v] * len(fl))
    s.codes = _codes_mixed(tuple(raws), tuple(vtls))
    s.dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": off})
    s.key = (context, apic, priv, vmcs0, vmcs1, tsc)
    return s


cdef _SnapSpec _spec_for(TdxRunner runner, bint context, bint apic, bint private_regs,
                         object vmcs):
    k = _vmcs_key(vmcs)
    return _spec(bool(context), bool(apic), bool(private_regs), k[0], k[1],
                 bool(runner.hcl.tsc_deadline_layout))


def snapshot_dtype(*, context=True, apic=True, private_regs=True, vmcs=None,
                   tsc_deadline_layout=False):
    """The record dtype of :func:`snapshot` for a configuration (cached)."""
    k = _vmcs_key(vmcs)
    return _spec(bool(context), bool(apic), bool(private_regs), k[0], k[1],
                 bool(tsc_deadline_layout)).dtype


cdef int _fill(TdxRunner runner, _SnapSpec s, char *slot) except -1:
    """Copy the runner's state into one record at ``slot`` (caller _enter()ed)."""
    cdef batch b
    cdef private_regs pr
    cdef tdx_vp_context *c
    runner._mapped()
    c = runner.tdx
    (<uint64_t *>(slot + s.off_t))[0] = now_ns()
    if s.off_context >= 0:
        memcpy(slot + s.off_context, c, sizeof(tdx_vp_context))
    if s.off_apic0 >= 0:
        memcpy(slot + s.off_apic0, runner._apic0.addr, 4096)
        memcpy(slot + s.off_apic1, runner._apic1.addr, 4096)
    if s.off_priv >= 0:
        memset(&pr, 0, sizeof(pr))
        pr.rflags = c.gpr_list.rflags
        pr.rip = c.gpr_list.rip
        pr.ssp = c.gpr_list.ssp
        pr.rvi = c.gpr_list.rvi
        pr.svi = c.gpr_list.svi
        pr.msr_kernel_gs_base = c.vp_state.msr_kernel_gs_base
        pr.msr_star = c.vp_state.msr_star
        pr.msr_lstar = c.vp_state.msr_lstar
        pr.msr_sfmask = c.vp_state.msr_sfmask
        pr.msr_xss = c.vp_state.msr_xss
        pr.msr_tsc_aux = c.vp_state.msr_tsc_aux
        pr.vp_entry_flags = c.entry_rcx
        memcpy(slot + s.off_priv, &pr, sizeof(pr))
    if s.codes.n == 0:
        return 0
    memset(&b, 0, sizeof(batch))
    b.leaf = LEAF_VP_RD
    b.n = s.codes.n
    b.codes = s.codes.codes
    b.out = <uint64_t *>(slot + s.off_vmcs)
    if _run_batch(runner, &b, _release_for(runner.hcl, s.codes.n), None) != OUT_OK:
        done = np.frombuffer((<char *>b.out)[:b.index * 8], dtype=np.uint64).copy() \
            if b.index else np.empty(0, dtype=np.uint64)
        raise _batch_failure(runner, &b, s.codes.codes, done, "VP.RD")
    return 0


def snapshot(TdxRunner runner not None, *, context=True, apic=True, private_regs=True,
             vmcs=None):
    """One 0-d record of the VP's state: ``t_ns``, then what was chosen:
    ``context`` (the 1024-byte TDX VP context, in the Hcl's layout variant),
    ``apic_vtl0``/``apic_vtl1``, ``private_regs`` and ``vmcs_vtl0``/
    ``vmcs_vtl1`` (one uint64 per field). ``vmcs``: a list of fields (read
    for both VTLs), a ``{vtl: fields}`` dict, or ``"all"`` (every readable
    catalogue field)."""
    runner._enter()
    cdef _SnapSpec s = _spec_for(runner, context, apic, private_regs, vmcs)
    rec = np.zeros((), dtype=s.dtype)
    _fill(runner, s, <char *>cnp.PyArray_DATA(rec))
    return rec


@cython.final
cdef class Recorder:
    """Snapshots appended into a preallocated array of ``capacity`` records.

    :meth:`take` copies the runner's state straight into the next slot and
    raises :class:`RecorderFull` when every slot is used. ``records`` is the
    filled part (a view); ``metadata`` what :func:`hcltdx.snapshot.save`
    stores with it."""

    cdef TdxRunner runner
    cdef _SnapSpec spec
    cdef object _buf
    cdef char *_base
    cdef Py_ssize_t _n, _cap, _itemsize

    def __init__(self, *args, **kwargs):
        raise TypeError("Recorder is not supposed to be instantiated from Python; "
                        "use runner.recorder(capacity)")

    cdef _SnapSpec _spec(self):
        if self.spec is None:
            raise ValueError("this Recorder was not made by runner.recorder(capacity)")
        return self.spec

    def take(self):
        """Record one snapshot; returns its index."""
        if self._n >= self._cap:
            raise RecorderFull(f"the recorder is full ({self._cap} records); "
                               f"save and clear() it, or make a bigger one")
        self._spec()
        self.runner._enter()
        _fill(self.runner, self.spec, self._base + self._n * self._itemsize)
        self._n += 1
        return self._n - 1

    @property
    def records(self):
        return self._buf[:self._n]

    @property
    def capacity(self):
        return self._cap

    @property
    def dtype(self):
        return self._spec().dtype

    @property
    def full(self):
        return self._n >= self._cap

    @property
    def metadata(self):
        k = self._spec().key
        return {
            "vp": int(self.runner.vp),
            "backend": self.runner.hcl.backend,
            "tsc_deadline_layout": bool(k[5]),
            "vmcs_fields": {str(v): [int(r) for r in fl] for v, fl in enumerate(k[3:5])
                            if fl is not None},
        }

    def clear(self):
        """Forget every record (the buffer is reused)."""
        self._n = 0

    def __len__(self):
        return self._n

    def __repr__(self):
        if self.runner is None:
            return "<hcltdx.Recorder (not made by runner.recorder())>"
        return f"<hcltdx.Recorder {self._n}/{self._cap} records of VP {self.runner.vp}>"


def recorder(TdxRunner runner not None, capacity, **snapshot_kwargs):
    """A :class:`Recorder` of ``capacity`` snapshots (keywords as :func:`snapshot`)."""
    runner._mapped()      # a closed or half-built runner has no Hcl to read the layout from
    cap = _checked_count(capacity, "capacity")
    if cap < 1:
        raise ValueError("capacity must be at least 1")
    unknown = set(snapshot_kwargs) - {"context", "apic", "private_regs", "vmcs"}
    if unknown:
        raise TypeError(f"unexpected snapshot option(s): {', '.join(sorted(unknown))}")
    cdef Recorder r = Recorder.__new__(Recorder)
    r.runner = runner
    r.spec = _spec_for(runner, snapshot_kwargs.get("context", True),
                       snapshot_kwargs.get("apic", True),
                       snapshot_kwargs.get("private_regs", True),
                       snapshot_kwargs.get("vmcs"))
    r._buf = np.zeros(cap, dtype=r.spec.dtype)
    r._base = <char *>cnp.PyArray_DATA(r._buf)
    r._cap = cap
    r._itemsize = r.spec.dtype.itemsize
    return r


# ---- replay ---------------------------------------------------------------------------------

cdef enum:
    DIV_NONE = 0
    DIV_MISMATCH = 1
    DIV_EXHAUSTED = 2

cdef struct replay_ctx:
    pthread_mutex_t lock
    trace_entry *entries
    uint64_t n
    uint64_t pos
    uint64_t skipped
    bint strict
    int diverged
    uint64_t div_pos
    uint32_t got_vp
    mshv_tdcall got
    uint32_t vp_count
    void **apic_pages
    uint64_t *apic_gpas


cdef inline bint _matches(trace_entry *e, uint32_t vp, mshv_tdcall *io) noexcept nogil:
    return (e.vp == vp and e.ins.rax == io.rax and e.ins.rcx == io.rcx
            and e.ins.rdx == io.rdx and e.ins.r8 == io.r8 and e.ins.r9 == io.r9)


cdef int _replay_tdcall(void *ctx, uint32_t vp, mshv_tdcall *io) noexcept nogil:
    cdef replay_ctx *r = <replay_ctx *>ctx
    cdef uint64_t i
    cdef trace_entry *e = NULL
    cdef int err
    pthread_mutex_lock(&r.lock)
    if r.diverged:
        pthread_mutex_unlock(&r.lock)
        return EPROTO
    if r.pos < r.n and _matches(&r.entries[r.pos], vp, io):
        e = &r.entries[r.pos]
        r.pos += 1
    elif not r.strict:
        # Lenient: the next matching record after the cursor, else the first.
        for i in range(r.pos, r.n):
            if _matches(&r.entries[i], vp, io):
                e = &r.entries[i]
                r.skipped += i - r.pos
                r.pos = i + 1
                break
        if e == NULL:
            # Looking back never answers EINTR: an interrupted call is retried
            # by its caller, and an old EINTR record served again would be
            # served for every retry, forever (the cursor does not move).
            for i in range(0, r.pos):
                if _matches(&r.entries[i], vp, io) and r.entries[i].err != EINTR:
                    e = &r.entries[i]
                    break
    if e == NULL:
        r.diverged = DIV_EXHAUSTED if r.pos >= r.n else DIV_MISMATCH
        r.div_pos = r.pos
        r.got_vp = vp
        r.got = io[0]
        pthread_mutex_unlock(&r.lock)
        return EPROTO
    io[0] = e.outs
    err = e.err
    pthread_mutex_unlock(&r.lock)
    return err


cdef int _replay_map_page(void *ctx, uint64_t page_offset, void **page) noexcept nogil:
    cdef void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    if p == MAP_FAILED:
        return errno
    page[0] = p
    return 0


cdef void _replay_unmap_page(void *ctx, void *page) noexcept nogil:
    munmap(page, 4096)


cdef int _replay_vtl1_apic_page(void *ctx, uint32_t vp, void **page, uint64_t *gpa) noexcept nogil:
    cdef replay_ctx *r = <replay_ctx *>ctx
    if vp >= r.vp_count:
        return 22
    page[0] = r.apic_pages[vp]
    gpa[0] = r.apic_gpas[vp]
    return 0


cdef hcltdx_backend_ops _replay_ops
_replay_ops.name = b"replay"
_replay_ops.may_block = 0
_replay_ops.tdcall = _replay_tdcall
_replay_ops.map_page = _replay_map_page
_replay_ops.unmap_page = _replay_unmap_page
_replay_ops.vtl1_apic_page = _replay_vtl1_apic_page


def _trace_mod():
    from hcltdx import trace
    return trace


cdef object _call_dict(uint32_t vp, mshv_tdcall *io):
    leaf = TdCallLeaf(io.rax)
    return {"vp": vp, "leaf": leaf.name or int(io.rax), "rax": int(io.rax), "rcx": int(io.rcx),
            "rdx": int(io.rdx), "r8": int(io.r8), "r9": int(io.r9)}


cdef str _call_str(dict d):
    return (f"{d['leaf']}(vp={d['vp']}, rcx={d['rcx']:#x}, rdx={d['rdx']:#x}, "
            f"r8={d['r8']:#x}, r9={d['r9']:#x})")


@cython.final
cdef class ReplayState:
    """The control panel of a replayed :class:`Hcl` (``hcl.sim``): where the
    replay stands and why it diverged. A divergence makes the failing call
    raise :class:`ReplayDivergence` (an ``OSError`` with errno ``EPROTO``);
    :meth:`check` raises it again afterwards, :meth:`assert_complete` also
    requires every recorded call to have been replayed."""

    cdef replay_ctx c
    cdef readonly object calls       # the recorded TRACE_DTYPE array
    cdef readonly uint32_t vp_count

    def __cinit__(self):
        memset(&self.c, 0, sizeof(replay_ctx))
        pthread_mutex_init(&self.c.lock, NULL)

    def __init__(self, *args, **kwargs):
        raise TypeError("ReplayState is not supposed to be instantiated from Python; use Hcl.replay()")

    def __dealloc__(self):
        cdef uint32_t i
        if self.c.apic_pages != NULL:
            for i in range(self.c.vp_count):
                if self.c.apic_pages[i] != NULL:
                    munmap(self.c.apic_pages[i], 4096)
            free(self.c.apic_pages)
        free(self.c.apic_gpas)
        free(self.c.entries)
        pthread_mutex_destroy(&self.c.lock)

    @property
    def position(self):
        """Index of the next recorded call to replay."""
        return self.c.pos

    @property
    def total(self):
        return self.c.n

    @property
    def remaining(self):
        return self.c.n - self.c.pos

    @property
    def skipped(self):
        """Recorded calls stepped over (``strict=False`` only)."""
        return self.c.skipped

    @property
    def strict(self):
        return bool(self.c.strict)

    @property
    def diverged(self):
        return self.c.diverged != DIV_NONE

    @property
    def expected(self):
        """The recorded call expected at the divergence (None past the end)."""
        if self.c.diverged != DIV_MISMATCH:
            return None
        return self.calls[self.c.div_pos]

    @property
    def got(self):
        """The call made at the divergence, as a dict."""
        if not self.c.diverged:
            return None
        return _call_dict(self.c.got_vp, &self.c.got)

    def _divergence(self):
        got = _call_dict(self.c.got_vp, &self.c.got)
        if self.c.diverged == DIV_EXHAUSTED:
            msg = (f"replay diverged at call {self.c.div_pos}: the recording has only "
                   f"{self.c.n} calls, got {_call_str(got)}")
            return ReplayDivergence(self.c.div_pos, None, got, msg)
        e = self.calls[self.c.div_pos]
        exp = {"vp": int(e["vp"]), "leaf": TdCallLeaf(int(e["in_rax"])).name or int(e["in_rax"]),
               "rax": int(e["in_rax"]), "rcx": int(e["in_rcx"]), "rdx": int(e["in_rdx"]),
               "r8": int(e["in_r8"]), "r9": int(e["in_r9"])}
        msg = (f"replay diverged at call {self.c.div_pos}: expected {_call_str(exp)}, "
               f"got {_call_str(got)}")
        return ReplayDivergence(self.c.div_pos, e, got, msg)

    def explain_error(self, err):
        """The backend owner's hook (see ``backend_error`` in the core): the
        EPROTO of a divergence as the :class:`ReplayDivergence` it stands for."""
        if err == EPROTO and self.c.diverged:
            return self._divergence()
        return None

    def check(self):
        """Raise :class:`ReplayDivergence` if the replay diverged."""
        if self.c.diverged:
            raise self._divergence()

    def assert_complete(self):
        """Raise unless the replay followed the recording to its end."""
        self.check()
        if self.c.pos != self.c.n and self.c.strict:
            raise ReplayDivergence(self.c.pos, self.calls[self.c.pos], None,
                                   f"replay incomplete: {self.c.pos} of {self.c.n} recorded "
                                   f"calls replayed")

    def rewind(self):
        """Start over from the first recorded call, clearing any divergence."""
        self.c.pos = 0
        self.c.skipped = 0
        self.c.diverged = DIV_NONE

    def __repr__(self):
        state = "diverged" if self.c.diverged else "ok"
        return f"<hcltdx.ReplayState {self.c.pos}/{self.c.n} calls, {state}>"


def replay(source, *, strict=True, vp_count=None, tsc_deadline_layout=None):
    """An :class:`Hcl` answering tdcalls from a recording: ``source`` is a
    :class:`hcltdx.trace.Trace`, its ``calls`` array or a path saved by
    ``Trace.save``. Each call must match the next recorded one (vp, leaf,
    rcx, rdx, r8, r9) and gets its recorded outputs and errno.
    ``strict=False`` looks further: the next matching record after the
    cursor, else the first one from the start that is not an EINTR (a
    capture used as a lookup table; an interrupted call is retried, so an
    EINTR record answers only once). ``hcl.sim`` is the :class:`ReplayState`. Runners work: their
    pages are private zeroed pages, VTL1's APIC page registered at the
    address the recording used."""
    tr = _trace_mod()
    meta = {}
    if isinstance(source, (str, bytes, os.PathLike)):
        source = tr.Trace.load(source)
    if isinstance(source, tr.Trace):
        meta = source.metadata
        calls = source.calls
    else:
        calls = source
    if not isinstance(calls, np.ndarray) or calls.ndim != 1 or calls.dtype.names is None:
        raise TypeError("source must be a Trace, a TRACE_DTYPE array or a saved trace path")
    want = tr.TRACE_DTYPE
    if calls.dtype != want:
        missing = set(want.names) - set(calls.dtype.names)
        if missing:
            raise TypeError(f"the calls array lacks {', '.join(sorted(missing))}")
        conv = np.zeros(calls.shape[0], dtype=want)
        for name in want.names:
            conv[name] = calls[name]
        calls = conv
    calls = np.ascontiguousarray(calls)
    n = calls.shape[0]
    if vp_count is None:
        vp_count = meta.get("vp_count") or (int(calls["vp"].max()) + 1 if n else 1)
    vp_count = _checked_count(vp_count, "vp_count")
    if not 1 <= vp_count <= 0x10000:
        raise ValueError(f"vp_count must be in 1..65536, got {vp_count}")
    if tsc_deadline_layout is None:
        tsc_deadline_layout = bool(meta.get("tsc_deadline_layout", False))
    cdef ReplayState st = ReplayState.__new__(ReplayState)
    st.calls = calls
    st.vp_count = vp_count
    st.c.n = n
    st.c.strict = bool(strict)
    st.c.vp_count = vp_count
    st.c.entries = <trace_entry *>malloc(max(n, 1) * sizeof(trace_entry))
    st.c.apic_pages = <void **>calloc(vp_count, sizeof(void *))
    st.c.apic_gpas = <uint64_t *>calloc(vp_count, sizeof(uint64_t))
    if st.c.entries == NULL or st.c.apic_pages == NULL or st.c.apic_gpas == NULL:
        raise MemoryError()
    cdef const unsigned char[::1] raw
    if n:
        raw = calls.view(np.uint8)
        memcpy(st.c.entries, &raw[0], n * sizeof(trace_entry))
    # VTL1's APIC page: the address the recording registered for each VP.
    code = vmcs_code(VIRTUAL_APIC_PAGE_ENCODING, 1)
    regs = calls[(calls["in_rax"] == LEAF_VP_WR) & (calls["in_rdx"] == code)]
    cdef void *p
    for v in range(vp_count):
        p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        if p == MAP_FAILED:
            raise MemoryError("cannot allocate a replayed APIC page")
        st.c.apic_pages[v] = p
        mine = regs[regs["vp"] == v]
        if len(mine):
            st.c.apic_gpas[v] = int(mine[0]["in_r8"])
    return hcl_from_ops(&_replay_ops, &st.c, st, vp_count, "replay", bool(tsc_deadline_layout))
