"""Definitions layer against the spec's numbers (docs/tdx-abi.md sections
4, 5, 6 and 8)."""

import pickle

import pytest

from hcltdx import _cabi
from hcltdx.memory_range import MemoryRange
from hcltdx.protocol import (
    EnterMode,
    EnterModes,
    GuestVtl,
    HclIntrOffloadFlags,
    HvInputVtl,
    TdxVpStateFlags,
)
from hcltdx.tdx import (
    SEED_TDX_FIELD_CODE_L2_CTLS_VM2,
    TDX_FIELD_CODE_L2_CTLS_VM1,
    TDX_FIELD_CODE_L2_CTLS_VM2,
    TDX_SHARED_GPA_BOUNDARY_ADDRESS_BIT,
    TDX_SHARED_GPA_BOUNDARY_BITS,
    TDX_VP_ENTER_INVD_INVEPT,
    TDX_VP_ENTER_INVD_INVVPID,
    TDX_VP_ENTER_INVD_INVVPID_NON_GLOBAL,
    FieldSize,
    GpaVmAttributes,
    GpaVmAttributesMask,
    TdCallLeaf,
    TdCallResult,
    TdCallResultCode,
    TdgMemPageAcceptRcx,
    TdgMemPageAttrGpaMappingReadRcxResult,
    TdgMemPageAttrWriteR8,
    TdgMemPageAttrWriteRcx,
    TdgMemPageGpaAttr,
    TdgMemPageLevel,
    TdGlaVmAndFlags,
    TdVmCallR10Result,
    TdVmCallSubFunction,
    TdVpsClassCode,
    TdxContextCode,
    TdxExtendedExitQualification,
    TdxExtendedExitQualificationType,
    TdxExtendedFieldCode,
    TdxGlaListInfo,
    TdxGp,
    TdxL2Ctls,
    TdxVmFlags,
    TdxVpEnterRaxResult,
    l2_ctls_field_code,
    msr_bitmap_field_code,
    vmcs_field_code,
)
from hcltdx.vmx import FieldWidth, VmcsField, VmxExit, VmxExitBasic
from hcltdx.x86 import ApicRegister, RFlags

