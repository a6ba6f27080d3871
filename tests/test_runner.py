"""The seed's runner and MshvVtl operations, over every backend.

Expected registers and values come from docs/tdx-abi.md (sections 2.6, 3,
7 and 8), not from hcltdx's own output.
"""

import gc
import sys
import threading

import numpy as np
import pytest

import hcltdx
from hcltdx import (
    GuestVtl,
    MemoryRange,
    TdCallError,
    TdCallLeaf,
    TdCallResultCode,
    TdGlaVmAndFlags,
    TdgMemPageAttrWriteR8,
    TdgMemPageGpaAttr,
    TdxGlaListInfo,
    TdxL2Ctls,
    TdxPrivateRegs,
    VmcsAccessError,
    VmcsField,
)

VTL0, VTL1 = GuestVtl.VTL0, GuestVtl.VTL1
ALL = 0xFFFFFFFFFFFFFFFF
MiB = 1 << 20


def calls(sim):
    """The simulator's call log as a list of (leaf, rcx, rdx, r8, r9) inputs."""
    return [(int(e["in_rax"]), int(e["in_rcx"]), int(e["in_rdx"]), int(e["in_r8"]),
             int(e["in_r9"])) for e in sim.call_log()]


# ---- runner creation (sections 2.6, 7.17, 8.5) -------------------------------------


def test_runner_creation_registers_vtl1_apic_page(hcl, sim):
    sim.enable_log(64)
    r = hcl.runner(1)
    [(leaf, rcx, rdx, r8, r9)] = calls(sim)
    assert (leaf, rcx, rdx, r9) == (10, 0, 0x2C20000300002012, ALL)
    if hcl.backend == "simulator":
        assert r8 == sim.vtl1_apic_page_gpa(1)
    else:  # a real host: a page hcltdx locked and resolved through pagemap
        assert r8 != 0 and r8 % 4096 == 0
    assert sim.vmcs(1, 1, 0x2012) == r8
    r.close()


def test_runner_creation_blocks_every_proxied_vector(hcl, sim):
    r = hcl.runner(0)
    page = sim.run_page(0)
    # proxy_irr_blocked: 8 x u32 at run-page offset 0x634, the kernel's own page.
    assert page[0x634:0x654].view("<u4").tolist() == [0xFFFFFFFF] * 8
    assert r.proxy_irr_blocked().tolist() == [0xFFFFFFFF] * 8
    r.close()


def test_one_runner_per_vp(hcl):
    r = hcl.runner(0)
    with pytest.raises(RuntimeError, match="already open"):
        hcl.runner(0)
    r.close()
    hcl.runner(0).close()


def test_runner_vp_out_of_range(hcl):
    with pytest.raises(ValueError, match="out of range"):
        hcl.runner(2)
    with pytest.raises(TypeError):
        hcl.runner("0")


def test_runner_not_constructible_from_python():
    with pytest.raises(TypeError, match="not supposed to be instantiated"):
        hcltdx.TdxRunner()
    with pytest.raises(TypeError, match="not supposed to be instantiated"):
        hcltdx.Hcl()


# ---- VMCS access (sections 7.3-7.5, 8.1) ----------------------------------------------


def test_read_write_vmcs64_registers_and_semantics(runner, sim):
    sim.enable_log(64)
    f = VmcsField.VMX_VMCS_GUEST_CR3
    assert runner.write_vmcs64(VTL0, f, ALL, 0x1234_5000) == 0
    # Only masked bits change: (old & ~m) | (v & m).
    assert runner.write_vmcs64(VTL0, f, 0xFF000, 0xABCDEF) == 0x1234_5000
    assert runner.read_vmcs64(VTL0, f) == 0x123B_C000
    assert sim.vmcs(0, 0, 0x6802) == 0x123B_C000
    assert calls(sim) == [
        (10, 0, 0x2420000300006802, 0x1234_5000, ALL),
        (10, 0, 0x2420000300006802, 0xABCDEF, 0xFF000),
        (9, 0, 0x2420000300006802, 0, 0),
    ]


def test_vtl1_uses_vmcs_2(runner, sim):
    sim.enable_log(8)
    runner.write_vmcs64(VTL1, VmcsField.VMX_VMCS_GUEST_CR0, ALL, 0x80000031)
    assert calls(sim)[-1][2] == 0x2C20000300006800
    assert sim.vmcs(0, 1, 0x6800) == 0x80000031
    assert sim.vmcs(0, 0, 0x6800) != 0x80000031 or sim.vmcs(0, 0, 0x6800) == 0


def test_read_write_vmcs32_and_16(runner, sim):
    sim.enable_log(16)
    pc = VmcsField.VMX_VMCS_PROCESSOR_CONTROLS
    old = runner.write_vmcs32(VTL0, pc, 0xFFFFFFFF, 0x8000_0080)
    assert isinstance(old, int)
    assert runner.read_vmcs32(VTL0, pc) == 0x8000_0080
    cs = VmcsField.VMX_VMCS_GUEST_CS_SELECTOR
    runner.write_vmcs16(VTL1, cs, 0xFFFF, 0x10)
    assert runner.read_vmcs16(VTL1, cs) == 0x10
    log = calls(sim)
    assert log[0] == (10, 0, 0x2420000200004002, 0x8000_0080, 0xFFFFFFFF)
    assert log[2] == (10, 0, 0x2C20000100000802, 0x10, 0xFFFF)


def test_guest_rip_field_code(runner, sim):
    # Section 8.1: GUEST_RIP (0x681E, natural width) -> 0x242000030000681E / 0x2C2000030000681E.
    sim.enable_log(8)
    runner.read_vmcs64(VTL0, 0x681E)
    runner.read_vmcs64(VTL1, 0x681E)
    assert [c[2] for c in calls(sim)] == [0x242000030000681E, 0x2C2000030000681E]


