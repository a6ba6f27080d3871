"""The simulator against docs/tdx-abi.md sections 10 and 8: every call goes in
as MSHV_VTL_TDCALL carries it (leaf + RCX, RDX, R8, R9) and statuses are
checked as full 64-bit RAX values."""

import collections
import os
import threading

import pytest

import hcltdx
from hcltdx._sim import Sim

U64 = (1 << 64) - 1

# Leaves (section 5.1).
VP_INFO, ACCEPT, VM_RD, VM_WR, VP_RD, VP_WR = 1, 6, 7, 8, 9, 10
ATTR_RD, ATTR_WR, INVGLA = 23, 24, 27

# Statuses (section 5.2), details = 0.
SUCCESS = 0
OPERAND_INVALID = 0xC000010000000000
OPERAND_BUSY = 0x8000020000000000
EPT_WALK_FAILED = 0xC0000B0000000000
PAGE_ALREADY_ACCEPTED = 0x00000B0A00000000
PAGE_SIZE_MISMATCH = 0xC0000B0B00000000
PAGE_ATTR_INVALID = 0xC0000B1100000000
FIELD_ID_INCORRECT = 0xC0000C0000000000
FIELD_NOT_WRITABLE = 0xC0000C0100000000
FIELD_NOT_READABLE = 0xC0000C0200000000
FIELD_VALUE_NOT_VALID = 0xC0000C0300000000
FIRST_FIELD_ID_IN_CONTEXT = 0x00000C0B00000000
GLA_NOT_CANONICAL = 0xC000116000000000

# Field codes (sections 7.4, 8.1, 5.9).
RIP_VTL0 = 0x242000030000681E
RIP_VTL1 = 0x2C2000030000681E
CR3_VTL0 = 0x2420000300006802
VAPIC_VTL1 = 0x2C20000300002012
CS_SEL_VTL1 = 0x2C20000100000802
PROC_CTLS_VTL0 = 0x2420000200004002
MSR_BM5_VTL1 = 0x2D20000300000005
L2_CTLS_VM1 = 0xA020000300000051
L2_CTLS_VM2 = 0xA020000300000052


def field_code(enc, vtl, size=None):
    width = (enc >> 13) & 3
    if size is None:
        size = {0: 1, 1: 3, 2: 2, 3: 3}[width]
    return enc | size << 32 | 2 << 52 | (36 if vtl == 0 else 44) << 56


Out = collections.namedtuple("Out", "rax rcx rdx r8 r10 r11")
MIB = 1 << 20


class TD:
    """One simulated TD driven through the public raw transport."""

    def __init__(self, **kw):
        kw.setdefault("vp_count", 2)
        kw.setdefault("memory_size", 64 * MIB)
        if hasattr(hcltdx, "Hcl"):
            self.hcl = hcltdx.Hcl.simulated(**kw)
            self.sim = self.hcl.sim
        else:
            self.hcl = None
            self.sim = Sim(**kw)

    def call(self, leaf, rcx=0, rdx=0, r8=0, r9=0, vp=0):
        if self.hcl is not None:
            o = self.hcl.tdcall(vp, leaf, rcx, rdx, r8, r9)
            return Out(int(o.rax), o.rcx, o.rdx, o.r8, o.r10, o.r11)
        rax, rcx, rdx, r8, _r9, r10, r11 = self.sim._tdcall(vp, leaf, rcx, rdx, r8, r9)
        return Out(rax, rcx, rdx, r8, r10, r11)

    def rd(self, code, vp=0):
        return self.call(VP_RD, rdx=code, vp=vp)

    def wr(self, code, value, mask=U64, vp=0):
        return self.call(VP_WR, rdx=code, r8=value, r9=mask, vp=vp)


@pytest.fixture
def td():
    return TD()


def code_of(rax):
    return rax >> 32


# ---- TDG.VP.RD / TDG.VP.WR (section 10.4) ----------------------------------


def test_write_then_read_returns_value_and_old_value(td):
    assert td.wr(RIP_VTL0, 0x1000).rax == SUCCESS
    out = td.wr(RIP_VTL0, 0x2000)
    assert out.rax == SUCCESS and out.r8 == 0x1000
    out = td.rd(RIP_VTL0)
    assert out.rax == SUCCESS and out.r8 == 0x2000


def test_write_semantics_old_and_not_mask_or_value_and_mask(td):
    td.wr(CR3_VTL0, 0x1111_0000)
    out = td.wr(CR3_VTL0, 0xFFFF_FFFF, mask=0x0000_FF00)
    assert out.rax == SUCCESS and out.r8 == 0x1111_0000
    assert td.rd(CR3_VTL0).r8 == (0x1111_0000 & ~0xFF00) | (0xFFFF_FFFF & 0xFF00)


