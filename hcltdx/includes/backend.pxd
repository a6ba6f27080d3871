# Declarations of include/hcltdx/backend.h (the tdcall backend table).
from libc.stdint cimport uint32_t, uint64_t

from hcltdx.includes.abi cimport mshv_tdcall

cdef extern from "hcltdx/backend.h" nogil:
    ctypedef struct hcltdx_backend_ops:
        const char *name
        int may_block
        int (*tdcall)(void *ctx, uint32_t vp, mshv_tdcall *io) noexcept nogil
        int (*map_page)(void *ctx, uint64_t page_offset, void **page) noexcept nogil
        void (*unmap_page)(void *ctx, void *page) noexcept nogil
        int (*vtl1_apic_page)(void *ctx, uint32_t vp, void **page, uint64_t *gpa) noexcept nogil