@pytest.mark.parametrize("method,field", [
    ("read_vmcs32", VmcsField.VMX_VMCS_GUEST_CR3),
    ("read_vmcs64", VmcsField.VMX_VMCS_PROCESSOR_CONTROLS),
    ("read_vmcs16", VmcsField.VMX_VMCS_GUEST_PAT),
    ("read_vmcs64", VmcsField.VMX_VMCS_GUEST_ES_SELECTOR),
    ("read_vmcs32", VmcsField.VMX_VMCS_GUEST_CS_SELECTOR),
])
def test_width_mismatch_raises_before_any_tdcall(runner, sim, method, field):
    before = sim.counters()
    with pytest.raises(ValueError, match="bit wide"):
        getattr(runner, method)(VTL0, field)
    assert sim.counters() == before


@pytest.mark.parametrize("method,field", [
    ("write_vmcs32", VmcsField.VMX_VMCS_GUEST_CR3),
    ("write_vmcs64", VmcsField.VMX_VMCS_ENTRY_CONTROLS),
    ("write_vmcs16", VmcsField.VMX_VMCS_GUEST_CR0),
])
def test_write_width_mismatch_raises_before_any_tdcall(runner, sim, method, field):
    before = sim.counters()
    with pytest.raises(ValueError, match="bit wide"):
        getattr(runner, method)(VTL0, field, 1, 1)
    assert sim.counters() == before


def test_failing_vmcs_access_raises_naming_code_field_and_leaf(runner):
    # The exit reason is read-only for the L1 VMM: METADATA_FIELD_NOT_WRITABLE.
    with pytest.raises(VmcsAccessError) as ei:
        runner.write_vmcs32(VTL0, VmcsField.VMX_VMCS_EXIT_REASON, 0xFFFFFFFF, 1)
    e = ei.value
    assert e.code == TdCallResultCode.METADATA_FIELD_NOT_WRITABLE == 0xC0000C01
    assert e.leaf == TdCallLeaf.VP_WR
    assert e.field == VmcsField.VMX_VMCS_EXIT_REASON
    msg = str(e)
    assert "METADATA_FIELD_NOT_WRITABLE" in msg and "VMX_VMCS_EXIT_REASON" in msg and "VP_WR" in msg
    # Host-state fields are not readable: METADATA_FIELD_NOT_READABLE.
    with pytest.raises(VmcsAccessError) as ei:
        runner.read_vmcs64(VTL1, VmcsField.VMX_VMCS_HOST_RIP)
    assert ei.value.code == 0xC0000C02
    assert isinstance(ei.value, TdCallError)


def test_unknown_encoding_reaches_module_and_fails(runner):
    with pytest.raises(VmcsAccessError) as ei:
        runner.read_vmcs64(VTL0, 0x6FFE)  # natural width, no such field
    assert ei.value.code == TdCallResultCode.METADATA_FIELD_ID_INCORRECT


@pytest.mark.parametrize("vtl", [2, -1, "0", None, 1.0, True])
def test_bad_vtl(runner, vtl):
    with pytest.raises(ValueError, match="vtl"):
        runner.read_vmcs64(vtl, VmcsField.VMX_VMCS_GUEST_CR3)


@pytest.mark.parametrize("field,exc", [(-1, ValueError), (1 << 24, ValueError), ("cr3", TypeError),
                                       (None, TypeError), (3.0, TypeError)])
def test_bad_field(runner, field, exc):
    with pytest.raises(exc):
        runner.read_vmcs64(VTL0, field)


def test_bad_mask_and_value(runner, sim):
    before = sim.counters()
    f32 = VmcsField.VMX_VMCS_PROCESSOR_CONTROLS
    with pytest.raises(ValueError, match="mask"):
        runner.write_vmcs32(VTL0, f32, 1 << 32, 0)
    with pytest.raises(ValueError, match="value"):
        runner.write_vmcs16(VTL0, VmcsField.VMX_VMCS_GUEST_CS_SELECTOR, 1, 1 << 16)
    with pytest.raises(ValueError, match="mask"):
        runner.write_vmcs64(VTL0, VmcsField.VMX_VMCS_GUEST_CR3, -1, 0)
    with pytest.raises(TypeError, match="value"):
        runner.write_vmcs64(VTL0, VmcsField.VMX_VMCS_GUEST_CR3, 1, "x")
    assert sim.counters() == before


# ---- MSR bitmap, L2 controls, INVGLA (sections 7.6-7.8, 8.1, 8.3) -----------------------


def test_write_msr_bitmap(runner, sim):
    sim.enable_log(8)
    old = runner.write_msr_bitmap(VTL1, 5, 0xF0, 0x30)
    new = sim.msr_bitmap(0, 1, 5)
    assert new == (old & ~0xF0) | 0x30
    assert calls(sim) == [(10, 0, 0x2D20000300000005, 0x30, 0xF0)]
    runner.write_msr_bitmap(VTL0, 0x7F, ALL, 0)
    assert calls(sim)[-1][2] == 0x252000030000007F
    assert sim.msr_bitmap(0, 0, 0x7F) == 0