def test_vtls_and_vps_have_separate_vmcs(td):
    td.wr(RIP_VTL0, 0xAAAA)
    td.wr(RIP_VTL1, 0xBBBB)
    td.wr(RIP_VTL0, 0xCCCC, vp=1)
    assert td.rd(RIP_VTL0).r8 == 0xAAAA
    assert td.rd(RIP_VTL1).r8 == 0xBBBB
    assert td.rd(RIP_VTL0, vp=1).r8 == 0xCCCC
    assert td.sim.vmcs(0, 1, 0x681E) == 0xBBBB


def test_vtl1_apic_page_registration_8_5(td):
    gpa = td.sim.vtl1_apic_page_gpa(0)
    assert gpa % 4096 == 0 and gpa >= td.sim.memory_size
    out = td.call(VP_WR, rdx=VAPIC_VTL1, r8=gpa, r9=U64)
    assert out.rax == SUCCESS and out.r8 == 0
    assert td.sim.vmcs(0, 1, 0x2012) == gpa


def test_virtual_apic_page_low_bits_are_not_valid(td):
    out = td.wr(VAPIC_VTL1, 0x12345001)
    assert out.rax == FIELD_VALUE_NOT_VALID
    assert td.sim.vmcs(0, 1, 0x2012) == 0


@pytest.mark.parametrize("leaf", [VP_RD, VP_WR])
def test_rcx_nonzero_is_operand_invalid_naming_rcx(td, leaf):
    out = td.call(leaf, rcx=1, rdx=RIP_VTL0, r9=U64)
    assert out.rax == OPERAND_INVALID | 1


@pytest.mark.parametrize("bit", [24, 27, 31, 47, 48, 49, 55, 62])
@pytest.mark.parametrize("leaf", [VP_RD, VP_WR])
def test_reserved_field_id_bits(td, leaf, bit):
    assert td.call(leaf, rdx=RIP_VTL0 | 1 << bit, r9=U64).rax == FIELD_ID_INCORRECT


@pytest.mark.parametrize("bits", [1 << 34, 0xF << 34, 1 << 38, 0x1FF << 38, 1 << 50, 1 << 51])
def test_last_element_last_field_increment_write_mask_valid(td, bits):
    assert td.rd(RIP_VTL0 | bits).rax == FIELD_ID_INCORRECT
    assert td.wr(RIP_VTL0 | bits, 1).rax == FIELD_ID_INCORRECT


@pytest.mark.parametrize("context", [0, 1, 3, 7])
def test_context_must_be_td_vcpu(td, context):
    code = (RIP_VTL0 & ~(7 << 52)) | context << 52
    assert td.rd(code).rax == FIELD_ID_INCORRECT


def test_unknown_vmcs_encoding(td):
    assert td.rd(field_code(0x6FFE, 0)).rax == FIELD_ID_INCORRECT
    assert td.rd(field_code(0x4FFE, 1)).rax == FIELD_ID_INCORRECT


def test_access_high_encoding(td):
    # Upper half of VIRTUAL_APIC_PAGE (0x2012 | 1), as a 32-bit access.
    assert td.rd(0x2013 | 2 << 32 | 2 << 52 | 36 << 56).rax == FIELD_ID_INCORRECT
    assert td.rd(0x2013 | 3 << 32 | 2 << 52 | 36 << 56).rax == FIELD_ID_INCORRECT


@pytest.mark.parametrize("cls", [52, 53, 0, 1, 16, 38, 46, 63])
def test_classes_of_missing_vms_or_unsupported(td, cls):
    code = (RIP_VTL0 & ~(0x3F << 56)) | cls << 56
    assert td.rd(code).rax == FIELD_ID_INCORRECT
    assert td.wr(code, 1).rax == FIELD_ID_INCORRECT


@pytest.mark.parametrize("enc,size", [(0x681E, 2), (0x681E, 1), (0x681E, 0), (0x0802, 3),
                                      (0x4002, 3), (0x2012, 2)])
def test_wrong_field_size(td, enc, size):
    assert td.rd(field_code(enc, 0, size)).rax == FIELD_ID_INCORRECT


def test_right_field_sizes_8_1(td):
    for code in (RIP_VTL0, RIP_VTL1, CS_SEL_VTL1, PROC_CTLS_VTL0, VAPIC_VTL1):
        assert td.rd(code).rax == SUCCESS, hex(code)


def test_host_field_not_readable_nor_writable(td):
    host_cr3 = field_code(0x6C02, 0)
    assert td.rd(host_cr3).rax == FIELD_NOT_READABLE
    assert td.wr(host_cr3, 1).rax == FIELD_NOT_WRITABLE


def test_exit_reason_readable_not_writable(td):
    exit_reason = field_code(0x4402, 0)
    assert td.rd(exit_reason).rax == SUCCESS
    assert td.wr(exit_reason, 0x1E).rax == FIELD_NOT_WRITABLE


def test_zero_write_mask_is_not_writable(td):
    assert td.wr(RIP_VTL0, 5, mask=0).rax == FIELD_NOT_WRITABLE


