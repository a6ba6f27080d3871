cimport cython

# The Cython core: the device handle, the runner and the tdcall transport.
# Other extensions (polling, tracing) cimport these types.
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int32_t, int64_t

from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

from hcltdx.includes.abi cimport mshv_tdcall, hcl_run, tdx_vp_context
from hcltdx.includes.backend cimport hcltdx_backend_ops
from hcltdx.includes.pyconv cimport hcltdx_thread_id


# One recorded tdcall (trace ring entry).
cdef struct trace_entry:
    uint64_t ts_ns
    uint32_t vp
    int32_t err
    mshv_tdcall ins
    mshv_tdcall outs

cdef struct trace_ring:
    trace_entry *entries
    uint64_t capacity
    uint64_t head      # total calls recorded (next slot = head % capacity)


# ---- the transport: every tdcall of every extension goes through here ----

cdef inline uint64_t now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <uint64_t>ts.tv_sec * 1000000000 + <uint64_t>ts.tv_nsec


cdef extern from *:
    """
    static inline uint64_t hcltdx_claim_slot(uint64_t *head)
    {
        return __atomic_fetch_add(head, 1, __ATOMIC_RELAXED);
    }
    """
    # Threads in device calls at once each get their own ring slot.
    uint64_t hcltdx_claim_slot(uint64_t *head) noexcept nogil


cdef inline int transport(const hcltdx_backend_ops *ops, void *ctx, trace_ring *t,
                          uint32_t vp, mshv_tdcall *io) noexcept nogil:
    """One tdcall through the backend table; recorded when a trace ring is on
    (off, it costs one NULL test)."""
    cdef trace_entry *e
    if t == NULL:
        return ops.tdcall(ctx, vp, io)
    e = &t.entries[hcltdx_claim_slot(&t.head) % t.capacity]
    e.ts_ns = now_ns()
    e.vp = vp
    e.ins = io[0]
    e.err = ops.tdcall(ctx, vp, io)
    e.outs = io[0]
    return e.err


cdef inline void io_init(mshv_tdcall *io, uint64_t leaf, uint64_t rcx, uint64_t rdx,
                         uint64_t r8, uint64_t r9) noexcept nogil:
    io.rax = leaf
    io.rcx = rcx
    io.rdx = rdx
    io.r8 = r8
    io.r9 = r9
    io.r10_out = 0
    io.r11_out = 0


cdef extern from *:
    """
    /* The bits a VMCS encoding's TDX field code adds to it, by VTL and width
     * bits (docs/tdx-abi.md 7.4): field_size (32-33: Width16 1, Width32 2,
     * Width64 and natural 3), context TD_VCPU (2 at 52-54), class VMCS_1 (36)
     * or VMCS_2 (44) at 56-61. */
    #define HCLTDX_CODE_HI(size, cls) (((uint64_t)(size) << 32) | ((uint64_t)2 << 52) | ((uint64_t)(cls) << 56))
    static const uint64_t hcltdx_code_hi[2][4] = {
        {HCLTDX_CODE_HI(1, 36), HCLTDX_CODE_HI(3, 36), HCLTDX_CODE_HI(2, 36), HCLTDX_CODE_HI(3, 36)},
        {HCLTDX_CODE_HI(1, 44), HCLTDX_CODE_HI(3, 44), HCLTDX_CODE_HI(2, 44), HCLTDX_CODE_HI(3, 44)},
    };
    """
    const uint64_t hcltdx_code_hi[2][4]


cdef inline uint64_t vmcs_code(uint32_t raw, int vtl) noexcept nogil:
    """TDG.VP.RD/WR field code of a VMCS encoding (docs/tdx-abi.md 7.4):
    one table load (vtl 0 or anything else for 1)."""
    return <uint64_t>raw | hcltdx_code_hi[vtl != 0][(raw >> 13) & 3]


@cython.final
cdef class Hcl:
    cdef const hcltdx_backend_ops *ops
    cdef void *ctx
    cdef int fd
    cdef readonly object sim
    cdef readonly object path
    cdef readonly uint32_t vp_count
    cdef readonly str backend
    cdef Py_ssize_t inflight
    cdef object _runners     # WeakValueDictionary vp -> TdxRunner
    cdef object _pages       # WeakSet of _Page
    cdef readonly bint tsc_deadline_layout
    cdef object _mshv_vtl
    cdef trace_ring *tring
    cdef object _trace_owner
    cdef object __weakref__

    cdef int _call(self, uint32_t vp, mshv_tdcall *io) except -1
    cdef int _check_open(self) except -1
    cdef uint32_t _vp_index(self, object vp) except? 0xFFFFFFFF


@cython.final
cdef class _Page:
    cdef void *addr
    cdef Py_ssize_t exports
    cdef int kind            # 0 backend page, 1 page hcltdx allocated, 2 caller's buffer
    cdef Hcl hcl
    cdef object keep         # the caller's buffer (kind 2)
    cdef Py_buffer held      # kind 2 from a caller: an export of its buffer, held till unmap
    cdef bint holding
    cdef Py_ssize_t shape[1]
    cdef Py_ssize_t strides[1]
    cdef readonly str label
    cdef object __weakref__
    cdef int _unmap(self) except -1
    cdef void _release_held(self) noexcept


@cython.final
cdef class TdxRunner:
    cdef readonly Hcl hcl
    cdef readonly uint32_t vp
    cdef hcl_run *run
    cdef tdx_vp_context *tdx
    cdef _Page _run_page
    cdef _Page _apic0
    cdef _Page _apic1
    cdef unsigned long owner
    cdef bint busy
    cdef object _saved_affinity
    cdef object __weakref__

    @staticmethod
    cdef TdxRunner _create(Hcl hcl, uint32_t vp, object vtl1_apic_page)
    cdef inline int _enter(self) except -1
    cdef inline int _issue(self, mshv_tdcall *io) except -1
    cdef int _mapped(self) except -1
    cdef uint64_t _vp_rd(self, uint64_t code, object field, int vtl) except? 0xFFFFFFFFFFFFFFFF
    cdef uint64_t _vp_wr(self, uint64_t code, uint64_t value, uint64_t mask,
                         object field, int vtl) except? 0xFFFFFFFFFFFFFFFF


cdef inline bint runner_ready(TdxRunner r) noexcept:
    """Open, owned by this thread and not inside a call (TdxRunner._enter
    raises the error for each way this can be false)."""
    return r.run != NULL and not r.busy and r.owner == hcltdx_thread_id()


# hcltdx._poll's batch access, installed when it is imported, so that
# TdxRunner.read_vmcs_batch/write_vmcs_batch reach it without a Python call.
ctypedef object (*batch_read_fn)(TdxRunner runner, object vtl, object fields, object out)
ctypedef object (*batch_write_fn)(TdxRunner runner, object vtl, object fields, object masks,
                                  object values)
cdef int set_batch_impls(batch_read_fn rd, batch_write_fn wr) except -1


# A backend owner's explanation of an errno (None when it has none).
cdef object backend_error(Hcl hcl, int err)


# Build an Hcl over any backend table (replay and other backends living in
# other extensions). `owner` keeps whatever `ctx` points into alive.
cdef Hcl hcl_from_ops(const hcltdx_backend_ops *ops, void *ctx, object owner,
                      uint32_t vp_count, str backend, bint tsc_deadline_layout)
