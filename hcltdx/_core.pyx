# cython: language_level=3
"""The Cython core of hcltdx: the ``mshv_vtl`` device handle (:class:`Hcl`),
the TDX processor runner (:class:`TdxRunner`) and the tdcall transport.

Every backend (the real device, the FUSE stand-in, the in-process simulator)
is reached through one C table of function pointers, so the same code paths,
nogil sections and numpy views run over all of them.
"""

cimport cython
from cpython.exc cimport PyErr_CheckSignals
from cpython.object cimport PyObject, PyTypeObject
from cpython.long cimport PyLong_Check, PyLong_CheckExact, PyLong_AsUnsignedLongLong
from cpython.buffer cimport (PyBUF_FORMAT, PyBUF_ND, PyBUF_STRIDES, PyBUF_WRITABLE,
                             PyBUF_ANY_CONTIGUOUS, PyObject_GetBuffer, PyBuffer_Release)
from libc.errno cimport errno, EINTR, EFAULT, EINVAL, ENOTTY
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, intptr_t
from libc.stdlib cimport calloc, free
from libc.string cimport memset, memcpy
from posix.mman cimport (mmap, munmap, mlock, munlock, MAP_FAILED, PROT_READ,
                         PROT_WRITE, MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS)

from hcltdx.includes.abi cimport (
    mshv_tdcall, hcl_run, tdx_vp_context, hcl_run_tdx, MSHV_VTL_TDCALL,
    MSHV_CREATE_VTL, MSHV_APIC_PAGE_OFFSET)
from hcltdx.includes.pyconv cimport (HCLTDX_LIKELY, HCLTDX_UNLIKELY, hcltdx_u64_of,
                                     hcltdx_u64_of_p, hcltdx_u30_of_p,
                                     hcltdx_thread_id, hcltdx_long_of_u64)
from hcltdx.includes.backend cimport hcltdx_backend_ops
from hcltdx._sim cimport Sim

import errno as errno_mod
import os
import warnings
import sys
import threading
import weakref

import numpy as np

from hcltdx import abi as _abi
from hcltdx.errors import (
    AcceptPagesAttributes, AcceptPagesBusy, AcceptPagesInvalid, AcceptPagesUnknown,
    HclError, PageAlreadyAcceptedError, PageAttributesVerifyError, SetPageAttributesError,
    TdCallError, TdcallOutput, VmcsAccessError)
from hcltdx.memory_range import MemoryRange
from hcltdx.protocol import GuestVtl, TdxVpStateFlags
from hcltdx.tdx import TdCallLeaf, TdCallResult, TdxL2Ctls, TdxVmFlags
from hcltdx.vmx import VmcsField

cdef extern from "<sys/ioctl.h>" nogil:
    int ioctl(int fd, unsigned long request, ...)

cdef extern from "<unistd.h>" nogil:
    int gettid()
    int close(int fd)

cdef extern from "<sched.h>" nogil:
    ctypedef struct cpu_set_t:
        pass
    void CPU_ZERO(cpu_set_t *s)
    void CPU_SET(int cpu, cpu_set_t *s)
    int CPU_ISSET(int cpu, cpu_set_t *s)
    int CPU_COUNT(cpu_set_t *s)
    int sched_setaffinity(int pid, size_t size, const cpu_set_t *mask)
    int sched_getaffinity(int pid, size_t size, cpu_set_t *mask)

# ---- constants of the TDX ABI used on the hot path ----------------------

cdef uint64_t PAGE_SIZE = 4096
cdef uint64_t LARGE_PAGE = 0x200000
cdef uint64_t ALL_ONES = 0xFFFFFFFFFFFFFFFF
cdef uint64_t GPA_PAGE_MASK = 0x000FFFFFFFFFF000
GPA_LIMIT = 1 << 52  # first address whose page number does not fit 40 bits

cdef enum:
    LEAF_VP_VMCALL = 0
    LEAF_MEM_PAGE_ACCEPT = 6
    LEAF_VP_RD = 9
    LEAF_VP_WR = 10
    LEAF_MEM_PAGE_ATTR_RD = 23
    LEAF_MEM_PAGE_ATTR_WR = 24
    LEAF_VP_ENTER = 25
    LEAF_VP_INVGLA = 27

cdef uint32_t CODE_OPERAND_INVALID = 0xC0000100
cdef uint32_t CODE_OPERAND_BUSY = 0x80000200
cdef uint32_t CODE_PAGE_ALREADY_ACCEPTED = 0x00000B0A
cdef uint32_t CODE_PAGE_SIZE_MISMATCH = 0xC0000B0B

cdef uint64_t FIELD_CODE_L2_CTLS_VM1 = 0xA020000300000051
cdef uint64_t FIELD_CODE_L2_CTLS_VM2 = 0xA020000300000052
cdef uint32_t VIRTUAL_APIC_PAGE_ENCODING = 0x2012

# Byte offsets in the run page (docs/tdx-abi.md section 3).
cdef Py_ssize_t OFF_CONTEXT = 272
cdef Py_ssize_t OFF_VP_STATE = 408
cdef Py_ssize_t OFF_GPR_LIST = 512
cdef Py_ssize_t OFF_TSC_DEADLINE = 672
cdef Py_ssize_t OFF_FX_STATE = 768
cdef Py_ssize_t OFF_PROXY_IRR_BLOCKED = 0x634

cdef object _VTL0 = GuestVtl.VTL0
cdef object _VTL1 = GuestVtl.VTL1
cdef object _VmcsFieldType = VmcsField

# ---- field codes (section 7.4), kept in C for the hot path --------------

cdef inline uint64_t msr_bitmap_code(uint32_t index, int vtl) noexcept nogil:
    return (<uint64_t>index | (<uint64_t>3 << 32) | (<uint64_t>2 << 52)
            | (<uint64_t>(45 if vtl else 37) << 56))


def _vmcs_field_code_c(field, vtl):
    """The field code the core sends for ``field`` (tests compare it with
    ``hcltdx.vmcs_field_code``)."""
    return vmcs_code(_field_of(field), _vtl_of(vtl))


# ---- argument conversion ----------------------------------------------------
#
# The fast paths convert in C (PyLong_AsUnsignedLongLong and its overflow
# error, cleared); anything they do not accept goes to a cold function that
# re-checks the value with Python objects and raises the precise error.


cdef int _vtl_slow(object vtl) except -1:
    if PyLong_Check(vtl) and not isinstance(vtl, bool):
        if vtl == 0:
            return 0
        if vtl == 1:
            return 1
    raise ValueError(f"vtl must be GuestVtl.VTL0 or GuestVtl.VTL1 (0 or 1), got {vtl!r}")


cdef extern from "Python.h":
    PyTypeObject PyLong_Type
    PyTypeObject *_type_of "Py_TYPE" (PyObject *o) noexcept nogil


cdef inline int _vtl_of_p(PyObject *vtl) except -1:
    """_vtl_of for a borrowed argument (no reference taken on the fast path)."""
    cdef uint32_t v
    if vtl == <PyObject *>_VTL0:
        return 0
    if vtl == <PyObject *>_VTL1:
        return 1
    if _type_of(vtl) == &PyLong_Type and hcltdx_u30_of_p(vtl, &v) and v <= 1:
        return <int>v
    return _vtl_slow(<object>vtl)


cdef uint32_t _field_slow(object field) except? 0xFFFFFFFF:
    if not PyLong_Check(field) or isinstance(field, bool):
        raise TypeError(f"field must be a VmcsField or an int encoding, not {type(field).__name__}")
    if field < 0 or field > 0xFFFFFF:
        raise ValueError(f"VMCS field encoding {field!r} does not fit the 24-bit field_code")
    return <uint32_t>field


cdef inline uint32_t _field_of_p(PyObject *field) except? 0xFFFFFFFF:
    """_field_of for a borrowed argument (no reference taken on the fast path)."""
    cdef uint32_t v
    cdef PyTypeObject *t = _type_of(field)
    if ((t == <PyTypeObject *>_VmcsFieldType or t == &PyLong_Type)
            and hcltdx_u30_of_p(field, &v) and v <= 0xFFFFFF):
        return v
    return _field_slow(<object>field)


cdef inline int _vtl_of(object vtl) except -1:
    return _vtl_of_p(<PyObject *>vtl)


cdef inline uint32_t _field_of(object field) except? 0xFFFFFFFF:
    return _field_of_p(<PyObject *>field)


cdef int _u64_error(object value, str name) except -1:
    if not PyLong_Check(value):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    raise ValueError(f"{name} must be in 0..2**64-1, got {value!r}")


cdef int _uint_error(object value, str name, int bits) except -1:
    if not PyLong_Check(value):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    raise ValueError(f"{name} must fit in {bits} bits, got {value!r}")


cdef inline uint64_t _u64(object value, str name) except? 0xFFFFFFFFFFFFFFFF:
    cdef unsigned long long v
    if HCLTDX_LIKELY(hcltdx_u64_of(value, &v) == 0):
        return v
    _u64_error(value, name)
    return 0


cdef inline uint64_t _uint(object value, str name, int bits) except? 0xFFFFFFFFFFFFFFFF:
    """``value`` as an unsigned integer of ``bits`` (< 64) bits."""
    cdef unsigned long long v
    if HCLTDX_LIKELY(hcltdx_u64_of(value, &v) == 0 and (v >> bits) == 0):
        return v
    _uint_error(value, name, bits)
    return 0


cdef str _width_name(uint32_t raw):
    return ("16", "64", "32", "natural")[(raw >> 13) & 3]


cdef int _bad_width(str method, object field, uint32_t raw) except -1:
    name = getattr(field, "name", None) or f"{raw:#x}"
    raise ValueError(
        f"{method}: VMCS field {name} is {_width_name(raw)}-bit wide; "
        f"use the read/write method of that width")


# ---- the device backend (ioctl on the mshv_vtl fd) ----------------------------

cdef int _dev_tdcall(void *ctx, uint32_t vp, mshv_tdcall *io) noexcept nogil:
    if ioctl(<int><intptr_t>ctx, MSHV_VTL_TDCALL, io) < 0:
        return errno
    return 0


cdef int _dev_map_page(void *ctx, uint64_t page_offset, void **page) noexcept nogil:
    cdef void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED,
                        <int><intptr_t>ctx, <long>(page_offset * 4096))
    if p == MAP_FAILED:
        return errno
    page[0] = p
    return 0


cdef void _dev_unmap_page(void *ctx, void *page) noexcept nogil:
    munmap(page, 4096)


cdef hcltdx_backend_ops _device_ops
_device_ops.name = b"device"
_device_ops.may_block = 1
_device_ops.tdcall = _dev_tdcall
_device_ops.map_page = _dev_map_page
_device_ops.unmap_page = _dev_unmap_page
_device_ops.vtl1_apic_page = NULL


# ---- what may be used as a VTL fd (checked before anything is written) -------

cdef extern from "<sys/vfs.h>" nogil:
    cdef struct statfs:
        long f_type
    int fstatfs(int fd, statfs *buf)

cdef extern from "<unistd.h>" nogil:
    ssize_t c_write "write" (int fd, const void *buf, size_t n)
    ssize_t c_read "read" (int fd, void *buf, size_t n)
    int pipe2(int fds[2], int flags)

cdef extern from "<fcntl.h>" nogil:
    int O_CLOEXEC

cdef long FUSE_SUPER_MAGIC = 0x65735546

_FILE_KINDS = {0o040000: "a directory", 0o010000: "a FIFO (pipe)", 0o140000: "a socket",
               0o060000: "a block device", 0o100000: "a regular file", 0o120000: "a symbolic link"}


cdef int _check_vtl_fd(int fd, object where) except -1:
    """Refuse, before any write, mmap or tdcall, a file that is not a VTL
    device. The rule: the file is a character device node, an anonymous inode
    (the fd MSHV_CREATE_VTL returns) or a regular file on a FUSE file system
    (the stand-in of hcltdx.simdev), and it takes the MSHV_VTL_TDCALL request:
    issued with a null argument, the request changes nothing and a device
    that handles it fails it with EFAULT (it tried to read the argument);
    anything else answers ENOTTY (or EINVAL on a partition without TDX)."""
    cdef statfs sfs
    cdef int rc, err = 0
    st = os.fstat(fd)
    kind = st.st_mode & 0o170000
    try:
        anon = os.readlink(f"/proc/self/fd/{fd}").startswith("anon_inode:")
    except OSError:
        anon = False
    what = None
    if kind == 0o020000 or anon:
        pass
    elif kind == 0o100000:
        with nogil:
            rc = fstatfs(fd, &sfs)
            if rc != 0:
                err = errno
        if rc != 0:
            raise OSError(err, f"fstatfs on {where} failed: {os.strerror(err)}")
        if sfs.f_type != FUSE_SUPER_MAGIC:
            what = "a regular file (not on the FUSE stand-in)"
    else:
        what = _FILE_KINDS.get(kind, f"a file of type {kind:#o}")
    if what is not None:
        raise ValueError(
            f"{where} is not an mshv_vtl device: it is {what}. The VTL fd is a character "
            f"device, the fd MSHV_CREATE_VTL returns, or the file of hcltdx.simdev")
    with nogil:
        rc = ioctl(fd, MSHV_VTL_TDCALL, NULL)
        err = errno if rc < 0 else 0
    if rc < 0 and err == EFAULT:
        return 0
    if rc >= 0:
        why = "accepted a null request"
    else:
        why = f"answered {errno_mod.errorcode.get(err, err)} ({os.strerror(err)})"
        if err == ENOTTY:
            why += ": not an mshv_vtl device, or a kernel built without TDX"
        elif err == EINVAL:
            why += ": not a TDX partition"
    raise ValueError(f"{where} is not an mshv_vtl device: MSHV_VTL_TDCALL {why}")


