/*
 * hcltdx: the mshv_vtl kernel ABI used by the TDX backing.
 *
 * Layouts follow docs/tdx-abi.md section 3; every size and offset the kernel
 * relies on is pinned by a _Static_assert, so a drift is a compile error.
 * Plain C11, no dependencies: usable from the Cython core, the simulator,
 * ctypes and Rust bindgen alike.
 */
#ifndef HCLTDX_ABI_H
#define HCLTDX_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- ioctl request encoding (Linux x86-64 _IOC) ---------------------- */

#define HCLTDX_IOC_NONE 0u
#define HCLTDX_IOC_WRITE 1u
#define HCLTDX_IOC_READ 2u

#define HCLTDX_IOC(dir, type, nr, size) \
    ((uint32_t)(((uint32_t)(dir) << 30) | ((uint32_t)(size) << 16) | \
                ((uint32_t)(type) << 8) | (uint32_t)(nr)))
#define HCLTDX_IO(type, nr) HCLTDX_IOC(HCLTDX_IOC_NONE, type, nr, 0)
#define HCLTDX_IOR(type, nr, size) HCLTDX_IOC(HCLTDX_IOC_READ, type, nr, size)
#define HCLTDX_IOW(type, nr, size) HCLTDX_IOC(HCLTDX_IOC_WRITE, type, nr, size)
#define HCLTDX_IOWR(type, nr, size) \
    HCLTDX_IOC(HCLTDX_IOC_READ | HCLTDX_IOC_WRITE, type, nr, size)

#define MSHV_IOCTL 0xB8u

/* ---- page geometry ---------------------------------------------------- */

#define HCLTDX_PAGE_SIZE 4096u
#define HCLTDX_PAGE_SHIFT 12u
#define HCLTDX_LARGE_PAGE_SIZE 0x200000u
#define HV_MESSAGE_SIZE 256u
#define VTL_RETURN_ACTION_SIZE 256u
#define MSHV_VTL_RUN_FLAG_HALTED 1u

/* mmap page offsets of the mshv_vtl fd: OR-ed with the VP index. */
#define HCL_RUN_PAGE_OFFSET 0u
#define HCL_REG_PAGE_OFFSET (1u << 16)
#define HCL_VMSA_PAGE_OFFSET (2u << 16)
#define MSHV_APIC_PAGE_OFFSET (3u << 16)
#define HCL_VMSA_GUEST_VSM_PAGE_OFFSET (4u << 16)
#define HCL_PAGE_OFFSET_VP_MASK 0xFFFFu

/* ---- struct mshv_tdcall (argument of MSHV_VTL_TDCALL) ------------------ */

struct __attribute__((packed)) mshv_tdcall {
    uint64_t rax; /* in: leaf; out: TDX status */
    uint64_t rcx;
    uint64_t rdx;
    uint64_t r8;
    uint64_t r9;
    uint64_t r10_out;
    uint64_t r11_out;
};

/* ---- ioctl request numbers -------------------------------------------- */

#define MSHV_CHECK_EXTENSION HCLTDX_IOW(MSHV_IOCTL, 0x00, 4)
#define MSHV_GET_VP_REGISTERS HCLTDX_IOWR(MSHV_IOCTL, 0x05, 16)
#define MSHV_SET_VP_REGISTERS HCLTDX_IOW(MSHV_IOCTL, 0x06, 16)
#define MSHV_CREATE_VTL HCLTDX_IOR(MSHV_IOCTL, 0x1D, 1)
#define MSHV_HVCALL_SETUP HCLTDX_IOW(MSHV_IOCTL, 0x1E, 16)
#define MSHV_HVCALL HCLTDX_IOWR(MSHV_IOCTL, 0x1F, 48)
#define MSHV_VTL_ADD_VTL0_MEMORY HCLTDX_IOW(MSHV_IOCTL, 0x21, 16)
#define MSHV_VTL_SET_POLL_FILE HCLTDX_IOW(MSHV_IOCTL, 0x25, 8)
#define MSHV_VTL_RETURN_TO_LOWER_VTL HCLTDX_IO(MSHV_IOCTL, 0x27)
#define MSHV_VTL_PVALIDATE HCLTDX_IOW(MSHV_IOCTL, 0x28, 20)
#define MSHV_VTL_RMPADJUST HCLTDX_IOW(MSHV_IOCTL, 0x29, 32)
#define MSHV_VTL_TDCALL \
    HCLTDX_IOWR(MSHV_IOCTL, 0x32, sizeof(struct mshv_tdcall))