# Section 6, every row: name, raw, width, type, index, high, FieldSize,
# field code VTL0, field code VTL1.
SEED_VMCS = [
    ("VMX_VMCS_ENTRY_CONTROLS", 0x4012, 2, 0, 9, 0, 2, 0x2420000200004012, 0x2C20000200004012),
    ("VMX_VMCS_GUEST_CR0", 0x6800, 3, 2, 0, 0, 3, 0x2420000300006800, 0x2C20000300006800),
    ("VMX_VMCS_GUEST_CR3", 0x6802, 3, 2, 1, 0, 3, 0x2420000300006802, 0x2C20000300006802),
    ("VMX_VMCS_GUEST_CR4", 0x6804, 3, 2, 2, 0, 3, 0x2420000300006804, 0x2C20000300006804),
    ("VMX_VMCS_GUEST_DR7", 0x681A, 3, 2, 13, 0, 3, 0x242000030000681A, 0x2C2000030000681A),
    ("VMX_VMCS_GUEST_ES_SELECTOR", 0x0800, 0, 2, 0, 0, 1, 0x2420000100000800, 0x2C20000100000800),
    ("VMX_VMCS_GUEST_ES_BASE", 0x6806, 3, 2, 3, 0, 3, 0x2420000300006806, 0x2C20000300006806),
    ("VMX_VMCS_GUEST_ES_LIMIT", 0x4800, 2, 2, 0, 0, 2, 0x2420000200004800, 0x2C20000200004800),
    ("VMX_VMCS_GUEST_ES_AR", 0x4814, 2, 2, 10, 0, 2, 0x2420000200004814, 0x2C20000200004814),
    ("VMX_VMCS_GUEST_CS_SELECTOR", 0x0802, 0, 2, 1, 0, 1, 0x2420000100000802, 0x2C20000100000802),
    ("VMX_VMCS_GUEST_CS_BASE", 0x6808, 3, 2, 4, 0, 3, 0x2420000300006808, 0x2C20000300006808),
    ("VMX_VMCS_GUEST_CS_LIMIT", 0x4802, 2, 2, 1, 0, 2, 0x2420000200004802, 0x2C20000200004802),
    ("VMX_VMCS_GUEST_CS_AR", 0x4816, 2, 2, 11, 0, 2, 0x2420000200004816, 0x2C20000200004816),
    ("VMX_VMCS_GUEST_SS_SELECTOR", 0x0804, 0, 2, 2, 0, 1, 0x2420000100000804, 0x2C20000100000804),
    ("VMX_VMCS_GUEST_SS_BASE", 0x680A, 3, 2, 5, 0, 3, 0x242000030000680A, 0x2C2000030000680A),
    ("VMX_VMCS_GUEST_SS_LIMIT", 0x4804, 2, 2, 2, 0, 2, 0x2420000200004804, 0x2C20000200004804),
    ("VMX_VMCS_GUEST_SS_AR", 0x4818, 2, 2, 12, 0, 2, 0x2420000200004818, 0x2C20000200004818),
    ("VMX_VMCS_GUEST_DS_SELECTOR", 0x0806, 0, 2, 3, 0, 1, 0x2420000100000806, 0x2C20000100000806),
    ("VMX_VMCS_GUEST_DS_BASE", 0x680C, 3, 2, 6, 0, 3, 0x242000030000680C, 0x2C2000030000680C),
    ("VMX_VMCS_GUEST_DS_LIMIT", 0x4806, 2, 2, 3, 0, 2, 0x2420000200004806, 0x2C20000200004806),
    ("VMX_VMCS_GUEST_DS_AR", 0x481A, 2, 2, 13, 0, 2, 0x242000020000481A, 0x2C2000020000481A),
    ("VMX_VMCS_GUEST_FS_SELECTOR", 0x0808, 0, 2, 4, 0, 1, 0x2420000100000808, 0x2C20000100000808),
    ("VMX_VMCS_GUEST_FS_BASE", 0x680E, 3, 2, 7, 0, 3, 0x242000030000680E, 0x2C2000030000680E),
    ("VMX_VMCS_GUEST_FS_LIMIT", 0x4808, 2, 2, 4, 0, 2, 0x2420000200004808, 0x2C20000200004808),
    ("VMX_VMCS_GUEST_FS_AR", 0x481C, 2, 2, 14, 0, 2, 0x242000020000481C, 0x2C2000020000481C),
    ("VMX_VMCS_GUEST_GS_SELECTOR", 0x080A, 0, 2, 5, 0, 1, 0x242000010000080A, 0x2C2000010000080A),
    ("VMX_VMCS_GUEST_GS_BASE", 0x6810, 3, 2, 8, 0, 3, 0x2420000300006810, 0x2C20000300006810),
    ("VMX_VMCS_GUEST_GS_LIMIT", 0x480A, 2, 2, 5, 0, 2, 0x242000020000480A, 0x2C2000020000480A),
    ("VMX_VMCS_GUEST_GS_AR", 0x481E, 2, 2, 15, 0, 2, 0x242000020000481E, 0x2C2000020000481E),
    ("VMX_VMCS_GUEST_LDTR_SELECTOR", 0x080C, 0, 2, 6, 0, 1, 0x242000010000080C, 0x2C2000010000080C),
    ("VMX_VMCS_GUEST_LDTR_BASE", 0x6812, 3, 2, 9, 0, 3, 0x2420000300006812, 0x2C20000300006812),
    ("VMX_VMCS_GUEST_LDTR_LIMIT", 0x480C, 2, 2, 6, 0, 2, 0x242000020000480C, 0x2C2000020000480C),
    ("VMX_VMCS_GUEST_LDTR_AR", 0x4820, 2, 2, 16, 0, 2, 0x2420000200004820, 0x2C20000200004820),
    ("VMX_VMCS_GUEST_TR_SELECTOR", 0x080E, 0, 2, 7, 0, 1, 0x242000010000080E, 0x2C2000010000080E),
    ("VMX_VMCS_GUEST_TR_BASE", 0x6814, 3, 2, 10, 0, 3, 0x2420000300006814, 0x2C20000300006814),
    ("VMX_VMCS_GUEST_TR_LIMIT", 0x480E, 2, 2, 7, 0, 2, 0x242000020000480E, 0x2C2000020000480E),
    ("VMX_VMCS_GUEST_TR_AR", 0x4822, 2, 2, 17, 0, 2, 0x2420000200004822, 0x2C20000200004822),
    ("VMX_VMCS_GUEST_GDTR_BASE", 0x6816, 3, 2, 11, 0, 3, 0x2420000300006816, 0x2C20000300006816),
    ("VMX_VMCS_GUEST_GDTR_LIMIT", 0x4810, 2, 2, 8, 0, 2, 0x2420000200004810, 0x2C20000200004810),
    ("VMX_VMCS_GUEST_IDTR_BASE", 0x6818, 3, 2, 12, 0, 3, 0x2420000300006818, 0x2C20000300006818),
    ("VMX_VMCS_GUEST_IDTR_LIMIT", 0x4812, 2, 2, 9, 0, 2, 0x2420000200004812, 0x2C20000200004812),
    ("VMX_VMCS_GUEST_PAT", 0x2804, 1, 2, 2, 0, 3, 0x2420000300002804, 0x2C20000300002804),
    ("VMX_VMCS_GUEST_EFER", 0x2806, 1, 2, 3, 0, 3, 0x2420000300002806, 0x2C20000300002806),
    ("VMX_VMCS_VIRTUAL_APIC_PAGE", 0x2012, 1, 0, 9, 0, 3, 0x2420000300002012, 0x2C20000300002012),
    ("VMX_VMCS_EOI_EXIT_0", 0x201C, 1, 0, 14, 0, 3, 0x242000030000201C, 0x2C2000030000201C),
    ("VMX_VMCS_EOI_EXIT_1", 0x201E, 1, 0, 15, 0, 3, 0x242000030000201E, 0x2C2000030000201E),
    ("VMX_VMCS_EOI_EXIT_2", 0x2020, 1, 0, 16, 0, 3, 0x2420000300002020, 0x2C20000300002020),
    ("VMX_VMCS_EOI_EXIT_3", 0x2022, 1, 0, 17, 0, 3, 0x2420000300002022, 0x2C20000300002022),
    ("VMX_VMCS_PROCESSOR_CONTROLS", 0x4002, 2, 0, 1, 0, 2, 0x2420000200004002, 0x2C20000200004002),
    ("VMX_VMCS_EXCEPTION_BITMAP", 0x4004, 2, 0, 2, 0, 2, 0x2420000200004004, 0x2C20000200004004),
    ("VMX_VMCS_ENTRY_INTERRUPT_INFO", 0x4016, 2, 0, 11, 0, 2, 0x2420000200004016, 0x2C20000200004016),
    ("VMX_VMCS_ENTRY_EXCEPTION_ERROR_CODE", 0x4018, 2, 0, 12, 0, 2, 0x2420000200004018, 0x2C20000200004018),
    ("VMX_VMCS_ENTRY_INSTRUCTION_LENGTH", 0x401A, 2, 0, 13, 0, 2, 0x242000020000401A, 0x2C2000020000401A),
    ("VMX_VMCS_TPR_THRESHOLD", 0x401C, 2, 0, 14, 0, 2, 0x242000020000401C, 0x2C2000020000401C),
    ("VMX_VMCS_SECONDARY_PROCESSOR_CONTROLS", 0x401E, 2, 0, 15, 0, 2, 0x242000020000401E, 0x2C2000020000401E),
    ("VMX_VMCS_CR0_GUEST_HOST_MASK", 0x6000, 3, 0, 0, 0, 3, 0x2420000300006000, 0x2C20000300006000),
    ("VMX_VMCS_CR4_GUEST_HOST_MASK", 0x6002, 3, 0, 1, 0, 3, 0x2420000300006002, 0x2C20000300006002),
    ("VMX_VMCS_CR0_READ_SHADOW", 0x6004, 3, 0, 2, 0, 3, 0x2420000300006004, 0x2C20000300006004),
    ("VMX_VMCS_CR4_READ_SHADOW", 0x6006, 3, 0, 3, 0, 3, 0x2420000300006006, 0x2C20000300006006),
    ("VMX_VMCS_GUEST_INTERRUPTIBILITY", 0x4824, 2, 2, 18, 0, 2, 0x2420000200004824, 0x2C20000200004824),
    ("VMX_VMCS_GUEST_SYSENTER_CS_MSR", 0x482A, 2, 2, 21, 0, 2, 0x242000020000482A, 0x2C2000020000482A),
    ("VMX_VMCS_GUEST_SYSENTER_ESP_MSR", 0x6824, 3, 2, 18, 0, 3, 0x2420000300006824, 0x2C20000300006824),
    ("VMX_VMCS_GUEST_SYSENTER_EIP_MSR", 0x6826, 3, 2, 19, 0, 3, 0x2420000300006826, 0x2C20000300006826),
]