def test_set_msr_bit(runner, sim):
    # Intel layout: read-high quarter starts at byte 1024; write-low at 2048.
    runner.write_msr_bitmap(VTL0, 0x10, ALL, 0)  # bits of MSRs 0x400..0x43F
    runner.set_msr_bit(VTL0, 0x405, False, True)
    assert sim.msr_bitmap(0, 0, 0x10) == 1 << 5
    runner.write_msr_bitmap(VTL0, (2048 * 8 + 0x10) // 64, ALL, 0)
    runner.set_msr_bit(VTL0, 0x10, True, True)  # write of MSR 0x10 (TSC)
    assert sim.msr_bitmap(0, 0, (2048 * 8 + 0x10) // 64) == 1 << 0x10
    with pytest.raises(ValueError, match="outside"):
        runner.set_msr_bit(VTL0, 0x4000_0000, True, True)


def test_set_l2_ctls_uses_corrected_vm2_code(runner, sim):
    sim.enable_log(8)
    ctls = TdxL2Ctls(enable_shared_ept=True, enable_tdvmcall=True)
    assert int(ctls) == 0x3
    old0 = runner.set_l2_ctls(VTL0, ctls)
    assert isinstance(old0, TdxL2Ctls)
    runner.set_l2_ctls(VTL1, TdxL2Ctls(enable_shared_ept=True))
    assert calls(sim) == [(10, 0, 0xA020000300000051, 0x3, ALL),
                          (10, 0, 0xA020000300000052, 0x1, ALL)]
    assert sim.l2_ctls(0, 0) == 3 and sim.l2_ctls(0, 1) == 1
    assert runner.set_l2_ctls(VTL1, 0) == TdxL2Ctls(1)


def test_invgla(runner, sim):
    sim.enable_log(8)
    flags = TdGlaVmAndFlags(list=True, vm_index=2)
    info = TdxGlaListInfo(first_entry=0, list_gpa=0x1234, num_entries=3)
    assert (int(flags), int(info)) == (0x0020000000000001, 0x0030000001234000)
    assert runner.invgla(flags, info) is None
    assert calls(sim) == [(27, 0x0020000000000001, 0x0030000001234000, 0, 0)]
    with pytest.raises(TdCallError) as ei:
        runner.invgla(TdGlaVmAndFlags(vm_index=0), 0)
    assert ei.value.code == TdCallResultCode.OPERAND_INVALID
    assert ei.value.leaf == TdCallLeaf.VP_INVGLA


# ---- the run page (sections 3, 7.15, 7.16) ----------------------------------------------


def test_gps_view_is_zero_copy(runner, sim):
    gps = runner.tdx_enter_guest_gps()
    assert gps.shape == (16,) and gps.dtype == np.dtype("<u8")
    gps[4] = 0xDEADBEEF  # index 4 is RSP in the TDX enter-guest state
    page = sim.run_page(0)
    assert page[512 + 32:512 + 40].view("<u8")[0] == 0xDEADBEEF
    page[512:520].view("<u8")[0] = 77  # the kernel side writes RAX
    assert gps[0] == 77


def test_exit_info_view(runner, sim):
    page = sim.run_page(0)
    page[272:280].view("<u8")[0] = 0x0000110100000000  # rax of exit info
    page[352:360].view("<u8")[0] = 13  # r13 at run page 352
    ei = runner.tdx_vp_enter_exit_info()
    assert int(ei["rax"]) == 0x0000110100000000 and int(ei["r13"]) == 13


def test_cr2_and_state_flags(runner, sim):
    runner.set_cr2(0xFFFF_8000_1234_5678)
    page = sim.run_page(0)
    assert page[448:456].view("<u8")[0] == 0xFFFF_8000_1234_5678
    assert runner.cr2() == 0xFFFF_8000_1234_5678
    page[464:472].view("<u8")[0] = 0b10
    flags = runner.tdx_vp_state_flags()
    assert flags.wbnoinvd and not flags.wbinvd
    runner.set_tdx_vp_state_flags(hcltdx.TdxVpStateFlags(wbinvd=True))
    assert page[464:472].view("<u8")[0] == 1
    with pytest.raises(ValueError):
        runner.set_cr2(-1)


def test_fx_state_view(runner, sim):
    fx = runner.fx_state()
    fx["fcw"] = 0x037F
    fx["mxcsr"] = 0x1F80
    page = sim.run_page(0)
    assert page[768:770].view("<u2")[0] == 0x037F  # fx_state at run page 768
    assert page[768 + 24:768 + 28].view("<u4")[0] == 0x1F80


def test_apic_pages(runner, sim):
    a0 = runner.tdx_apic_page(VTL0)
    a0["tpr"]["value"] = 0x20
    assert sim.apic_page(0, 0)[0x80:0x84].view("<u4")[0] == 0x20
    a1 = runner.tdx_apic_page(VTL1)
    a1["irr"][1]["value"] = 0x8000
    assert int(runner.tdx_apic_page(VTL1)["irr"][1]["value"]) == 0x8000
    assert sim.apic_page(0, 0)[0x210:0x214].view("<u4")[0] == 0
    if runner.hcl.backend == "simulator":
        assert sim.apic_page(0, 1)[0x210:0x214].view("<u4")[0] == 0x8000


def test_private_regs_new_vectors():
    r0, r1 = TdxPrivateRegs.new(VTL0), TdxPrivateRegs.new(VTL1)
    assert int(r0.vp_entry_flags) == 0x0010000000000001
    assert int(r1.vp_entry_flags) == 0x0020000000000001
    assert r0.rflags == r1.rflags == 0x2
    assert r0.rip == r0.ssp == r0.rvi == r0.svi == r0.msr_star == r0.msr_tsc_aux == 0


def test_private_regs_round_trip_at_spec_offsets(runner, sim):
    page = sim.run_page(0)
    u64 = lambda off: int(page[off:off + 8].view("<u8")[0])  # noqa: E731
    gps = runner.tdx_enter_guest_gps()
    gps[:] = np.arange(16, dtype=np.uint64) + 100
    runner.set_cr2(0xC2)
    runner.set_tdx_vp_state_flags(1)
    regs = TdxPrivateRegs(rflags=0x202, rip=0x1000, ssp=0x2000, rvi=0x31, svi=0x41,
                          msr_kernel_gs_base=1, msr_star=2, msr_lstar=3, msr_sfmask=4,
                          msr_xss=5, msr_tsc_aux=6, vp_entry_flags=0x0020000000000001)
    runner.write_private_regs(regs)
    assert (u64(640), u64(648), u64(656)) == (0x202, 0x1000, 0x2000)
    assert (page[664], page[665]) == (0x31, 0x41)
    assert [u64(o) for o in (408, 416, 424, 432, 440, 456)] == [1, 2, 3, 4, 5, 6]
    assert u64(504) == 0x0020000000000001
    # Shared and global state is not touched.
    assert gps.tolist() == list(range(100, 116))
    assert u64(448) == 0xC2 and u64(464) == 1
    back = TdxPrivateRegs()
    runner.read_private_regs(back)
    assert back == regs


def test_private_regs_validation():
    with pytest.raises(ValueError, match="rvi"):
        TdxPrivateRegs(rvi=256)
    with pytest.raises(TypeError, match="no field"):
        TdxPrivateRegs(rax=1)
    with pytest.raises(ValueError, match="rip"):
        TdxPrivateRegs().rip = -5


# ---- the raw transport (sections 2.3, 2.4, 10.1) -------------------------------------


def test_raw_tdcall_returns_outputs(hcl, sim):
    sim.set_vmcs(1, 0, 0x6802, 0xABC000)
    out = hcl.tdcall(1, TdCallLeaf.VP_RD, rdx=0x2420000300006802)
    assert out.rax.is_success and out.rax == 0
    assert out.r8 == 0xABC000
    assert out.r10 == 0 and out.r11 == 0
    bad = hcl.tdcall(1, TdCallLeaf.VP_RD, rcx=1, rdx=0x2420000300006802)
    assert bad.rax.code == TdCallResultCode.OPERAND_INVALID  # returned, not raised


@pytest.mark.parametrize("leaf", [0, 25, (1 << 16) | 25])
def test_raw_tdcall_refuses_vmcall_and_enter(hcl, sim, leaf):
    before = sim.counters()
    with pytest.raises(ValueError):
        hcl.tdcall(0, leaf)
    assert sim.counters() == before


@pytest.mark.parametrize("reg", ["r10", "r11", "r12", "r13", "r14", "r15"])
def test_raw_tdcall_refuses_nonzero_r10_to_r15(hcl, sim, reg):
    before = sim.counters()
    with pytest.raises(ValueError, match=reg):
        hcl.tdcall(0, TdCallLeaf.VP_RD, **{reg: 1})
    assert sim.counters() == before


def test_raw_tdcall_bad_input(hcl):
    with pytest.raises(ValueError, match="vp"):
        hcl.tdcall(5, 9)
    with pytest.raises(ValueError, match="rcx"):
        hcl.tdcall(0, 9, rcx=1 << 64)
    with pytest.raises(TypeError, match="rdx"):
        hcl.tdcall(0, 9, rdx=None)


def test_unknown_leaf_is_operand_invalid(hcl):
    assert hcl.tdcall(0, 0x77).rax.code == TdCallResultCode.OPERAND_INVALID


# ---- accepting pages and setting attributes (sections 7.12-7.14, 8.2) -----------------

FULL = 0x800F
ATTRS = TdgMemPageGpaAttr(l2_vm1=hcltdx.GpaVmAttributes(FULL))
MASK = TdgMemPageAttrWriteR8(l2_vm1=hcltdx.GpaVmAttributesMask.ALL_CHANGED)


def test_accept_trace_of_section_8_2(hcl, sim):
    sim.enable_log(64)
    hcl.mshv_vtl.tdx_accept_pages(MemoryRange(0x1FF000, 0x601000), (ATTRS, MASK))
    a, m = int(ATTRS), int(MASK)
    assert calls(sim) == [
        (6, 0x1FF000, 0, 0, 0), (24, 0x1FF000, a, m, 0),
        (6, 0x200001, 0, 0, 0), (24, 0x200001, a, m, 0),
        (6, 0x400001, 0, 0, 0), (24, 0x400001, a, m, 0),
        (6, 0x600000, 0, 0, 0), (24, 0x600000, a, m, 0),
    ]
    assert sim.page_state(0x300000).state == "accepted"


def test_accept_with_verify_reads_back(hcl, sim):
    sim.enable_log(64)
    hcl.mshv_vtl.tdx_accept_pages(MemoryRange(0x1FF000, 0x601000), (ATTRS, MASK), verify=True)
    log = calls(sim)
    assert len(log) == 12
    assert [c[0] for c in log[:3]] == [6, 24, 23]
    assert log[2][1] == 0x1FF000 and log[5][1] == 0x200000  # ATTR.RD takes a GPA


def test_accept_fallback_513_calls(backend):
    sim = backend.sim
    sim.unmap_host(MemoryRange(0, sim.memory_size))
    sim.map_host(MemoryRange(0x200000, 0x400000), 0)  # host maps 4 KiB pages
    hcl = backend.open()
    sim.enable_log(1024)
    hcl.mshv_vtl.tdx_accept_pages(MemoryRange(0x200000, 0x400000))
    log = calls(sim)
    assert len(log) == 513
    assert log[0] == (6, 0x200001, 0, 0, 0)
    assert log[1] == (6, 0x200000, 0, 0, 0) and log[-1] == (6, 0x3FF000, 0, 0, 0)


def test_accept_fallback_514_calls(backend):
    sim = backend.sim
    sim.unmap_host(MemoryRange(0, sim.memory_size))
    sim.map_host(MemoryRange(0x200000, 0x400000), 0)
    sim.map_host(MemoryRange(0x400000, 0x600000), 1)
    hcl = backend.open()
    sim.enable_log(1024)
    hcl.mshv_vtl.tdx_accept_pages(MemoryRange(0x200000, 0x600000))
    log = calls(sim)
    assert len(log) == 514
    assert log[512] == (6, 0x3FF000, 0, 0, 0) and log[513] == (6, 0x400001, 0, 0, 0)


def test_accept_empty_range_issues_nothing(hcl, sim):
    before = sim.counters()
    hcl.mshv_vtl.tdx_accept_pages(MemoryRange(0x400000, 0x400000))
    assert sim.counters() == before


def test_accept_twice_raises_with_progress(hcl, sim):
    hcl.mshv_vtl.tdx_accept_pages(MemoryRange(0x403000, 0x404000))
    with pytest.raises(hcltdx.PageAlreadyAcceptedError) as ei:
        hcl.mshv_vtl.tdx_accept_pages(MemoryRange(0x400000, 0x408000))
    e = ei.value
    assert e.code == TdCallResultCode.PAGE_ALREADY_ACCEPTED
    assert e.gpa == 0x403000 and e.accepted == MemoryRange(0x400000, 0x403000)
    assert "page 1027 already accepted" in str(e)  # 0x403000 / 4096 = 1027
    assert sim.page_state(0x402000).state == "accepted"
    assert sim.page_state(0x404000).state == "pending"


def test_accept_busy_invalid_unknown(hcl, sim):
    sim.inject(TdCallLeaf.MEM_PAGE_ACCEPT, 0x8000020000000000)
    with pytest.raises(hcltdx.AcceptPagesBusy) as ei:
        hcl.mshv_vtl.tdx_accept_pages(MemoryRange(0x200000, 0x400000))
    assert ei.value.accepted == MemoryRange(0x200000, 0x200000)
    assert ei.value.code == TdCallResultCode.OPERAND_BUSY
    # Beyond the TD's memory: OPERAND_INVALID.
    end = sim.memory_size
    with pytest.raises(hcltdx.AcceptPagesInvalid):
        hcl.mshv_vtl.tdx_accept_pages(MemoryRange(end, end + 0x1000))
    sim.inject(TdCallLeaf.MEM_PAGE_ACCEPT, 0xC0000B0B00000000)  # size mismatch at 4 KiB
    with pytest.raises(hcltdx.AcceptPagesUnknown):
        hcl.mshv_vtl.tdx_accept_pages(MemoryRange(0x201000, 0x202000))


def test_accept_attributes_failure(hcl, sim):
    sim.inject(TdCallLeaf.MEM_PAGE_ATTR_WR, 0xC000010000000000)
    with pytest.raises(hcltdx.AcceptPagesAttributes) as ei:
        hcl.mshv_vtl.tdx_accept_pages(MemoryRange(0x600000, 0x800000), (ATTRS, MASK))
    assert ei.value.leaf == TdCallLeaf.MEM_PAGE_ATTR_WR
    assert ei.value.accepted == MemoryRange(0x600000, 0x800000)  # accepted, attributes not set
    assert ei.value.attributes_set == MemoryRange(0x600000, 0x600000)


def test_accept_bad_input(hcl, sim):
    before = sim.counters()
    with pytest.raises(TypeError):
        hcl.mshv_vtl.tdx_accept_pages("0-4096")
    with pytest.raises(ValueError):
        hcl.mshv_vtl.tdx_accept_pages((0x1001, 0x2000))
    with pytest.raises(TypeError, match="attributes"):
        hcl.mshv_vtl.tdx_accept_pages(MemoryRange(0, 0x1000), ATTRS)
    assert sim.counters() == before


def test_set_page_attributes(hcl, sim):
    hcl.mshv_vtl.tdx_accept_pages(MemoryRange(0x200000, 0x402000))
    sim.enable_log(64)
    hcl.mshv_vtl.tdx_set_page_attributes(MemoryRange(0x200000, 0x402000), ATTRS, MASK, verify=True)
    log = calls(sim)
    assert [c[:2] for c in log] == [(24, 0x200001), (23, 0x200000), (24, 0x400000),
                                     (23, 0x400000), (24, 0x401000), (23, 0x401000)]
    assert (sim.page_state(0x300000).attrs >> 16) & 0xFFFF == FULL


def test_set_page_attributes_error(hcl, sim):
    sim.inject(TdCallLeaf.MEM_PAGE_ATTR_WR, 0xC0000B1100000000)
    with pytest.raises(hcltdx.SetPageAttributesError) as ei:
        hcl.mshv_vtl.tdx_set_page_attributes(MemoryRange(0x200000, 0x400000), ATTRS, MASK)
    assert ei.value.code == TdCallResultCode.PAGE_ATTR_INVALID
    assert ei.value.done == MemoryRange(0x200000, 0x200000)


def test_accept_1gib_at_2mib_is_512_calls():
    hcl = hcltdx.Hcl.simulated(vp_count=1, memory_size=1 << 30)
    hcl.mshv_vtl.tdx_accept_pages(MemoryRange(0, 1 << 30))
    assert hcl.sim.counters()["MEM_PAGE_ACCEPT"] == 512
    assert hcl.sim.page_counts()["accepted"] == (1 << 30) // 4096


# ---- lifetime (views, close, use after close) ---------------------------------------


def test_views_outlive_del_hcl(backend):
    hcl = backend.open()
    r = hcl.runner(0)
    gps = r.tdx_enter_guest_gps()
    apic = r.tdx_apic_page(VTL0)
    del r, hcl
    gc.collect()
    gps[3] = 42  # still mapped: the view keeps its page alive
    assert gps[3] == 42
    assert backend.sim.run_page(0)[536:544].view("<u8")[0] == 42
    assert int(apic["tpr"]["value"]) >= 0


def test_close_with_live_views_raises_buffererror(backend):
    hcl = backend.open()
    r = hcl.runner(0)
    gps = r.tdx_enter_guest_gps()
    with pytest.raises(BufferError):
        r.close()
    with pytest.raises(BufferError):
        hcl.close()
    assert not r.closed and not hcl.closed
    assert r.read_vmcs64(VTL0, VmcsField.VMX_VMCS_GUEST_CR3) >= 0
    del gps
    gc.collect()
    hcl.close()
    assert r.closed and hcl.closed


def test_use_after_close(backend):
    hcl = backend.open()
    r = hcl.runner(0)
    r.close()
    r.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        r.read_vmcs64(VTL0, VmcsField.VMX_VMCS_GUEST_CR3)
    with pytest.raises(ValueError, match="closed"):
        r.tdx_enter_guest_gps()
    with pytest.raises(ValueError, match="closed"):
        r.cr2()
    hcl.close()
    hcl.close()
    with pytest.raises(ValueError, match="closed"):
        hcl.tdcall(0, 9)
    with pytest.raises(ValueError, match="closed"):
        hcl.runner(0)
    with pytest.raises(ValueError, match="closed"):
        hcl.mshv_vtl


def test_context_managers(backend):
    with backend.open() as hcl:
        with hcl.runner(1) as r:
            r.read_vmcs64(VTL1, VmcsField.VMX_VMCS_GUEST_CR0)
        assert r.closed
    assert hcl.closed


def test_runner_used_from_another_thread(runner):
    errors = []

    def other():
        try:
            runner.read_vmcs64(VTL0, VmcsField.VMX_VMCS_GUEST_CR3)
        except RuntimeError as e:
            errors.append(e)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert len(errors) == 1 and "belongs to the thread" in str(errors[0])
    assert runner.read_vmcs64(VTL0, VmcsField.VMX_VMCS_GUEST_CR3) >= 0


def test_two_threads_two_runners(backend):
    hcl = backend.open()
    results = {}

    def work(vp):
        with hcl.runner(vp) as r:
            for i in range(200):
                r.write_vmcs64(GuestVtl(vp % 2), VmcsField.VMX_VMCS_GUEST_CR3, ALL, (vp << 32) | i)
                assert r.read_vmcs64(GuestVtl(vp % 2), VmcsField.VMX_VMCS_GUEST_CR3) == (vp << 32) | i
            results[vp] = True

    threads = [threading.Thread(target=work, args=(vp,)) for vp in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {0: True, 1: True}
    assert backend.sim.vmcs(0, 0, 0x6802) == 199
    assert backend.sim.vmcs(1, 1, 0x6802) == (1 << 32) | 199


# ---- opening devices --------------------------------------------------------------------


def test_open_missing_device_suggests_simulator(tmp_path):
    with pytest.raises(FileNotFoundError, match="simulated"):
        hcltdx.Hcl.open(tmp_path / "no-such-device")
    with pytest.raises(FileNotFoundError, match="simulated"):
        hcltdx.Hcl.create_vtl(tmp_path / "mshv")


def test_open_without_permission(tmp_path):
    import os
    import pwd

    if os.geteuid() != 0:
        pytest.skip("needs root to drop to an unprivileged user")
    dev = tmp_path / "mshv_vtl"
    dev.write_bytes(b"")
    os.chmod(dev, 0o600)
    os.chmod(tmp_path, 0o755)
    nobody = pwd.getpwnam("nobody").pw_uid
    pid = os.fork()
    if pid == 0:  # child: drop root, then try to open the root-only file
        status = 3
        try:
            os.setresuid(nobody, nobody, nobody)
            try:
                hcltdx.Hcl.open(dev)
                status = 1
            except PermissionError as e:
                status = 0 if str(dev) in str(e) and e.filename == str(dev) else 2
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_device_mmap_offsets_of_section_8_6(simdev_mount):
    import mmap
    import os

    simdev_mount.sim.reset()
    hcl = hcltdx.Hcl.open(simdev_mount.path, vp_count=2)
    r = hcl.runner(1)
    r.tdx_enter_guest_gps()[0] = 0x5151
    fd = os.open(hcl.path, os.O_RDWR)
    try:
        m = mmap.mmap(fd, 4096, mmap.MAP_SHARED, offset=1 * 4096)  # run page of VP 1
        assert int.from_bytes(m[512:520], "little") == 0x5151
        m.close()
        a = mmap.mmap(fd, 4096, mmap.MAP_SHARED, offset=0x30001 * 4096)  # VTL0 APIC of VP 1
        r.tdx_apic_page(VTL0)["tpr"]["value"] = 0x33
        assert int.from_bytes(a[0x80:0x84], "little") == 0x33
        a.close()
    finally:
        os.close(fd)
    r.close()
    hcl.close()


def test_unclosed_device_warns(simdev_mount):
    hcl = hcltdx.Hcl.open(simdev_mount.path, vp_count=2)
    with pytest.warns(ResourceWarning, match="unclosed"):
        del hcl
        gc.collect()


# ---- the C-level argument conversion: its limits (the fast paths) -----------------


def test_u64_limits_on_the_fast_path(runner, sim):
    cr3 = VmcsField.VMX_VMCS_GUEST_CR3
    before = sim.counters()
    for bad in (1 << 64, -1, -(1 << 64), 1 << 100):
        with pytest.raises(ValueError, match="mask"):
            runner.write_vmcs64(VTL0, cr3, bad, 0)
        with pytest.raises(ValueError, match="value"):
            runner.write_vmcs64(VTL0, cr3, 0, bad)
    with pytest.raises(ValueError, match="mask"):
        runner.write_vmcs32(VTL0, VmcsField.VMX_VMCS_PROCESSOR_CONTROLS, (1 << 32) | 1, 0)
    with pytest.raises(TypeError, match="mask"):
        runner.write_vmcs64(VTL0, cr3, 1.0, 0)
    assert sim.counters() == before
    # The largest values pass; the model keeps only the writable bits.
    runner.write_vmcs64(VTL0, cr3, (1 << 64) - 1, 0x1234_5000)
    assert runner.read_vmcs64(VTL0, cr3) == 0x1234_5000
    assert sim.counters()["VP_WR"] == before["VP_WR"] + 1


# Ints reach the C conversion in CPython's 30-bit digits: 0 has none, values
# below 2**30 one, below 2**60 two, below 2**90 three (a u64's third digit is
# below 16), larger ones four or more; negative ones a negative count. Each
# size, and both sides of each boundary, must arrive exactly or be refused;
# an int subclass takes the same paths.
DIGIT_BOUNDARIES = [0, 1, (1 << 30) - 1, 1 << 30, (1 << 30) + 1, (1 << 60) - 1, 1 << 60,
                    (1 << 60) + 1, 0x8000_0000_0000_0000, (1 << 64) - 2, (1 << 64) - 1,
                    0x1_2345_6000, 0xDEAD_BEEF_CAFE_F00D]


@pytest.mark.parametrize("value", DIGIT_BOUNDARIES, ids=hex)
def test_every_int_size_converts_exactly(runner, value):
    rip = VmcsField.VMX_VMCS_GUEST_RIP  # read and write masks all ones
    for v in (value, _IntSubclass(value)):
        runner.write_vmcs64(VTL0, rip, (1 << 64) - 1, v)
        assert runner.read_vmcs64(VTL0, rip) == value
        # The mask, too: only the bits it selects change (an empty mask
        # writes nothing, which the module refuses as not writable).
        runner.write_vmcs64(VTL0, rip, (1 << 64) - 1, 0)
        if value == 0:
            with pytest.raises(VmcsAccessError, match="NOT_WRITABLE"):
                runner.write_vmcs64(VTL0, rip, v, (1 << 64) - 1)
            continue
        runner.write_vmcs64(VTL0, rip, v, (1 << 64) - 1)
        assert runner.read_vmcs64(VTL0, rip) == value


@pytest.mark.parametrize("value", [1 << 64, (1 << 64) + 1, 1 << 65, (1 << 90) - 1, 1 << 90, 1 << 200,
                                   -1, -(1 << 30), -(1 << 30) - 1, -(1 << 60), -(1 << 64)], ids=hex)
def test_ints_outside_u64_are_refused_at_every_size(runner, sim, value):
    rip = VmcsField.VMX_VMCS_GUEST_RIP
    before = sim.counters()
    with pytest.raises(ValueError, match="value"):
        runner.write_vmcs64(VTL0, rip, (1 << 64) - 1, value)
    with pytest.raises(ValueError, match="mask"):
        runner.write_vmcs64(VTL0, rip, _IntSubclass(value), 0)
    assert sim.counters() == before


class _IntSubclass(int):
    pass


@pytest.mark.parametrize("field", [0x6802, _IntSubclass(0x6802), VmcsField(0x6802)])
@pytest.mark.parametrize("vtl", [0, GuestVtl.VTL0, _IntSubclass(0)])
def test_argument_types_users_pass(runner, field, vtl):
    runner.write_vmcs64(VTL0, VmcsField.VMX_VMCS_GUEST_CR3, (1 << 64) - 1, 0xABC000)
    assert runner.read_vmcs64(vtl, field) == 0xABC000


@pytest.mark.parametrize("field,exc", [(True, TypeError), (-(1 << 70), ValueError),
                                       (1 << 70, ValueError), (_IntSubclass(-1), ValueError)])
def test_bad_field_beyond_u64(runner, sim, field, exc):
    before = sim.counters()
    with pytest.raises(exc):
        runner.read_vmcs64(VTL0, field)
    assert sim.counters() == before


def test_raw_tdcall_limits(hcl, sim):
    before = sim.counters()
    for kw in ({"rdx": 1 << 64}, {"r8": -1}, {"r9": 1 << 80}, {"r10": 1 << 64}, {"r15": -1}):
        with pytest.raises(ValueError, match=next(iter(kw))):
            hcl.tdcall(0, TdCallLeaf.VP_RD, **kw)
    with pytest.raises(ValueError, match="leaf"):
        hcl.tdcall(0, -1)
    with pytest.raises(TypeError, match="leaf"):
        hcl.tdcall(0, 9.0)
    with pytest.raises(TypeError, match="vp"):
        hcl.tdcall(True, 9)
    with pytest.raises(ValueError, match="vp"):
        hcl.tdcall(-1, 9)
    with pytest.raises(ValueError, match="vp"):
        hcl.tdcall(1 << 64, 9)
    assert sim.counters() == before
    # Zero given explicitly (not the default object) is accepted.
    out = hcl.tdcall(0, TdCallLeaf.VP_RD, rdx=0x2420000300006802, r10=int("0"), r15=0)
    assert out.rax == 0 and isinstance(out, hcltdx.TdcallOutput)
    assert type(out.rax) is hcltdx.TdCallResult and out.rax.is_success
    bad = hcl.tdcall(0, TdCallLeaf.VP_RD, rcx=1, rdx=0x2420000300006802)
    assert type(bad.rax) is hcltdx.TdCallResult
    assert bad.rax.code == TdCallResultCode.OPERAND_INVALID and bad.rax.details == 1


# The single-field methods build their result int in place on CPython 3.10/3.11
# (one to three 30-bit digits) and take small values from CPython's cache; the
# result must be indistinguishable from the int CPython makes.
RESULT_VALUES = sorted(set(DIGIT_BOUNDARIES + [255, 256, 257, 258, (1 << 32) - 1, 1 << 32]))


def _same_int(got, want):
    assert type(got) is int
    assert got == want and hash(got) == hash(want) and repr(got) == repr(want)
    assert got.bit_length() == want.bit_length()
    assert sys.getsizeof(got) == sys.getsizeof(want)
    assert got.to_bytes(8, "little") == want.to_bytes(8, "little")
    assert -got == -want and got + 1 == want + 1 and got >> 1 == want >> 1


@pytest.mark.parametrize("value", RESULT_VALUES, ids=hex)
def test_results_are_ints_as_cpython_makes_them(runner, value):
    rip = VmcsField.VMX_VMCS_GUEST_RIP
    runner.write_vmcs64(VTL0, rip, (1 << 64) - 1, value)
    _same_int(runner.read_vmcs64(VTL0, rip), value)
    _same_int(runner.write_vmcs64(VTL0, rip, (1 << 64) - 1, value), value)  # the old value
    if value <= 256:
        assert runner.read_vmcs64(VTL0, rip) is value  # CPython's small-int cache
    limit = VmcsField.VMX_VMCS_GUEST_ES_LIMIT  # 32 bits, read and write masks all ones
    v32 = value & 0xFFFF_FFFF
    runner.write_vmcs32(VTL0, limit, 0xFFFF_FFFF, v32)
    _same_int(runner.read_vmcs32(VTL0, limit), v32)
    _same_int(runner.write_vmcs32(VTL0, limit, 0xFFFF_FFFF, v32), v32)
    sel = VmcsField.VMX_VMCS_GUEST_ES_SELECTOR  # 16 bits
    v16 = value & 0xFFFF
    runner.write_vmcs16(VTL0, sel, 0xFFFF, v16)
    _same_int(runner.read_vmcs16(VTL0, sel), v16)


# Each single-field method has a vectorcall entry of its own for a positional
# call; every other call goes to the method's keyword-aware implementation.
SINGLE_FIELD = [
    ("read_vmcs64", 2, VmcsField.VMX_VMCS_GUEST_RIP, 64),
    ("read_vmcs32", 2, VmcsField.VMX_VMCS_GUEST_ES_LIMIT, 32),
    ("read_vmcs16", 2, VmcsField.VMX_VMCS_GUEST_ES_SELECTOR, 16),
    ("write_vmcs64", 4, VmcsField.VMX_VMCS_GUEST_RIP, 64),
    ("write_vmcs32", 4, VmcsField.VMX_VMCS_GUEST_ES_LIMIT, 32),
    ("write_vmcs16", 4, VmcsField.VMX_VMCS_GUEST_ES_SELECTOR, 16),
]


@pytest.mark.parametrize("name,nargs,field,bits", SINGLE_FIELD, ids=[s[0] for s in SINGLE_FIELD])
def test_single_field_methods_keep_their_python_interface(runner, sim, name, nargs, field, bits):
    import inspect

    params = ["vtl", "field"] + (["mask", "value"] if nargs == 4 else [])
    meth = getattr(hcltdx.TdxRunner, name)
    assert list(inspect.signature(meth).parameters)[1:] == params
    assert meth.__doc__ and meth.__qualname__ == f"TdxRunner.{name}"
    bound = getattr(runner, name)
    ones = (1 << bits) - 1
    getattr(runner, f"write_vmcs{bits}")(VTL0, field, ones, 0x1234)
    pos = (VTL0, field) + ((ones, 0x1234 & ones) if nargs == 4 else ())
    want = bound(*pos)
    # Keywords, all or some, and the unbound form give the same call.
    if nargs == 4:
        assert bound(vtl=VTL0, field=field, mask=ones, value=0x1234) == 0x1234
        assert bound(VTL0, field, ones, value=0x1234) == 0x1234
        assert meth(runner, *pos) == 0x1234
    else:
        assert bound(vtl=VTL0, field=field) == want == 0x1234
        assert bound(VTL0, field=field) == want
        assert meth(runner, *pos) == want
    before = sim.counters()
    # Wrong counts and names: the method's own messages, before any tdcall.
    for args in [(), pos[:1], pos + (0,), pos + (0,) * 8]:
        with pytest.raises(TypeError, match=rf"{name}\(\) takes exactly {nargs} positional "
                                            rf"arguments \({len(args)} given\)"):
            bound(*args)
    with pytest.raises(TypeError, match=f"{name}.. got an unexpected keyword argument 'bogus'"):
        bound(*pos, bogus=1)
    with pytest.raises(TypeError, match=rf"{name}\(\) got multiple values for keyword argument 'vtl'"):
        bound(*pos, vtl=VTL0)
    with pytest.raises(TypeError, match="multiple values|unexpected keyword"):
        bound(*pos, **{f"k{i}": i for i in range(10)})  # more than the forwarding buffer
    with pytest.raises(TypeError, match="doesn't apply to a 'int' object"):
        meth(0, *pos)
    with pytest.raises(TypeError, match="needs an argument"):
        meth()
    assert sim.counters() == before
    # Bad values through the positional entry are refused as before.
    with pytest.raises(ValueError, match="vtl"):
        bound(2, *pos[1:])
    assert sim.counters() == before


def test_tdcall_arguments_by_position_and_keyword(hcl, sim):
    """Hcl.tdcall's vectorcall entry places positional and keyword arguments
    itself and hands every other call to the method's own parser: the same
    results, and the same errors before any tdcall."""
    import inspect

    params = inspect.signature(hcltdx.Hcl.tdcall).parameters
    assert list(params)[1:] == ["vp", "leaf", "rcx", "rdx", "r8", "r9",
                                "r10", "r11", "r12", "r13", "r14", "r15"]
    assert params["r10"].kind is inspect.Parameter.KEYWORD_ONLY
    cr3 = 0x2420000300006802  # GUEST_CR3, VTL0 (docs/tdx-abi.md section 6)
    runner = hcl.runner(0)
    runner.write_vmcs64(VTL0, VmcsField.VMX_VMCS_GUEST_CR3, (1 << 64) - 1, 0xABC000)
    runner.close()
    rd = int(TdCallLeaf.VP_RD)
    dynamic = "".join(["r", "d", "x"])  # an equal name that is not the interned one
    calls = [
        ((0, rd, 0, cr3), {}),
        ((0, rd), {"rdx": cr3}),
        ((0, rd, 0), {"rdx": cr3, "r8": 0, "r9": 0}),
        ((0, rd), {"r15": 0, "rdx": cr3, "r10": 0, "rcx": 0}),
        ((), {"vp": 0, "leaf": rd, "rdx": cr3}),
        ((0,), {"leaf": rd, "rdx": cr3}),
        ((0, rd), {dynamic: cr3}),
        ((0, rd, 0, cr3, 0, 0), {"r11": 0}),
    ]
    for args, kw in calls:
        out = hcl.tdcall(*args, **kw)
        assert out.rax.is_success and out.r8 == 0xABC000, (args, kw)
    before = sim.counters()
    bad = [
        ((0,), {}, TypeError, r"at least 2 positional arguments \(1 given\)"),
        ((0, rd, 0, 0, 0, 0, 0), {}, TypeError, r"at most 6 positional arguments \(7 given\)"),
        ((0, rd, 0, cr3), {"rdx": cr3}, TypeError, "multiple values for keyword argument 'rdx'"),
        ((0, rd), {"bogus": 1}, TypeError, "unexpected keyword argument 'bogus'"),
        ((0, rd), {"r12": 1}, ValueError, "r12 must be 0"),
        ((0, rd), {"rdx": 1 << 64}, ValueError, "rdx"),
        ((2, rd), {}, ValueError, "vp"),
        ((0, rd), {f"k{i}": i for i in range(12)}, TypeError, "unexpected keyword argument"),
    ]
    for args, kw, exc, match in bad:
        with pytest.raises(exc, match=match):
            hcl.tdcall(*args, **kw)
    with pytest.raises(TypeError, match="doesn't apply to a 'int' object"):
        hcltdx.Hcl.tdcall(0, 0, rd)
    assert sim.counters() == before
