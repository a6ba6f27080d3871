"""Parity with the seed: every public TDX method of `tdx.rs` exists under its
seed name, and each one that issues tdcalls sends exactly the registers
docs/tdx-abi.md section 7 prescribes (read from the simulator's call log)."""

import pytest

import hcltdx
from hcltdx import GuestVtl, MemoryRange, TdxL2Ctls, VmcsField

ALL = 0xFFFFFFFFFFFFFFFF
VTL0, VTL1 = GuestVtl.VTL0, GuestVtl.VTL1

SEED_RUNNER_METHODS = [
    "tdx_enter_guest_gps", "tdx_enter_guest_gps_mut", "tdx_vp_enter_exit_info",
    "tdx_apic_page", "tdx_apic_page_mut", "cr2", "set_cr2", "read_private_regs",
    "write_private_regs", "write_vmcs64", "read_vmcs64", "write_vmcs32", "read_vmcs32",
    "write_vmcs16", "read_vmcs16", "write_msr_bitmap", "set_l2_ctls", "invgla",
    "fx_state", "fx_state_mut",
    # tdx_vp_state_flags_mut in the seed: a getter and a setter here.
    "tdx_vp_state_flags", "set_tdx_vp_state_flags",
    # the backing's register hooks
    "try_set_reg", "try_get_reg", "must_flush_regs_on", "flush_register_page",
]


def test_every_seed_name_exists():
    for name in SEED_RUNNER_METHODS:
        assert callable(getattr(hcltdx.TdxRunner, name)), name
    for name in ("tdx_accept_pages", "tdx_set_page_attributes"):
        assert callable(getattr(hcltdx.MshvVtl, name)), name
    assert callable(hcltdx.TdxPrivateRegs.new)
    assert set(hcltdx.TdxPrivateRegs.FIELDS) == {
        "rflags", "rip", "ssp", "rvi", "svi", "msr_kernel_gs_base", "msr_star", "msr_lstar",
        "msr_sfmask", "msr_xss", "msr_tsc_aux", "vp_entry_flags"}


# (method, arguments, expected (leaf, rcx, rdx, r8, r9) sequence)
CASES = [
    ("read_vmcs64", (VTL0, VmcsField.VMX_VMCS_GUEST_CR3), [(9, 0, 0x2420000300006802, 0, 0)]),
    ("read_vmcs64", (VTL1, VmcsField.VMX_VMCS_VIRTUAL_APIC_PAGE),
     [(9, 0, 0x2C20000300002012, 0, 0)]),
    ("write_vmcs64", (VTL1, VmcsField.VMX_VMCS_GUEST_EFER, 0xD01, 0x500),
     [(10, 0, 0x2C20000300002806, 0x500, 0xD01)]),
    ("read_vmcs32", (VTL0, VmcsField.VMX_VMCS_PROCESSOR_CONTROLS),
     [(9, 0, 0x2420000200004002, 0, 0)]),
    ("write_vmcs32", (VTL0, VmcsField.VMX_VMCS_ENTRY_CONTROLS, 0x200, 0x200),
     [(10, 0, 0x2420000200004012, 0x200, 0x200)]),
    ("read_vmcs16", (VTL1, VmcsField.VMX_VMCS_GUEST_CS_SELECTOR),
     [(9, 0, 0x2C20000100000802, 0, 0)]),
    ("write_vmcs16", (VTL0, VmcsField.VMX_VMCS_GUEST_TR_SELECTOR, 0xFFFF, 0x40),
     [(10, 0, 0x242000010000080E, 0x40, 0xFFFF)]),
    ("write_msr_bitmap", (VTL1, 5, 0xFF, 0x0F), [(10, 0, 0x2D20000300000005, 0x0F, 0xFF)]),
    ("write_msr_bitmap", (VTL0, 5, 0xFF, 0x0F), [(10, 0, 0x2520000300000005, 0x0F, 0xFF)]),
    ("set_l2_ctls", (VTL0, TdxL2Ctls(3)), [(10, 0, 0xA020000300000051, 3, ALL)]),
    ("set_l2_ctls", (VTL1, TdxL2Ctls(3)), [(10, 0, 0xA020000300000052, 3, ALL)]),
    ("invgla", (0x0010000000000000, 0x7FFF_FFFF_F000), [(27, 0x0010000000000000, 0x7FFFFFFFF000, 0, 0)]),
]


@pytest.mark.parametrize("method,args,expected", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_seed_method_sends_spec_registers(hcl, sim, method, args, expected):
    with hcl.runner(0) as runner:
        sim.enable_log(16)
        getattr(runner, method)(*args)
        got = [(int(e["in_rax"]), int(e["in_rcx"]), int(e["in_rdx"]), int(e["in_r8"]),
                int(e["in_r9"])) for e in sim.call_log()]
        assert got == expected
        assert all(int(e["in_r10"]) == 0 and int(e["in_r11"]) == 0 for e in sim.call_log())


def test_accept_pages_sends_spec_registers(hcl, sim):
    sim.enable_log(16)
    hcl.mshv_vtl.tdx_accept_pages(MemoryRange(0x200000, 0x201000))
    e = sim.call_log()[0]
    assert (int(e["in_rax"]), int(e["in_rcx"]), int(e["in_rdx"]), int(e["in_r8"]),
            int(e["in_r9"])) == (6, 0x200000, 0, 0, 0)