# ---- section 6: VmcsField constants ---------------------------------------


def test_seed_table_has_63_rows():
    assert len(SEED_VMCS) == 63
    assert len({row[0] for row in SEED_VMCS}) == 63


@pytest.mark.parametrize("row", SEED_VMCS, ids=[r[0] for r in SEED_VMCS])
def test_seed_vmcs_field(row):
    name, raw, width, typ, index, high, size, code0, code1 = row
    f = getattr(VmcsField, name)
    assert isinstance(f, VmcsField)
    assert f == raw
    assert f.field_width == width
    assert f.typ == typ
    assert f.index == index
    assert f.access_high == bool(high)
    assert f.name == name
    assert VmcsField.by_name(name) == raw
    assert vmcs_field_code(f, GuestVtl.VTL0) == code0
    assert vmcs_field_code(f, GuestVtl.VTL1) == code1
    assert vmcs_field_code(f, 0).field_size == size
    assert vmcs_field_code(raw, 1) == code1


def test_catalogue_starts_with_seed_names_in_order():
    names = [f.name for f in VmcsField.catalogue()]
    assert names[:63] == [row[0] for row in SEED_VMCS]
    assert len(names) == len(_cabi.vmcs_catalogue())


def test_catalogue_is_the_c_table():
    for (name, enc, read_mask, write_mask), f in zip(_cabi.vmcs_catalogue(), VmcsField.catalogue()):
        assert f == enc and f.name == name
        assert (f.read_mask, f.write_mask) == (read_mask, write_mask)


def test_vmcs_field_repr_and_unknown():
    assert repr(VmcsField.VMX_VMCS_GUEST_CR3) == "VmcsField.VMX_VMCS_GUEST_CR3"
    unknown = VmcsField(0x6FFE)
    assert unknown.name is None
    assert unknown.read_mask is None
    assert "0x6ffe" in repr(unknown)
    with pytest.raises(KeyError, match="NOT_A_FIELD"):
        VmcsField.by_name("NOT_A_FIELD")


def test_guest_rip_decoding_section_8_1():
    rip = VmcsField(0x681E)
    assert rip.field_width == FieldWidth.WidthNatural == 3
    assert rip.typ == 2
    assert rip.index == 15
    assert rip.access_high is False
    assert rip.width_bits == 64
    assert VmcsField.VMX_VMCS_GUEST_RIP == 0x681E


def test_width_bits_and_read_only():
    assert VmcsField(0x0802).width_bits == 16
    assert VmcsField(0x4002).width_bits == 32
    assert VmcsField(0x2012).width_bits == 64
    assert VmcsField(0x6800).width_bits == 64
    assert VmcsField(0x4402).is_read_only  # type 1: VM-exit information
    assert not VmcsField(0x6800).is_read_only


def test_field_width_is_non_monotonic():
    assert FieldWidth.Width16 == 0
    assert FieldWidth.Width64 == 1
    assert FieldWidth.Width32 == 2
    assert FieldWidth.WidthNatural == 3


# ---- section 8.1: field codes ---------------------------------------------


@pytest.mark.parametrize(
    "field, vtl, expected",
    [
        (0x681E, 0, 0x242000030000681E),
        (0x681E, 1, 0x2C2000030000681E),
        (0x6800, 0, 0x2420000300006800),
        (0x6800, 1, 0x2C20000300006800),
        (0x2012, 1, 0x2C20000300002012),
        (0x2012, 0, 0x2420000300002012),
        (0x4002, 0, 0x2420000200004002),
        (0x0802, 1, 0x2C20000100000802),
    ],
)
def test_vmcs_field_code_vectors(field, vtl, expected):
    code = vmcs_field_code(field, vtl)
    assert isinstance(code, TdxExtendedFieldCode)
    assert code == expected


@pytest.mark.parametrize(
    "index, vtl, expected",
    [
        (5, 1, 0x2D20000300000005),
        (5, 0, 0x2520000300000005),
        (0x7F, 0, 0x252000030000007F),
    ],
)
def test_msr_bitmap_field_code_vectors(index, vtl, expected):
    assert msr_bitmap_field_code(index, vtl) == expected


