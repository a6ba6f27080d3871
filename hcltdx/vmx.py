"""VMX definitions: VMCS field encodings, exit reasons and the VMX
bit-field types (docs/tdx-abi.md sections 4.3, 5.7, 5.11 and 6).

The VMCS field catalogue is read from the compiled C table
(``include/hcltdx/vmcs_fields.def`` via ``hcltdx._cabi``), so the Python
names, the simulator and the core cannot drift apart.
"""

from __future__ import annotations

from typing import ClassVar, Final, Optional

from hcltdx import _cabi
from hcltdx._bitfield import BitField, ClosedEnum, OpenEnum, open_enum

__all__ = [
    "FieldWidth",
    "VmcsField",
    "VmxExitBasic",
    "VmxExit",
    "VmxSegmentAttributes",
    "ExitQualificationIo",
    "IO_SIZE_8_BIT",
    "IO_SIZE_16_BIT",
    "IO_SIZE_32_BIT",
    "VmxEptExitQualification",
    "CrAccessType",
    "CrAccessQualification",
    "InterruptionType",
    "InterruptionInformation",
    "Interruptibility",
    "ProcessorControls",
    "SecondaryProcessorControls",
    "VMX_ENTRY_CONTROL_LONG_MODE_GUEST",
    "VMX_FEATURE_CONTROL_LOCKED",
]


class FieldWidth(ClosedEnum):
    """Width bits 13-14 of a VMCS encoding. Not monotonic: 1 is 64-bit and
    2 is 32-bit (section 5.7)."""

    Width16 = 0
    Width64 = 1
    Width32 = 2
    WidthNatural = 3


_WIDTH_BITS: Final = {
    FieldWidth.Width16: 16,
    FieldWidth.Width64: 64,
    FieldWidth.Width32: 32,
    FieldWidth.WidthNatural: 64,
}