#define MSHV_VTL_READ_VMX_CR4_FIXED1 HCLTDX_IOR(MSHV_IOCTL, 0x33, 8)
#define MSHV_VTL_GUEST_VSM_VMSA_PFN HCLTDX_IOWR(MSHV_IOCTL, 0x34, 8)
#define MSHV_VTL_RMPQUERY HCLTDX_IOW(MSHV_IOCTL, 0x35, 48)
#define MSHV_INVLPGB HCLTDX_IOW(MSHV_IOCTL, 0x36, 24)
#define MSHV_TLBSYNC HCLTDX_IO(MSHV_IOCTL, 0x37)

/* Capabilities probed with MSHV_CHECK_EXTENSION. */
#define HCL_CAP_REGISTER_PAGE 1u
#define HCL_CAP_VTL_RETURN_ACTION 2u
#define HCL_CAP_DR6_SHARED 3u

/* ---- FXSAVE legacy image ------------------------------------------------ */

typedef struct hcltdx_fxsave {
    uint16_t fcw;
    uint16_t fsw;
    uint8_t ftw;
    uint8_t reserved;
    uint16_t fop;
    uint64_t fip;
    uint64_t fdp;
    uint32_t mxcsr;
    uint32_t mxcsr_mask;
    uint8_t st[8][16];
    uint8_t xmm[16][16];
    uint8_t reserved2[48];
    uint8_t unused[48];
} hcltdx_fxsave;

/* ---- virtual-APIC page -------------------------------------------------- */

typedef struct hcltdx_apic_register {
    uint32_t value;
    uint32_t reserved[3];
} hcltdx_apic_register;

typedef struct hcltdx_apic_page {
    hcltdx_apic_register reserved_0[2];
    hcltdx_apic_register id;
    hcltdx_apic_register version;
    hcltdx_apic_register reserved_4[4];
    hcltdx_apic_register tpr;
    hcltdx_apic_register apr;
    hcltdx_apic_register ppr;
    hcltdx_apic_register eoi;
    hcltdx_apic_register rrd;
    hcltdx_apic_register ldr;
    hcltdx_apic_register dfr;
    hcltdx_apic_register svr;
    hcltdx_apic_register isr[8];
    hcltdx_apic_register tmr[8];
    hcltdx_apic_register irr[8];
    hcltdx_apic_register esr;
    hcltdx_apic_register reserved_29[6];
    hcltdx_apic_register lvt_cmci;
    hcltdx_apic_register icr[2];
    hcltdx_apic_register lvt_timer;
    hcltdx_apic_register lvt_thermal;
    hcltdx_apic_register lvt_pmc;
    hcltdx_apic_register lvt_lint0;
    hcltdx_apic_register lvt_lint1;
    hcltdx_apic_register lvt_error;
    hcltdx_apic_register timer_icr;
    hcltdx_apic_register timer_ccr;
    hcltdx_apic_register reserved_3a[4];
    hcltdx_apic_register timer_dcr;
    hcltdx_apic_register reserved_3f;
    hcltdx_apic_register reserved_40[192];
} hcltdx_apic_page;

/* ---- TDX VP context (the run page's 1024-byte context union) ---------- */

typedef struct tdx_tdg_vp_enter_exit_info {
    uint64_t rax;
    uint64_t rcx;
    uint64_t rdx;
    uint64_t rsi;
    uint64_t rdi;
    uint64_t r8;
    uint64_t r9;
    uint64_t r10;
    uint64_t r11;
    uint64_t r12;
    uint64_t r13;
} tdx_tdg_vp_enter_exit_info;

typedef struct tdx_vp_state {
    uint64_t msr_kernel_gs_base;
    uint64_t msr_star;
    uint64_t msr_lstar;
    uint64_t msr_sfmask;
    uint64_t msr_xss;
    uint64_t cr2;
    uint64_t msr_tsc_aux;
    uint64_t flags; /* tdx_vp_state_flags */
} tdx_vp_state;

typedef struct tdx_l2_enter_guest_state {
    uint64_t gps[16];
    uint64_t rflags;
    uint64_t rip;
    uint64_t ssp;
    uint8_t rvi;
    uint8_t svi;
    uint8_t reserved[6];
} tdx_l2_enter_guest_state;