def test_l2_ctls_field_codes():
    assert TDX_FIELD_CODE_L2_CTLS_VM1 == 0xA020000300000051
    assert TDX_FIELD_CODE_L2_CTLS_VM2 == 0xA020000300000052
    assert SEED_TDX_FIELD_CODE_L2_CTLS_VM2 == 0xA020000300000051
    assert SEED_TDX_FIELD_CODE_L2_CTLS_VM2 != TDX_FIELD_CODE_L2_CTLS_VM2
    assert l2_ctls_field_code(GuestVtl.VTL0) == 0xA020000300000051
    assert l2_ctls_field_code(GuestVtl.VTL1) == 0xA020000300000052
    c = TdxExtendedFieldCode(0xA020000300000051)
    assert c.field_code == 0x51
    assert c.field_size == FieldSize.Size64Bit
    assert c.context_code == TdxContextCode.TD_VCPU
    assert c.class_code == TdVpsClassCode.MANAGEMENT
    assert c.non_arch is True
    built = TdxExtendedFieldCode(
        field_code=0x51, field_size=3, context_code=2, class_code=32, non_arch=True
    )
    assert built == 0xA020000300000051


def test_field_code_rejects_bad_inputs():
    assert vmcs_field_code(0x6802, 0) == 0x2420000300006802
    assert vmcs_field_code(0x6802, 0) == 0x2420000300006802  # a repeat answers the same
    with pytest.raises(TypeError):
        vmcs_field_code(float(0x6802), 0)
    with pytest.raises(TypeError):
        vmcs_field_code(0x6802, 0.0)
    with pytest.raises(ValueError, match="high"):
        vmcs_field_code(0x2013, GuestVtl.VTL0)
    with pytest.raises(ValueError, match="24-bit"):
        vmcs_field_code(0x01000000, GuestVtl.VTL0)
    with pytest.raises(ValueError):
        vmcs_field_code(0x6800, 2)
    with pytest.raises(ValueError):
        vmcs_field_code(1 << 32, 0)
    with pytest.raises(TypeError):
        vmcs_field_code(0x6800, None)
    with pytest.raises(TypeError):
        vmcs_field_code("0x6800", 0)
    with pytest.raises(ValueError):
        msr_bitmap_field_code(1 << 24, 0)
    with pytest.raises(ValueError):
        msr_bitmap_field_code(-1, 0)
    with pytest.raises(TypeError):
        msr_bitmap_field_code(1.5, 0)
    with pytest.raises(ValueError):
        l2_ctls_field_code(2)
    with pytest.raises(ValueError, match="field_code: 16777216 does not fit in 24 bits"):
        TdxExtendedFieldCode(field_code=1 << 24)


# ---- sections 5.3-5.5 ------------------------------------------------------


def test_class_and_context_codes():
    assert TdVpsClassCode.VMCS_1 == 36
    assert TdVpsClassCode.MSR_BITMAPS_1 == 37
    assert TdVpsClassCode.VMCS_2 == 44
    assert TdVpsClassCode.MSR_BITMAPS_2 == 45
    assert TdVpsClassCode.MANAGEMENT == 32
    assert TdVpsClassCode.VMCS_3 == 52
    assert TdxContextCode.TD_VCPU == 2
    assert [int(s) for s in FieldSize] == [0, 1, 2, 3]
    assert FieldSize.Size16Bit == 1 and FieldSize.Size32Bit == 2 and FieldSize.Size64Bit == 3


# ---- section 8.2 -----------------------------------------------------------


def test_accept_rcx_vectors():
    assert TdgMemPageAcceptRcx(gpa_page_number=0x200, level=TdgMemPageLevel.Size2Mb) == 0x200001
    assert TdgMemPageAcceptRcx(gpa_page_number=0x200, level=TdgMemPageLevel.Size4k) == 0x200000
    assert TdgMemPageAttrWriteRcx(gpa_page_number=0x200, level=TdgMemPageLevel.Size2Mb) == 0x200001
    r = TdgMemPageAcceptRcx(0x200001)
    assert r.gpa_page_number == 0x200 and r.level is TdgMemPageLevel.Size2Mb
    m = TdgMemPageAttrGpaMappingReadRcxResult(0x4000000000200001)
    assert m.pending is True and m.gpa_page_number == 0x200 and m.level == 1


def test_attribute_constants():
    assert GpaVmAttributes.FULL_ACCESS == 0x800F
    assert GpaVmAttributesMask.ALL_CHANGED == 0x000F
    assert isinstance(GpaVmAttributes.FULL_ACCESS, GpaVmAttributes)
    full = GpaVmAttributes.FULL_ACCESS
    assert full.read and full.write and full.kernel_execute and full.user_execute and full.valid
    assert not full.suppress_ve
    assert GpaVmAttributes(0x0080).suppress_ve is True
    with pytest.raises(TypeError, match="reserved"):
        GpaVmAttributes(_suppress_ve=True)


def test_gpa_attr_and_r8_vectors():
    full = GpaVmAttributes.FULL_ACCESS
    attr = TdgMemPageGpaAttr(l1=full, l2_vm1=full)
    assert attr == 0x00000000800F800F
    assert attr.l2_vm1 == full and isinstance(attr.l2_vm1, GpaVmAttributes)
    assert attr.l2_vm2 == 0
    r8 = TdgMemPageAttrWriteR8(l2_vm1=GpaVmAttributesMask.ALL_CHANGED)
    assert r8 == 0x00000000000F0000
    r8e = TdgMemPageAttrWriteR8(l2_vm1=GpaVmAttributesMask.ALL_CHANGED.with_inv_ept(True))
    assert r8e == 0x00000000800F0000
    with pytest.raises(TypeError, match="reserved"):
        TdgMemPageAttrWriteR8(_reserved=1)