class VmcsField(BitField):
    """An Intel VMCS field encoding (u32).

    Any 32-bit value can be wrapped (the TDX module rejects encodings it does
    not know); every catalogue entry is a class attribute, e.g.
    ``VmcsField.VMX_VMCS_GUEST_CR3 == 0x6802``.
    """

    __slots__ = ()
    _bits_ = 32
    _layout_ = (
        ("access_high", 0, 1),
        ("index", 1, 9),
        ("typ", 10, 2),
        ("_reserved", 12, 1),
        ("field_width", 13, 2, FieldWidth),
        ("_reserved2", 15, 17),
    )

    access_high: bool
    index: int
    typ: int
    field_width: FieldWidth

    _by_value: ClassVar[dict[int, str]]
    _by_name: ClassVar[dict[str, "VmcsField"]]
    _masks: ClassVar[dict[int, tuple[int, int]]]
    _catalogue: ClassVar[tuple["VmcsField", ...]]

    # Declared for type checkers; the values come from the C catalogue.
    VMX_VMCS_ENTRY_CONTROLS: ClassVar[VmcsField]
    VMX_VMCS_GUEST_CR0: ClassVar[VmcsField]
    VMX_VMCS_GUEST_CR3: ClassVar[VmcsField]
    VMX_VMCS_GUEST_CR4: ClassVar[VmcsField]
    VMX_VMCS_GUEST_DR7: ClassVar[VmcsField]
    VMX_VMCS_GUEST_ES_SELECTOR: ClassVar[VmcsField]
    VMX_VMCS_GUEST_ES_BASE: ClassVar[VmcsField]
    VMX_VMCS_GUEST_ES_LIMIT: ClassVar[VmcsField]
    VMX_VMCS_GUEST_ES_AR: ClassVar[VmcsField]
    VMX_VMCS_GUEST_CS_SELECTOR: ClassVar[VmcsField]
    VMX_VMCS_GUEST_CS_BASE: ClassVar[VmcsField]
    VMX_VMCS_GUEST_CS_LIMIT: ClassVar[VmcsField]
    VMX_VMCS_GUEST_CS_AR: ClassVar[VmcsField]
    VMX_VMCS_GUEST_SS_SELECTOR: ClassVar[VmcsField]
    VMX_VMCS_GUEST_SS_BASE: ClassVar[VmcsField]
    VMX_VMCS_GUEST_SS_LIMIT: ClassVar[VmcsField]
    VMX_VMCS_GUEST_SS_AR: ClassVar[VmcsField]
    VMX_VMCS_GUEST_DS_SELECTOR: ClassVar[VmcsField]
    VMX_VMCS_GUEST_DS_BASE: ClassVar[VmcsField]
    VMX_VMCS_GUEST_DS_LIMIT: ClassVar[VmcsField]
    VMX_VMCS_GUEST_DS_AR: ClassVar[VmcsField]
    VMX_VMCS_GUEST_FS_SELECTOR: ClassVar[VmcsField]
    VMX_VMCS_GUEST_FS_BASE: ClassVar[VmcsField]
    VMX_VMCS_GUEST_FS_LIMIT: ClassVar[VmcsField]
    VMX_VMCS_GUEST_FS_AR: ClassVar[VmcsField]
    VMX_VMCS_GUEST_GS_SELECTOR: ClassVar[VmcsField]
    VMX_VMCS_GUEST_GS_BASE: ClassVar[VmcsField]
    VMX_VMCS_GUEST_GS_LIMIT: ClassVar[VmcsField]
    VMX_VMCS_GUEST_GS_AR: ClassVar[VmcsField]
    VMX_VMCS_GUEST_LDTR_SELECTOR: ClassVar[VmcsField]
    VMX_VMCS_GUEST_LDTR_BASE: ClassVar[VmcsField]
    VMX_VMCS_GUEST_LDTR_LIMIT: ClassVar[VmcsField]
    VMX_VMCS_GUEST_LDTR_AR: ClassVar[VmcsField]
    VMX_VMCS_GUEST_TR_SELECTOR: ClassVar[VmcsField]
    VMX_VMCS_GUEST_TR_BASE: ClassVar[VmcsField]
    VMX_VMCS_GUEST_TR_LIMIT: ClassVar[VmcsField]
    VMX_VMCS_GUEST_TR_AR: ClassVar[VmcsField]
    VMX_VMCS_GUEST_GDTR_BASE: ClassVar[VmcsField]
    VMX_VMCS_GUEST_GDTR_LIMIT: ClassVar[VmcsField]
    VMX_VMCS_GUEST_IDTR_BASE: ClassVar[VmcsField]
    VMX_VMCS_GUEST_IDTR_LIMIT: ClassVar[VmcsField]
    VMX_VMCS_GUEST_PAT: ClassVar[VmcsField]
    VMX_VMCS_GUEST_EFER: ClassVar[VmcsField]
    VMX_VMCS_VIRTUAL_APIC_PAGE: ClassVar[VmcsField]
    VMX_VMCS_EOI_EXIT_0: ClassVar[VmcsField]
    VMX_VMCS_EOI_EXIT_1: ClassVar[VmcsField]
    VMX_VMCS_EOI_EXIT_2: ClassVar[VmcsField]
    VMX_VMCS_EOI_EXIT_3: ClassVar[VmcsField]
    VMX_VMCS_PROCESSOR_CONTROLS: ClassVar[VmcsField]
    VMX_VMCS_EXCEPTION_BITMAP: ClassVar[VmcsField]
    VMX_VMCS_ENTRY_INTERRUPT_INFO: ClassVar[VmcsField]
    VMX_VMCS_ENTRY_EXCEPTION_ERROR_CODE: ClassVar[VmcsField]
    VMX_VMCS_ENTRY_INSTRUCTION_LENGTH: ClassVar[VmcsField]
    VMX_VMCS_TPR_THRESHOLD: ClassVar[VmcsField]
    VMX_VMCS_SECONDARY_PROCESSOR_CONTROLS: ClassVar[VmcsField]
    VMX_VMCS_CR0_GUEST_HOST_MASK: ClassVar[VmcsField]
    VMX_VMCS_CR4_GUEST_HOST_MASK: ClassVar[VmcsField]
    VMX_VMCS_CR0_READ_SHADOW: ClassVar[VmcsField]
    VMX_VMCS_CR4_READ_SHADOW: ClassVar[VmcsField]
    VMX_VMCS_GUEST_INTERRUPTIBILITY: ClassVar[VmcsField]
    VMX_VMCS_GUEST_SYSENTER_CS_MSR: ClassVar[VmcsField]
    VMX_VMCS_GUEST_SYSENTER_ESP_MSR: ClassVar[VmcsField]
    VMX_VMCS_GUEST_SYSENTER_EIP_MSR: ClassVar[VmcsField]
    VMX_VMCS_GUEST_RIP: ClassVar[VmcsField]
    VMX_VMCS_GUEST_RSP: ClassVar[VmcsField]
    VMX_VMCS_GUEST_RFLAGS: ClassVar[VmcsField]
    VMX_VMCS_EXIT_REASON: ClassVar[VmcsField]
    VMX_VMCS_EXIT_QUALIFICATION: ClassVar[VmcsField]
    VMX_VMCS_GUEST_PHYSICAL_ADDRESS: ClassVar[VmcsField]

    @property
    def name(self) -> Optional[str]:
        """The catalogue name, or None for an encoding not in the catalogue."""
        return VmcsField._by_value.get(int(self))

    @property
    def width_bits(self) -> int:
        """16, 32 or 64 (natural width is 64 bits on x86-64)."""
        return _WIDTH_BITS[FieldWidth((self >> 13) & 3)]

    @property
    def is_read_only(self) -> bool:
        """True for the VM-exit information type (bits 10-11 == 1), which
        the Intel SDM defines as read-only."""
        return ((self >> 10) & 3) == 1

    @property
    def read_mask(self) -> Optional[int]:
        """Bits readable through TDG.VP.RD per the catalogue (None if unknown)."""
        m = VmcsField._masks.get(int(self))
        return None if m is None else m[0]

    @property
    def write_mask(self) -> Optional[int]:
        """Bits writable through TDG.VP.WR per the catalogue (None if unknown)."""
        m = VmcsField._masks.get(int(self))
        return None if m is None else m[1]

    @classmethod
    def by_name(cls, name: str) -> VmcsField:
        """The catalogue entry called ``name`` (KeyError if there is none)."""
        try:
            return cls._by_name[name]
        except KeyError:
            raise KeyError(f"no VMCS field named {name!r}") from None

    @classmethod
    def catalogue(cls) -> list[VmcsField]:
        """Every catalogue entry, in catalogue order (the seed's 63 first)."""
        return list(cls._catalogue)

    def __repr__(self) -> str:
        name = VmcsField._by_value.get(int(self))
        if name is None:
            return f"VmcsField({int(self):#06x})"
        return f"VmcsField.{name}"

    __str__ = __repr__