def test_value_not_valid_only_when_read_only_bits_would_change(td):
    # Bits 2-63 of the L2 controls are reserved (section 4.2).
    assert td.wr(L2_CTLS_VM1, 0x4).rax == FIELD_VALUE_NOT_VALID
    assert td.sim.l2_ctls(0, 0) == 0
    out = td.wr(L2_CTLS_VM1, 0x3)
    assert out.rax == SUCCESS and out.r8 == 0
    assert td.wr(L2_CTLS_VM1, 0x1).r8 == 0x3
    assert td.sim.l2_ctls(0, 0) == 0x1
    # A reserved bit outside R9 is not looked at.
    assert td.wr(L2_CTLS_VM1, 0x4 | 0x2, mask=0x3).rax == SUCCESS
    assert td.sim.l2_ctls(0, 0) == 0x2


def test_l2_ctls_vm2_is_its_own_field(td):
    assert td.wr(L2_CTLS_VM2, 0x3).rax == SUCCESS
    assert td.sim.l2_ctls(0, 1) == 0x3 and td.sim.l2_ctls(0, 0) == 0


@pytest.mark.parametrize("code", [
    0xA020000300000053,             # VM3's controls: no such VM
    0xA020000300000050,
    L2_CTLS_VM1 & ~(1 << 63),       # non_arch cleared
    (L2_CTLS_VM1 & ~(3 << 32)) | 2 << 32,
])
def test_bad_l2_ctls_field_ids(td, code):
    assert td.wr(code, 1).rax == FIELD_ID_INCORRECT


def test_msr_bitmap_words(td):
    assert td.sim.msr_bitmap(0, 1, 5) == U64
    out = td.wr(MSR_BM5_VTL1, 0, mask=0xFF)
    assert out.rax == SUCCESS and out.r8 == U64
    assert td.sim.msr_bitmap(0, 1, 5) == U64 & ~0xFF
    assert td.sim.msr_bitmap(0, 0, 5) == U64
    assert td.rd(0x2520000300000000 | 511).rax == SUCCESS
    assert td.rd(0x2520000300000000 | 512).rax == FIELD_ID_INCORRECT


def test_null_field_id_returns_first_field_warning(td):
    out = td.rd(U64)
    assert out.rax == FIRST_FIELD_ID_IN_CONTEXT
    assert out.rax >> 63 == 0
    assert td.rd(out.rdx).rax == SUCCESS


def test_enumeration_visits_every_readable_field_once(td):
    from hcltdx._cabi import vmcs_catalogue
    readable = {enc for _n, enc, rmask, _w in vmcs_catalogue() if rmask}
    code = td.rd(U64).rdx
    seen = []
    while code != U64:
        out = td.rd(code)
        assert out.rax == SUCCESS, hex(code)
        assert code >> 56 == 36
        seen.append(code & 0xFFFFFF)
        code = out.rdx
    assert len(seen) == len(set(seen))
    assert set(seen) == readable


def test_enumeration_of_vtl1_stays_in_its_class_and_ends_with_all_ones(td):
    from hcltdx._cabi import vmcs_catalogue
    readable = {enc for _n, enc, rmask, _w in vmcs_catalogue() if rmask}
    first_vtl0 = td.rd(U64).rdx
    code = (first_vtl0 & ~(0x3F << 56)) | 44 << 56  # the same field in VMCS class 2
    seen = []
    while code != U64:
        out = td.rd(code)
        assert out.rax == SUCCESS, hex(code)
        assert code >> 56 == 44
        assert (code >> 32) & 3 == {0: 1, 1: 3, 2: 2, 3: 3}[(code >> 13) & 3]
        seen.append(code & 0xFFFFFF)
        code = out.rdx
    assert len(seen) == len(set(seen)) and set(seen) == readable


@pytest.mark.parametrize("code", [RIP_VTL0, RIP_VTL1, CS_SEL_VTL1, PROC_CTLS_VTL0])
def test_vmcs_field_with_non_arch_bit_is_incorrect(td, code):
    # Section 7.4: non_arch (bit 63) is set only for the L2-controls fields.
    assert td.rd(code | 1 << 63).rax == FIELD_ID_INCORRECT
    assert td.wr(code | 1 << 63, 1).rax == FIELD_ID_INCORRECT
    assert td.rd(code).rax == SUCCESS


def test_read_applies_read_mask_and_poke_bypasses(td):
    td.sim.set_vmcs(0, 0, 0x681E, 0x1234)
    assert td.rd(RIP_VTL0).r8 == 0x1234
    with pytest.raises(KeyError):
        td.sim.vmcs(0, 0, 0x6FFE)


# ---- TDG.MEM.PAGE.ACCEPT (section 10.5) -------------------------------------


def test_accept_2m_then_already_accepted_warning_with_level(td):
    assert td.call(ACCEPT, rcx=0x200001).rax == SUCCESS
    st = td.sim.page_state(0x3FF000)
    assert st.state == "accepted" and st.level == 1
    out = td.call(ACCEPT, rcx=0x200001)
    assert out.rax == PAGE_ALREADY_ACCEPTED | 1
    assert out.rax >> 63 == 0
    assert td.call(ACCEPT, rcx=0x201000).rax == PAGE_ALREADY_ACCEPTED | 1
    assert td.sim.page_counts()["accepted"] == 512