# ---- section 8.3 -----------------------------------------------------------


def test_entry_flags_gla_and_l2_ctls_vectors():
    assert TdxVmFlags(vm_index=1, invd_translations=TDX_VP_ENTER_INVD_INVEPT) == 0x0010000000000001
    assert TdxVmFlags(vm_index=2, invd_translations=TDX_VP_ENTER_INVD_INVEPT) == 0x0020000000000001
    assert (TDX_VP_ENTER_INVD_INVEPT, TDX_VP_ENTER_INVD_INVVPID, TDX_VP_ENTER_INVD_INVVPID_NON_GLOBAL) == (1, 2, 3)
    assert TdGlaVmAndFlags(list=True, vm_index=2) == 0x0020000000000001
    assert TdGlaVmAndFlags(list=False, vm_index=1) == 0x0010000000000000
    info = TdxGlaListInfo(first_entry=0, list_gpa=0x1234, num_entries=3)
    assert info == 0x0030000001234000
    assert TdxL2Ctls(enable_shared_ept=True, enable_tdvmcall=True) == 0x3
    assert HvInputVtl.for_vtl(GuestVtl.VTL0) == 0x10
    assert HvInputVtl.for_vtl(GuestVtl.VTL1) == 0x11
    assert HvInputVtl.CURRENT_VTL == 0
    assert RFlags.at_reset() == 0x2
    assert RFlags(0x2).reserved_must_be_1 is True


def test_shared_gpa_boundary():
    assert TDX_SHARED_GPA_BOUNDARY_BITS == 47
    assert TDX_SHARED_GPA_BOUNDARY_ADDRESS_BIT == 0x0000800000000000


# ---- section 5.2 and 8.4: status codes ------------------------------------


def test_result_code_table_size():
    assert len(TdCallResultCode) == 165
    values = [int(c) for c in TdCallResultCode]
    assert len(set(values)) == 165
    assert len(TdCallResultCode.names()) == 165


@pytest.mark.parametrize(
    "name, code",
    [
        ("SUCCESS", 0x00000000),
        ("NON_RECOVERABLE_VCPU", 0x40000001),
        ("NON_RECOVERABLE_TD", 0x60000002),
        ("NON_RECOVERABLE_TD_WRONG_APIC_MODE", 0xE0000007),
        ("CROSS_TD_TRAP", 0x90000009),
        ("OPERAND_INVALID", 0xC0000100),
        ("OPERAND_BUSY", 0x80000200),
        ("HOST_PRIORITY_BUSY_TIMEOUT", 0x90000205),
        ("PAGE_ALREADY_FREE", 0x00000301),
        ("TDCX_NUM_INCORRECT", 0xC0000610),
        ("KEY_CONFIGURED", 0x00000815),
        ("CPUID_LEAF_NOT_SUPPORTED", 0xC0000908),
        ("TDMR_ALREADY_INITIALIZED", 0x00000A03),
        ("GPA_RANGE_ALREADY_BLOCKED", 0x00000B07),
        ("PAGE_ALREADY_ACCEPTED", 0x00000B0A),
        ("PAGE_SIZE_MISMATCH", 0xC0000B0B),
        ("L2_SEPT_PAGE_NOT_PROVIDED", 0xC0000B12),
        ("METADATA_FIELD_ID_INCORRECT", 0xC0000C00),
        ("METADATA_WR_MASK_NOT_VALID", 0xC0000C0A),
        ("METADATA_FIRST_FIELD_ID_IN_CONTEXT", 0x00000C0B),
        ("METADATA_FIELD_SKIP", 0x00000C0C),
        ("TARGET_UUID_UPDATED", 0xC0000D08),
        ("ALREADY_WRITE_BLOCKED", 0x00000E03),
        ("INVALID_MIGRATION_DECRYPTION_KEY", 0xC0000E16),
        ("INVALID_REPORTMACSTRUCT", 0xC0001001),
        ("L2_EXIT_PENDING_INTERRUPT", 0x00001102),
        ("PENDING_INTERRUPT", 0x00001120),
        ("TD_EXIT_ON_L2_TO_L1", 0x00001142),
        ("GLA_NOT_CANONICAL", 0xC0001160),
    ],
)
def test_result_code_values(name, code):
    member = getattr(TdCallResultCode, name)
    assert isinstance(member, TdCallResultCode)
    assert member == code
    assert member.name == name
    assert TdCallResultCode[name] == code
    assert TdCallResultCode(code) is member
    assert repr(member) == f"TdCallResultCode.{name}"


@pytest.mark.parametrize(
    "rax, code, details, name, success, error, warning, fatal",
    [
        # fatal: bit 62 (section 10.4); the 0xC... codes have it set.
        (0x0000000000000000, 0x00000000, 0, "SUCCESS", True, False, False, False),
        (0xC000010000000000, 0xC0000100, 0, "OPERAND_INVALID", False, True, False, True),
        (0x8000020000000003, 0x80000200, 3, "OPERAND_BUSY", False, True, False, False),
        (0xC0000B0B00000000, 0xC0000B0B, 0, "PAGE_SIZE_MISMATCH", False, True, False, True),
        (0x00000B0A00000000, 0x00000B0A, 0, "PAGE_ALREADY_ACCEPTED", False, False, True, False),
    ],
)
def test_status_decoding_section_8_4(rax, code, details, name, success, error, warning, fatal):
    r = TdCallResult(rax)
    assert r.code == code
    assert r.code.name == name
    assert r.details == details
    assert r.is_success is success
    assert r.is_error is error
    assert r.is_warning is warning
    assert r.code.is_success is success
    assert r.code.is_error is error
    assert r.code.is_warning is warning
    assert r.is_non_recoverable is fatal
    assert r.code.is_non_recoverable is fatal


