cimport cython

# The Cython core: the device handle, the runner and the tdcall transport.
# Other extensions (polling, tracing) cimport these types.
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int32_t, int64_t

from hcltdx.includes.abi cimport mshv_tdcall, hcl_run, tdx_vp_context
from hcltdx.includes.backend cimport hcltdx_backend_ops


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
    cdef Py_ssize_t shape[1]
    cdef Py_ssize_t strides[1]
    cdef readonly str label
    cdef object __weakref__
    cdef int _unmap(self) except -1


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


# Build an Hcl over any backend table (replay and other backends living in
# other extensions). `owner` keeps whatever `ctx` points into alive.
cdef Hcl hcl_from_ops(const hcltdx_backend_ops *ops, void *ctx, object owner,
                      uint32_t vp_count, str backend, bint tsc_deadline_layout)