def test_accept_4k_inside_pending_2m_host_mapping_succeeds(td):
    assert td.call(ACCEPT, rcx=0x1FF000).rax == SUCCESS
    assert td.sim.page_state(0x1FF000).state == "accepted"
    assert td.sim.page_state(0x1FE000).state == "pending"
    assert td.call(ACCEPT, rcx=0x1FF000).rax == PAGE_ALREADY_ACCEPTED | 0
    assert td.sim.page_counts()["accepted"] == 1


@pytest.mark.parametrize("level", [2, 3, 7])
def test_accept_bad_levels(td, level):
    assert td.call(ACCEPT, rcx=0x40000000 | level).rax == OPERAND_INVALID | 1


@pytest.mark.parametrize("bit", [3, 11, 52, 63])
def test_accept_reserved_bits(td, bit):
    assert td.call(ACCEPT, rcx=0x200000 | 1 << bit).rax == OPERAND_INVALID | 1


def test_accept_misaligned_out_of_range_shared(td):
    size = td.sim.memory_size
    assert td.call(ACCEPT, rcx=0x201000 | 1).rax == OPERAND_INVALID | 1
    assert td.call(ACCEPT, rcx=size).rax == OPERAND_INVALID | 1
    assert td.call(ACCEPT, rcx=size | 1).rax == OPERAND_INVALID | 1
    assert td.call(ACCEPT, rcx=1 << 47 | 0x200000).rax == OPERAND_INVALID | 1
    assert td.call(ACCEPT, rcx=(size - 0x200000) | 1).rax == SUCCESS
    assert td.sim.page_counts()["accepted"] == 512


def test_accept_2m_where_host_mapped_4k_is_size_mismatch():
    td = TD(host_map="4K")
    assert td.call(ACCEPT, rcx=0x200001).rax == PAGE_SIZE_MISMATCH
    assert td.sim.page_counts()["accepted"] == 0
    for gpa in range(0x200000, 0x400000, 0x1000):
        assert td.call(ACCEPT, rcx=gpa).rax == SUCCESS
    assert td.sim.page_counts()["accepted"] == 512
    # Accepted 4 KiB mappings lie below the 2 MiB request: still a mismatch,
    # ALREADY_ACCEPTED is for a request at or below the accepted level (10.5).
    assert td.call(ACCEPT, rcx=0x200001).rax == PAGE_SIZE_MISMATCH


def test_accept_2m_over_one_accepted_4k_page_is_size_mismatch():
    td = TD(host_map="4K")
    assert td.call(ACCEPT, rcx=0x205000).rax == SUCCESS
    assert td.call(ACCEPT, rcx=0x200001).rax == PAGE_SIZE_MISMATCH
    assert td.sim.page_counts()["accepted"] == 1
    # The seed's fallback then reaches the accepted page at 4 KiB (7.12).
    assert td.call(ACCEPT, rcx=0x205000).rax == PAGE_ALREADY_ACCEPTED | 0


def test_accept_of_page_the_host_never_added():
    td = TD(host_map=None)
    assert td.call(ACCEPT, rcx=0x200000).rax == EPT_WALK_FAILED
    assert td.call(ACCEPT, rcx=0x200001).rax == EPT_WALK_FAILED
    td.sim.map_host((0x200000, 0x201000), "4K")
    assert td.call(ACCEPT, rcx=0x200000).rax == SUCCESS
    assert td.sim.page_counts() == {"not_added": 16383, "pending": 0, "accepted": 1}


def test_host_map_and_unmap():
    td = TD(host_map=None)
    with pytest.raises(ValueError):
        td.sim.map_host((0x1000, 0x201000), "2M")
    td.sim.map_host(hcltdx.MemoryRange(0x400000, 0x800000), "2M")
    with pytest.raises(ValueError):
        td.sim.map_host((0x600000, 0x601000), 0)
    assert td.call(ACCEPT, rcx=0x400001).rax == SUCCESS
    td.sim.unmap_host((0x400000, 0x401000))
    assert td.sim.page_state(0x400000).state == "not_added"
    rest = td.sim.page_state(0x401000)
    assert rest.state == "accepted" and rest.level == 0
    assert td.sim.page_state(0x600000).level == 1


# ---- TDG.MEM.PAGE.ATTR.RD / ATTR.WR (section 10.6) ---------------------------

FULL = 0x800F
VM1 = 16
VM2 = 32


def test_attr_rd_pending_then_accepted(td):
    out = td.call(ATTR_RD, rcx=0x201000)
    assert out.rax == SUCCESS
    assert out.rcx == 0x200000 | 1 | 1 << 62
    assert out.rdx == 0
    td.call(ACCEPT, rcx=0x200001)
    assert td.call(ATTR_RD, rcx=0x201000).rcx == 0x200001