cdef bint _page_readable(void *addr) noexcept nogil:
    """Whether a load from ``addr`` would succeed. The kernel copies one byte
    from it into a pipe: a page the device refuses (a VP it does not have,
    where a load would raise SIGBUS) makes that copy fail with EFAULT
    instead of killing the process."""
    cdef int fds[2]
    cdef char c
    cdef ssize_t n
    if pipe2(fds, O_CLOEXEC) != 0:
        return True  # no probe possible: behave as before
    n = c_write(fds[1], addr, 1)
    if n == 1:
        c_read(fds[0], &c, 1)
    close(fds[0])
    close(fds[1])
    return n == 1


# ---- the transport: one place every tdcall goes through --------------------

cdef inline uint32_t _code(uint64_t rax) noexcept nogil:
    return <uint32_t>(rax >> 32)


cdef object backend_error(Hcl hcl, int err):
    """The backend owner's own account of an errno, if it has one (a replay
    knows which recorded call a refused call diverged from), else None."""
    explain = getattr(hcl.sim, "explain_error", None)
    return explain(err) if explain is not None else None


cdef object _oserror(int err, Hcl hcl, uint32_t vp, uint64_t leaf):
    explained = backend_error(hcl, err)
    if explained is not None:
        return explained
    name = TdCallLeaf(leaf).name or f"leaf {leaf:#x}"
    where = hcl.path if hcl.path is not None else hcl.backend
    return OSError(err, f"MSHV_VTL_TDCALL ({name}, vp {vp}) failed on {where}: {os.strerror(err)}")


cdef object _ZERO = 0


cdef inline bint _is_zero(object value) noexcept:
    """An int equal to 0 (a bool False too, as _u64 accepts it)."""
    cdef unsigned long long v
    if value is _ZERO:
        return True
    return hcltdx_u64_of(value, &v) == 0 and v == 0


cdef int _bad_high_regs(r10, r11, r12, r13, r14, r15) except -1:
    for name, v in (("r10", r10), ("r11", r11), ("r12", r12), ("r13", r13),
                    ("r14", r14), ("r15", r15)):
        if _u64(v, name) != 0:
            raise ValueError(f"{name} must be 0: the kernel enters the TDX module with R10-R15 = 0")
    return 0


cdef extern from *:
    """
    /* A tuple subclass without extra layout (a NamedTuple) filled directly,
     * as tuple.__new__(cls, items) would, without the Python-level __new__. */
    static PyObject *hcltdx_new_tuple_of(PyTypeObject *t, Py_ssize_t n, PyObject **items)
    {
        PyObject *o = t->tp_alloc(t, n);
        if (!o)
            return NULL;
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_INCREF(items[i]);
            PyTuple_SET_ITEM(o, i, items[i]);
        }
        return o;
    }

    /* int.__new__(t, v) for an int subclass without extra layout. */
    static PyObject *hcltdx_new_int_of(PyTypeObject *t, unsigned long long v)
    {
        PyObject *i = PyLong_FromUnsignedLongLong(v), *args, *o;
        if (!i)
            return NULL;
        args = PyTuple_Pack(1, i);
        Py_DECREF(i);
        if (!args)
            return NULL;
        o = PyLong_Type.tp_new(t, args, NULL);
        Py_DECREF(args);
        return o;
    }
    """
    object hcltdx_new_tuple_of(type t, Py_ssize_t n, PyObject **items)
    object hcltdx_new_int_of(type t, unsigned long long v)


cdef type _TdcallOutputType = TdcallOutput
cdef type _TdCallResultType = TdCallResult
# Both are filled in C below: check they add nothing to the layouts of
# tuple and int (a NamedTuple and a BitField with empty __slots__).
if (not issubclass(TdcallOutput, tuple) or TdcallOutput.__basicsize__ != tuple.__basicsize__
        or len(TdcallOutput._fields) != 6):
    raise ImportError("hcltdx.errors.TdcallOutput must be a 6-field NamedTuple")
if (not issubclass(TdCallResult, int) or TdCallResult.__basicsize__ != int.__basicsize__
        or hasattr(TdCallResult(0), "__dict__")):
    raise ImportError("hcltdx.tdx.TdCallResult must be an int subclass without instance state")
cdef object _SUCCESS = TdCallResult(0)


cdef object _tdcall_output(const mshv_tdcall *io):
    """TdcallOutput(TdCallResult(rax), rcx, rdx, r8, r10, r11) built in C; a
    success status (the common case) is one shared immutable TdCallResult."""
    cdef PyObject *items[6]
    cdef object rax, rcx, rdx, r8, r10, r11
    rax = _SUCCESS if io.rax == 0 else hcltdx_new_int_of(_TdCallResultType, io.rax)
    rcx = hcltdx_long_of_u64(io.rcx)
    rdx = hcltdx_long_of_u64(io.rdx)
    r8 = hcltdx_long_of_u64(io.r8)
    r10 = hcltdx_long_of_u64(io.r10_out)
    r11 = hcltdx_long_of_u64(io.r11_out)
    items[0] = <PyObject *>rax
    items[1] = <PyObject *>rcx
    items[2] = <PyObject *>rdx
    items[3] = <PyObject *>r8
    items[4] = <PyObject *>r10
    items[5] = <PyObject *>r11
    return hcltdx_new_tuple_of(_TdcallOutputType, 6, items)


cdef object _hcl_tdcall(Hcl self, PyObject **a):
    """Hcl.tdcall on its twelve arguments (vp, leaf, rcx, rdx, r8, r9,
    r10-r15), borrowed from the caller."""
    cdef mshv_tdcall io
    cdef cpu_set_t saved
    cdef bint repin = False
    cdef uint32_t cvp
    cdef int err
    cdef const hcltdx_backend_ops *ops
    cdef unsigned long long cleaf = 0, crcx = 0, crdx = 0, cr8 = 0, cr9 = 0  # set before use; 0 keeps gcc from guessing
    cdef object vp = <object>a[0], leaf = <object>a[1]
    cdef object rcx = <object>a[2], rdx = <object>a[3], r8 = <object>a[4], r9 = <object>a[5]
    cdef object r10 = <object>a[6], r11 = <object>a[7], r12 = <object>a[8]
    cdef object r13 = <object>a[9], r14 = <object>a[10], r15 = <object>a[11]
    self._check_open()
    cvp = self._vp_index(vp)
    if HCLTDX_UNLIKELY(hcltdx_u64_of(leaf, &cleaf) != 0):
        _u64_error(leaf, "leaf")
    if (cleaf & 0xFFFF) == LEAF_VP_VMCALL:
        raise ValueError("leaf VP_VMCALL (0) cannot be issued through MSHV_VTL_TDCALL")
    if (cleaf & 0xFFFF) == LEAF_VP_ENTER:
        raise ValueError("leaf VP_ENTER (25) belongs to the kernel's run path, not MSHV_VTL_TDCALL")
    # R10-R15: each must be an int in range and 0. The defaults are the
    # interpreter's shared 0 object, recognised by identity; anything else
    # is converted and checked.
    if HCLTDX_UNLIKELY(not (_is_zero(r10) and _is_zero(r11) and _is_zero(r12)
                            and _is_zero(r13) and _is_zero(r14) and _is_zero(r15))):
        _bad_high_regs(r10, r11, r12, r13, r14, r15)
    if HCLTDX_UNLIKELY(hcltdx_u64_of(rcx, &crcx) != 0):
        _u64_error(rcx, "rcx")
    if HCLTDX_UNLIKELY(hcltdx_u64_of(rdx, &crdx) != 0):
        _u64_error(rdx, "rdx")
    if HCLTDX_UNLIKELY(hcltdx_u64_of(r8, &cr8) != 0):
        _u64_error(r8, "r8")
    if HCLTDX_UNLIKELY(hcltdx_u64_of(r9, &cr9) != 0):
        _u64_error(r9, "r9")
    io_init(&io, cleaf, crcx, crdx, cr8, cr9)
    if self.fd < 0:
        # Hcl._call's in-process branch spelled out (gcc keeps _call out
        # of line). ops is tested again: a conversion above may have run
        # Python code (an int subclass's comparison) that closed the Hcl.
        ops = self.ops
        if HCLTDX_LIKELY(ops != NULL and not ops.may_block):
            err = transport(ops, self.ctx, self.tring, cvp, &io)
            if HCLTDX_UNLIKELY(err != 0):
                raise _oserror(err, self, cvp, cleaf)
        else:
            self._call(cvp, &io)
        return _tdcall_output(&io)
    if not _pinned_to(cvp):
        _pin(cvp, &saved)
        repin = True
    try:
        self._call(cvp, &io)
    finally:
        if repin:
            sched_setaffinity(0, sizeof(cpu_set_t), &saved)
    return _tdcall_output(&io)


# ---- pinning (the module acts on the VP running on the calling CPU) -----

cdef bint _pinned_to(uint32_t cpu) noexcept nogil:
    cdef cpu_set_t s
    if sched_getaffinity(0, sizeof(cpu_set_t), &s) != 0:
        return False
    return CPU_COUNT(&s) == 1 and CPU_ISSET(<int>cpu, &s)


cdef int _pin(uint32_t cpu, cpu_set_t *saved) except -1:
    cdef cpu_set_t s
    if saved != NULL and sched_getaffinity(0, sizeof(cpu_set_t), saved) != 0:
        raise OSError(errno, "sched_getaffinity failed")
    CPU_ZERO(&s)
    CPU_SET(<int>cpu, &s)
    if sched_setaffinity(0, sizeof(cpu_set_t), &s) != 0:
        e = errno
        raise OSError(e, f"cannot pin this thread to CPU {cpu} (the VP's CPU): {os.strerror(e)}")
    return 0


# ---- mapped pages --------------------------------------------------------------

@cython.final
cdef class _Page:
    """One 4 KiB page (a run page, an APIC page) exported through the buffer
    protocol. Counts its exports and refuses to unmap while views exist."""

    def __init__(self, *args, **kwargs):
        raise TypeError("_Page is not supposed to be instantiated from Python")

    def __getbuffer__(self, Py_buffer *buffer, int flags):
        if self.addr == NULL:
            raise ValueError(f"{self.label} is unmapped (its runner or device was closed)")
        self.shape[0] = 4096
        self.strides[0] = 1
        buffer.buf = self.addr
        buffer.obj = self
        buffer.len = 4096
        buffer.readonly = 0
        buffer.itemsize = 1
        if flags & PyBUF_FORMAT:
            buffer.format = b"B"
        else:
            buffer.format = NULL
        buffer.ndim = 1
        buffer.shape = self.shape if flags & PyBUF_ND else NULL
        buffer.strides = self.strides if flags & PyBUF_STRIDES == PyBUF_STRIDES else NULL
        buffer.suboffsets = NULL
        buffer.internal = NULL
        self.exports += 1

    def __releasebuffer__(self, Py_buffer *buffer):
        self.exports -= 1

    @property
    def exports(self):
        return self.exports

    cdef int _unmap(self) except -1:
        if self.addr == NULL:
            return 0
        if self.exports:
            raise BufferError(
                f"cannot unmap {self.label}: {self.exports} numpy view(s) of it are alive")
        if self.kind == 0:
            if self.hcl.ops != NULL:
                self.hcl.ops.unmap_page(self.hcl.ctx, self.addr)
        elif self.kind == 1:
            munlock(self.addr, 4096)
            munmap(self.addr, 4096)
        self.addr = NULL
        self._release_held()
        self.keep = None
        return 0

    cdef void _release_held(self) noexcept:
        # The caller's buffer becomes its owner's again (it may be closed,
        # resized or freed from now on).
        if self.holding:
            self.holding = False
            PyBuffer_Release(&self.held)

    def __dealloc__(self):
        if self.addr != NULL and self.exports == 0:
            if self.kind == 0 and self.hcl is not None and self.hcl.ops != NULL:
                self.hcl.ops.unmap_page(self.hcl.ctx, self.addr)
            elif self.kind == 1:
                munlock(self.addr, 4096)
                munmap(self.addr, 4096)
            self.addr = NULL
        self._release_held()