def _load_catalogue() -> None:
    by_value: dict[int, str] = {}
    by_name: dict[str, VmcsField] = {}
    masks: dict[int, tuple[int, int]] = {}
    entries = []
    for name, encoding, read_mask, write_mask in _cabi.vmcs_catalogue():
        field = VmcsField(encoding)
        if name in by_name or encoding in by_value:
            raise RuntimeError(f"duplicate VMCS catalogue entry {name}")
        by_value[encoding] = name
        by_name[name] = field
        masks[encoding] = (read_mask, write_mask)
        entries.append(field)
        setattr(VmcsField, name, field)
    VmcsField._by_value = by_value
    VmcsField._by_name = by_name
    VmcsField._masks = masks
    VmcsField._catalogue = tuple(entries)


_load_catalogue()


@open_enum(16)
class VmxExitBasic(OpenEnum):
    """Basic VMX exit reason (open, u16; section 5.11)."""

    EXCEPTION = 0x00
    HW_INTERRUPT = 0x01
    TRIPLE_FAULT = 0x02
    SMI_INTR = 0x06
    INTERRUPT_WINDOW = 0x07
    NMI_WINDOW = 0x08
    PAUSE_INSTRUCTION = 0x28
    CPUID = 0x0A
    HLT_INSTRUCTION = 0x0C
    VMCALL_INSTRUCTION = 0x12
    CR_ACCESS = 0x1C
    IO_INSTRUCTION = 0x1E
    MSR_READ = 0x1F
    MSR_WRITE = 0x20
    BAD_GUEST_STATE = 0x21
    TPR_BELOW_THRESHOLD = 0x2B
    EPT_VIOLATION = 0x30
    WBINVD_INSTRUCTION = 0x36
    XSETBV = 0x37
    TDCALL = 0x4D


class VmxExit(BitField):
    """VMX exit reason (u32)."""

    __slots__ = ()
    _bits_ = 32
    _layout_ = (
        ("basic_reason", 0, 16, VmxExitBasic),
        ("_rsvd_0", 16, 10),
        ("bus_lock_preempted", 26, 1),
        ("enclave_interruption", 27, 1),
        ("pending_mtf", 28, 1),
        ("_rsvd_1", 29, 2),
        ("vm_enter_failed", 31, 1),
    )
    basic_reason: VmxExitBasic
    bus_lock_preempted: bool
    enclave_interruption: bool
    pending_mtf: bool
    vm_enter_failed: bool


class VmxSegmentAttributes(BitField):
    """Segment access rights as held in the VMCS (u32)."""

    __slots__ = ()
    _bits_ = 32
    _layout_ = (
        ("typ", 0, 4),
        ("user", 4, 1),
        ("dpl", 5, 2),
        ("present", 7, 1),
        ("_reserved1", 8, 4),
        ("available", 12, 1),
        ("long_mode", 13, 1),
        ("default_size", 14, 1),
        ("granularity", 15, 1),
        ("null", 16, 1),
        ("_reserved", 17, 15),
    )
    typ: int
    user: bool
    dpl: int
    present: bool
    available: bool
    long_mode: bool
    default_size: bool
    granularity: bool
    null: bool