@pytest.mark.parametrize("gpa", [0x200800, 0x200001, 1 << 47 | 0x200000, 64 * MIB, 1 << 52])
def test_attr_rd_bad_gpa(td, gpa):
    assert td.call(ATTR_RD, rcx=gpa).rax == OPERAND_INVALID | 1


def test_attr_rd_not_added():
    td = TD(host_map=None)
    assert td.call(ATTR_RD, rcx=0x200000).rax == EPT_WALK_FAILED


def test_attr_wr_2m_then_debug_read_back_7_11(td):
    td.call(ACCEPT, rcx=0x200001)
    attrs, mask = FULL << VM1, 0xF << VM1
    out = td.call(ATTR_WR, rcx=0x200001, rdx=attrs, r8=mask)
    assert out.rax == SUCCESS
    for gpa in (0x200000, 0x3FF000):
        back = td.call(ATTR_RD, rcx=gpa)
        assert back.rcx == 0x200001 and back.rdx == attrs
    assert td.call(ATTR_RD, rcx=0x400000).rdx == 0


def test_attr_wr_partial_mask(td):
    td.call(ACCEPT, rcx=0x200001)
    td.call(ATTR_WR, rcx=0x200001, rdx=FULL << VM1, r8=0xF << VM1)
    # Clear W, Xs, Xu; keep R.
    out = td.call(ATTR_WR, rcx=0x200001, rdx=0x8001 << VM1, r8=0xE << VM1)
    assert out.rax == SUCCESS
    assert td.call(ATTR_RD, rcx=0x200000).rdx == 0x8001 << VM1


def test_attr_wr_slot_with_valid_clear_leaves_vm_alone(td):
    td.call(ACCEPT, rcx=0x200001)
    td.call(ATTR_WR, rcx=0x200001, rdx=FULL << VM2, r8=0xF << VM2)
    out = td.call(ATTR_WR, rcx=0x200001, rdx=0x8003 << VM1, r8=0xF << VM1 | 0xF << VM2)
    assert out.rax == SUCCESS
    assert td.call(ATTR_RD, rcx=0x200000).rdx == 0x8003 << VM1 | FULL << VM2


@pytest.mark.parametrize("attrs", [
    0x800F,                  # L1 slot
    0x800F << 48,            # VM3 does not exist
    0x000F << VM1,           # VALID clear, other bits set
    0x0001 << VM2,
    0x8010 << VM1,           # reserved bit inside a slot
])
def test_attr_wr_bad_attribute_slots(td, attrs):
    td.call(ACCEPT, rcx=0x200001)
    assert td.call(ATTR_WR, rcx=0x200001, rdx=attrs, r8=0xF << VM1).rax == OPERAND_INVALID | 2


@pytest.mark.parametrize("mask", [0x000F, 0x0001, 0xF << 48, 0x0010 << VM1])
def test_attr_wr_bad_masks(td, mask):
    td.call(ACCEPT, rcx=0x200001)
    assert td.call(ATTR_WR, rcx=0x200001, rdx=FULL << VM1, r8=mask).rax == OPERAND_INVALID | 8


def test_attr_wr_inv_ept_bit_is_accepted_not_stored(td):
    td.call(ACCEPT, rcx=0x200001)
    out = td.call(ATTR_WR, rcx=0x200001, rdx=FULL << VM1, r8=0x800F << VM1)
    assert out.rax == SUCCESS
    assert td.call(ATTR_RD, rcx=0x200000).rdx == FULL << VM1


@pytest.mark.parametrize("rcx", [0x200002, 0x200000 | 1 << 5, 0x201001, 64 * MIB, 1 << 47 | 0x200001,
                                 0x40000002, 0x3, 0x7])
def test_attr_wr_bad_mapping(td, rcx):
    assert td.call(ATTR_WR, rcx=rcx, rdx=FULL << VM1, r8=0xF << VM1).rax == OPERAND_INVALID | 1


def test_attr_wr_1g_level_is_a_size_mismatch_not_invalid(td):
    # Section 10.6: ATTR.WR takes levels 0/1/2; the host maps 2 MiB here.
    out = td.call(ATTR_WR, rcx=0x2, rdx=FULL << VM1, r8=0xF << VM1)
    assert out.rax == PAGE_SIZE_MISMATCH | 1


def test_attr_wr_level_must_match_host_mapping(td):
    td.call(ACCEPT, rcx=0x200001)
    assert td.call(ATTR_WR, rcx=0x200000, rdx=FULL << VM1, r8=0xF << VM1).rax >> 32 == \
        PAGE_SIZE_MISMATCH >> 32
    td4 = TD(host_map="4K")
    td4.call(ACCEPT, rcx=0x200000)
    assert td4.call(ATTR_WR, rcx=0x200001, rdx=FULL << VM1, r8=0xF << VM1).rax >> 32 == \
        PAGE_SIZE_MISMATCH >> 32
    assert td4.call(ATTR_WR, rcx=0x200000, rdx=FULL << VM1, r8=0xF << VM1).rax == SUCCESS