cdef _Page _new_page(Hcl hcl, void *addr, int kind, str label, object keep=None):
    cdef _Page p = _Page.__new__(_Page)
    p.addr = addr
    p.kind = kind
    p.hcl = hcl
    p.label = label
    p.keep = keep
    hcl._pages.add(p)
    return p


cdef object _view(_Page page, object dtype, Py_ssize_t offset, Py_ssize_t count=-1):
    """A zero-copy numpy view into `page`; count -1 gives a 0-d record."""
    if count < 0:
        return np.frombuffer(page, dtype=dtype, count=1, offset=offset).reshape(())
    return np.frombuffer(page, dtype=dtype, count=count, offset=offset)


# ---- the device handle -----------------------------------------------------------

cdef class MshvVtl:
    """The seed's ``MshvVtl`` TDX operations: accepting pages and setting
    their attributes, TD-wide (not tied to a VP)."""

    cdef Hcl hcl

    def __init__(self, *args, **kwargs):
        raise TypeError("MshvVtl is not supposed to be instantiated from Python; use hcl.mshv_vtl")

    def tdx_accept_pages(self, range, attributes=None, *, verify=False):
        """Accept the private pages of ``range`` (a page-aligned
        :class:`MemoryRange`), 2 MiB at a time where aligned, falling back to
        4 KiB only on PAGE_SIZE_MISMATCH (docs/tdx-abi.md section 7.12).

        ``attributes``: None, or a pair ``(TdgMemPageGpaAttr,
        TdgMemPageAttrWriteR8)`` written with ATTR.WR after each accepted chunk
        at the level it was accepted at. ``verify=True`` reads the attributes
        back after each write (the seed's debug-build check).

        Raises a subclass of :class:`AcceptPagesError` (busy, invalid,
        attributes, unknown, already accepted) that says how far it got;
        any other failure (OSError, PageAttributesVerifyError, a signal
        handler's exception) carries ``range``, ``accepted`` and
        ``attributes_set`` too. A range reaching past 2**52 (the 40-bit
        page-number field) is a ValueError before any call.
        """
        return _accept_pages(self._hcl(), range, attributes, verify)

    def tdx_set_page_attributes(self, range, attributes, mask, *, verify=False):
        """Set the attributes of the accepted pages of ``range`` (section 7.13).
        Raises :class:`SetPageAttributesError` naming the page that failed."""
        return _set_page_attributes(self._hcl(), range, attributes, mask, verify)

    cdef Hcl _hcl(self):
        if self.hcl is None:
            raise ValueError("this MshvVtl was not obtained from hcl.mshv_vtl")
        return self.hcl


