# Declarations of include/hcltdx/abi.h (the mshv_vtl ABI).
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from "hcltdx/abi.h" nogil:
    const uint32_t HCLTDX_PAGE_SIZE
    const uint32_t HCLTDX_LARGE_PAGE_SIZE
    const uint32_t MSHV_APIC_PAGE_OFFSET
    const uint32_t HCL_RUN_CONTEXT_OFFSET
    const uint32_t MSHV_VTL_TDCALL
    const uint32_t MSHV_CREATE_VTL
    const uint32_t MSHV_CHECK_EXTENSION
    const uint32_t MSHV_VTL_RETURN_TO_LOWER_VTL
    const uint32_t MSHV_VTL_READ_VMX_CR4_FIXED1

    cdef struct mshv_tdcall:
        uint64_t rax
        uint64_t rcx
        uint64_t rdx
        uint64_t r8
        uint64_t r9
        uint64_t r10_out
        uint64_t r11_out

    ctypedef struct hcltdx_fxsave:
        uint16_t fcw
        uint32_t mxcsr

    ctypedef struct hcltdx_apic_register:
        uint32_t value

    ctypedef struct hcltdx_apic_page:
        hcltdx_apic_register id

    ctypedef struct tdx_tdg_vp_enter_exit_info:
        uint64_t rax
        uint64_t rcx
        uint64_t rdx

    ctypedef struct tdx_vp_state:
        uint64_t msr_kernel_gs_base
        uint64_t msr_star
        uint64_t msr_lstar
        uint64_t msr_sfmask
        uint64_t msr_xss
        uint64_t cr2
        uint64_t msr_tsc_aux
        uint64_t flags

    ctypedef struct tdx_l2_enter_guest_state:
        uint64_t gps[16]
        uint64_t rflags
        uint64_t rip
        uint64_t ssp
        uint8_t rvi
        uint8_t svi

    ctypedef struct tdx_vp_context:
        tdx_tdg_vp_enter_exit_info exit_info
        tdx_vp_state vp_state
        uint64_t entry_rcx
        tdx_l2_enter_guest_state gpr_list
        hcltdx_fxsave fx_state

    ctypedef struct hcl_run:
        uint32_t cancel
        uint32_t flags
        uint8_t target_vtl
        uint32_t proxy_irr_blocked[8]

    tdx_vp_context *hcl_run_tdx(hcl_run *run)