IO_SIZE_8_BIT: Final = 0
IO_SIZE_16_BIT: Final = 1
IO_SIZE_32_BIT: Final = 3


class ExitQualificationIo(BitField):
    """Exit qualification of an I/O instruction exit (u32)."""

    __slots__ = ()
    _bits_ = 32
    _layout_ = (
        ("access_size", 0, 2),
        ("_reserved1", 2, 1),
        ("is_in", 3, 1),
        ("is_string", 4, 1),
        ("rep_prefix", 5, 1),
        ("immediate_operand", 6, 1),
        ("_reserved2", 7, 9),
        ("port", 16, 16),
    )
    access_size: int
    is_in: bool
    is_string: bool
    rep_prefix: bool
    immediate_operand: bool
    port: int


class VmxEptExitQualification(BitField):
    """Exit qualification of an EPT violation (u64)."""

    __slots__ = ()
    _bits_ = 64
    _layout_ = (
        ("access_mask", 0, 3),
        ("ept_access_mask", 3, 4),
        ("gva_valid", 7, 1),
        ("caused_by_gpa_access", 8, 1),
        ("gva_user", 9, 1),
        ("gva_read_write", 10, 1),
        ("gva_no_execute", 11, 1),
        ("nmi_unmasking_due_to_iret", 12, 1),
        ("shadow_stack", 13, 1),
        ("ept_supervisor_shadow_stack", 14, 1),
        ("_reserved", 15, 49),
    )
    access_mask: int
    ept_access_mask: int
    gva_valid: bool
    caused_by_gpa_access: bool
    gva_user: bool
    gva_read_write: bool
    gva_no_execute: bool
    nmi_unmasking_due_to_iret: bool
    shadow_stack: bool
    ept_supervisor_shadow_stack: bool


class CrAccessType(ClosedEnum):
    """Access type of a control-register access exit (all four encodings)."""

    MOV_TO_CR = 0
    MOV_FROM_CR = 1
    CLTS = 2
    LMSW = 3


class CrAccessQualification(BitField):
    """Exit qualification of a control-register access (u64)."""

    __slots__ = ()
    _bits_ = 64
    _layout_ = (
        ("cr", 0, 4),
        ("access_type", 4, 2, CrAccessType),
        ("lmsw_is_memory", 6, 1),
        ("_reserved1", 7, 1),
        ("gp_register", 8, 4),
        ("_reserved2", 12, 4),
        ("lmsw_source_data", 16, 16),
        ("_reserved3", 32, 32),
    )
    cr: int
    access_type: CrAccessType
    lmsw_is_memory: bool
    gp_register: int
    lmsw_source_data: int


@open_enum(8)
class InterruptionType(OpenEnum):
    """Event type of an interruption-information field (3 bits; 1 and 7 are
    not named by the source, so the enumeration is open)."""

    EXTERNAL = 0
    NMI = 2
    HARDWARE_EXCEPTION = 3
    SOFTWARE_INTERRUPT = 4
    PRIVILEGED_SOFTWARE_INTERRUPT = 5
    SOFTWARE_EXCEPTION = 6


class InterruptionInformation(BitField):
    """VM-entry / VM-exit interruption information (u32)."""

    __slots__ = ()
    _bits_ = 32
    _layout_ = (
        ("vector", 0, 8),
        ("interruption_type", 8, 3, InterruptionType),
        ("deliver_error_code", 11, 1),
        ("_reserved", 12, 19),
        ("valid", 31, 1),
    )
    vector: int
    interruption_type: InterruptionType
    deliver_error_code: bool
    valid: bool


class Interruptibility(BitField):
    """Guest interruptibility state (u32)."""

    __slots__ = ()
    _bits_ = 32
    _layout_ = (
        ("blocked_by_sti", 0, 1),
        ("blocked_by_movss", 1, 1),
        ("blocked_by_smi", 2, 1),
        ("blocked_by_nmi", 3, 1),
        ("_reserved", 4, 28),
    )
    blocked_by_sti: bool
    blocked_by_movss: bool
    blocked_by_smi: bool
    blocked_by_nmi: bool


