/* offsetof/sizeof of every ABI struct field, as compiled, for the tests that
 * check the numpy dtypes against the C header. */
#include <stddef.h>

#include "hcltdx/abi.h"
#include "hcltdx/abi_probe.h"

#define S(t) {#t, NULL, 0, sizeof(t)},
#define F(t, f) {#t, #f, offsetof(t, f), sizeof(((t *)0)->f)},

static const hcltdx_abi_probe_entry entries[] = {
    {"mshv_tdcall", NULL, 0, sizeof(struct mshv_tdcall)},
    {"mshv_tdcall", "rax", offsetof(struct mshv_tdcall, rax), 8},
    {"mshv_tdcall", "rcx", offsetof(struct mshv_tdcall, rcx), 8},
    {"mshv_tdcall", "rdx", offsetof(struct mshv_tdcall, rdx), 8},
    {"mshv_tdcall", "r8", offsetof(struct mshv_tdcall, r8), 8},
    {"mshv_tdcall", "r9", offsetof(struct mshv_tdcall, r9), 8},
    {"mshv_tdcall", "r10_out", offsetof(struct mshv_tdcall, r10_out), 8},
    {"mshv_tdcall", "r11_out", offsetof(struct mshv_tdcall, r11_out), 8},
    S(hcltdx_fxsave)
    F(hcltdx_fxsave, fcw) F(hcltdx_fxsave, fsw) F(hcltdx_fxsave, ftw)
    F(hcltdx_fxsave, reserved) F(hcltdx_fxsave, fop) F(hcltdx_fxsave, fip)
    F(hcltdx_fxsave, fdp) F(hcltdx_fxsave, mxcsr) F(hcltdx_fxsave, mxcsr_mask)
    F(hcltdx_fxsave, st) F(hcltdx_fxsave, xmm) F(hcltdx_fxsave, reserved2)
    F(hcltdx_fxsave, unused)
    S(hcltdx_apic_register)
    F(hcltdx_apic_register, value) F(hcltdx_apic_register, reserved)
    S(hcltdx_apic_page)
    F(hcltdx_apic_page, reserved_0) F(hcltdx_apic_page, id) F(hcltdx_apic_page, version)
    F(hcltdx_apic_page, reserved_4) F(hcltdx_apic_page, tpr) F(hcltdx_apic_page, apr)
    F(hcltdx_apic_page, ppr) F(hcltdx_apic_page, eoi) F(hcltdx_apic_page, rrd)
    F(hcltdx_apic_page, ldr) F(hcltdx_apic_page, dfr) F(hcltdx_apic_page, svr)
    F(hcltdx_apic_page, isr) F(hcltdx_apic_page, tmr) F(hcltdx_apic_page, irr)
    F(hcltdx_apic_page, esr) F(hcltdx_apic_page, reserved_29) F(hcltdx_apic_page, lvt_cmci)
    F(hcltdx_apic_page, icr) F(hcltdx_apic_page, lvt_timer) F(hcltdx_apic_page, lvt_thermal)
    F(hcltdx_apic_page, lvt_pmc) F(hcltdx_apic_page, lvt_lint0) F(hcltdx_apic_page, lvt_lint1)
    F(hcltdx_apic_page, lvt_error) F(hcltdx_apic_page, timer_icr)
    F(hcltdx_apic_page, timer_ccr) F(hcltdx_apic_page, reserved_3a)
    F(hcltdx_apic_page, timer_dcr) F(hcltdx_apic_page, reserved_3f)
    F(hcltdx_apic_page, reserved_40)
    S(tdx_tdg_vp_enter_exit_info)
    F(tdx_tdg_vp_enter_exit_info, rax) F(tdx_tdg_vp_enter_exit_info, rcx)
    F(tdx_tdg_vp_enter_exit_info, rdx) F(tdx_tdg_vp_enter_exit_info, rsi)
    F(tdx_tdg_vp_enter_exit_info, rdi) F(tdx_tdg_vp_enter_exit_info, r8)
    F(tdx_tdg_vp_enter_exit_info, r9) F(tdx_tdg_vp_enter_exit_info, r10)
    F(tdx_tdg_vp_enter_exit_info, r11) F(tdx_tdg_vp_enter_exit_info, r12)
    F(tdx_tdg_vp_enter_exit_info, r13)
    S(tdx_vp_state)
    F(tdx_vp_state, msr_kernel_gs_base) F(tdx_vp_state, msr_star) F(tdx_vp_state, msr_lstar)
    F(tdx_vp_state, msr_sfmask) F(tdx_vp_state, msr_xss) F(tdx_vp_state, cr2)
    F(tdx_vp_state, msr_tsc_aux) F(tdx_vp_state, flags)
    S(tdx_l2_enter_guest_state)
    F(tdx_l2_enter_guest_state, gps) F(tdx_l2_enter_guest_state, rflags)
    F(tdx_l2_enter_guest_state, rip) F(tdx_l2_enter_guest_state, ssp)
    F(tdx_l2_enter_guest_state, rvi) F(tdx_l2_enter_guest_state, svi)
    F(tdx_l2_enter_guest_state, reserved)
    S(tdx_vp_context)
    F(tdx_vp_context, exit_info) F(tdx_vp_context, pad1) F(tdx_vp_context, vp_state)
    F(tdx_vp_context, pad2) F(tdx_vp_context, entry_rcx) F(tdx_vp_context, gpr_list)
    F(tdx_vp_context, pad3) F(tdx_vp_context, fx_state) F(tdx_vp_context, pad4)
    S(tdx_l2_tsc_deadline_state)
    F(tdx_l2_tsc_deadline_state, deadline) F(tdx_l2_tsc_deadline_state, update_deadline)
    F(tdx_l2_tsc_deadline_state, pad)
    S(tdx_vp_context_tsc_deadline)
    F(tdx_vp_context_tsc_deadline, exit_info) F(tdx_vp_context_tsc_deadline, pad1)
    F(tdx_vp_context_tsc_deadline, vp_state) F(tdx_vp_context_tsc_deadline, pad2)
    F(tdx_vp_context_tsc_deadline, entry_rcx) F(tdx_vp_context_tsc_deadline, gpr_list)
    F(tdx_vp_context_tsc_deadline, l2_tsc_deadline) F(tdx_vp_context_tsc_deadline, pad3)
    F(tdx_vp_context_tsc_deadline, fx_state) F(tdx_vp_context_tsc_deadline, pad4)
    S(hcl_run)
    F(hcl_run, cancel) F(hcl_run, vtl_ret_action_size) F(hcl_run, flags)
    F(hcl_run, scan_proxy_irr) F(hcl_run, offload_flags) F(hcl_run, pad) F(hcl_run, mode)
    F(hcl_run, exit_message) F(hcl_run, context) F(hcl_run, vtl_ret_actions)
    F(hcl_run, proxy_irr) F(hcl_run, target_vtl) F(hcl_run, proxy_irr_blocked)
    F(hcl_run, proxy_irr_exit)
};

size_t hcltdx_abi_probe_count(void)
{
    return sizeof(entries) / sizeof(entries[0]);
}

const hcltdx_abi_probe_entry *hcltdx_abi_probe_at(size_t i)
{
    return i < hcltdx_abi_probe_count() ? &entries[i] : NULL;
}
