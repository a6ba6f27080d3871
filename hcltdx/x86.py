"""x86 architectural definitions used by the TDX backing: RFLAGS, xAPIC
register slots, page sizes and XSAVE constants (docs/tdx-abi.md sections 0,
3.7, 3.8 and 4.5)."""

from __future__ import annotations

from typing import Final

from hcltdx._bitfield import BitField, OpenEnum, open_enum

__all__ = [
    "RFlags",
    "ApicRegister",
    "HV_PAGE_SIZE",
    "HV_PAGE_SHIFT",
    "X64_LARGE_PAGE_SIZE",
    "DEFAULT_MXCSR",
    "INIT_FCW",
    "XSAVE_LEGACY_LEN",
    "XSAVE_HEADER_LEN",
    "XSAVE_VARIABLE_OFFSET",
    "X2APIC_MSR_BASE",
]

HV_PAGE_SIZE: Final = 4096
HV_PAGE_SHIFT: Final = 12
X64_LARGE_PAGE_SIZE: Final = 0x200000

DEFAULT_MXCSR: Final = 0x1F80
INIT_FCW: Final = 0x037F
XSAVE_LEGACY_LEN: Final = 512
XSAVE_HEADER_LEN: Final = 64
XSAVE_VARIABLE_OFFSET: Final = 576

X2APIC_MSR_BASE: Final = 0x800


class RFlags(BitField):
    """The RFLAGS register (u64)."""

    __slots__ = ()
    _bits_ = 64
    _layout_ = (
        ("carry", 0, 1),
        ("reserved_must_be_1", 1, 1),
        ("parity", 2, 1),
        ("_reserved3", 3, 1),
        ("adjust", 4, 1),
        ("_reserved5", 5, 1),
        ("zero", 6, 1),
        ("sign", 7, 1),
        ("trap", 8, 1),
        ("interrupt_enable", 9, 1),
        ("direction", 10, 1),
        ("overflow", 11, 1),
        ("io_privilege_level", 12, 2),
        ("nested_task", 14, 1),
        ("mode", 15, 1),
        ("resume", 16, 1),
        ("virtual_8086_mode", 17, 1),
        ("alignment_check", 18, 1),
        ("virtual_interrupt", 19, 1),
        ("virtual_interrupt_pending", 20, 1),
        ("cpuid_allowed", 21, 1),
        ("_reserved22", 22, 8),
        ("aes_key_schedule_loaded", 30, 1),
        ("_reserved31", 31, 1),
        ("_reserved32", 32, 32),
    )
    carry: bool
    reserved_must_be_1: bool
    parity: bool
    adjust: bool
    zero: bool
    sign: bool
    trap: bool
    interrupt_enable: bool
    direction: bool
    overflow: bool
    io_privilege_level: int
    nested_task: bool
    mode: bool
    resume: bool
    virtual_8086_mode: bool
    alignment_check: bool
    virtual_interrupt: bool
    virtual_interrupt_pending: bool
    cpuid_allowed: bool
    aes_key_schedule_loaded: bool

    @classmethod
    def at_reset(cls) -> RFlags:
        """The architectural reset value: only bit 1 set (0x2)."""
        return cls(reserved_must_be_1=True)


@open_enum(8)
class ApicRegister(OpenEnum):
    """xAPIC register number = slot index in the virtual-APIC page
    (MMIO offset / 16; x2APIC MSR = 0x800 + value)."""

    ID = 0x02
    VERSION = 0x03
    TPR = 0x08
    APR = 0x09
    PPR = 0x0A
    EOI = 0x0B
    RRD = 0x0C
    LDR = 0x0D
    DFR = 0x0E
    SVR = 0x0F
    ISR0 = 0x10
    ISR1 = 0x11
    ISR2 = 0x12
    ISR3 = 0x13
    ISR4 = 0x14
    ISR5 = 0x15
    ISR6 = 0x16
    ISR7 = 0x17
    TMR0 = 0x18
    TMR1 = 0x19
    TMR2 = 0x1A
    TMR3 = 0x1B
    TMR4 = 0x1C
    TMR5 = 0x1D
    TMR6 = 0x1E
    TMR7 = 0x1F
    IRR0 = 0x20
    IRR1 = 0x21
    IRR2 = 0x22
    IRR3 = 0x23
    IRR4 = 0x24
    IRR5 = 0x25
    IRR6 = 0x26
    IRR7 = 0x27
    ESR = 0x28
    LVT_CMCI = 0x2F
    ICR0 = 0x30
    ICR1 = 0x31
    LVT_TIMER = 0x32
    LVT_THERMAL = 0x33
    LVT_PMC = 0x34
    LVT_LINT0 = 0x35
    LVT_LINT1 = 0x36
    LVT_ERROR = 0x37
    TIMER_ICR = 0x38
    TIMER_CCR = 0x39
    TIMER_DCR = 0x3E
    SELF_IPI = 0x3F

    @property
    def page_offset(self) -> int:
        """Byte offset of this register's 16-byte slot in the APIC page."""
        return int(self) * 16

    @property
    def x2apic_msr(self) -> int:
        """The x2APIC MSR number of this register."""
        return X2APIC_MSR_BASE + int(self)