@cython.final
cdef class Hcl:
    """A handle on the ``mshv_vtl`` interface of one partition, over one of
    the backends: a device file (real or the FUSE stand-in) or the in-process
    simulator. Build one with :meth:`open`, :meth:`from_fd`,
    :meth:`create_vtl` or :meth:`simulated`; use as a context manager."""

    def __cinit__(self):
        self.fd = -1
        self.ops = NULL
        self.ctx = NULL
        self.tring = NULL
        self.backend = "closed"
        self._runners = weakref.WeakValueDictionary()
        self._pages = weakref.WeakSet()

    def __init__(self, *args, **kwargs):
        raise TypeError(
            "Hcl is not supposed to be instantiated directly; use Hcl.open(), "
            "Hcl.from_fd(), Hcl.create_vtl() or Hcl.simulated()")

    # -- construction ----------------------------------------------------------

    @staticmethod
    def simulated(vp_count=2, memory_size=64 << 20, **sim_kwargs):
        """An Hcl over a fresh in-process simulator (``hcl.sim`` is its
        control panel). Keyword arguments go to :class:`hcltdx.Sim`."""
        from hcltdx._sim import Sim as _SimType
        sim = _SimType(vp_count=vp_count, memory_size=memory_size, **sim_kwargs)
        return Hcl.from_sim(sim)

    @staticmethod
    def from_sim(sim):
        """An Hcl over an existing :class:`hcltdx.Sim` (several Hcl objects
        may share one model, as several processes share one kernel)."""
        cdef Hcl h = Hcl.__new__(Hcl)
        cdef Sim s = <Sim?>sim
        s._ptr()
        h.ops = s.ops
        h.ctx = s.ctx
        h.sim = sim
        h.vp_count = sim.vp_count
        h.backend = "simulator"
        h.tsc_deadline_layout = bool(getattr(sim, "tsc_deadline_layout", False))
        return h

    @staticmethod
    def open(path="/dev/mshv_vtl", vp_count=None, *, tsc_deadline_layout=False):
        """Open a file that *is* the VTL fd: a real device node, or the
        stand-in of :mod:`hcltdx.simdev`. ``vp_count`` defaults to the number
        of CPUs (each VP runs on its own CPU); a runner for a VP the device
        does not have raises ValueError before touching its pages.

        Before anything is written, mapped or issued, the file must be a
        character device, the anonymous-inode fd of ``MSHV_CREATE_VTL`` or a
        regular file on FUSE, and must take ``MSHV_VTL_TDCALL`` (probed once
        with a null argument, which changes nothing: the driver answers
        EFAULT, other files ENOTTY). Anything else is a ValueError."""
        path = os.fspath(path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError as e:
            raise FileNotFoundError(
                e.errno,
                f"{path} does not exist: this is not an OpenHCL TDX partition. "
                f"Use hcltdx.Hcl.simulated() to run on the simulator", path) from None
        except PermissionError as e:
            raise PermissionError(
                e.errno, f"no permission to open {path} (it needs root or the device's group)",
                path) from None
        try:
            return Hcl._from_owned_fd(fd, vp_count, path, tsc_deadline_layout)
        except BaseException:
            os.close(fd)
            raise

    @staticmethod
    def from_fd(fd, vp_count=None, *, tsc_deadline_layout=False):
        """Wrap a VTL fd the caller already has. hcltdx works on a duplicate,
        so the caller keeps (and closes) its own. The fd is checked as in
        :meth:`open`."""
        if not PyLong_Check(fd) or isinstance(fd, bool) or fd < 0:
            raise ValueError(f"fd must be a non-negative int, got {fd!r}")
        dup = os.dup(fd)
        os.set_inheritable(dup, False)
        try:
            return Hcl._from_owned_fd(dup, vp_count, f"fd {fd}", tsc_deadline_layout)
        except BaseException:
            os.close(dup)
            raise

    @staticmethod
    def create_vtl(mshv_path="/dev/mshv", vp_count=None, *, tsc_deadline_layout=False):
        """Obtain the VTL fd the way OpenHCL does: open ``/dev/mshv`` and issue
        ``MSHV_CREATE_VTL`` on it (section 2.1); its return value is the fd."""
        mshv_path = os.fspath(mshv_path)
        try:
            mfd = os.open(mshv_path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError as e:
            raise FileNotFoundError(
                e.errno, f"{mshv_path} does not exist: this is not an OpenHCL partition. "
                f"Use hcltdx.Hcl.simulated() to run on the simulator", mshv_path) from None
        except PermissionError as e:
            raise PermissionError(e.errno, f"no permission to open {mshv_path}", mshv_path) from None
        cdef uint8_t arg = 0
        cdef int vfd
        cdef int cfd = mfd
        cdef int err = 0
        try:
            # /dev/mshv is a character device; nothing else gets the request.
            if os.fstat(mfd).st_mode & 0o170000 != 0o020000:
                kind = _FILE_KINDS.get(os.fstat(mfd).st_mode & 0o170000, "not a character device")
                raise ValueError(f"{mshv_path} is not the mshv device: it is {kind}")
            with nogil:
                vfd = ioctl(cfd, MSHV_CREATE_VTL, &arg)
                if vfd < 0:
                    err = errno
            if vfd < 0:
                raise OSError(err, f"MSHV_CREATE_VTL on {mshv_path} failed: {os.strerror(err)}")
        finally:
            os.close(mfd)
        try:
            return Hcl._from_owned_fd(vfd, vp_count, f"{mshv_path} (VTL fd)", tsc_deadline_layout)
        except BaseException:
            os.close(vfd)
            raise

    @staticmethod
    def _from_owned_fd(int fd, vp_count, path, tsc_deadline_layout):
        cdef Hcl h = Hcl.__new__(Hcl)
        if vp_count is None:
            vp_count = os.cpu_count() or 1
        if not PyLong_Check(vp_count) or isinstance(vp_count, bool) or not 1 <= vp_count <= 0x10000:
            raise ValueError(f"vp_count must be an int in 1..65536, got {vp_count!r}")
        _check_vtl_fd(fd, path)
        h.fd = fd
        h.ops = &_device_ops
        h.ctx = <void *><intptr_t>fd
        h.path = path
        h.vp_count = vp_count
        h.backend = "device"
        h.tsc_deadline_layout = bool(tsc_deadline_layout)
        return h

    # -- state ---------------------------------------------------------------

    cdef int _check_open(self) except -1:
        if self.ops == NULL:
            raise ValueError("operation on a closed Hcl")
        return 0

    @property
    def closed(self):
        return self.ops == NULL

    def fileno(self):
        """The VTL fd (device backends only)."""
        self._check_open()
        if self.fd < 0:
            raise ValueError("the simulator backend has no file descriptor")
        return self.fd

    @property
    def mshv_vtl(self):
        """The TD-wide page operations (``tdx_accept_pages``, ``tdx_set_page_attributes``)."""
        self._check_open()
        if self._mshv_vtl is None:
            m = MshvVtl.__new__(MshvVtl)
            (<MshvVtl>m).hcl = self
            self._mshv_vtl = m
        return self._mshv_vtl

    def __repr__(self):
        state = "closed" if self.ops == NULL else self.backend
        where = f" {self.path!r}" if self.path is not None else ""
        return f"<hcltdx.Hcl {state}{where} vp_count={self.vp_count}>"

    def __enter__(self):
        self._check_open()
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Close every runner and the device. Idempotent. Raises BufferError
        (closing nothing) while numpy views of mapped pages are alive."""
        cdef _Page p
        if self.ops == NULL:
            return
        if self.inflight:
            raise RuntimeError("cannot close: another thread is inside a tdcall on this Hcl")
        for obj in list(self._pages):
            p = <_Page>obj
            if p.addr != NULL and p.exports:
                raise BufferError(
                    f"cannot close: {p.exports} numpy view(s) of {p.label} are alive")
        for r in list(self._runners.values()):
            (<TdxRunner>r)._close_pages()
            (<TdxRunner>r)._restore_affinity()
        for obj in list(self._pages):
            (<_Page>obj)._unmap()
        self.ops = NULL
        self.ctx = NULL
        # A trace still recording keeps its ring: its owner collects it.
        if self.fd >= 0:
            close(self.fd)
            self.fd = -1

    def __dealloc__(self):
        if self.fd >= 0:
            warnings.warn(f"unclosed hcltdx.Hcl on {self.path!r}", ResourceWarning)
            close(self.fd)
            self.fd = -1
        if self.tring != NULL:
            free(self.tring.entries)
            free(self.tring)
            self.tring = NULL

    # -- the raw transport ---------------------------------------------------------

    cdef int _call(self, uint32_t vp, mshv_tdcall *io) except -1:
        cdef int err
        cdef mshv_tdcall saved
        cdef const hcltdx_backend_ops *ops = self.ops
        cdef uint64_t leaf = io.rax     # the backend may overwrite RAX
        if ops == NULL:
            raise ValueError("operation on a closed Hcl")
        if not ops.may_block:
            err = transport(ops, self.ctx, self.tring, vp, io)
        else:
            saved = io[0]
            self.inflight += 1
            try:
                while True:
                    with nogil:
                        err = transport(ops, self.ctx, self.tring, vp, io)
                    if err != EINTR:
                        break
                    io[0] = saved
                    PyErr_CheckSignals()
            finally:
                self.inflight -= 1
        if err:
            raise _oserror(err, self, vp, leaf)
        return 0

    def tdcall(self, vp, leaf, rcx=0, rdx=0, r8=0, r9=0, *,
               r10=0, r11=0, r12=0, r13=0, r14=0, r15=0):
        """Issue one TDCALL exactly as ``MSHV_VTL_TDCALL`` carries it and
        return ``TdcallOutput(rax, rcx, rdx, r8, r10, r11)`` with ``rax`` a
        :class:`TdCallResult`. A failing TDX status is returned, not raised.

        VP.VMCALL and VP.ENTER are refused, as are non-zero R10-R15 (the
        kernel path cannot carry them), before any system call. On a device,
        the call is issued from the CPU of VP ``vp`` (the thread is pinned for
        the call if it is not already)."""
        cdef PyObject *a[12]
        a[0], a[1], a[2], a[3] = <PyObject *>vp, <PyObject *>leaf, <PyObject *>rcx, <PyObject *>rdx
        a[4], a[5], a[6], a[7] = <PyObject *>r8, <PyObject *>r9, <PyObject *>r10, <PyObject *>r11
        a[8], a[9], a[10], a[11] = <PyObject *>r12, <PyObject *>r13, <PyObject *>r14, <PyObject *>r15
        return _hcl_tdcall(self, a)

    cdef uint32_t _vp_index(self, object vp) except? 0xFFFFFFFF:
        cdef unsigned long long v
        if HCLTDX_LIKELY(PyLong_CheckExact(vp) and hcltdx_u64_of(vp, &v) == 0 and v < self.vp_count):
            return <uint32_t>v
        if not PyLong_Check(vp) or isinstance(vp, bool):
            raise TypeError(f"vp must be an int, not {type(vp).__name__}")
        if vp < 0 or vp >= self.vp_count:
            raise ValueError(f"vp {vp!r} out of range: this partition has {self.vp_count} VPs")
        return <uint32_t>vp

    # -- runners ------------------------------------------------------------------

    def runner(self, vp, *, vtl1_apic_page=None):
        """Create the :class:`TdxRunner` of VP ``vp``: maps its run page and
        VTL0 APIC page, blocks every proxied interrupt (``proxy_irr_blocked``
        all ones), obtains VTL1's APIC page and registers it with the module
        (VP.WR of VIRTUAL_APIC_PAGE for VTL1).

        On a device the calling thread is pinned to CPU ``vp`` for the
        runner's life; the runner belongs to that thread. ``vtl1_apic_page``
        (devices only): ``(buffer, physical_address)`` of a page the caller
        provides, a writable contiguous buffer of at least 4096 bytes that the
        runner holds (a buffer export) until it is closed: meanwhile the
        owner cannot close, resize or free it (BufferError). By default
        hcltdx allocates and locks one and resolves its address through
        ``/proc/self/pagemap`` (needs CAP_SYS_ADMIN)."""
        self._check_open()
        cdef uint32_t cvp = self._vp_index(vp)
        existing = self._runners.get(cvp)
        if existing is not None and not existing.closed:
            raise RuntimeError(f"a runner for VP {cvp} is already open; close it first")
        cdef int tid = gettid()
        if self.fd >= 0:
            # A second device runner would re-pin this thread: the first one's
            # calls would then silently reach the second one's VP.
            pinned = _device_runner_of_thread.get(tid)
            if pinned is not None and not pinned.closed:
                raise RuntimeError(
                    f"this thread already has the open runner of VP {pinned.vp} (pinned to "
                    f"CPU {pinned.vp}); a device runner needs a thread of its own: close "
                    f"that runner or create this one in another thread")
        r = TdxRunner._create(self, cvp, vtl1_apic_page)
        self._runners[cvp] = r
        if self.fd >= 0:
            _device_runner_of_thread[tid] = r
        return r

    # -- tracing (a ring buffer in C, off by default) -------------------------

    def trace(self, capacity=65536):
        """``with hcl.trace() as t:`` records every tdcall (leaf, inputs,
        outputs, status, timestamp) into a ring of ``capacity`` entries in C;
        ``t.calls`` is a structured array. Off by default, free when off."""
        from hcltdx.trace import Trace
        return Trace(self, capacity)

    @staticmethod
    def replay(source, **kwargs):
        """An Hcl whose tdcalls replay a recorded trace (a :class:`Trace`, its
        ``calls`` array or a saved file): the same sequence of calls returns
        the recorded outputs; any divergence raises."""
        return _poll_module().replay(source, **kwargs)

    def _start_trace(self, capacity):
        cdef trace_ring *t
        self._check_open()
        if self.tring != NULL:
            raise RuntimeError("a trace is already recording on this Hcl")
        if not PyLong_Check(capacity) or capacity < 1 or capacity > (1 << 26):
            raise ValueError(f"capacity must be an int in 1..{1 << 26}, got {capacity!r}")
        t = <trace_ring *>calloc(1, sizeof(trace_ring))
        if t == NULL:
            raise MemoryError()
        t.entries = <trace_entry *>calloc(<size_t>capacity, sizeof(trace_entry))
        if t.entries == NULL:
            free(t)
            raise MemoryError()
        t.capacity = capacity
        if self.inflight:
            free(t.entries)
            free(t)
            raise RuntimeError("cannot start a trace while another thread is inside a tdcall")
        self.tring = t

    def _stop_trace(self):
        """Stop recording; returns (total, entries as bytes, oldest first)."""
        cdef trace_ring *t = self.tring
        cdef uint64_t n, first, i
        if t == NULL:
            return 0, b""
        if self.inflight:
            raise RuntimeError("cannot stop a trace while another thread is inside a tdcall")
        self.tring = NULL
        n = t.head if t.head < t.capacity else t.capacity
        first = t.head - n
        out = bytearray(n * sizeof(trace_entry))
        cdef unsigned char[::1] mv = out
        for i in range(n):
            memcpy(&mv[i * sizeof(trace_entry)], &t.entries[(first + i) % t.capacity],
                   sizeof(trace_entry))
        total = t.head
        free(t.entries)
        free(t)
        return total, bytes(out)

    def _free_trace(self):
        if self.tring != NULL:
            free(self.tring.entries)
            free(self.tring)
            self.tring = NULL


TRACE_ENTRY_SIZE = sizeof(trace_entry)


cdef Hcl hcl_from_ops(const hcltdx_backend_ops *ops, void *ctx, object owner,
                      uint32_t vp_count, str backend, bint tsc_deadline_layout):
    cdef Hcl h = Hcl.__new__(Hcl)
    h.ops = ops
    h.ctx = ctx
    h.sim = owner
    h.vp_count = vp_count
    h.backend = backend
    h.tsc_deadline_layout = tsc_deadline_layout
    return h


# ---- page acceptance (sections 7.9-7.14), one nogil loop ---------------------

cdef enum:
    OUT_OK = 0
    OUT_BUSY = 1
    OUT_INVALID = 2
    OUT_ALREADY = 3
    OUT_UNKNOWN = 4
    OUT_ATTRS = 5
    OUT_VERIFY = 6
    OUT_ERRNO = 7
    OUT_SIGNAL = 8

cdef struct page_op:
    # inputs
    uint64_t start
    uint64_t end
    uint64_t attrs
    uint64_t mask
    bint set_attrs
    bint verify
    # outputs on failure
    uint64_t rax
    uint64_t leaf
    uint64_t gpa
    uint32_t level
    int err
    uint64_t got_rcx
    uint64_t got_rdx
    uint64_t chunk_done      # bytes at st.start accepted whose attribute step then failed


cdef int _call_retrying(const hcltdx_backend_ops *ops, void *ctx, trace_ring *t,
                        mshv_tdcall *io, bint *signalled) noexcept nogil:
    """One tdcall from a nogil loop: EINTR is retried here (the page must not
    be left half-processed) and remembered, so the loop can stop at the next
    clean point and let Python check its signals."""
    cdef mshv_tdcall saved = io[0]
    cdef int err
    while True:
        err = transport(ops, ctx, t, 0, io)
        if err != EINTR:
            return err
        signalled[0] = True
        io[0] = saved


cdef int _set_page_attr(const hcltdx_backend_ops *ops, void *ctx, trace_ring *t,
                        uint64_t mapping, page_op *st, bint *signalled) noexcept nogil:
    """ATTR.WR plus the optional read-back (section 7.11). Returns OUT_*."""
    cdef mshv_tdcall io
    io_init(&io, LEAF_MEM_PAGE_ATTR_WR, mapping, st.attrs, st.mask, 0)
    st.err = _call_retrying(ops, ctx, t, &io, signalled)
    if st.err:
        st.leaf = LEAF_MEM_PAGE_ATTR_WR
        return OUT_ERRNO
    if _code(io.rax) != 0:
        st.rax = io.rax
        st.leaf = LEAF_MEM_PAGE_ATTR_WR
        return OUT_ATTRS
    if st.verify:
        io_init(&io, LEAF_MEM_PAGE_ATTR_RD, mapping & GPA_PAGE_MASK, 0, 0, 0)
        st.err = _call_retrying(ops, ctx, t, &io, signalled)
        if st.err:
            st.leaf = LEAF_MEM_PAGE_ATTR_RD
            return OUT_ERRNO
        st.rax = io.rax
        st.got_rcx = io.rcx
        st.got_rdx = io.rdx
        st.leaf = LEAF_MEM_PAGE_ATTR_RD
        if _code(io.rax) != 0 or io.rcx != mapping or io.rdx != st.attrs:
            return OUT_VERIFY
    return OUT_OK


cdef int _accept_loop(const hcltdx_backend_ops *ops, void *ctx, trace_ring *t,
                      page_op *st) noexcept nogil:
    cdef mshv_tdcall io
    cdef uint32_t code
    cdef int out
    cdef bint signalled = False
    while st.start != st.end:
        if signalled:
            return OUT_SIGNAL
        st.gpa = st.start
        if st.start % LARGE_PAGE == 0 and st.end - st.start >= LARGE_PAGE:
            st.level = 1
            io_init(&io, LEAF_MEM_PAGE_ACCEPT, st.start | 1, 0, 0, 0)
            st.err = _call_retrying(ops, ctx, t, &io, &signalled)
            if st.err:
                st.leaf = LEAF_MEM_PAGE_ACCEPT
                return OUT_ERRNO
            code = _code(io.rax)
            if code == 0:
                if st.set_attrs:
                    out = _set_page_attr(ops, ctx, t, st.start | 1, st, &signalled)
                    if out != OUT_OK:
                        st.chunk_done = LARGE_PAGE
                        return out
                st.start += LARGE_PAGE
                continue
            st.rax = io.rax
            st.leaf = LEAF_MEM_PAGE_ACCEPT
            if code == CODE_OPERAND_BUSY:
                return OUT_BUSY
            if code == CODE_OPERAND_INVALID:
                return OUT_INVALID
            if code == CODE_PAGE_ALREADY_ACCEPTED:
                return OUT_ALREADY
            if code != CODE_PAGE_SIZE_MISMATCH:
                return OUT_UNKNOWN
        st.level = 0
        io_init(&io, LEAF_MEM_PAGE_ACCEPT, st.start, 0, 0, 0)
        st.err = _call_retrying(ops, ctx, t, &io, &signalled)
        if st.err:
            st.leaf = LEAF_MEM_PAGE_ACCEPT
            return OUT_ERRNO
        code = _code(io.rax)
        if code != 0:
            st.rax = io.rax
            st.leaf = LEAF_MEM_PAGE_ACCEPT
            if code == CODE_OPERAND_BUSY:
                return OUT_BUSY
            if code == CODE_OPERAND_INVALID:
                return OUT_INVALID
            if code == CODE_PAGE_ALREADY_ACCEPTED:
                return OUT_ALREADY
            return OUT_UNKNOWN
        if st.set_attrs:
            out = _set_page_attr(ops, ctx, t, st.start, st, &signalled)
            if out != OUT_OK:
                st.chunk_done = PAGE_SIZE
                return out
        st.start += PAGE_SIZE
    return OUT_OK


cdef int _set_attrs_loop(const hcltdx_backend_ops *ops, void *ctx, trace_ring *t,
                         page_op *st) noexcept nogil:
    cdef int out
    cdef bint signalled = False
    while st.start != st.end:
        if signalled:
            return OUT_SIGNAL
        st.gpa = st.start
        if st.start % LARGE_PAGE == 0 and st.end - st.start >= LARGE_PAGE:
            st.level = 1
            out = _set_page_attr(ops, ctx, t, st.start | 1, st, &signalled)
            if out == OUT_OK:
                st.start += LARGE_PAGE
                continue
            if out != OUT_ATTRS or _code(st.rax) != CODE_PAGE_SIZE_MISMATCH:
                return out
        st.level = 0
        out = _set_page_attr(ops, ctx, t, st.start, st, &signalled)
        if out != OUT_OK:
            return out
        st.start += PAGE_SIZE
    return OUT_OK


cdef object _as_range(object rng):
    if isinstance(rng, MemoryRange):
        r = rng
    elif isinstance(rng, tuple) and len(rng) == 2:
        r = MemoryRange(rng[0], rng[1])
    else:
        raise TypeError(f"range must be a MemoryRange or a (start, end) tuple, not {type(rng).__name__}")
    # ACCEPT and ATTR.WR carry the page number in RCX bits 12-51 (40 bits,
    # spec 4.2): a page at or above 2**52 cannot be named.
    if r.end > GPA_LIMIT:
        raise ValueError(f"range {r} reaches past the 40-bit GPA page number field: "
                         f"every page must lie below {GPA_LIMIT:#x} (2**52)")
    return r


cdef int _run_page_loop(Hcl hcl, page_op *st, bint accept) except -1:
    """Runs the accept / set-attributes loop without the GIL, stopping to
    let Python handle signals when a call was interrupted."""
    cdef int out
    while True:
        hcl._check_open()
        hcl.inflight += 1
        try:
            with nogil:
                if accept:
                    out = _accept_loop(hcl.ops, hcl.ctx, hcl.tring, st)
                else:
                    out = _set_attrs_loop(hcl.ops, hcl.ctx, hcl.tring, st)
        finally:
            hcl.inflight -= 1
        if out != OUT_SIGNAL:
            return out
        PyErr_CheckSignals()


cdef object _verify_error(page_op *st, uint64_t mapping):
    if _code(st.rax) != 0:
        return PageAttributesVerifyError(
            f"reading back the attributes of gpa {st.gpa:#x} failed: "
            f"{TdCallResult(st.rax)!r}")
    return PageAttributesVerifyError(
        f"attributes of gpa {st.gpa:#x} read back differ from those written: "
        f"mapping {st.got_rcx:#x} (wrote {mapping:#x}), attributes {st.got_rdx:#x} "
        f"(wrote {st.attrs:#x})")


cdef object _with_progress(object exc, object rng, str name, object done, object attrs_set,
                           bint accept=True):
    """Every failure of the page loops says how far they got, also those
    that are not an AcceptPagesError (an OSError of the transport, a failed
    read-back, a signal handler's exception): ``range`` and ``accepted``
    (``done`` for set-attributes), plus ``attributes_set`` for accept."""
    try:
        exc.range = rng
        setattr(exc, name, done)
        if accept:
            exc.attributes_set = attrs_set
        note = getattr(exc, "add_note", None)
        if note is not None:
            note(f"{'accepted' if name == 'accepted' else 'attributes set'} so far: {done}")
    except (AttributeError, TypeError):
        pass
    return exc


def _accept_pages(Hcl hcl not None, rng, attributes, verify):
    cdef page_op st
    hcl._check_open()
    rng = _as_range(rng)
    memset(&st, 0, sizeof(page_op))
    st.start = rng.start
    st.end = rng.end
    if attributes is not None:
        if not isinstance(attributes, tuple) or len(attributes) != 2:
            raise TypeError("attributes must be None or a pair (TdgMemPageGpaAttr, TdgMemPageAttrWriteR8)")
        st.attrs = _u64(attributes[0], "attributes")
        st.mask = _u64(attributes[1], "mask")
        st.set_attrs = True
    st.verify = bool(verify)
    cdef uint64_t begin = st.start
    cdef int out
    try:
        out = _run_page_loop(hcl, &st, True)
    except BaseException as e:
        # A signal handler raised between two chunks (or the Hcl was closed
        # by another thread): st.start is the end of what was accepted.
        done = MemoryRange(begin, st.start)
        raise _with_progress(e, rng, "accepted", done, done if st.set_attrs else None)
    if out == OUT_OK:
        return None
    # The chunk at st.start was accepted when only its attribute step failed.
    accepted = MemoryRange(begin, st.start + st.chunk_done)
    attrs_set = MemoryRange(begin, st.start) if st.set_attrs else None
    if out == OUT_ERRNO:
        raise _with_progress(_oserror(st.err, hcl, 0, st.leaf), rng, "accepted", accepted, attrs_set)
    if out == OUT_VERIFY:
        raise _with_progress(_verify_error(&st, st.start | st.level), rng, "accepted", accepted,
                             attrs_set)
    cls = {OUT_BUSY: AcceptPagesBusy, OUT_INVALID: AcceptPagesInvalid,
           OUT_ALREADY: PageAlreadyAcceptedError, OUT_UNKNOWN: AcceptPagesUnknown,
           OUT_ATTRS: AcceptPagesAttributes}[out]
    what = None
    if out == OUT_ALREADY:
        what = f"page {st.gpa // 4096} already accepted"
    raise cls(st.rax, st.leaf, range=rng, gpa=st.gpa, level=st.level, accepted=accepted,
              attributes_set=attrs_set, what=what)


def _set_page_attributes(Hcl hcl not None, rng, attributes, mask, verify):
    cdef page_op st
    hcl._check_open()
    rng = _as_range(rng)
    memset(&st, 0, sizeof(page_op))
    st.start = rng.start
    st.end = rng.end
    st.attrs = _u64(attributes, "attributes")
    st.mask = _u64(mask, "mask")
    st.set_attrs = True
    st.verify = bool(verify)
    cdef uint64_t begin = st.start
    cdef int out
    try:
        out = _run_page_loop(hcl, &st, False)
    except BaseException as e:
        raise _with_progress(e, rng, "done", MemoryRange(begin, st.start), None, False)
    if out == OUT_OK:
        return None
    done = MemoryRange(begin, st.start)
    if out == OUT_ERRNO:
        raise _with_progress(_oserror(st.err, hcl, 0, st.leaf), rng, "done", done, None, False)
    if out == OUT_VERIFY:
        raise _with_progress(_verify_error(&st, st.start | st.level), rng, "done", done, None, False)
    raise SetPageAttributesError(st.rax, st.leaf, range=rng, gpa=st.gpa, level=st.level,
                                 done=done)


# ---- private registers (section 7.16) -----------------------------------------

@cython.final
cdef class TdxPrivateRegs:
    """The per-VTL registers swapped into the run page before entering a VTL
    (the seed's ``TdxPrivateRegs``). ``TdxPrivateRegs.new(vtl)`` gives the
    initial values; plain construction gives all zeros."""

    cdef uint64_t _rflags, _rip, _ssp
    cdef uint8_t _rvi, _svi
    cdef uint64_t _msr_kernel_gs_base, _msr_star, _msr_lstar, _msr_sfmask
    cdef uint64_t _msr_xss, _msr_tsc_aux, _vp_entry_flags

    FIELDS = ("rflags", "rip", "ssp", "rvi", "svi", "msr_kernel_gs_base", "msr_star",
              "msr_lstar", "msr_sfmask", "msr_xss", "msr_tsc_aux", "vp_entry_flags")

    def __init__(self, **fields):
        for name, value in fields.items():
            if name not in TdxPrivateRegs.FIELDS:
                raise TypeError(f"TdxPrivateRegs has no field {name!r}")
            setattr(self, name, value)

    @staticmethod
    def new(vtl):
        """Initial values for ``vtl``: RFLAGS at reset (0x2), the entry flags
        naming the VTL's L2 VM with an INVEPT pending, everything else 0."""
        cdef int v = _vtl_of(vtl)
        cdef TdxPrivateRegs r = TdxPrivateRegs.__new__(TdxPrivateRegs)
        r._rflags = 0x2
        r._vp_entry_flags = (<uint64_t>(v + 1) << 52) | 1
        return r

    @property
    def rflags(self): return self._rflags
    @rflags.setter
    def rflags(self, v): self._rflags = _u64(v, "rflags")
    @property
    def rip(self): return self._rip
    @rip.setter
    def rip(self, v): self._rip = _u64(v, "rip")
    @property
    def ssp(self): return self._ssp
    @ssp.setter
    def ssp(self, v): self._ssp = _u64(v, "ssp")
    @property
    def rvi(self): return self._rvi
    @rvi.setter
    def rvi(self, v): self._rvi = <uint8_t>_uint(v, "rvi", 8)
    @property
    def svi(self): return self._svi
    @svi.setter
    def svi(self, v): self._svi = <uint8_t>_uint(v, "svi", 8)
    @property
    def msr_kernel_gs_base(self): return self._msr_kernel_gs_base
    @msr_kernel_gs_base.setter
    def msr_kernel_gs_base(self, v): self._msr_kernel_gs_base = _u64(v, "msr_kernel_gs_base")
    @property
    def msr_star(self): return self._msr_star
    @msr_star.setter
    def msr_star(self, v): self._msr_star = _u64(v, "msr_star")
    @property
    def msr_lstar(self): return self._msr_lstar
    @msr_lstar.setter
    def msr_lstar(self, v): self._msr_lstar = _u64(v, "msr_lstar")
    @property
    def msr_sfmask(self): return self._msr_sfmask
    @msr_sfmask.setter
    def msr_sfmask(self, v): self._msr_sfmask = _u64(v, "msr_sfmask")
    @property
    def msr_xss(self): return self._msr_xss
    @msr_xss.setter
    def msr_xss(self, v): self._msr_xss = _u64(v, "msr_xss")
    @property
    def msr_tsc_aux(self): return self._msr_tsc_aux
    @msr_tsc_aux.setter
    def msr_tsc_aux(self, v): self._msr_tsc_aux = _u64(v, "msr_tsc_aux")
    @property
    def vp_entry_flags(self): return TdxVmFlags(self._vp_entry_flags)
    @vp_entry_flags.setter
    def vp_entry_flags(self, v): self._vp_entry_flags = _u64(v, "vp_entry_flags")

    def as_dict(self):
        return {name: getattr(self, name) for name in TdxPrivateRegs.FIELDS}

    def __eq__(self, other):
        if not isinstance(other, TdxPrivateRegs):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    def __repr__(self):
        parts = ", ".join(
            f"{k}={v:#x}" if k != "vp_entry_flags" else f"{k}={int(v):#x}"
            for k, v in self.as_dict().items())
        return f"TdxPrivateRegs({parts})"

    __hash__ = None


# ---- the runner's call path ------------------------------------------------------

cdef int _runner_blocking(TdxRunner r, mshv_tdcall *io) except -1:
    """A call on a backend that may block: the GIL is released (Hcl._call)
    and the runner is marked busy meanwhile."""
    r.busy = True
    try:
        r.hcl._call(r.vp, io)
    finally:
        r.busy = False
    return 0


cdef int _raise_transport(TdxRunner r, int err, uint64_t leaf) except -1:
    raise _oserror(err, r.hcl, r.vp, leaf)


cdef int _raise_vmcs(TdxRunner r, uint64_t rax, uint64_t leaf, object field, int vtl) except -1:
    raise VmcsAccessError(rax, leaf, vp=r.vp, field=field, vtl=vtl)


cdef inline int _runner_call(TdxRunner r, mshv_tdcall *io) except -1:
    """One tdcall of the runner's VP; a transport failure raises OSError
    naming the leaf that was sent."""
    cdef const hcltdx_backend_ops *ops = r.hcl.ops
    cdef uint64_t leaf = io.rax
    cdef int err
    if HCLTDX_LIKELY(ops != NULL and not ops.may_block):
        # In-process backends: straight to the table, no GIL release
        # (cheaper than the release itself).
        err = transport(ops, r.hcl.ctx, r.hcl.tring, r.vp, io)
        if HCLTDX_UNLIKELY(err != 0):
            return _raise_transport(r, err, leaf)
        return 0
    return _runner_blocking(r, io)


cdef inline bint _width_ok(uint32_t raw, int bits) noexcept nogil:
    cdef uint32_t width = (raw >> 13) & 3
    if bits == 64:
        return (width & 1) != 0      # 64-bit or natural width
    if bits == 32:
        return width == 2
    return width == 0


cdef int _bad_reg(object value, str name, int bits) except -1:
    if bits == 64:
        return _u64_error(value, name)
    return _uint_error(value, name, bits)


# The width of a single-field access, as the type of its result: one copy of
# _vmcs_read and _vmcs_write per width, each called from one place (its
# vectorcall entry) so the compiler folds the width in and inlines it there.
ctypedef fused vmcs_width:
    uint16_t
    uint32_t
    uint64_t


cdef inline int _vmcs_read(TdxRunner r, PyObject *vtl, PyObject *field, str method,
                           vmcs_width *out) except -1:
    # The arguments are borrowed from the caller (who holds them for the
    # call); objects are made of them only on the cold paths.
    cdef int bits = sizeof(vmcs_width) * 8
    cdef mshv_tdcall io
    cdef uint32_t raw
    cdef int v, err
    cdef const hcltdx_backend_ops *ops
    if HCLTDX_UNLIKELY(not runner_ready(r)):
        r._enter()
    raw = _field_of_p(field)
    v = _vtl_of_p(vtl)
    if HCLTDX_UNLIKELY(not _width_ok(raw, bits)):
        _bad_width(method, <object>field, raw)
    io_init(&io, LEAF_VP_RD, 0, vmcs_code(raw, v), 0, 0)
    # _runner_call spelled out: gcc keeps it out of line here.
    ops = r.hcl.ops
    if HCLTDX_LIKELY(ops != NULL and not ops.may_block):
        err = transport(ops, r.hcl.ctx, r.hcl.tring, r.vp, &io)
        if HCLTDX_UNLIKELY(err != 0):
            return _raise_transport(r, err, LEAF_VP_RD)
    else:
        _runner_blocking(r, &io)
    if HCLTDX_UNLIKELY(_code(io.rax) != 0):
        return _raise_vmcs(r, io.rax, LEAF_VP_RD, <object>field, v)
    out[0] = <vmcs_width>io.r8
    return 0


cdef inline int _vmcs_write(TdxRunner r, PyObject *vtl, PyObject *field, PyObject *mask,
                            PyObject *value, str method, vmcs_width *old) except -1:
    # Borrowed arguments, as in _vmcs_read.
    cdef int bits = sizeof(vmcs_width) * 8
    cdef mshv_tdcall io
    cdef uint32_t raw
    cdef int v, err
    cdef const hcltdx_backend_ops *ops
    cdef unsigned long long m = 0, val = 0  # set before use; 0 keeps gcc from guessing
    if HCLTDX_UNLIKELY(not runner_ready(r)):
        r._enter()
    raw = _field_of_p(field)
    v = _vtl_of_p(vtl)
    if HCLTDX_UNLIKELY(not _width_ok(raw, bits)):
        _bad_width(method, <object>field, raw)
    if HCLTDX_UNLIKELY(hcltdx_u64_of_p(mask, &m) != 0 or (bits < 64 and (m >> bits) != 0)):
        _bad_reg(<object>mask, "mask", bits)
    if HCLTDX_UNLIKELY(hcltdx_u64_of_p(value, &val) != 0 or (bits < 64 and (val >> bits) != 0)):
        _bad_reg(<object>value, "value", bits)
    io_init(&io, LEAF_VP_WR, 0, vmcs_code(raw, v), val, m)
    ops = r.hcl.ops  # _runner_call spelled out, as in _vmcs_read
    if HCLTDX_LIKELY(ops != NULL and not ops.may_block):
        err = transport(ops, r.hcl.ctx, r.hcl.tring, r.vp, &io)
        if HCLTDX_UNLIKELY(err != 0):
            return _raise_transport(r, err, LEAF_VP_WR)
    else:
        _runner_blocking(r, &io)
    if HCLTDX_UNLIKELY(_code(io.rax) != 0):
        return _raise_vmcs(r, io.rax, LEAF_VP_WR, <object>field, v)
    old[0] = <vmcs_width>io.r8
    return 0


# ---- the runner ----------------------------------------------------------------------

@cython.final
cdef class TdxRunner:
    """The seed's ``ProcessorRunner<Tdx>`` for one VP: typed access to the run
    page, the APIC pages and the VP's VMCS through the TDX module.

    Belongs to the thread that created it. Views it returns are zero-copy
    numpy arrays over the mapped pages; while any is alive, :meth:`close`
    raises BufferError."""

    def __init__(self, *args, **kwargs):
        raise TypeError("TdxRunner is not supposed to be instantiated from Python; use hcl.runner(vp)")

    @staticmethod
    cdef TdxRunner _create(Hcl hcl, uint32_t vp, object vtl1_apic_page):
        cdef TdxRunner r = TdxRunner.__new__(TdxRunner)
        cdef void *page = NULL
        cdef uint64_t gpa = 0
        cdef int err, i
        cdef cpu_set_t saved
        r.hcl = hcl
        r.vp = vp
        r.owner = hcltdx_thread_id()
        # The caller's page is checked (and held) before anything is pinned,
        # mapped or written.
        if vtl1_apic_page is not None:
            if hcl.ops.vtl1_apic_page != NULL:
                raise ValueError("vtl1_apic_page is only for device backends; "
                                 "the simulator provides VTL1's APIC page")
            r._apic1, gpa = _host_private_page(hcl, vp, vtl1_apic_page)
        try:
            if hcl.fd >= 0:
                _pin(vp, &saved)
                # The owner's kernel thread id too: a runner dropped or closed
                # elsewhere (the garbage collector, Hcl.close) still unpins it.
                r._saved_affinity = (gettid(), _cpuset_to_set(&saved))
            err = hcl.ops.map_page(hcl.ctx, vp, &page)
            if err:
                raise OSError(err, f"mapping the run page of VP {vp} failed: {os.strerror(err)}")
            r._run_page = _new_page(hcl, page, 0, f"run page of VP {vp}")
            if hcl.fd >= 0:
                _check_mapped(hcl, vp, page, "run page")
            err = hcl.ops.map_page(hcl.ctx, MSHV_APIC_PAGE_OFFSET | vp, &page)
            if err:
                raise OSError(err, f"mapping the VTL0 APIC page of VP {vp} failed: {os.strerror(err)}")
            r._apic0 = _new_page(hcl, page, 0, f"VTL0 APIC page of VP {vp}")
            if hcl.fd >= 0:
                _check_mapped(hcl, vp, page, "VTL0 APIC page")
            r.run = <hcl_run *>r._run_page.addr
            r.tdx = hcl_run_tdx(r.run)
            for i in range(8):
                r.run.proxy_irr_blocked[i] = 0xFFFFFFFF
            if hcl.ops.vtl1_apic_page != NULL:
                err = hcl.ops.vtl1_apic_page(hcl.ctx, vp, &page, &gpa)
                if err:
                    raise OSError(err, f"obtaining VTL1's APIC page of VP {vp} failed")
                r._apic1 = _new_page(hcl, page, 2, f"VTL1 APIC page of VP {vp}", hcl.sim)
            elif r._apic1 is None:
                r._apic1, gpa = _host_private_page(hcl, vp, None)
            r._vp_wr(vmcs_code(VIRTUAL_APIC_PAGE_ENCODING, 1), gpa, ALL_ONES,
                     VmcsField(VIRTUAL_APIC_PAGE_ENCODING), 1)
        except VmcsAccessError as e:
            r._close_pages()
            r._restore_affinity()
            raise TdCallError(e.result, e.leaf, vp=vp,
                              what="registering VTL1's APIC page") from None
        except BaseException:
            r._close_pages()
            r._restore_affinity()
            raise
        return r

    # -- lifetime -------------------------------------------------------------------

    cdef inline int _enter(self) except -1:
        if self.run == NULL:
            raise ValueError(f"operation on a closed runner (VP {self.vp})")
        if self.owner != hcltdx_thread_id():
            raise RuntimeError(
                f"the runner of VP {self.vp} belongs to the thread that created it "
                f"(and, on a device, is pinned to CPU {self.vp}); create one runner per thread")
        if self.busy:
            raise RuntimeError(f"the runner of VP {self.vp} is already inside a call")
        return 0

    def _close_pages(self):
        cdef _Page p
        for p in (self._run_page, self._apic0, self._apic1):
            if p is not None and p.addr != NULL and p.exports:
                raise BufferError(f"cannot close: {p.exports} numpy view(s) of {p.label} are alive")
        for p in (self._run_page, self._apic0, self._apic1):
            if p is not None:
                p._unmap()
        self.run = NULL
        self.tdx = NULL

    def _restore_affinity(self):
        saved, self._saved_affinity = self._saved_affinity, None
        if saved is None:
            return
        tid, cpus = saved
        if self.owner == hcltdx_thread_id():
            tid = 0
        elif not os.path.exists(f"/proc/self/task/{tid}"):
            return  # the owning thread has exited; its id may be reused
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:
            pass

    def __dealloc__(self):
        # Dropped without close(): the pages unmap themselves once no view is
        # left; the owning thread must not stay pinned to the VP's CPU.
        if self._saved_affinity is not None:
            try:
                if self.run != NULL:
                    warnings.warn(f"unclosed hcltdx.TdxRunner of VP {self.vp}", ResourceWarning)
                self._restore_affinity()
            except BaseException:
                pass

    @property
    def closed(self):
        return self.run == NULL

    def close(self):
        """Unmap the VP's pages (restoring the thread's CPU affinity on a
        device). Idempotent; BufferError while views are alive."""
        if self.run == NULL:
            return
        if self.busy:
            raise RuntimeError(f"cannot close the runner of VP {self.vp}: a call is in progress")
        self._close_pages()
        self._restore_affinity()

    def __enter__(self):
        self._enter()
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        if self.hcl is None:
            return "<hcltdx.TdxRunner (not made by hcl.runner())>"
        state = "closed" if self.run == NULL else "open"
        return f"<hcltdx.TdxRunner vp={self.vp} {state} on {self.hcl.backend}>"

    # -- tdcalls ----------------------------------------------------------------------

    cdef inline int _issue(self, mshv_tdcall *io) except -1:
        return _runner_call(self, io)

    cdef uint64_t _vp_rd(self, uint64_t code, object field, int vtl) except? 0xFFFFFFFFFFFFFFFF:
        cdef mshv_tdcall io
        io_init(&io, LEAF_VP_RD, 0, code, 0, 0)
        _runner_call(self, &io)
        if _code(io.rax) != 0:
            raise VmcsAccessError(io.rax, LEAF_VP_RD, vp=self.vp, field=field, vtl=vtl)
        return io.r8

    cdef uint64_t _vp_wr(self, uint64_t code, uint64_t value, uint64_t mask,
                         object field, int vtl) except? 0xFFFFFFFFFFFFFFFF:
        cdef mshv_tdcall io
        io_init(&io, LEAF_VP_WR, 0, code, value, mask)
        _runner_call(self, &io)
        if _code(io.rax) != 0:
            raise VmcsAccessError(io.rax, LEAF_VP_WR, vp=self.vp, field=field, vtl=vtl)
        return io.r8

    # The single-field methods are one flat C function each (_vmcs_read and
    # _vmcs_write are inlined): every check stays, failures go to cold code.

    def read_vmcs64(self, vtl, field):
        """Read a 64-bit (or natural-width) VMCS field of ``vtl``'s L2 VM."""
        cdef PyObject *args[2]
        args[0], args[1] = <PyObject *>vtl, <PyObject *>field
        return _fast_read_vmcs64(self, args, 2, NULL)

    def read_vmcs32(self, vtl, field):
        """Read a 32-bit VMCS field."""
        cdef PyObject *args[2]
        args[0], args[1] = <PyObject *>vtl, <PyObject *>field
        return _fast_read_vmcs32(self, args, 2, NULL)

    def read_vmcs16(self, vtl, field):
        """Read a 16-bit VMCS field."""
        cdef PyObject *args[2]
        args[0], args[1] = <PyObject *>vtl, <PyObject *>field
        return _fast_read_vmcs16(self, args, 2, NULL)

    def write_vmcs64(self, vtl, field, mask, value):
        """Write the bits of ``value`` selected by ``mask`` into a 64-bit (or
        natural-width) field; returns the previous value."""
        cdef PyObject *args[4]
        args[0], args[1] = <PyObject *>vtl, <PyObject *>field
        args[2], args[3] = <PyObject *>mask, <PyObject *>value
        return _fast_write_vmcs64(self, args, 4, NULL)

    def write_vmcs32(self, vtl, field, mask, value):
        """Write a 32-bit field (mask and value are u32); returns the previous value."""
        cdef PyObject *args[4]
        args[0], args[1] = <PyObject *>vtl, <PyObject *>field
        args[2], args[3] = <PyObject *>mask, <PyObject *>value
        return _fast_write_vmcs32(self, args, 4, NULL)

    def write_vmcs16(self, vtl, field, mask, value):
        """Write a 16-bit field (mask and value are u16); returns the previous value."""
        cdef PyObject *args[4]
        args[0], args[1] = <PyObject *>vtl, <PyObject *>field
        args[2], args[3] = <PyObject *>mask, <PyObject *>value
        return _fast_write_vmcs16(self, args, 4, NULL)

    def write_msr_bitmap(self, vtl, i, mask, word):
        """Write the bits of ``word`` selected by ``mask`` into 64-bit word
        ``i`` of ``vtl``'s MSR bitmap; returns the previous word."""
        self._enter()
        cdef int v = _vtl_of(vtl)
        cdef uint64_t idx = _uint(i, "i", 24)
        cdef uint64_t m = _u64(mask, "mask")
        cdef uint64_t w = _u64(word, "word")
        return self._vp_wr(msr_bitmap_code(<uint32_t>idx, v), w, m, None, v)

    def set_msr_bit(self, vtl, msr, write, intercept):
        """Intercept (or stop intercepting) reads or writes of one MSR in
        ``vtl``'s MSR bitmap (Intel layout: read-low, read-high, write-low,
        write-high quarters of 1 KiB). Returns the previous bit."""
        if not PyLong_Check(msr):
            raise TypeError(f"msr must be an int, not {type(msr).__name__}")
        if 0 <= msr <= 0x1FFF:
            base = 0
        elif 0xC0000000 <= msr <= 0xC0001FFF:
            base = 1024 * 8
        else:
            raise ValueError(f"MSR {msr:#x} is outside the ranges an MSR bitmap covers")
        bit = base + (msr & 0x1FFF) + (2048 * 8 if write else 0)
        prev = self.write_msr_bitmap(vtl, bit // 64, 1 << (bit % 64),
                                     (1 << (bit % 64)) if intercept else 0)
        return bool((prev >> (bit % 64)) & 1)

    def set_l2_ctls(self, vtl, value):
        """Write ``vtl``'s L2 controls (a :class:`TdxL2Ctls`); returns the
        previous value. VTL1 uses field code 0xA020000300000052 (the seed's
        ...51 for VTL1 is a typo fixed upstream)."""
        self._enter()
        cdef int v = _vtl_of(vtl)
        cdef uint64_t val = _u64(value, "value")
        cdef mshv_tdcall io
        io_init(&io, LEAF_VP_WR, 0, FIELD_CODE_L2_CTLS_VM2 if v else FIELD_CODE_L2_CTLS_VM1,
                 val, ALL_ONES)
        self._issue(&io)
        if _code(io.rax) != 0:
            raise TdCallError(io.rax, LEAF_VP_WR, vp=self.vp, vtl=v, what="set_l2_ctls")
        return TdxL2Ctls(io.r8)

    def invgla(self, gla_flags, gla_info):
        """TDG.VP.INVGLA: invalidate guest linear addresses of an L2 VM
        (``gla_flags``: TdGlaVmAndFlags, ``gla_info``: TdxGlaListInfo or a GLA)."""
        self._enter()
        cdef mshv_tdcall io
        io_init(&io, LEAF_VP_INVGLA, _u64(gla_flags, "gla_flags"), _u64(gla_info, "gla_info"), 0, 0)
        self._issue(&io)
        if _code(io.rax) != 0:
            raise TdCallError(io.rax, LEAF_VP_INVGLA, vp=self.vp, what="invgla")

    # -- the run page --------------------------------------------------------------------

    cdef int _mapped(self) except -1:
        if self.run == NULL:
            raise ValueError(f"operation on a closed runner (VP {self.vp})")
        return 0

    def run_page(self):
        """The whole run page as a 0-d ``RUN_PAGE_DTYPE`` record (a view)."""
        self._mapped()
        return _view(self._run_page, _abi.run_page_dtype(self.hcl.tsc_deadline_layout), 0)

    def tdx_vp_context(self):
        """The TDX VP context (run page + 272) as a 0-d record view."""
        self._mapped()
        dt = (_abi.TDX_VP_CONTEXT_TSC_DEADLINE_DTYPE if self.hcl.tsc_deadline_layout
              else _abi.TDX_VP_CONTEXT_DTYPE)
        return _view(self._run_page, dt, OFF_CONTEXT)

    def tdx_enter_guest_gps(self):
        """The 16 general-purpose registers of the enter-guest state (a
        writable uint64[16] view at run page + 512; index order ``TdxGp``)."""
        self._mapped()
        return _view(self._run_page, np.dtype("<u8"), OFF_GPR_LIST, 16)

    tdx_enter_guest_gps_mut = tdx_enter_guest_gps

    def tdx_enter_guest_state(self):
        """The whole ``TdxL2EnterGuestState`` (gps, rflags, rip, ssp, rvi, svi) as a record view."""
        self._mapped()
        return _view(self._run_page, _abi.ENTER_GUEST_STATE_DTYPE, OFF_GPR_LIST)

    def tdx_vp_enter_exit_info(self):
        """The registers VP.ENTER returned (run page + 272) as a record view."""
        self._mapped()
        return _view(self._run_page, _abi.EXIT_INFO_DTYPE, OFF_CONTEXT)

    def tdx_vp_state(self):
        """``tdx_vp_state`` (run page + 408) as a record view."""
        self._mapped()
        return _view(self._run_page, _abi.VP_STATE_DTYPE, OFF_VP_STATE)

    def tdx_apic_page(self, vtl):
        """The virtual-APIC page of ``vtl`` as an ``APIC_PAGE_DTYPE`` record
        view (VTL0: the kernel's page; VTL1: the private page)."""
        self._mapped()
        cdef int v = _vtl_of(vtl)
        return _view(self._apic1 if v else self._apic0, _abi.APIC_PAGE_DTYPE, 0)

    tdx_apic_page_mut = tdx_apic_page

    def fx_state(self):
        """The FXSAVE image (run page + 768) as an ``FXSAVE_DTYPE`` record view."""
        self._mapped()
        return _view(self._run_page, _abi.FXSAVE_DTYPE, OFF_FX_STATE)

    fx_state_mut = fx_state

    def l2_tsc_deadline(self):
        """The L2 TSC-deadline block of the newer kernel layout (run page + 672)."""
        self._mapped()
        if not self.hcl.tsc_deadline_layout:
            raise ValueError("this run page uses the seed's layout, which has no TSC-deadline block")
        return _view(self._run_page, _abi.TSC_DEADLINE_DTYPE, OFF_TSC_DEADLINE)

    def proxy_irr_blocked(self):
        """The eight u32 words of ``proxy_irr_blocked`` (a view)."""
        self._mapped()
        return _view(self._run_page, np.dtype("<u4"), OFF_PROXY_IRR_BLOCKED, 8)

    def cr2(self):
        """CR2 from the shared kernel state (``vp_state.cr2``)."""
        self._mapped()
        return self.tdx.vp_state.cr2

    def set_cr2(self, value):
        """Set CR2 in the shared kernel state."""
        self._mapped()
        self.tdx.vp_state.cr2 = _u64(value, "value")

    def tdx_vp_state_flags(self):
        """``vp_state.flags`` as :class:`TdxVpStateFlags`."""
        self._mapped()
        return TdxVpStateFlags(self.tdx.vp_state.flags)

    def set_tdx_vp_state_flags(self, value):
        """Set ``vp_state.flags`` (e.g. request a WBINVD before the next entry)."""
        self._mapped()
        self.tdx.vp_state.flags = _u64(value, "value")

    def read_private_regs(self, TdxPrivateRegs regs not None):
        """Copy the private registers run page -> ``regs`` (section 7.16)."""
        self._mapped()
        cdef tdx_vp_context *c = self.tdx
        regs._rflags = c.gpr_list.rflags
        regs._rip = c.gpr_list.rip
        regs._ssp = c.gpr_list.ssp
        regs._rvi = c.gpr_list.rvi
        regs._svi = c.gpr_list.svi
        regs._msr_kernel_gs_base = c.vp_state.msr_kernel_gs_base
        regs._msr_star = c.vp_state.msr_star
        regs._msr_lstar = c.vp_state.msr_lstar
        regs._msr_sfmask = c.vp_state.msr_sfmask
        regs._msr_xss = c.vp_state.msr_xss
        regs._msr_tsc_aux = c.vp_state.msr_tsc_aux
        regs._vp_entry_flags = c.entry_rcx

    def write_private_regs(self, TdxPrivateRegs regs not None):
        """Copy the private registers ``regs`` -> run page. GPRs, CR2 (shared
        between VTLs) and the global VP-state flags are left untouched."""
        self._mapped()
        cdef tdx_vp_context *c = self.tdx
        c.gpr_list.rflags = regs._rflags
        c.gpr_list.rip = regs._rip
        c.gpr_list.ssp = regs._ssp
        c.gpr_list.rvi = regs._rvi
        c.gpr_list.svi = regs._svi
        c.vp_state.msr_kernel_gs_base = regs._msr_kernel_gs_base
        c.vp_state.msr_star = regs._msr_star
        c.vp_state.msr_lstar = regs._msr_lstar
        c.vp_state.msr_sfmask = regs._msr_sfmask
        c.vp_state.msr_xss = regs._msr_xss
        c.vp_state.msr_tsc_aux = regs._msr_tsc_aux
        c.entry_rcx = regs._vp_entry_flags

    # -- batch access, polling, snapshots, tracing (hcltdx._poll, hcltdx.snapshot) --

    def read_vmcs_batch(self, vtl, fields, out=None):
        """Read many VMCS fields of ``vtl`` in one C loop without the GIL;
        returns a uint64 array (``out`` if given). Widths are checked for all
        fields before any tdcall; a failure part-way raises
        :class:`BatchError` keeping the values read so far."""
        if _batch_read == NULL:
            _load_batch_impls()
        return _batch_read(self, vtl, fields, out)

    def write_vmcs_batch(self, vtl, fields, masks, values):
        """Write many VMCS fields in one C loop; returns the previous values."""
        if _batch_write == NULL:
            _load_batch_impls()
        return _batch_write(self, vtl, fields, masks, values)

    def poll_vmcs(self, vtl, fields, samples, interval_ns=0, out=None, **kwargs):
        """Sample ``fields`` ``samples`` times (every ``interval_ns``) without
        the GIL into a structured array (``t_ns`` + one column per field)."""
        return _poll_module().poll_vmcs(self, vtl, fields, samples, interval_ns, out, **kwargs)

    def snapshot(self, **kwargs):
        """One numpy record of the VP's state (see :mod:`hcltdx.snapshot`)."""
        return _poll_module().snapshot(self, **kwargs)

    def recorder(self, capacity, **kwargs):
        """A :class:`hcltdx.snapshot.Recorder` of snapshots, preallocated."""
        return _poll_module().recorder(self, capacity, **kwargs)

    def trace(self, capacity=65536):
        """``with runner.trace() as t:`` records every tdcall of the device
        (this runner's and others') into a bounded ring; ``t.calls`` is a
        structured array."""
        return self.hcl.trace(capacity)

    # -- the seed's register hooks (trivial for TDX) -----------------------------

    def try_set_reg(self, vtl, name, value):
        """TDX keeps no registers in a register page: never handled here."""
        _vtl_of(vtl)
        return False

    def try_get_reg(self, vtl, name):
        """TDX keeps no registers in a register page: always None."""
        _vtl_of(vtl)
        return None

    def must_flush_regs_on(self, name):
        return False

    def flush_register_page(self):
        pass


cdef object _poll_mod = None
cdef batch_read_fn _batch_read = NULL       # set by hcltdx._poll on import
cdef batch_write_fn _batch_write = NULL


cdef int set_batch_impls(batch_read_fn rd, batch_write_fn wr) except -1:
    global _batch_read, _batch_write
    _batch_read = rd
    _batch_write = wr
    return 0


cdef int _load_batch_impls() except -1:
    _poll_module()   # its import installs them
    if _batch_read == NULL or _batch_write == NULL:
        raise ImportError("hcltdx._poll did not install the batch functions")
    return 0

# The open device runner of each kernel thread (one at most: it pins the thread).
cdef object _device_runner_of_thread = weakref.WeakValueDictionary()


cdef object _poll_module():
    global _poll_mod
    if _poll_mod is None:
        from hcltdx import _poll
        _poll_mod = _poll
    return _poll_mod


cdef object _cpuset_to_set(cpu_set_t *s):
    return {i for i in range(1024) if CPU_ISSET(i, s)}


cdef int _check_mapped(Hcl hcl, uint32_t vp, void *page, str what) except -1:
    # The device maps any offset, but a VP it does not have faults on first
    # touch (SIGBUS, spec 10.2): find that out before anything reads or writes.
    cdef bint ok
    with nogil:
        ok = _page_readable(page)
    if not ok:
        raise ValueError(
            f"VP {vp} does not exist on {hcl.path}: its {what} cannot be read (a load would be "
            f"SIGBUS); the device has fewer VPs than vp_count={hcl.vp_count}, so pass its real "
            f"VP count to Hcl.open")
    return 0


cdef tuple _host_private_page(Hcl hcl, uint32_t vp, object supplied):
    """VTL1's APIC page on a real host: the caller's ``(buffer, address)`` or
    a page allocated here, locked, and resolved through /proc/self/pagemap."""
    cdef void *p
    cdef _Page page
    cdef Py_buffer view
    if supplied is not None:
        if not isinstance(supplied, tuple) or len(supplied) != 2:
            raise TypeError("vtl1_apic_page must be a pair (writable buffer of 4096 bytes, physical address)")
        buf, addr = supplied
        a = _u64(addr, "vtl1_apic_page address")
        if a & 0xFFF:
            raise ValueError(f"vtl1_apic_page address {a:#x} is not 4 KiB-aligned")
        # The runner reads and writes this memory for its whole life, so it
        # holds an export of the buffer until the page is unmapped: while the
        # runner is open its owner cannot close, resize or free it
        # (BufferError), as with any numpy view.
        try:
            PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE | PyBUF_ANY_CONTIGUOUS)
        except BufferError as e:
            raise ValueError(f"vtl1_apic_page buffer must be writable and contiguous: {e}") from None
        except TypeError:
            raise TypeError(f"vtl1_apic_page buffer must support the buffer protocol, "
                            f"not {type(buf).__name__}") from None
        if view.len < 4096:
            PyBuffer_Release(&view)
            raise ValueError(f"vtl1_apic_page buffer must hold at least 4096 bytes, it has {view.len}")
        page = _new_page(hcl, view.buf, 2, f"VTL1 APIC page of VP {vp}", buf)
        page.held = view
        page.holding = True
        return page, a
    p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    if p == MAP_FAILED:
        raise MemoryError("cannot allocate VTL1's APIC page")
    memset(p, 0, 4096)
    if mlock(p, 4096) != 0:
        e = errno
        munmap(p, 4096)
        raise OSError(e, f"cannot lock VTL1's APIC page in memory: {os.strerror(e)}")
    page = _new_page(hcl, p, 1, f"VTL1 APIC page of VP {vp}")
    vaddr = <intptr_t>p
    with open("/proc/self/pagemap", "rb") as f:
        f.seek((vaddr // 4096) * 8)
        entry = int.from_bytes(f.read(8), "little")
    pfn = entry & ((1 << 55) - 1)
    if not (entry >> 63) or pfn == 0:
        page._unmap()
        raise HclError(
            "cannot resolve the physical address of VTL1's APIC page through "
            "/proc/self/pagemap (needs CAP_SYS_ADMIN); pass "
            "vtl1_apic_page=(buffer, physical_address)")
    return page, pfn * 4096


@cython.final
cdef class _Baseline:
    """A Cython method that does nothing with the same arguments as
    ``read_vmcs64``: the yardstick of benchmarks/bench_runner.py."""

    def noop(self, vtl, field):
        return 0

    cpdef object noop3(self, object a, object b, object c):
        """A no-op ``cpdef`` method taking three arguments."""
        return 0

    def table_loop(self, Hcl hcl not None, uint32_t vp, uint64_t code, Py_ssize_t n):
        """``n`` VP.RDs of field code ``code`` through ``hcl``'s backend table
        from a C loop (no Python per call): what a compiled caller of the same
        table pays. Returns the last value read."""
        cdef mshv_tdcall io
        cdef Py_ssize_t i
        cdef uint64_t last = 0
        cdef int err = 0
        hcl._check_open()
        if hcl.ops.may_block:
            raise ValueError("table_loop is for in-process backends")
        for i in range(n):
            io_init(&io, LEAF_VP_RD, 0, code, 0, 0)
            err = transport(hcl.ops, hcl.ctx, hcl.tring, vp, &io)
            if err or _code(io.rax) != 0:
                break
            last = io.r8
        if err:
            raise OSError(err, os.strerror(err))
        if _code(io.rax) != 0:
            raise VmcsAccessError(io.rax, LEAF_VP_RD, vp=vp)
        return last


# ---- vectorcall entries of the single-field methods -----------------------------------
#
# Cython's wrapper of a ``def`` method parses keywords, takes a reference to
# every argument and drops it again on every call (~60 instructions for
# read_vmcs64, ~300 for Hcl.tdcall's twelve parameters). The six
# single-field VMCS methods and Hcl.tdcall get a METH_FASTCALL entry of their
# own in the type's dict: a call they can place (a positional call with the
# right count; for tdcall also keywords found among its interned parameter
# names) goes straight to the implementation with the borrowed arguments;
# any other call is passed to the Cython method, so its argument handling and
# its error messages stay exactly as they are. The method descriptor checks
# ``self``'s type before either runs.

cdef extern from "Python.h":
    ctypedef struct PyMethodDef:
        const char *ml_name
        void *ml_meth
        int ml_flags
        const char *ml_doc
    int METH_FASTCALL
    int METH_KEYWORDS
    object PyDescr_NewMethod(PyTypeObject *tp, PyMethodDef *meth)
    object PyObject_Vectorcall(object callable, PyObject **args, size_t nargsf, PyObject *kwnames)
    Py_ssize_t PyTuple_GET_SIZE(PyObject *t)
    PyObject *PyTuple_GET_ITEM(PyObject *t, Py_ssize_t i)

cdef enum:
    _FORWARD_MAX = 8        # self + arguments forwarded without a heap array

# The Cython methods, for every call the fast entries do not take.
cdef object _orig_read64, _orig_read32, _orig_read16
cdef object _orig_write64, _orig_write32, _orig_write16


cdef object _forward(object orig, object self, PyObject **args, Py_ssize_t nargs,
                     PyObject *kwnames):
    """``orig(self, *args, **kwargs)`` for a vectorcall's arguments."""
    cdef PyObject *buf[_FORWARD_MAX]
    cdef Py_ssize_t i, nkw = 0 if kwnames == NULL else PyTuple_GET_SIZE(kwnames)
    if nargs < 0 or nkw < 0:
        raise SystemError("bad vectorcall arguments")
    if 1 + nargs + nkw <= _FORWARD_MAX:
        buf[0] = <PyObject *>self
        for i in range(nargs + nkw):
            buf[1 + i] = args[i]
        return PyObject_Vectorcall(orig, buf, <size_t>(1 + nargs), kwnames)
    return orig(self, *[<object>args[i] for i in range(nargs)],
                **{<object>PyTuple_GET_ITEM(kwnames, i): <object>args[nargs + i] for i in range(nkw)})


cdef object _fast_read_vmcs64(object self, PyObject **args, Py_ssize_t nargs, PyObject *kwnames):
    cdef uint64_t value = 0
    if HCLTDX_LIKELY(nargs == 2 and kwnames == NULL):
        _vmcs_read(<TdxRunner>self, args[0], args[1], "read_vmcs64", &value)
        return hcltdx_long_of_u64(value)
    return _forward(_orig_read64, self, args, nargs, kwnames)


cdef object _fast_read_vmcs32(object self, PyObject **args, Py_ssize_t nargs, PyObject *kwnames):
    cdef uint32_t value = 0
    if HCLTDX_LIKELY(nargs == 2 and kwnames == NULL):
        _vmcs_read(<TdxRunner>self, args[0], args[1], "read_vmcs32", &value)
        return hcltdx_long_of_u64(value)
    return _forward(_orig_read32, self, args, nargs, kwnames)


cdef object _fast_read_vmcs16(object self, PyObject **args, Py_ssize_t nargs, PyObject *kwnames):
    cdef uint16_t value = 0
    if HCLTDX_LIKELY(nargs == 2 and kwnames == NULL):
        _vmcs_read(<TdxRunner>self, args[0], args[1], "read_vmcs16", &value)
        return value
    return _forward(_orig_read16, self, args, nargs, kwnames)


cdef object _fast_write_vmcs64(object self, PyObject **args, Py_ssize_t nargs, PyObject *kwnames):
    cdef uint64_t old = 0
    if HCLTDX_LIKELY(nargs == 4 and kwnames == NULL):
        _vmcs_write(<TdxRunner>self, args[0], args[1], args[2], args[3], "write_vmcs64", &old)
        return hcltdx_long_of_u64(old)
    return _forward(_orig_write64, self, args, nargs, kwnames)


cdef object _fast_write_vmcs32(object self, PyObject **args, Py_ssize_t nargs, PyObject *kwnames):
    cdef uint32_t old = 0
    if HCLTDX_LIKELY(nargs == 4 and kwnames == NULL):
        _vmcs_write(<TdxRunner>self, args[0], args[1], args[2], args[3], "write_vmcs32", &old)
        return hcltdx_long_of_u64(old)
    return _forward(_orig_write32, self, args, nargs, kwnames)


cdef object _fast_write_vmcs16(object self, PyObject **args, Py_ssize_t nargs, PyObject *kwnames):
    cdef uint16_t old = 0
    if HCLTDX_LIKELY(nargs == 4 and kwnames == NULL):
        _vmcs_write(<TdxRunner>self, args[0], args[1], args[2], args[3], "write_vmcs16", &old)
        return old
    return _forward(_orig_write16, self, args, nargs, kwnames)


# Hcl.tdcall's parameters in order, interned: keyword names in a call are
# interned strings, so a name is found by identity (a name that is not, or a
# keyword this entry does not place, goes to the Cython method).
_TDCALL_PARAMS = tuple(sys.intern(n) for n in (
    "vp", "leaf", "rcx", "rdx", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"))
cdef enum:
    _TDCALL_NPOS = 6        # vp .. r9 may be positional; r10-r15 are keyword-only
cdef object _orig_tdcall


cdef object _fast_hcl_tdcall(object self, PyObject **args, Py_ssize_t nargs, PyObject *kwnames):
    cdef PyObject *a[12]
    cdef PyObject *name
    cdef PyObject *names = <PyObject *>_TDCALL_PARAMS
    cdef Py_ssize_t i, j, nkw = 0 if kwnames == NULL else PyTuple_GET_SIZE(kwnames)
    cdef unsigned int filled
    if HCLTDX_UNLIKELY(nargs < 2 or nargs > _TDCALL_NPOS):
        return _forward(_orig_tdcall, self, args, nargs, kwnames)
    for i in range(12):
        a[i] = args[i] if i < nargs else <PyObject *>_ZERO
    filled = (1u << nargs) - 1
    for j in range(nkw):
        name = PyTuple_GET_ITEM(kwnames, j)
        i = 2
        while i < 12 and PyTuple_GET_ITEM(names, i) != name:
            i += 1
        if HCLTDX_UNLIKELY(i == 12 or (filled >> i) & 1):
            return _forward(_orig_tdcall, self, args, nargs, kwnames)
        filled |= 1u << i
        a[i] = args[nargs + j]
    return _hcl_tdcall(<Hcl>self, a)


# The method definitions live as long as the module (descriptors point at them);
# their names and docstrings are the Cython methods', kept alive in _fast_strings.
cdef PyMethodDef _fast_defs[7]
cdef list _fast_strings = []


cdef extern from *:
    """
    /* Sets an attribute in a static extension type's own dict (the type is
     * immutable to Python code) and drops the type's method cache. */
    static int hcltdx_type_dict_set(PyObject *tp, PyObject *name, PyObject *value)
    {
        int rc = PyDict_SetItem(((PyTypeObject *)tp)->tp_dict, name, value);
        PyType_Modified((PyTypeObject *)tp);
        return rc;
    }
    """
    int hcltdx_type_dict_set(object tp, object name, object value) except -1


cdef object _install_fast(int i, str name, void *fn, type tp=TdxRunner):
    """Replaces tp.<name> by a METH_FASTCALL descriptor calling fn, with the
    same signature and docstring; returns the Cython method."""
    orig = tp.__dict__[name]
    sig = getattr(orig, "__text_signature__", None)
    text = (f"{name}{sig}\n--\n\n" if sig else "") + (orig.__doc__ or "")
    cname, doc = name.encode(), text.encode()
    _fast_strings.append((cname, doc))
    _fast_defs[i].ml_name = cname
    _fast_defs[i].ml_meth = fn
    _fast_defs[i].ml_flags = METH_FASTCALL | METH_KEYWORDS
    _fast_defs[i].ml_doc = doc
    hcltdx_type_dict_set(tp, name, PyDescr_NewMethod(<PyTypeObject *>tp, &_fast_defs[i]))
    return orig


_orig_read64 = _install_fast(0, "read_vmcs64", <void *>_fast_read_vmcs64)
_orig_read32 = _install_fast(1, "read_vmcs32", <void *>_fast_read_vmcs32)
_orig_read16 = _install_fast(2, "read_vmcs16", <void *>_fast_read_vmcs16)
_orig_write64 = _install_fast(3, "write_vmcs64", <void *>_fast_write_vmcs64)
_orig_write32 = _install_fast(4, "write_vmcs32", <void *>_fast_write_vmcs32)
_orig_write16 = _install_fast(5, "write_vmcs16", <void *>_fast_write_vmcs16)
_orig_tdcall = _install_fast(6, "tdcall", <void *>_fast_hcl_tdcall, Hcl)


def _thread_id():
    """The owner id hcltdx gives the calling thread (tests compare it with
    threading.get_ident())."""
    return hcltdx_thread_id()


if hcltdx_thread_id() != threading.get_ident():
    raise ImportError("hcltdx._core: the thread pointer is not this libc's pthread_self(); "
                      "hcltdx_thread_id in include/hcltdx/pyconv.h does not hold on this platform")