class ProcessorControls(BitField):
    """Primary processor-based VM-execution controls (u32)."""

    __slots__ = ()
    _bits_ = 32
    _layout_ = (
        ("_reserved0", 0, 2),
        ("interrupt_window_exiting", 2, 1),
        ("use_tsc_offsetting", 3, 1),
        ("_reserved4", 4, 3),
        ("hlt_exiting", 7, 1),
        ("_reserved8", 8, 1),
        ("invlpg_exiting", 9, 1),
        ("mwait_exiting", 10, 1),
        ("rdpmc_exiting", 11, 1),
        ("rdtsc_exiting", 12, 1),
        ("_reserved13", 13, 2),
        ("cr3_load_exiting", 15, 1),
        ("cr3_store_exiting", 16, 1),
        ("activate_tertiary_controls", 17, 1),
        ("_reserved18", 18, 1),
        ("cr8_load_exiting", 19, 1),
        ("cr8_store_exiting", 20, 1),
        ("use_tpr_shadow", 21, 1),
        ("nmi_window_exiting", 22, 1),
        ("mov_dr_exiting", 23, 1),
        ("unconditional_io_exiting", 24, 1),
        ("use_io_bitmaps", 25, 1),
        ("_reserved26", 26, 1),
        ("monitor_trap_flag", 27, 1),
        ("use_msr_bitmaps", 28, 1),
        ("monitor_exiting", 29, 1),
        ("pause_exiting", 30, 1),
        ("activate_secondary_controls", 31, 1),
    )
    interrupt_window_exiting: bool
    use_tsc_offsetting: bool
    hlt_exiting: bool
    invlpg_exiting: bool
    mwait_exiting: bool
    rdpmc_exiting: bool
    rdtsc_exiting: bool
    cr3_load_exiting: bool
    cr3_store_exiting: bool
    activate_tertiary_controls: bool
    cr8_load_exiting: bool
    cr8_store_exiting: bool
    use_tpr_shadow: bool
    nmi_window_exiting: bool
    mov_dr_exiting: bool
    unconditional_io_exiting: bool
    use_io_bitmaps: bool
    monitor_trap_flag: bool
    use_msr_bitmaps: bool
    monitor_exiting: bool
    pause_exiting: bool
    activate_secondary_controls: bool


_SECONDARY = (
    "virtualize_apic_accesses",
    "enable_ept",
    "descriptor_table_exiting",
    "enable_rdtscp",
    "virtualize_x2apic_mode",
    "enable_vpid",
    "wbinvd_exiting",
    "unrestricted_guest",
    "apic_register_virtualization",
    "virtual_interrupt_delivery",
    "pause_loop_exiting",
    "rdrand_exiting",
    "enable_invpcid",
    "enable_vmfunc",
    "vmcs_shadowing",
    "enable_encls_exiting",
    "rdseed_exiting",
    "enable_pml",
    "ept_violation_ve",
    "conceal_vmx_from_pt",
    "enable_xsaves_xrstors",
    "pasid_translation",
    "mode_based_execute_control",
    "sub_page_write_permissions",
    "pt_uses_guest_physical_addresses",
    "use_tsc_scaling",
    "enable_user_wait_and_pause",
    "enable_pconfig",
    "enable_enclv_exiting",
    "_reserved29",
    "vmm_bus_lock_detection",
    "instruction_timeout",
)


class SecondaryProcessorControls(BitField):
    """Secondary processor-based VM-execution controls (u32, one bit each)."""

    __slots__ = ()
    _bits_ = 32
    _layout_ = tuple((name, bit, 1) for bit, name in enumerate(_SECONDARY))
    virtualize_apic_accesses: bool
    enable_ept: bool
    descriptor_table_exiting: bool
    enable_rdtscp: bool
    virtualize_x2apic_mode: bool
    enable_vpid: bool
    wbinvd_exiting: bool
    unrestricted_guest: bool
    apic_register_virtualization: bool
    virtual_interrupt_delivery: bool
    pause_loop_exiting: bool
    rdrand_exiting: bool
    enable_invpcid: bool
    enable_vmfunc: bool
    vmcs_shadowing: bool
    enable_encls_exiting: bool
    rdseed_exiting: bool
    enable_pml: bool
    ept_violation_ve: bool
    conceal_vmx_from_pt: bool
    enable_xsaves_xrstors: bool
    pasid_translation: bool
    mode_based_execute_control: bool
    sub_page_write_permissions: bool
    pt_uses_guest_physical_addresses: bool
    use_tsc_scaling: bool
    enable_user_wait_and_pause: bool
    enable_pconfig: bool
    enable_enclv_exiting: bool
    vmm_bus_lock_detection: bool
    instruction_timeout: bool


VMX_ENTRY_CONTROL_LONG_MODE_GUEST: Final = 0x00000200
VMX_FEATURE_CONTROL_LOCKED: Final = 0x1