def test_attr_wr_illegal_combination_returns_current(td):
    td.call(ACCEPT, rcx=0x200001)
    td.call(ATTR_WR, rcx=0x200001, rdx=0x800D << VM1, r8=0xF << VM1)  # R, Xs, Xu
    out = td.call(ATTR_WR, rcx=0x200001, rdx=0x8002 << VM1, r8=0x3 << VM1)  # W without R
    assert out.rax == PAGE_ATTR_INVALID
    assert out.rdx == 0x800D << VM1
    assert td.call(ATTR_RD, rcx=0x200000).rdx == 0x800D << VM1


def test_attr_wr_on_pending_page_takes_effect_on_accept(td):
    assert td.call(ATTR_WR, rcx=0x200001, rdx=FULL << VM1, r8=0xF << VM1).rax == SUCCESS
    out = td.call(ATTR_RD, rcx=0x200000)
    assert out.rcx == 0x200001 | 1 << 62 and out.rdx == FULL << VM1
    assert td.sim.page_state(0x200000).pending_attrs
    td.call(ACCEPT, rcx=0x200001)
    out = td.call(ATTR_RD, rcx=0x200000)
    assert out.rcx == 0x200001 and out.rdx == FULL << VM1
    assert not td.sim.page_state(0x200000).pending_attrs


# ---- leaf 27, VP.INVGLA (section 10.7) ----------------------------------------


def test_invgla_single_and_count(td):
    assert td.call(INVGLA, rcx=0x0010000000000000, rdx=0x00007FFFFFFFF000).rax == SUCCESS
    assert td.sim.invgla_count(0) == 1
    assert td.call(INVGLA, rcx=0x0020000000000000, rdx=0xFFFF800000000000 | 3).rax == SUCCESS
    assert td.sim.invgla_count(0) == 1 + 4
    assert td.sim.invgla_count(1) == 0


@pytest.mark.parametrize("gla", [0x0000800000000000, 0x8000000000000000, 0x7FFF_0000_0000_0000])
def test_invgla_not_canonical(td, gla):
    assert td.call(INVGLA, rcx=0x0010000000000000, rdx=gla).rax == GLA_NOT_CANONICAL
    assert td.sim.invgla_count(0) == 0


@pytest.mark.parametrize("rcx", [
    0x0000000000000000,            # VM index 0
    0x0030000000000000,            # VM index 3: no such VM
    0x0010000000000002,            # bit 1
    0x0018000000000000,            # bit 51
    0x0050000000000000,            # bit 54
    0x8010000000000000,            # bit 63
])
def test_invgla_bad_rcx(td, rcx):
    assert td.call(INVGLA, rcx=rcx, rdx=0x1000).rax == OPERAND_INVALID | 1


def test_invgla_list_8_3(td):
    out = td.call(INVGLA, rcx=0x0020000000000001, rdx=0x0030000001234000)
    assert out.rax == SUCCESS
    assert td.sim.invgla_count(0) == 3


@pytest.mark.parametrize("first,count,ok", [(509, 3, True), (510, 3, False), (0, 512, True),
                                            (0, 513, False), (511, 1, True), (1, 1023, False)])
def test_invgla_list_bounds(td, first, count, ok):
    info = first | 0x1234 << 12 | count << 52
    rax = td.call(INVGLA, rcx=0x0010000000000001, rdx=info).rax
    assert rax == (SUCCESS if ok else OPERAND_INVALID | 2)


@pytest.mark.parametrize("bits", [1 << 9, 1 << 11, 1 << 62, 1 << 63])
def test_invgla_list_reserved_bits(td, bits):
    info = 0x0030000001234000 | bits
    assert td.call(INVGLA, rcx=0x0010000000000001, rdx=info).rax == OPERAND_INVALID | 2


# ---- other leaves -----------------------------------------------------------------


@pytest.mark.parametrize("leaf", [2, 3, 4, 5, 11, 22, 26, 28, 0xFFFF, 9 | 1 << 32, 6 | 1 << 16])
def test_unknown_leaf_or_reserved_rax_bits(td, leaf):
    assert td.call(leaf, rcx=0, rdx=RIP_VTL0).rax >> 32 == OPERAND_INVALID >> 32
    assert td.sim.counters()["OTHER"] == 1
    assert td.sim.counters()["VP_RD"] == 0


@pytest.mark.parametrize("leaf", [0, 25])
def test_vmcall_and_enter_are_not_module_calls(td, leaf):
    assert td.sim._tdcall(0, leaf)[0] >> 32 == OPERAND_INVALID >> 32


@pytest.mark.parametrize("leaf", [VM_RD, VM_WR])
def test_vm_rd_wr_not_modelled(td, leaf):
    assert td.call(leaf, rdx=0x1).rax >> 32 == OPERAND_INVALID >> 32


def test_vp_info(td):
    out = td.call(VP_INFO, vp=1)
    assert out.rax == SUCCESS
    assert out.rcx & 0x3F == 48
    assert out.r8 & 0xFFFFFFFF == 2