/* Layout of the seed (older kernels). */
typedef struct tdx_vp_context {
    tdx_tdg_vp_enter_exit_info exit_info;
    uint8_t pad1[48];
    tdx_vp_state vp_state;
    uint8_t pad2[32];
    uint64_t entry_rcx; /* TdxVmFlags */
    tdx_l2_enter_guest_state gpr_list;
    uint8_t pad3[96];
    hcltdx_fxsave fx_state;
    uint8_t pad4[16];
} tdx_vp_context;

/* Newer kernels: an L2 TSC-deadline block right after gpr_list. */
typedef struct tdx_l2_tsc_deadline_state {
    uint64_t deadline;
    uint8_t update_deadline;
    uint8_t pad[7];
} tdx_l2_tsc_deadline_state;

typedef struct tdx_vp_context_tsc_deadline {
    tdx_tdg_vp_enter_exit_info exit_info;
    uint8_t pad1[48];
    tdx_vp_state vp_state;
    uint8_t pad2[32];
    uint64_t entry_rcx;
    tdx_l2_enter_guest_state gpr_list;
    tdx_l2_tsc_deadline_state l2_tsc_deadline;
    uint8_t pad3[80];
    hcltdx_fxsave fx_state;
    uint8_t pad4[16];
} tdx_vp_context_tsc_deadline;

/* ---- the run page ------------------------------------------------------- */

typedef struct hcl_run {
    uint32_t cancel;
    uint32_t vtl_ret_action_size;
    uint32_t flags;
    uint8_t scan_proxy_irr;
    uint8_t offload_flags;
    uint8_t pad;
    uint8_t mode;
    uint8_t exit_message[HV_MESSAGE_SIZE];
    /* A byte union in the kernel (keeps hcl_run 4-aligned, 1652 bytes);
     * for TDX it holds a tdx_vp_context: see hcl_run_tdx(). */
    uint8_t context[1024];
    uint8_t vtl_ret_actions[VTL_RETURN_ACTION_SIZE];
    uint32_t proxy_irr[8];
    uint8_t target_vtl;
    uint32_t proxy_irr_blocked[8];
    uint32_t proxy_irr_exit[8];
} hcl_run;

/* Byte offset of the TDX context inside the run page. */
#define HCL_RUN_CONTEXT_OFFSET 272u

/* The run page is page-aligned, so the context (offset 272) is 8-aligned. */
static inline tdx_vp_context *hcl_run_tdx(hcl_run *run)
{
    return (tdx_vp_context *)(void *)run->context;
}

/* ---- compile-time layout checks (docs/tdx-abi.md section 3) ----------- */

