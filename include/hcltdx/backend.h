/*
 * hcltdx backend table: one struct of function pointers per way of reaching
 * the TDX module (the real mshv_vtl fd, the in-process simulator, a replay of
 * a recorded trace). The Cython core runs the same code over every backend.
 *
 * Every function must be callable without the GIL. Errors are returned as
 * positive errno values (0 = success), captured inside the call.
 */
#ifndef HCLTDX_BACKEND_H
#define HCLTDX_BACKEND_H

#include <stdint.h>

#include "hcltdx/abi.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hcltdx_backend_ops {
    const char *name;
    /* Non-zero when a call may block (a syscall): the core then releases the
     * GIL around it. An in-process call is cheaper than the release. */
    int may_block;
    /* One tdcall as MSHV_VTL_TDCALL carries it, for VP `vp`. */
    int (*tdcall)(void *ctx, uint32_t vp, struct mshv_tdcall *io);
    /* Map one page at an mshv_vtl mmap page offset; *page receives it. */
    int (*map_page)(void *ctx, uint64_t page_offset, void **page);
    void (*unmap_page)(void *ctx, void *page);
    /* VTL1's APIC page for VP `vp`: a private page and the guest-physical
     * address to register with the module. NULL when the backend has none
     * (a real host: the core allocates, locks and resolves a page itself). */
    int (*vtl1_apic_page)(void *ctx, uint32_t vp, void **page, uint64_t *gpa);
} hcltdx_backend_ops;

#ifdef __cplusplus
}
#endif

#endif /* HCLTDX_BACKEND_H */