def test_kernel_writes_back_r9_and_zero_r10_r11(td):
    assert td.sim._tdcall(0, VP_WR, 0, RIP_VTL0, 5, U64) == (0, 0, RIP_VTL0, 0, U64, 0, 0)


def test_bad_vp_index_is_refused_before_the_model(td):
    with pytest.raises(ValueError):
        td.sim._tdcall(2, VP_RD)


# ---- fault injection, counters, log --------------------------------------------


def test_scripted_faults_are_consumed_in_order_without_side_effects(td):
    td.sim.inject(VP_WR, OPERAND_BUSY | 3, count=2)
    for _ in range(2):
        assert td.wr(RIP_VTL0, 7).rax == OPERAND_BUSY | 3
    assert td.rd(RIP_VTL0).r8 == 0
    assert td.wr(RIP_VTL0, 7).rax == SUCCESS
    assert td.rd(RIP_VTL0).r8 == 7


def test_inject_accepts_a_result_code(td):
    from hcltdx.tdx import TdCallResultCode
    td.sim.inject(ACCEPT, TdCallResultCode.OPERAND_BUSY)
    assert td.call(ACCEPT, rcx=0x200001).rax == OPERAND_BUSY
    assert td.sim.page_counts()["accepted"] == 0


def test_inject_rejects_bad_arguments(td):
    with pytest.raises(ValueError):
        td.sim.inject(2, OPERAND_BUSY)
    with pytest.raises(ValueError):
        td.sim.inject_rate(VP_RD, OPERAND_BUSY, 1.5)
    with pytest.raises(TypeError):
        td.sim.inject(VP_RD, "busy")


def test_rate_faults_are_reproducible_by_seed():
    def pattern(seed):
        td = TD()
        td.sim.inject_rate(VP_RD, OPERAND_BUSY, 0.5, seed=seed)
        return [td.rd(RIP_VTL0).rax for _ in range(200)]

    a, b, c = pattern(7), pattern(7), pattern(8)
    assert a == b
    assert a != c
    assert set(a) == {SUCCESS, OPERAND_BUSY}


def test_clear_faults(td):
    td.sim.inject(VP_RD, OPERAND_BUSY, count=5)
    td.sim.inject_rate(VP_RD, OPERAND_BUSY, 1.0)
    td.sim.clear_faults()
    assert td.rd(RIP_VTL0).rax == SUCCESS


def test_counters_count_every_call_including_injected(td):
    td.sim.inject(VP_RD, OPERAND_BUSY)
    for _ in range(3):
        td.rd(RIP_VTL0)
    td.wr(RIP_VTL0, 1)
    td.call(ACCEPT, rcx=0x200001)
    td.call(INVGLA, rcx=0x0010000000000000, rdx=0)
    c = td.sim.counters()
    assert c["VP_RD"] == 3 and c["VP_WR"] == 1
    assert c["MEM_PAGE_ACCEPT"] == 1 and c["VP_INVGLA"] == 1
    assert sum(c.values()) == 6


def test_call_log_ring(td):
    td.sim.enable_log(3)
    td.sim.inject(VP_RD, OPERAND_BUSY)
    td.rd(RIP_VTL0, vp=1)
    for v in range(4):
        td.wr(RIP_VTL0, v + 1)
    log = td.sim.call_log()
    assert len(log) == 3 and td.sim.log_dropped == 2
    assert list(log["seq"]) == [2, 3, 4]
    last = log[-1]
    assert last["in_rax"] == VP_WR and last["in_rdx"] == RIP_VTL0
    assert last["in_r8"] == 4 and last["in_r9"] == U64
    assert last["out_rax"] == SUCCESS and last["out_r8"] == 3
    td.sim.clear_log()
    td.sim.enable_log(8)
    td.sim.inject(VP_RD, OPERAND_BUSY)
    td.rd(RIP_VTL0, vp=1)
    log = td.sim.call_log()
    assert log["injected"][0] == 1 and log["vp"][0] == 1 and log["out_rax"][0] == OPERAND_BUSY
    td.sim.disable_log()
    td.rd(RIP_VTL0)
    assert len(td.sim.call_log()) == 0


def test_reset(td):
    td.wr(RIP_VTL0, 9)
    td.call(ACCEPT, rcx=0x200001)
    td.sim.run_page(0)[0] = 1
    td.sim.reset()
    assert td.rd(RIP_VTL0).r8 == 0
    assert td.sim.page_counts()["accepted"] == 0
    assert td.sim.run_page(0)[0] == 0
    assert sum(td.sim.counters().values()) == 1


# ---- threads ------------------------------------------------------------------