#define HCLTDX_CHECK_SIZE(t, n) _Static_assert(sizeof(t) == (n), #t " size")
#define HCLTDX_CHECK_OFF(t, f, n) \
    _Static_assert(offsetof(t, f) == (n), #t "." #f " offset")

HCLTDX_CHECK_SIZE(struct mshv_tdcall, 56);
HCLTDX_CHECK_OFF(struct mshv_tdcall, rax, 0);
HCLTDX_CHECK_OFF(struct mshv_tdcall, rcx, 8);
HCLTDX_CHECK_OFF(struct mshv_tdcall, rdx, 16);
HCLTDX_CHECK_OFF(struct mshv_tdcall, r8, 24);
HCLTDX_CHECK_OFF(struct mshv_tdcall, r9, 32);
HCLTDX_CHECK_OFF(struct mshv_tdcall, r10_out, 40);
HCLTDX_CHECK_OFF(struct mshv_tdcall, r11_out, 48);
_Static_assert(_Alignof(struct mshv_tdcall) == 1, "mshv_tdcall is packed");

_Static_assert(MSHV_VTL_TDCALL == 0xC038B832u, "MSHV_VTL_TDCALL");
_Static_assert(MSHV_CREATE_VTL == 0x8001B81Du, "MSHV_CREATE_VTL");
_Static_assert(MSHV_CHECK_EXTENSION == 0x4004B800u, "MSHV_CHECK_EXTENSION");
_Static_assert(MSHV_VTL_RETURN_TO_LOWER_VTL == 0x0000B827u, "RETURN_TO_LOWER_VTL");
_Static_assert(MSHV_VTL_READ_VMX_CR4_FIXED1 == 0x8008B833u, "READ_VMX_CR4_FIXED1");
_Static_assert(MSHV_GET_VP_REGISTERS == 0xC010B805u, "GET_VP_REGISTERS");
_Static_assert(MSHV_SET_VP_REGISTERS == 0x4010B806u, "SET_VP_REGISTERS");
_Static_assert(MSHV_HVCALL_SETUP == 0x4010B81Eu, "HVCALL_SETUP");
_Static_assert(MSHV_HVCALL == 0xC030B81Fu, "HVCALL");
_Static_assert(MSHV_VTL_ADD_VTL0_MEMORY == 0x4010B821u, "ADD_VTL0_MEMORY");
_Static_assert(MSHV_VTL_SET_POLL_FILE == 0x4008B825u, "SET_POLL_FILE");
_Static_assert(MSHV_VTL_PVALIDATE == 0x4014B828u, "PVALIDATE");
_Static_assert(MSHV_VTL_RMPADJUST == 0x4020B829u, "RMPADJUST");
_Static_assert(MSHV_VTL_GUEST_VSM_VMSA_PFN == 0xC008B834u, "GUEST_VSM_VMSA_PFN");
_Static_assert(MSHV_VTL_RMPQUERY == 0x4030B835u, "RMPQUERY");
_Static_assert(MSHV_INVLPGB == 0x4018B836u, "INVLPGB");
_Static_assert(MSHV_TLBSYNC == 0x0000B837u, "TLBSYNC");

HCLTDX_CHECK_SIZE(hcltdx_fxsave, 512);
HCLTDX_CHECK_OFF(hcltdx_fxsave, fcw, 0);
HCLTDX_CHECK_OFF(hcltdx_fxsave, fsw, 2);
HCLTDX_CHECK_OFF(hcltdx_fxsave, ftw, 4);
HCLTDX_CHECK_OFF(hcltdx_fxsave, reserved, 5);
HCLTDX_CHECK_OFF(hcltdx_fxsave, fop, 6);
HCLTDX_CHECK_OFF(hcltdx_fxsave, fip, 8);
HCLTDX_CHECK_OFF(hcltdx_fxsave, fdp, 16);
HCLTDX_CHECK_OFF(hcltdx_fxsave, mxcsr, 24);
HCLTDX_CHECK_OFF(hcltdx_fxsave, mxcsr_mask, 28);
HCLTDX_CHECK_OFF(hcltdx_fxsave, st, 32);
HCLTDX_CHECK_OFF(hcltdx_fxsave, xmm, 160);
HCLTDX_CHECK_OFF(hcltdx_fxsave, reserved2, 416);
HCLTDX_CHECK_OFF(hcltdx_fxsave, unused, 464);

HCLTDX_CHECK_SIZE(hcltdx_apic_register, 16);
HCLTDX_CHECK_SIZE(hcltdx_apic_page, 4096);
HCLTDX_CHECK_OFF(hcltdx_apic_page, reserved_0, 0x000);
HCLTDX_CHECK_OFF(hcltdx_apic_page, id, 0x020);
HCLTDX_CHECK_OFF(hcltdx_apic_page, version, 0x030);
HCLTDX_CHECK_OFF(hcltdx_apic_page, reserved_4, 0x040);
HCLTDX_CHECK_OFF(hcltdx_apic_page, tpr, 0x080);
HCLTDX_CHECK_OFF(hcltdx_apic_page, apr, 0x090);
HCLTDX_CHECK_OFF(hcltdx_apic_page, ppr, 0x0A0);
HCLTDX_CHECK_OFF(hcltdx_apic_page, eoi, 0x0B0);
HCLTDX_CHECK_OFF(hcltdx_apic_page, rrd, 0x0C0);
HCLTDX_CHECK_OFF(hcltdx_apic_page, ldr, 0x0D0);
HCLTDX_CHECK_OFF(hcltdx_apic_page, dfr, 0x0E0);
HCLTDX_CHECK_OFF(hcltdx_apic_page, svr, 0x0F0);
HCLTDX_CHECK_OFF(hcltdx_apic_page, isr, 0x100);
HCLTDX_CHECK_OFF(hcltdx_apic_page, tmr, 0x180);
HCLTDX_CHECK_OFF(hcltdx_apic_page, irr, 0x200);
HCLTDX_CHECK_OFF(hcltdx_apic_page, esr, 0x280);
HCLTDX_CHECK_OFF(hcltdx_apic_page, reserved_29, 0x290);
HCLTDX_CHECK_OFF(hcltdx_apic_page, lvt_cmci, 0x2F0);
HCLTDX_CHECK_OFF(hcltdx_apic_page, icr, 0x300);
HCLTDX_CHECK_OFF(hcltdx_apic_page, lvt_timer, 0x320);
HCLTDX_CHECK_OFF(hcltdx_apic_page, lvt_thermal, 0x330);
HCLTDX_CHECK_OFF(hcltdx_apic_page, lvt_pmc, 0x340);
HCLTDX_CHECK_OFF(hcltdx_apic_page, lvt_lint0, 0x350);
HCLTDX_CHECK_OFF(hcltdx_apic_page, lvt_lint1, 0x360);
HCLTDX_CHECK_OFF(hcltdx_apic_page, lvt_error, 0x370);
HCLTDX_CHECK_OFF(hcltdx_apic_page, timer_icr, 0x380);
HCLTDX_CHECK_OFF(hcltdx_apic_page, timer_ccr, 0x390);
HCLTDX_CHECK_OFF(hcltdx_apic_page, reserved_3a, 0x3A0);
HCLTDX_CHECK_OFF(hcltdx_apic_page, timer_dcr, 0x3E0);
HCLTDX_CHECK_OFF(hcltdx_apic_page, reserved_3f, 0x3F0);
HCLTDX_CHECK_OFF(hcltdx_apic_page, reserved_40, 0x400);

HCLTDX_CHECK_SIZE(tdx_tdg_vp_enter_exit_info, 88);
HCLTDX_CHECK_OFF(tdx_tdg_vp_enter_exit_info, rax, 0);
HCLTDX_CHECK_OFF(tdx_tdg_vp_enter_exit_info, rcx, 8);
HCLTDX_CHECK_OFF(tdx_tdg_vp_enter_exit_info, rdx, 16);
HCLTDX_CHECK_OFF(tdx_tdg_vp_enter_exit_info, rsi, 24);
HCLTDX_CHECK_OFF(tdx_tdg_vp_enter_exit_info, rdi, 32);
HCLTDX_CHECK_OFF(tdx_tdg_vp_enter_exit_info, r8, 40);
HCLTDX_CHECK_OFF(tdx_tdg_vp_enter_exit_info, r9, 48);
HCLTDX_CHECK_OFF(tdx_tdg_vp_enter_exit_info, r10, 56);
HCLTDX_CHECK_OFF(tdx_tdg_vp_enter_exit_info, r11, 64);
HCLTDX_CHECK_OFF(tdx_tdg_vp_enter_exit_info, r12, 72);
HCLTDX_CHECK_OFF(tdx_tdg_vp_enter_exit_info, r13, 80);

HCLTDX_CHECK_SIZE(tdx_vp_state, 64);
HCLTDX_CHECK_OFF(tdx_vp_state, msr_kernel_gs_base, 0);
HCLTDX_CHECK_OFF(tdx_vp_state, msr_star, 8);
HCLTDX_CHECK_OFF(tdx_vp_state, msr_lstar, 16);
HCLTDX_CHECK_OFF(tdx_vp_state, msr_sfmask, 24);
HCLTDX_CHECK_OFF(tdx_vp_state, msr_xss, 32);
HCLTDX_CHECK_OFF(tdx_vp_state, cr2, 40);
HCLTDX_CHECK_OFF(tdx_vp_state, msr_tsc_aux, 48);
HCLTDX_CHECK_OFF(tdx_vp_state, flags, 56);

HCLTDX_CHECK_SIZE(tdx_l2_enter_guest_state, 160);
HCLTDX_CHECK_OFF(tdx_l2_enter_guest_state, gps, 0);
HCLTDX_CHECK_OFF(tdx_l2_enter_guest_state, rflags, 128);
HCLTDX_CHECK_OFF(tdx_l2_enter_guest_state, rip, 136);
HCLTDX_CHECK_OFF(tdx_l2_enter_guest_state, ssp, 144);
HCLTDX_CHECK_OFF(tdx_l2_enter_guest_state, rvi, 152);
HCLTDX_CHECK_OFF(tdx_l2_enter_guest_state, svi, 153);
HCLTDX_CHECK_OFF(tdx_l2_enter_guest_state, reserved, 154);

HCLTDX_CHECK_SIZE(tdx_vp_context, 1024);
HCLTDX_CHECK_OFF(tdx_vp_context, exit_info, 0);
HCLTDX_CHECK_OFF(tdx_vp_context, pad1, 88);
HCLTDX_CHECK_OFF(tdx_vp_context, vp_state, 136);
HCLTDX_CHECK_OFF(tdx_vp_context, pad2, 200);
HCLTDX_CHECK_OFF(tdx_vp_context, entry_rcx, 232);
HCLTDX_CHECK_OFF(tdx_vp_context, gpr_list, 240);
HCLTDX_CHECK_OFF(tdx_vp_context, pad3, 400);
HCLTDX_CHECK_OFF(tdx_vp_context, fx_state, 496);
HCLTDX_CHECK_OFF(tdx_vp_context, pad4, 1008);
_Static_assert(offsetof(tdx_vp_context, gpr_list) + HCL_RUN_CONTEXT_OFFSET == 512,
               "gpr_list sits at run-page byte 512");

HCLTDX_CHECK_SIZE(tdx_l2_tsc_deadline_state, 16);
HCLTDX_CHECK_OFF(tdx_l2_tsc_deadline_state, deadline, 0);
HCLTDX_CHECK_OFF(tdx_l2_tsc_deadline_state, update_deadline, 8);
HCLTDX_CHECK_SIZE(tdx_vp_context_tsc_deadline, 1024);
HCLTDX_CHECK_OFF(tdx_vp_context_tsc_deadline, exit_info, 0);
HCLTDX_CHECK_OFF(tdx_vp_context_tsc_deadline, vp_state, 136);
HCLTDX_CHECK_OFF(tdx_vp_context_tsc_deadline, entry_rcx, 232);
HCLTDX_CHECK_OFF(tdx_vp_context_tsc_deadline, gpr_list, 240);
HCLTDX_CHECK_OFF(tdx_vp_context_tsc_deadline, l2_tsc_deadline, 400);
HCLTDX_CHECK_OFF(tdx_vp_context_tsc_deadline, pad3, 416);
HCLTDX_CHECK_OFF(tdx_vp_context_tsc_deadline, fx_state, 496);
HCLTDX_CHECK_OFF(tdx_vp_context_tsc_deadline, pad4, 1008);

HCLTDX_CHECK_SIZE(hcl_run, 1652);
_Static_assert(_Alignof(hcl_run) == 4, "hcl_run alignment");
HCLTDX_CHECK_OFF(hcl_run, cancel, 0x000);
HCLTDX_CHECK_OFF(hcl_run, vtl_ret_action_size, 0x004);
HCLTDX_CHECK_OFF(hcl_run, flags, 0x008);
HCLTDX_CHECK_OFF(hcl_run, scan_proxy_irr, 0x00C);
HCLTDX_CHECK_OFF(hcl_run, offload_flags, 0x00D);
HCLTDX_CHECK_OFF(hcl_run, pad, 0x00E);
HCLTDX_CHECK_OFF(hcl_run, mode, 0x00F);
HCLTDX_CHECK_OFF(hcl_run, exit_message, 0x010);
HCLTDX_CHECK_OFF(hcl_run, context, HCL_RUN_CONTEXT_OFFSET);
_Static_assert(HCL_RUN_CONTEXT_OFFSET == 0x110, "context offset");
HCLTDX_CHECK_OFF(hcl_run, vtl_ret_actions, 0x510);
HCLTDX_CHECK_OFF(hcl_run, proxy_irr, 0x610);
HCLTDX_CHECK_OFF(hcl_run, target_vtl, 0x630);
HCLTDX_CHECK_OFF(hcl_run, proxy_irr_blocked, 0x634);
HCLTDX_CHECK_OFF(hcl_run, proxy_irr_exit, 0x654);
_Static_assert(sizeof(hcl_run) <= HCLTDX_PAGE_SIZE, "run page fits one page");
_Static_assert(HCL_RUN_CONTEXT_OFFSET + offsetof(tdx_vp_context, fx_state) == 768,
               "fx_state at run-page byte 768");

#ifdef __cplusplus
}
#endif

#endif /* HCLTDX_ABI_H */