def test_status_non_recoverable():
    r = TdCallResult(0x4000000100000000)
    assert r.is_non_recoverable and not r.is_error and not r.is_warning and not r.is_success
    assert TdCallResult(0x6000000200000000).is_non_recoverable


def test_status_repr():
    assert repr(TdCallResult(0x8000020000000003)) == "TdCallResult(OPERAND_BUSY, details=0x3)"
    assert "0x12345678" in repr(TdCallResult(0x1234567800000000))


def test_vmx_exit_section_8_4():
    e = VmxExit(0x80000021)
    assert e.basic_reason == 0x21
    assert e.basic_reason is VmxExitBasic.BAD_GUEST_STATE
    assert e.vm_enter_failed is True
    r = TdxVpEnterRaxResult((0x00001141 << 32) | 0x80000021)
    assert r.vmx_exit == 0x80000021 and isinstance(r.vmx_exit, VmxExit)
    assert r.tdx_exit is TdCallResultCode.TD_EXIT_ON_L2_VM_EXIT


# ---- other enumerations ----------------------------------------------------


def test_leaves_section_5_1():
    expected = {
        "VP_VMCALL": 0, "VP_INFO": 1, "MR_RTMR_EXTEND": 2, "VP_VEINFO_GET": 3,
        "MR_REPORT": 4, "VP_CPUIDVE_SET": 5, "MEM_PAGE_ACCEPT": 6, "VM_RD": 7,
        "VM_WR": 8, "VP_RD": 9, "VP_WR": 10, "MEM_PAGE_ATTR_RD": 23,
        "MEM_PAGE_ATTR_WR": 24, "VP_ENTER": 25, "VP_INVGLA": 27,
    }
    assert TdCallLeaf.names() == expected


def test_vmx_exit_basic_section_5_11():
    expected = {
        "EXCEPTION": 0x00, "HW_INTERRUPT": 0x01, "TRIPLE_FAULT": 0x02,
        "SMI_INTR": 0x06, "INTERRUPT_WINDOW": 0x07, "NMI_WINDOW": 0x08,
        "PAUSE_INSTRUCTION": 0x28, "CPUID": 0x0A, "HLT_INSTRUCTION": 0x0C,
        "VMCALL_INSTRUCTION": 0x12, "CR_ACCESS": 0x1C, "IO_INSTRUCTION": 0x1E,
        "MSR_READ": 0x1F, "MSR_WRITE": 0x20, "BAD_GUEST_STATE": 0x21,
        "TPR_BELOW_THRESHOLD": 0x2B, "EPT_VIOLATION": 0x30,
        "WBINVD_INSTRUCTION": 0x36, "XSETBV": 0x37, "TDCALL": 0x4D,
    }
    assert VmxExitBasic.names() == expected


def test_small_enumerations_section_5_12():
    assert TdVmCallR10Result.names() == {
        "SUCCESS": 0, "RETRY": 1, "OPERAND_INVALID": 0x8000000000000000,
        "GPA_INUSE": 0x8000000000000001, "ALIGN_ERROR": 0x8000000000000002,
    }
    assert {m.name: int(m) for m in TdVmCallSubFunction} == {
        "IoInstr": 0x1E, "RdMsr": 0x1F, "WrMsr": 0x20, "MapGpa": 0x10001,
    }
    assert EnterMode.names() == {"FAST": 0, "PLAY_IDLE": 1, "IDLE_TO_VTL0": 2}
    assert TdxExtendedExitQualificationType.names() == {"NONE": 0, "PENDING_EPT_VIOLATION": 6}
    assert GuestVtl.VTL0 == 0 and GuestVtl.VTL1 == 1
    assert GuestVtl.Vtl0 is GuestVtl.VTL0 and GuestVtl.Vtl1 is GuestVtl.VTL1
    assert [m.name for m in TdgMemPageLevel] == ["Size4k", "Size2Mb", "Size1Gb"]
    assert [int(m) for m in TdgMemPageLevel] == [0, 1, 2]


def test_tdx_gp_indices_section_3_6():
    names = ["RAX", "RCX", "RDX", "RBX", "RSP", "RBP", "RSI", "RDI",
             "R8", "R9", "R10", "R11", "R12", "R13", "R14", "R15"]
    assert [m.name for m in TdxGp] == names
    assert [int(m) for m in TdxGp] == list(range(16))


def test_apic_register_slots_section_3_8():
    assert ApicRegister.ID == 0x02
    assert ApicRegister.TPR == 0x08
    assert ApicRegister.EOI == 0x0B
    assert ApicRegister.SVR == 0x0F
    assert ApicRegister.ISR0 == 0x10 and ApicRegister.ISR7 == 0x17
    assert ApicRegister.TMR0 == 0x18
    assert ApicRegister.IRR0 == 0x20 and ApicRegister.IRR7 == 0x27
    assert ApicRegister.ESR == 0x28
    assert ApicRegister.LVT_CMCI == 0x2F
    assert ApicRegister.ICR0 == 0x30 and ApicRegister.ICR1 == 0x31
    assert ApicRegister.LVT_TIMER == 0x32
    assert ApicRegister.TIMER_ICR == 0x38 and ApicRegister.TIMER_CCR == 0x39
    assert ApicRegister.TIMER_DCR == 0x3E
    assert ApicRegister.SELF_IPI == 0x3F
    assert ApicRegister.ICR1.page_offset == 0x310
    assert ApicRegister.TPR.x2apic_msr == 0x808