def test_threads_on_different_vps():
    sim = Sim(vp_count=4)
    errors = []

    def work(vp):
        for i in range(3000):
            v = vp << 32 | i
            if sim._tdcall(vp, VP_WR, 0, RIP_VTL0, v, U64)[0] != 0:
                errors.append((vp, i))
            if sim._tdcall(vp, VP_RD, 0, RIP_VTL0)[3] != v:
                errors.append((vp, i, "read"))

    threads = [threading.Thread(target=work, args=(vp,)) for vp in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sim.counters()["VP_WR"] == sim.counters()["VP_RD"] == 12000


def test_threads_on_one_vp_masked_writes_do_not_lose_bits():
    sim = Sim(vp_count=1)

    def work(shift):
        for i in range(2000):
            bit = 1 << (shift + i % 8)
            sim._tdcall(0, VP_WR, 0, CR3_VTL0, bit, bit)
            sim._tdcall(0, VP_WR, 0, CR3_VTL0, 0, bit)
        sim._tdcall(0, VP_WR, 0, CR3_VTL0, 0xFF << shift, 0xFF << shift)

    threads = [threading.Thread(target=work, args=(s,)) for s in (0, 8, 16, 24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sim.vmcs(0, 0, 0x6802) == 0xFFFFFFFF


# ---- shared pages and the backing file ------------------------------------------


def test_memfd_backing_is_live_both_ways():
    sim = Sim(vp_count=3, backing="memfd")
    fd = sim.backing_fd
    assert fd >= 0 and sim.backing_path == f"/proc/self/fd/{fd}"
    assert os.fstat(fd).st_size >= (0x30002 + 1) * 4096
    os.pwrite(fd, b"\x11\x22", 2 * 4096 + 16)
    assert list(sim.run_page(2)[16:18]) == [0x11, 0x22]
    sim.run_page(1)[100] = 0x5A
    assert os.pread(fd, 1, 4096 + 100) == b"\x5a"
    sim.apic_page(2)[0x80] = 0x33
    assert os.pread(fd, 1, 0x30002 * 4096 + 0x80) == b"\x33"


def test_path_backing(tmp_path):
    p = tmp_path / "mshv_vtl"
    sim = Sim(vp_count=1, backing=p)
    sim.run_page(0)[8] = 7
    with open(p, "rb") as f:
        f.seek(8)
        assert f.read(1) == b"\x07"


def test_page_views_keep_the_sim_alive():
    sim = Sim(vp_count=1)
    page = sim.apic_page(0, vtl=1)
    del sim
    import gc
    gc.collect()
    page[:] = 0xAB
    assert int(page.sum()) == 0xAB * 4096


def test_structured_run_page():
    from hcltdx import abi
    for tsc in (False, True):
        sim = Sim(vp_count=1, tsc_deadline_layout=tsc)
        view = sim.run_page(0, structured=True)
        assert view.dtype == abi.run_page_dtype(tsc)
        view["cancel"] = 1
        assert sim.run_page(0)[0] == 1


def test_footprint_is_compact():
    sim = Sim(vp_count=1, memory_size=1 << 30)
    assert sim.footprint() < 10 * MIB


@pytest.mark.parametrize("kw,exc", [
    ({"vp_count": 0}, ValueError), ({"vp_count": 65}, ValueError),
    ({"vp_count": "2"}, TypeError), ({"vp_count": True}, TypeError),
    ({"memory_size": 3 * MIB}, ValueError), ({"memory_size": 0}, ValueError),
    ({"memory_size": 2.0 * MIB}, TypeError), ({"backing": 5}, TypeError),
    ({"host_map": "1G"}, ValueError), ({"seed": -1}, ValueError),
    ({"tsc_deadline_layout": 1}, TypeError),
])
def test_constructor_validates_arguments(kw, exc):
    with pytest.raises(exc):
        Sim(**kw)


def test_second_init_is_refused_and_keeps_the_backing_fd():
    sim = Sim(vp_count=1, backing="memfd")
    fd = sim.backing_fd
    with pytest.raises(RuntimeError):
        sim.__init__(vp_count=1, backing="memfd")
    assert sim.backing_fd == fd and os.fstat(fd)


def test_methods_validate_arguments():
    sim = Sim(vp_count=1)
    with pytest.raises(ValueError):
        sim.run_page(1)
    with pytest.raises(ValueError):
        sim.vmcs(0, 2, 0x681E)
    with pytest.raises(ValueError):
        sim.msr_bitmap(0, 0, 512)
    with pytest.raises(ValueError):
        sim.map_host((0, 0x1000), "1G")
    with pytest.raises(TypeError):
        sim.map_host(0x1000, 0)
    with pytest.raises(ValueError):
        sim.page_state(sim.memory_size)
    with pytest.raises(ValueError):
        sim.enable_log(0)


# ---- the C API, compiled and run as a program ---------------------------------


def test_c_api_program():
    import shutil
    import subprocess
    from pathlib import Path

    if not shutil.which("make") or not shutil.which("gcc"):
        pytest.skip("needs make and gcc")
    csrc = Path(__file__).resolve().parent.parent / "csrc"
    build = subprocess.run(["make", "-s", "-C", str(csrc), "build/test_sim_api"],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    assert "warning" not in build.stderr
    run = subprocess.run([str(csrc / "build" / "test_sim_api")], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"
