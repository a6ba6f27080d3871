"""The run-page protocol between user mode and the mshv_vtl driver:
VTL selectors, run-page flag types, mmap page offsets, capability numbers
and ioctl request numbers (docs/tdx-abi.md sections 2.1, 2.2, 2.5, 4.4, 5.12).

Request numbers and page offsets are read from the compiled C header
(``hcltdx._cabi``) so Python and C cannot disagree.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

from hcltdx import _cabi
from hcltdx._bitfield import BitField, ClosedEnum, OpenEnum, _index, open_enum

__all__ = [
    "GuestVtl",
    "IsolationType",
    "TdxVpStateFlags",
    "HclIntrOffloadFlags",
    "EnterMode",
    "EnterModes",
    "HvInputVtl",
    "MSHV_IOCTL",
    "MSHV_CHECK_EXTENSION",
    "MSHV_GET_VP_REGISTERS",
    "MSHV_SET_VP_REGISTERS",
    "MSHV_CREATE_VTL",
    "MSHV_HVCALL_SETUP",
    "MSHV_HVCALL",
    "MSHV_VTL_ADD_VTL0_MEMORY",
    "MSHV_VTL_SET_POLL_FILE",
    "MSHV_VTL_RETURN_TO_LOWER_VTL",
    "MSHV_VTL_PVALIDATE",
    "MSHV_VTL_RMPADJUST",
    "MSHV_VTL_TDCALL",
    "MSHV_VTL_READ_VMX_CR4_FIXED1",
    "MSHV_VTL_GUEST_VSM_VMSA_PFN",
    "MSHV_VTL_RMPQUERY",
    "MSHV_INVLPGB",
    "MSHV_TLBSYNC",
    "HCL_CAP_REGISTER_PAGE",
    "HCL_CAP_VTL_RETURN_ACTION",
    "HCL_CAP_DR6_SHARED",
    "HCL_RUN_PAGE_OFFSET",
    "HCL_REG_PAGE_OFFSET",
    "HCL_VMSA_PAGE_OFFSET",
    "MSHV_APIC_PAGE_OFFSET",
    "HCL_VMSA_GUEST_VSM_PAGE_OFFSET",
    "HCL_PAGE_OFFSET_VP_MASK",
    "run_page_mmap_offset",
    "apic_page_mmap_offset",
    "MSHV_VTL_RUN_FLAG_HALTED",
    "VTL_RETURN_ACTION_SIZE",
    "HV_MESSAGE_SIZE",
    "HV_MESSAGE_PAYLOAD_SIZE",
    "HCL_RUN_CONTEXT_OFFSET",
]


class GuestVtl(ClosedEnum):
    """A lower VTL the paravisor runs (VTL2 itself is not a GuestVtl)."""

    VTL0 = 0
    VTL1 = 1
    # Spellings of the Rust enum, for code ported from it.
    Vtl0 = 0
    Vtl1 = 1


class IsolationType(ClosedEnum):
    """CPUID 0x4000000C EBX[3:0]."""

    NONE = 0
    VBS = 1
    SNP = 2
    TDX = 3


class TdxVpStateFlags(BitField):
    """``tdx_vp_state.flags`` (u64): cache flushes the kernel performs
    before the next VP.ENTER."""

    __slots__ = ()
    _bits_ = 64
    _layout_ = (
        ("wbinvd", 0, 1),
        ("wbnoinvd", 1, 1),
        ("_reserved", 2, 62),
    )
    wbinvd: bool
    wbnoinvd: bool


class HclIntrOffloadFlags(BitField):
    """``hcl_run.offload_flags`` (u8)."""

    __slots__ = ()
    _bits_ = 8
    _layout_ = (
        ("offload_intr_inject", 0, 1),
        ("offload_x2apic", 1, 1),
        ("_reserved", 2, 3),
        ("halted_other", 5, 1),
        ("halted_hlt", 6, 1),
        ("halted_idle", 7, 1),
    )
    offload_intr_inject: bool
    offload_x2apic: bool
    halted_other: bool
    halted_hlt: bool
    halted_idle: bool


@open_enum(8)
class EnterMode(OpenEnum):
    """How the kernel enters VTL0 (open, u8; stored in 4-bit fields)."""

    FAST = 0
    PLAY_IDLE = 1
    IDLE_TO_VTL0 = 2


class EnterModes(BitField):
    """``hcl_run.mode`` (u8)."""

    __slots__ = ()
    _bits_ = 8
    _layout_ = (
        ("first", 0, 4, EnterMode),
        ("second", 4, 4, EnterMode),
    )
    first: EnterMode
    second: EnterMode


class HvInputVtl(BitField):
    """``hcl_run.target_vtl`` (u8): 0x10 | vtl selects a VTL, 0 means the
    current one."""

    __slots__ = ()
    _bits_ = 8
    _layout_ = (
        ("target_vtl_value", 0, 4),
        ("use_target_vtl", 4, 1),
        ("_reserved", 5, 3),
    )
    target_vtl_value: int
    use_target_vtl: bool

    CURRENT_VTL: ClassVar[HvInputVtl]

    @classmethod
    def for_vtl(cls, vtl: Any) -> HvInputVtl:
        """The selector of ``vtl`` (a GuestVtl or 0/1): 0x10 or 0x11."""
        return cls(target_vtl_value=GuestVtl(vtl), use_target_vtl=True)


HvInputVtl.CURRENT_VTL = HvInputVtl(0)

_REQ = _cabi.REQUESTS

MSHV_IOCTL: Final = 0xB8
MSHV_CHECK_EXTENSION: Final[int] = _REQ["MSHV_CHECK_EXTENSION"]
MSHV_GET_VP_REGISTERS: Final[int] = _REQ["MSHV_GET_VP_REGISTERS"]
MSHV_SET_VP_REGISTERS: Final[int] = _REQ["MSHV_SET_VP_REGISTERS"]
MSHV_CREATE_VTL: Final[int] = _REQ["MSHV_CREATE_VTL"]
MSHV_HVCALL_SETUP: Final[int] = _REQ["MSHV_HVCALL_SETUP"]
MSHV_HVCALL: Final[int] = _REQ["MSHV_HVCALL"]
MSHV_VTL_ADD_VTL0_MEMORY: Final[int] = _REQ["MSHV_VTL_ADD_VTL0_MEMORY"]
MSHV_VTL_SET_POLL_FILE: Final[int] = _REQ["MSHV_VTL_SET_POLL_FILE"]
MSHV_VTL_RETURN_TO_LOWER_VTL: Final[int] = _REQ["MSHV_VTL_RETURN_TO_LOWER_VTL"]
MSHV_VTL_PVALIDATE: Final[int] = _REQ["MSHV_VTL_PVALIDATE"]
MSHV_VTL_RMPADJUST: Final[int] = _REQ["MSHV_VTL_RMPADJUST"]
MSHV_VTL_TDCALL: Final[int] = _REQ["MSHV_VTL_TDCALL"]
MSHV_VTL_READ_VMX_CR4_FIXED1: Final[int] = _REQ["MSHV_VTL_READ_VMX_CR4_FIXED1"]
MSHV_VTL_GUEST_VSM_VMSA_PFN: Final[int] = _REQ["MSHV_VTL_GUEST_VSM_VMSA_PFN"]
MSHV_VTL_RMPQUERY: Final[int] = _REQ["MSHV_VTL_RMPQUERY"]
MSHV_INVLPGB: Final[int] = _REQ["MSHV_INVLPGB"]
MSHV_TLBSYNC: Final[int] = _REQ["MSHV_TLBSYNC"]

HCL_CAP_REGISTER_PAGE: Final = 1
HCL_CAP_VTL_RETURN_ACTION: Final = 2
HCL_CAP_DR6_SHARED: Final = 3

_PAGE = _cabi.PAGE_OFFSETS

HCL_RUN_PAGE_OFFSET: Final = 0
HCL_REG_PAGE_OFFSET: Final[int] = _PAGE["HCL_REG_PAGE_OFFSET"]
HCL_VMSA_PAGE_OFFSET: Final[int] = _PAGE["HCL_VMSA_PAGE_OFFSET"]
MSHV_APIC_PAGE_OFFSET: Final[int] = _PAGE["MSHV_APIC_PAGE_OFFSET"]
HCL_VMSA_GUEST_VSM_PAGE_OFFSET: Final[int] = _PAGE["HCL_VMSA_GUEST_VSM_PAGE_OFFSET"]
HCL_PAGE_OFFSET_VP_MASK: Final = 0xFFFF

_PAGE_SIZE = 4096


def _check_vp(vp: Any) -> int:
    v = _index(vp, "vp index")
    if not 0 <= v <= HCL_PAGE_OFFSET_VP_MASK:
        raise ValueError(f"vp index {v} is outside 0..{HCL_PAGE_OFFSET_VP_MASK}")
    return v


def run_page_mmap_offset(vp: int) -> int:
    """Byte offset to mmap the run page of ``vp`` at (page offset = vp)."""
    return (HCL_RUN_PAGE_OFFSET | _check_vp(vp)) * _PAGE_SIZE


def apic_page_mmap_offset(vp: int) -> int:
    """Byte offset to mmap the VTL0 virtual-APIC page of ``vp``."""
    return (MSHV_APIC_PAGE_OFFSET | _check_vp(vp)) * _PAGE_SIZE


MSHV_VTL_RUN_FLAG_HALTED: Final = 1
VTL_RETURN_ACTION_SIZE: Final = 256
HV_MESSAGE_SIZE: Final = 256
HV_MESSAGE_PAYLOAD_SIZE: Final = 240
HCL_RUN_CONTEXT_OFFSET: Final = 272