@pytest.mark.parametrize(
    "cls, bad",
    [
        (TdgMemPageLevel, 3),
        (TdgMemPageLevel, 7),
        (FieldSize, 4),
        (FieldWidth, 4),
        (TdVmCallSubFunction, 0x21),
        (GuestVtl, 2),
        (TdxGp, 16),
    ],
)
def test_closed_enums_reject_unknown(cls, bad):
    with pytest.raises(ValueError):
        cls(bad)


@pytest.mark.parametrize(
    "cls, value",
    [
        (TdCallLeaf, 0x1234),
        (TdCallResultCode, 0x12345678),
        (TdVpsClassCode, 63),
        (TdxContextCode, 7),
        (TdxExtendedExitQualificationType, 9),
        (VmxExitBasic, 0xFFFF),
        (EnterMode, 0xF),
        (TdVmCallR10Result, 0x8000000000000009),
        (ApicRegister, 0xFF),
    ],
)
def test_open_enums_round_trip_unknown(cls, value):
    v = cls(value)
    assert isinstance(v, cls)
    assert v == value and int(v) == value
    assert v.name is None
    assert repr(v) == f"{cls.__name__}({value:#x})"
    assert pickle.loads(pickle.dumps(v)) == value


@pytest.mark.parametrize(
    "cls, bits",
    [
        (TdCallLeaf, 64),
        (TdCallResultCode, 32),
        (TdVpsClassCode, 8),
        (TdxContextCode, 8),
        (VmxExitBasic, 16),
        (EnterMode, 8),
    ],
)
def test_open_enums_range_checked(cls, bits):
    with pytest.raises(ValueError):
        cls(1 << bits)
    with pytest.raises(ValueError):
        cls(-1)


@pytest.mark.parametrize("cls", [TdCallResultCode, TdgMemPageLevel, GuestVtl])
@pytest.mark.parametrize("bad", [1.0, "1", None])
def test_enums_reject_non_integers(cls, bad):
    with pytest.raises(TypeError):
        cls(bad)


# ---- bit-field construction rules -----------------------------------------


def test_open_enum_fields_round_trip_unknown_values():
    code = TdxExtendedFieldCode(class_code=63, context_code=7)
    assert code.class_code == 63 and code.class_code.name is None
    assert TdxExtendedExitQualification(0xF).ty == 0xF
    assert EnterModes(0xFF).first == 0xF


def test_closed_enum_field_rejects_invalid_pattern():
    for level in range(3, 8):
        raw = TdgMemPageAcceptRcx(level)  # accepted as raw bits...
        with pytest.raises(ValueError, match="TdgMemPageAcceptRcx.level"):
            raw.level  # ...but decoding the level fails
        with pytest.raises(ValueError, match="TdgMemPageAcceptRcx.level"):
            TdgMemPageAcceptRcx(level=level)


def test_out_of_range_field_message():
    with pytest.raises(ValueError) as e:
        TdgMemPageAcceptRcx(gpa_page_number=1 << 40)
    assert str(e.value) == "TdgMemPageAcceptRcx.gpa_page_number: 1099511627776 does not fit in 40 bits"
    with pytest.raises(ValueError, match="TdxVmFlags.vm_index"):
        TdxVmFlags(vm_index=4)
    with pytest.raises(ValueError, match="TdxGlaListInfo.first_entry"):
        TdxGlaListInfo(first_entry=512)
    with pytest.raises(ValueError, match="TdxL2Ctls.enable_tdvmcall"):
        TdxL2Ctls(enable_tdvmcall=2)
    with pytest.raises(ValueError, match="TdgMemPageGpaAttr.l1"):
        TdgMemPageGpaAttr(l1=0x10000)


def test_negative_values_rejected():
    with pytest.raises(ValueError, match="negative"):
        TdgMemPageAcceptRcx(gpa_page_number=-1)
    with pytest.raises(ValueError, match="negative"):
        TdxL2Ctls(-1)
    with pytest.raises(ValueError, match="negative"):
        TdxL2Ctls().with_enable_shared_ept(-1)


@pytest.mark.parametrize("bad", [1.0, "1", None, 2.5j])
def test_wrong_types_rejected(bad):
    with pytest.raises(TypeError, match="TdgMemPageAcceptRcx"):
        TdgMemPageAcceptRcx(gpa_page_number=bad)
    with pytest.raises(TypeError, match="TdxL2Ctls"):
        TdxL2Ctls(bad)
    with pytest.raises(TypeError):
        TdxVmFlags().with_vm_index(bad)


def test_raw_outside_storage_width_rejected():
    with pytest.raises(ValueError, match="TdxL2Ctls"):
        TdxL2Ctls(1 << 64)
    with pytest.raises(ValueError, match="GpaVmAttributes"):
        GpaVmAttributes(0x10000)
    with pytest.raises(ValueError, match="HvInputVtl"):
        HvInputVtl(0x100)
    with pytest.raises(ValueError, match="VmcsField"):
        VmcsField(1 << 32)


def test_unknown_and_reserved_keywords_rejected():
    with pytest.raises(TypeError, match="no field 'bogus'"):
        TdxL2Ctls(bogus=True)
    with pytest.raises(TypeError, match="'_reserved' is reserved"):
        TdxL2Ctls(_reserved=1)
    with pytest.raises(TypeError, match="'_reserved' is reserved"):
        TdxL2Ctls().replace(_reserved=1)


def test_reserved_bits_in_raw_values_are_kept():
    v = TdxL2Ctls(0x8000000000000001)
    assert v.enable_shared_ept is True
    assert int(v.with_enable_tdvmcall(True)) == 0x8000000000000003
    assert eval(repr(v), {"TdxL2Ctls": TdxL2Ctls}) == v


def test_defaults_and_with():
    assert TdxL2Ctls() == 0
    assert repr(TdxL2Ctls()) == "TdxL2Ctls()"
    v = TdxL2Ctls().with_enable_shared_ept(True).with_enable_tdvmcall(True)
    assert v == 3 and type(v) is TdxL2Ctls
    assert repr(v) == "TdxL2Ctls(enable_shared_ept=True, enable_tdvmcall=True)"
    assert v.with_enable_shared_ept(False) == 2
    assert v.replace(enable_tdvmcall=False) == 1
    assert TdxL2Ctls(1, enable_tdvmcall=True) == 3


def test_bitfield_values_are_ints():
    v = TdgMemPageAcceptRcx(0x200001)
    assert v == 0x200001 and hash(v) == hash(0x200001)
    assert type(int(v)) is int
    assert {0x200001: "x"}[v] == "x"
    assert pickle.loads(pickle.dumps(v)) == v
    assert type(pickle.loads(pickle.dumps(v))) is TdgMemPageAcceptRcx


def test_fields_metadata():
    assert TdgMemPageAcceptRcx.FIELDS["gpa_page_number"] == (12, 40)
    assert TdgMemPageAcceptRcx.FIELDS["level"] == (0, 3)
    assert TdxExtendedFieldCode.FIELDS["class_code"] == (56, 6)
    assert TdxExtendedFieldCode.FIELDS["non_arch"] == (63, 1)
    assert TdxVmFlags.FIELDS["vm_index"] == (52, 2)
    assert VmcsField.FIELDS["field_width"] == (13, 2)
    assert TdgMemPageAcceptRcx.BITS == 64 and GpaVmAttributes.BITS == 16


def test_run_page_flag_types():
    assert TdxVpStateFlags(wbinvd=True, wbnoinvd=True) == 0x3
    assert HclIntrOffloadFlags(halted_idle=True, offload_intr_inject=True) == 0x81
    assert EnterModes(first=EnterMode.PLAY_IDLE, second=EnterMode.IDLE_TO_VTL0) == 0x21


# ---- MemoryRange -----------------------------------------------------------


def test_memory_range_basics():
    r = MemoryRange(0x1FF000, 0x601000)
    assert (r.start, r.end, r.len) == (0x1FF000, 0x601000, 0x402000)
    assert (r.start_4k_gpn, r.end_4k_gpn, r.page_count) == (0x1FF, 0x601, 0x402)
    assert str(r) == "0x1ff000-0x601000"
    assert repr(r) == "0x1ff000-0x601000"
    assert not r.is_empty
    assert MemoryRange.EMPTY.is_empty and MemoryRange.EMPTY.len == 0
    assert MemoryRange.from_4k_gpn_range(0x200, 0x400) == MemoryRange(0x200000, 0x400000)
    assert hash(MemoryRange(0, 0x1000)) == hash(MemoryRange(0, 0x1000))
    assert len({MemoryRange(0, 0x1000), MemoryRange(0, 0x1000)}) == 1
    assert r.contains(MemoryRange(0x200000, 0x400000))
    assert not r.contains(MemoryRange(0x0, 0x400000))
    assert r.contains_addr(0x1FF000) and not r.contains_addr(0x601000)
    assert MemoryRange(0, 0x2000).overlaps(MemoryRange(0x1000, 0x3000))
    assert not MemoryRange(0, 0x1000).overlaps(MemoryRange(0x1000, 0x3000))
    top = MemoryRange(0, (1 << 64) - 0x1000)
    assert top.len == (1 << 64) - 0x1000
    with pytest.raises(AttributeError):
        r.start = 0  # type: ignore[misc]


@pytest.mark.parametrize(
    "start, end, exc, match",
    [
        (0x1001, 0x2000, ValueError, "start 0x1001 is not 4 KiB aligned"),
        (0x1000, 0x2001, ValueError, "end 0x2001 is not 4 KiB aligned"),
        (0x2000, 0x1000, ValueError, "end 0x1000 is below start 0x2000"),
        (-0x1000, 0x1000, ValueError, "start"),
        (0, 1 << 64, ValueError, "end"),
        (1 << 64, 1 << 64, ValueError, "start"),
        (0.0, 0x1000, TypeError, "start"),
        (0, "0x1000", TypeError, "end"),
        (None, 0x1000, TypeError, "start"),
    ],
)
def test_memory_range_rejects(start, end, exc, match):
    with pytest.raises(exc, match=match):
        MemoryRange(start, end)


def _all_enum_types():
    import enum

    from hcltdx import protocol, tdx, vmx, x86

    found = {}
    for mod in (tdx, vmx, x86, protocol):
        for name in mod.__all__:
            obj = getattr(mod, name)
            if isinstance(obj, type) and issubclass(obj, enum.Enum):
                found[obj.__qualname__] = obj
    return [found[k] for k in sorted(found)]


@pytest.mark.parametrize("cls", _all_enum_types(), ids=lambda c: c.__name__)
def test_enum_members_load_as_themselves(cls):
    # Class attribute loads take type's own lookup (no __getattr__ hook):
    # every member and alias must still load as the member, and a name that
    # is no member must still be an AttributeError.
    assert len(cls.__members__) > 0
    for name, member in cls.__members__.items():
        assert getattr(cls, name) is member
        assert cls[name] is member
        assert cls(member.value) is cls(int(member))
    assert list(cls) == [cls.__members__[n] for n in cls._member_names_]
    with pytest.raises(AttributeError):
        getattr(cls, "NO_SUCH_MEMBER_XYZ")


def test_guest_vtl_members_and_aliases():
    assert GuestVtl.VTL0 == 0 and GuestVtl.VTL1 == 1
    assert GuestVtl.Vtl0 is GuestVtl.VTL0 and GuestVtl.Vtl1 is GuestVtl.VTL1
    assert GuestVtl(1) is GuestVtl.VTL1
    assert [int(v) for v in GuestVtl] == [0, 1]
