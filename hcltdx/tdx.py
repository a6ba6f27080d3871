"""TDX module definitions: TDCALL leaves and status codes, TDG.VP.RD/WR
field identifiers, page-acceptance and attribute operands, L2 VM entry and
INVGLA operands (docs/tdx-abi.md sections 4.1, 4.2, 5.1-5.6, 5.8-5.10,
5.12, 7.4, 7.6 and 7.7).
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

from hcltdx._bitfield import BitField, ClosedEnum, OpenEnum, _index, open_enum
from hcltdx.protocol import GuestVtl
from hcltdx.vmx import FieldWidth, VmcsField, VmxExit

__all__ = [
    "TdCallLeaf",
    "TdCallResultCode",
    "TdCallResult",
    "TdVpsClassCode",
    "TdxContextCode",
    "FieldSize",
    "TdxExtendedFieldCode",
    "TdgMemPageLevel",
    "GpaVmAttributes",
    "GpaVmAttributesMask",
    "TdgMemPageGpaAttr",
    "TdgMemPageAcceptRcx",
    "TdgMemPageAttrWriteRcx",
    "TdgMemPageAttrWriteR8",
    "TdgMemPageAttrGpaMappingReadRcxResult",
    "TdxL2Ctls",
    "TdxVmFlags",
    "TdGlaVmAndFlags",
    "TdxGlaListInfo",
    "TdxVpEnterRaxResult",
    "TdxInstructionInfo",
    "TdxExtendedExitQualificationType",
    "TdxExtendedExitQualification",
    "TdxGp",
    "TdVmCallR10Result",
    "TdVmCallSubFunction",
    "TDX_FIELD_CODE_L2_CTLS_VM1",
    "TDX_FIELD_CODE_L2_CTLS_VM2",
    "SEED_TDX_FIELD_CODE_L2_CTLS_VM2",
    "TDX_VP_ENTER_INVD_INVEPT",
    "TDX_VP_ENTER_INVD_INVVPID",
    "TDX_VP_ENTER_INVD_INVVPID_NON_GLOBAL",
    "TDX_SHARED_GPA_BOUNDARY_BITS",
    "TDX_SHARED_GPA_BOUNDARY_ADDRESS_BIT",
    "vmcs_field_code",
    "msr_bitmap_field_code",
    "l2_ctls_field_code",
]


@open_enum(64)
class TdCallLeaf(OpenEnum):
    """TDCALL leaf number placed in RAX (open, u64)."""

    VP_VMCALL = 0
    VP_INFO = 1
    MR_RTMR_EXTEND = 2
    VP_VEINFO_GET = 3
    MR_REPORT = 4
    VP_CPUIDVE_SET = 5
    MEM_PAGE_ACCEPT = 6
    VM_RD = 7
    VM_WR = 8
    VP_RD = 9
    VP_WR = 10
    MEM_PAGE_ATTR_RD = 23
    MEM_PAGE_ATTR_WR = 24
    VP_ENTER = 25
    # Intel calls leaf 27 TDG.VP.INVVPID; the seed calls it INVGLA.
    VP_INVGLA = 27


@open_enum(32)
class TdCallResultCode(OpenEnum):
    """The 32-bit status code in RAX[63:32] after a TDCALL (open, u32).

    Bit 31 of the code marks an error, bit 30 a non-recoverable condition;
    a non-zero code with both clear is a warning or information.
    """

    SUCCESS = 0x00000000
    NON_RECOVERABLE_VCPU = 0x40000001
    NON_RECOVERABLE_TD = 0x60000002
    INTERRUPTED_RESUMABLE = 0x80000003
    INTERRUPTED_RESTARTABLE = 0x80000004
    NON_RECOVERABLE_TD_NON_ACCESSIBLE = 0x60000005
    INVALID_RESUMPTION = 0xC0000006
    NON_RECOVERABLE_TD_WRONG_APIC_MODE = 0xE0000007
    CROSS_TD_FAULT = 0x80000008
    CROSS_TD_TRAP = 0x90000009
    NON_RECOVERABLE_TD_CORRUPTED_MD = 0x6000000A
    OPERAND_INVALID = 0xC0000100
    OPERAND_ADDR_RANGE_ERROR = 0xC0000101
    OPERAND_BUSY = 0x80000200
    PREVIOUS_TLB_EPOCH_BUSY = 0x80000201
    SYS_BUSY = 0x80000202
    RND_NO_ENTROPY = 0x80000203
    OPERAND_BUSY_HOST_PRIORITY = 0x80000204
    HOST_PRIORITY_BUSY_TIMEOUT = 0x90000205
    PAGE_METADATA_INCORRECT = 0xC0000300
    PAGE_ALREADY_FREE = 0x00000301
    PAGE_NOT_OWNED_BY_TD = 0xC0000302
    PAGE_NOT_FREE = 0xC0000303
    TD_ASSOCIATED_PAGES_EXIST = 0xC0000400
    SYS_INIT_NOT_PENDING = 0xC0000500
    SYS_LP_INIT_NOT_DONE = 0xC0000502
    SYS_LP_INIT_DONE = 0xC0000503
    SYS_NOT_READY = 0xC0000505
    SYS_SHUTDOWN = 0xC0000506
    SYS_KEY_CONFIG_NOT_PENDING = 0xC0000507
    SYS_STATE_INCORRECT = 0xC0000508
    SYS_INVALID_HANDOFF = 0xC0000509
    SYS_INCOMPATIBLE_SIGSTRUCT = 0xC000050A
    SYS_LP_INIT_NOT_PENDING = 0xC000050B
    SYS_CONFIG_NOT_PENDING = 0xC000050C
    INCOMPATIBLE_SEAM_CAPABILITIES = 0xC000050D
    TD_FATAL = 0xE0000604
    TD_NON_DEBUG = 0xC0000605
    TDCS_NOT_ALLOCATED = 0xC0000606
    LIFECYCLE_STATE_INCORRECT = 0xC0000607
    OP_STATE_INCORRECT = 0xC0000608
    NO_VCPUS = 0xC0000609
    TDCX_NUM_INCORRECT = 0xC0000610
    VCPU_STATE_INCORRECT = 0xC0000700
    VCPU_ASSOCIATED = 0x80000701
    VCPU_NOT_ASSOCIATED = 0x80000702
    NO_VALID_VE_INFO = 0xC0000704
    MAX_VCPUS_EXCEEDED = 0xC0000705
    TSC_ROLLBACK = 0xC0000706
    TD_VMCS_FIELD_NOT_INITIALIZED = 0xC0000730
    MCS_FIELD_ERROR = 0xC0000731
    KEY_GENERATION_FAILED = 0x80000800
    TD_KEYS_NOT_CONFIGURED = 0x80000810
    KEY_STATE_INCORRECT = 0xC0000811
    KEY_CONFIGURED = 0x00000815
    WBCACHE_NOT_COMPLETE = 0x80000817
    HKID_NOT_FREE = 0xC0000820
    NO_HKID_READY_TO_WBCACHE = 0x00000821
    WBCACHE_RESUME_ERROR = 0xC0000823
    FLUSHVP_NOT_DONE = 0x80000824
    NUM_ACTIVATED_HKIDS_NOT_SUPPORTED = 0xC0000825
    INCORRECT_CPUID_VALUE = 0xC0000900
    LIMIT_CPUID_MAXVAL_SET = 0xC0000901
    INCONSISTENT_CPUID_FIELD = 0xC0000902
    CPUID_MAX_SUBLEAVES_UNRECOGNIZED = 0xC0000903
    CPUID_LEAF_1F_FORMAT_UNRECOGNIZED = 0xC0000904
    INVALID_WBINVD_SCOPE = 0xC0000905
    INVALID_PKG_ID = 0xC0000906
    ENABLE_MONITOR_FSM_NOT_SET = 0xC0000907
    CPUID_LEAF_NOT_SUPPORTED = 0xC0000908
    SMRR_NOT_LOCKED = 0xC0000910
    INVALID_SMRR_CONFIGURATION = 0xC0000911
    SMRR_OVERLAPS_CMR = 0xC0000912
    SMRR_LOCK_NOT_SUPPORTED = 0xC0000913
    SMRR_NOT_SUPPORTED = 0xC0000914
    INCONSISTENT_MSR = 0xC0000920
    INCORRECT_MSR_VALUE = 0xC0000921
    SEAMREPORT_NOT_AVAILABLE = 0xC0000930
    SEAMDB_GETREF_NOT_AVAILABLE = 0xC0000931
    SEAMDB_REPORT_NOT_AVAILABLE = 0xC0000932
    SEAMVERIFYREPORT_NOT_AVAILABLE = 0xC0000933
    INVALID_TDMR = 0xC0000A00
    NON_ORDERED_TDMR = 0xC0000A01
    TDMR_OUTSIDE_CMRS = 0xC0000A02
    TDMR_ALREADY_INITIALIZED = 0x00000A03
    INVALID_PAMT = 0xC0000A10
    PAMT_OUTSIDE_CMRS = 0xC0000A11
    PAMT_OVERLAP = 0xC0000A12
    INVALID_RESERVED_IN_TDMR = 0xC0000A20
    NON_ORDERED_RESERVED_IN_TDMR = 0xC0000A21
    CMR_LIST_INVALID = 0xC0000A22
    EPT_WALK_FAILED = 0xC0000B00
    EPT_ENTRY_FREE = 0xC0000B01
    EPT_ENTRY_NOT_FREE = 0xC0000B02
    EPT_ENTRY_NOT_PRESENT = 0xC0000B03
    EPT_ENTRY_NOT_LEAF = 0xC0000B04
    EPT_ENTRY_LEAF = 0xC0000B05
    GPA_RANGE_NOT_BLOCKED = 0xC0000B06
    GPA_RANGE_ALREADY_BLOCKED = 0x00000B07
    TLB_TRACKING_NOT_DONE = 0xC0000B08
    EPT_INVALID_PROMOTE_CONDITIONS = 0xC0000B09
    PAGE_ALREADY_ACCEPTED = 0x00000B0A
    PAGE_SIZE_MISMATCH = 0xC0000B0B
    GPA_RANGE_BLOCKED = 0xC0000B0C
    EPT_ENTRY_STATE_INCORRECT = 0xC0000B0D
    EPT_PAGE_NOT_FREE = 0xC0000B0E
    L2_SEPT_WALK_FAILED = 0xC0000B0F
    L2_SEPT_ENTRY_NOT_FREE = 0xC0000B10
    PAGE_ATTR_INVALID = 0xC0000B11
    L2_SEPT_PAGE_NOT_PROVIDED = 0xC0000B12
    METADATA_FIELD_ID_INCORRECT = 0xC0000C00
    METADATA_FIELD_NOT_WRITABLE = 0xC0000C01
    METADATA_FIELD_NOT_READABLE = 0xC0000C02
    METADATA_FIELD_VALUE_NOT_VALID = 0xC0000C03
    METADATA_LIST_OVERFLOW = 0xC0000C04
    INVALID_METADATA_LIST_HEADER = 0xC0000C05
    REQUIRED_METADATA_FIELD_MISSING = 0xC0000C06
    METADATA_ELEMENT_SIZE_INCORRECT = 0xC0000C07
    METADATA_LAST_ELEMENT_INCORRECT = 0xC0000C08
    METADATA_FIELD_CURRENTLY_NOT_WRITABLE = 0xC0000C09
    METADATA_WR_MASK_NOT_VALID = 0xC0000C0A
    METADATA_FIRST_FIELD_ID_IN_CONTEXT = 0x00000C0B
    METADATA_FIELD_SKIP = 0x00000C0C
    SERVTD_ALREADY_BOUND_FOR_TYPE = 0xC0000D00
    SERVTD_TYPE_MISMATCH = 0xC0000D01
    SERVTD_ATTR_MISMATCH = 0xC0000D02
    SERVTD_INFO_HASH_MISMATCH = 0xC0000D03
    SERVTD_UUID_MISMATCH = 0xC0000D04
    SERVTD_NOT_BOUND = 0xC0000D05
    SERVTD_BOUND = 0xC0000D06
    TARGET_UUID_MISMATCH = 0xC0000D07
    TARGET_UUID_UPDATED = 0xC0000D08
    INVALID_MBMD = 0xC0000E00
    INCORRECT_MBMD_MAC = 0xC0000E01
    NOT_WRITE_BLOCKED = 0xC0000E02
    ALREADY_WRITE_BLOCKED = 0x00000E03
    NOT_EXPORTED = 0xC0000E04
    MIGRATION_STREAM_STATE_INCORRECT = 0xC0000E05
    MAX_MIGS_NUM_EXCEEDED = 0xC0000E06
    EXPORTED_DIRTY_PAGES_REMAIN = 0xC0000E07
    MIGRATION_DECRYPTION_KEY_NOT_SET = 0xC0000E08
    TD_NOT_MIGRATABLE = 0xC0000E09
    PREVIOUS_EXPORT_CLEANUP_INCOMPLETE = 0xC0000E0A
    NUM_MIGS_HIGHER_THAN_CREATED = 0xC0000E0B
    IMPORT_MISMATCH = 0xC0000E0C
    MIGRATION_EPOCH_OVERFLOW = 0xC0000E0D
    MAX_EXPORTS_EXCEEDED = 0xC0000E0E
    INVALID_PAGE_MAC = 0xC0000E0F
    MIGRATED_IN_CURRENT_EPOCH = 0xC0000E10
    DISALLOWED_IMPORT_OVER_REMOVED = 0xC0000E11
    SOME_VCPUS_NOT_MIGRATED = 0xC0000E12
    ALL_VCPUS_IMPORTED = 0xC0000E13
    MIN_MIGS_NOT_CREATED = 0xC0000E14
    VCPU_ALREADY_EXPORTED = 0xC0000E15
    INVALID_MIGRATION_DECRYPTION_KEY = 0xC0000E16
    INVALID_CPUSVN = 0xC0001000
    INVALID_REPORTMACSTRUCT = 0xC0001001
    L2_EXIT_HOST_ROUTED_ASYNC = 0x00001100
    L2_EXIT_HOST_ROUTED_TDVMCALL = 0x00001101
    L2_EXIT_PENDING_INTERRUPT = 0x00001102
    PENDING_INTERRUPT = 0x00001120
    TD_EXIT_BEFORE_L2_ENTRY = 0x00001140
    TD_EXIT_ON_L2_VM_EXIT = 0x00001141
    TD_EXIT_ON_L2_TO_L1 = 0x00001142
    GLA_NOT_CANONICAL = 0xC0001160

    @property
    def is_success(self) -> bool:
        return int(self) == 0

    @property
    def is_error(self) -> bool:
        return bool(int(self) >> 31)

    @property
    def is_non_recoverable(self) -> bool:
        return bool((int(self) >> 30) & 1)

    @property
    def is_warning(self) -> bool:
        """Non-zero, but neither an error nor non-recoverable."""
        return int(self) != 0 and not (int(self) >> 30)


class TdCallResult(BitField):
    """RAX after a TDCALL (u64): ``details`` (low half) and ``code``.

    A call succeeded exactly when ``code`` is SUCCESS; ``details`` never
    changes the classification.
    """

    __slots__ = ()
    _bits_ = 64
    _layout_ = (
        ("details", 0, 32),
        ("code", 32, 32, TdCallResultCode),
    )
    details: int
    code: TdCallResultCode

    @property
    def is_success(self) -> bool:
        return (int(self) >> 32) == 0

    @property
    def is_error(self) -> bool:
        """Bit 63 set."""
        return bool(int(self) >> 63)

    @property
    def is_non_recoverable(self) -> bool:
        """Bit 62 set (fatal even when bit 63 is clear)."""
        return bool((int(self) >> 62) & 1)

    @property
    def is_warning(self) -> bool:
        """Non-zero code with bits 63 and 62 clear (e.g. PAGE_ALREADY_ACCEPTED)."""
        return (int(self) >> 32) != 0 and not (int(self) >> 62)

    def __repr__(self) -> str:
        code = self.code
        shown = code.name if code.name is not None else f"{int(code):#010x}"
        return f"TdCallResult({shown}, details={int(self) & 0xFFFFFFFF:#x})"

    __str__ = __repr__


@open_enum(8)
class TdVpsClassCode(OpenEnum):
    """Class of a TDG.VP.RD/WR field identifier (open, u8; 6-bit field)."""

    TD_VMCS = 0
    VAPIC = 1
    VE_INFO = 2
    GUEST_GPR_STATE = 16
    GUEST_STATE = 17
    GUEST_EXT_STATE = 18
    GUEST_MSR_STATE = 19
    MANAGEMENT = 32
    CPUID_CONTROL = 33
    EPT_VIOLATION_LOG = 34
    VMCS_1 = 36
    MSR_BITMAPS_1 = 37
    MSR_BITMAPS_SHADOW_1 = 38
    VMCS_2 = 44
    MSR_BITMAPS_2 = 45
    MSR_BITMAPS_SHADOW_2 = 46
    VMCS_3 = 52


@open_enum(8)
class TdxContextCode(OpenEnum):
    """Context of a field identifier (open, u8; 3-bit field)."""

    PLATFORM = 0
    TD = 1
    TD_VCPU = 2


class FieldSize(ClosedEnum):
    """Element size of a field identifier (closed; 2 bits)."""

    Invalid = 0
    Size16Bit = 1
    Size32Bit = 2
    Size64Bit = 3


class TdxExtendedFieldCode(BitField):
    """A TDG.VP.RD/WR field identifier (RDX operand, u64)."""

    __slots__ = ()
    _bits_ = 64
    _layout_ = (
        ("field_code", 0, 24),
        ("_reserved0", 24, 8),
        ("field_size", 32, 2, FieldSize),
        ("last_element", 34, 4),
        ("last_field", 38, 9),
        ("_reserved1", 47, 3),
        ("increment_size", 50, 1),
        ("write_mask_valid", 51, 1),
        ("context_code", 52, 3, TdxContextCode),
        ("_reserved2", 55, 1),
        ("class_code", 56, 6, TdVpsClassCode),
        ("_reserved3", 62, 1),
        ("non_arch", 63, 1),
    )
    field_code: int
    field_size: FieldSize
    last_element: int
    last_field: int
    increment_size: bool
    write_mask_valid: bool
    context_code: TdxContextCode
    class_code: TdVpsClassCode
    non_arch: bool


class TdgMemPageLevel(ClosedEnum):
    """Mapping level of a page operand (closed; values 3-7 are invalid)."""

    Size4k = 0
    Size2Mb = 1
    Size1Gb = 2


class GpaVmAttributes(BitField):
    """Per-VM page attributes (u16).

    Bit 7 (suppress #VE) has no public accessor in the original; here it is
    the reserved-style field ``_suppress_ve`` (not settable by keyword) with
    the read-only property :attr:`suppress_ve`.
    """

    __slots__ = ()
    _bits_ = 16
    _layout_ = (
        ("read", 0, 1),
        ("write", 1, 1),
        ("kernel_execute", 2, 1),
        ("user_execute", 3, 1),
        ("_reserved", 4, 3),
        ("_suppress_ve", 7, 1),
        ("_reserved2", 8, 7),
        ("valid", 15, 1),
    )
    read: bool
    write: bool
    kernel_execute: bool
    user_execute: bool
    valid: bool

    FULL_ACCESS: ClassVar[GpaVmAttributes]

    @property
    def suppress_ve(self) -> bool:
        """Bit 7, as returned by the module (read-only)."""
        return bool((int(self) >> 7) & 1)


GpaVmAttributes.FULL_ACCESS = GpaVmAttributes(
    read=True, write=True, kernel_execute=True, user_execute=True, valid=True
)


class GpaVmAttributesMask(BitField):
    """Which attribute bits TDG.MEM.PAGE.ATTR.WR may change for one VM (u16)."""

    __slots__ = ()
    _bits_ = 16
    _layout_ = (
        ("read", 0, 1),
        ("write", 1, 1),
        ("kernel_execute", 2, 1),
        ("user_execute", 3, 1),
        ("_reserved", 4, 3),
        ("suppress_ve", 7, 1),
        ("_reserved2", 8, 7),
        ("inv_ept", 15, 1),
    )
    read: bool
    write: bool
    kernel_execute: bool
    user_execute: bool
    suppress_ve: bool
    inv_ept: bool

    ALL_CHANGED: ClassVar[GpaVmAttributesMask]


GpaVmAttributesMask.ALL_CHANGED = GpaVmAttributesMask(
    read=True, write=True, kernel_execute=True, user_execute=True
)


class TdgMemPageGpaAttr(BitField):
    """GPA_ATTR (u64): attributes of the L1 VMM and of L2 VMs 1-3.
    OpenHCL uses VM1 for VTL0 and VM2 for VTL1."""

    __slots__ = ()
    _bits_ = 64
    _layout_ = (
        ("l1", 0, 16, GpaVmAttributes),
        ("l2_vm1", 16, 16, GpaVmAttributes),
        ("l2_vm2", 32, 16, GpaVmAttributes),
        ("l2_vm3", 48, 16, GpaVmAttributes),
    )
    l1: GpaVmAttributes
    l2_vm1: GpaVmAttributes
    l2_vm2: GpaVmAttributes
    l2_vm3: GpaVmAttributes


_PAGE_OPERAND = (
    ("level", 0, 3, TdgMemPageLevel),
    ("_reserved", 3, 9),
    ("gpa_page_number", 12, 40),
    ("_reserved2", 52, 12),
)


class TdgMemPageAcceptRcx(BitField):
    """RCX of TDG.MEM.PAGE.ACCEPT (u64): equals GPA | level."""

    __slots__ = ()
    _bits_ = 64
    _layout_ = _PAGE_OPERAND
    level: TdgMemPageLevel
    gpa_page_number: int


class TdgMemPageAttrWriteRcx(BitField):
    """RCX of TDG.MEM.PAGE.ATTR.WR (u64); same layout as the accept RCX."""

    __slots__ = ()
    _bits_ = 64
    _layout_ = _PAGE_OPERAND
    level: TdgMemPageLevel
    gpa_page_number: int


class TdgMemPageAttrGpaMappingReadRcxResult(BitField):
    """RCX returned by TDG.MEM.PAGE.ATTR.RD (u64)."""

    __slots__ = ()
    _bits_ = 64
    _layout_ = (
        ("level", 0, 3, TdgMemPageLevel),
        ("_reserved", 3, 9),
        ("gpa_page_number", 12, 40),
        ("_reserved2", 52, 10),
        ("pending", 62, 1),
        ("_reserved3", 63, 1),
    )
    level: TdgMemPageLevel
    gpa_page_number: int
    pending: bool


class TdgMemPageAttrWriteR8(BitField):
    """R8 of TDG.MEM.PAGE.ATTR.WR (u64): per-VM attribute masks."""

    __slots__ = ()
    _bits_ = 64
    _layout_ = (
        ("_reserved", 0, 16),
        ("l2_vm1", 16, 16, GpaVmAttributesMask),
        ("l2_vm2", 32, 16, GpaVmAttributesMask),
        ("l2_vm3", 48, 16, GpaVmAttributesMask),
    )
    l2_vm1: GpaVmAttributesMask
    l2_vm2: GpaVmAttributesMask
    l2_vm3: GpaVmAttributesMask


class TdxL2Ctls(BitField):
    """The per-VM L2 controls field (u64)."""

    __slots__ = ()
    _bits_ = 64
    _layout_ = (
        ("enable_shared_ept", 0, 1),
        ("enable_tdvmcall", 1, 1),
        ("_reserved", 2, 62),
    )
    enable_shared_ept: bool
    enable_tdvmcall: bool


TDX_VP_ENTER_INVD_INVEPT: Final = 1
TDX_VP_ENTER_INVD_INVVPID: Final = 2
TDX_VP_ENTER_INVD_INVVPID_NON_GLOBAL: Final = 3


class TdxVmFlags(BitField):
    """RCX of TDG.VP.ENTER, kept in the run page as ``entry_rcx`` (u64).
    ``vm_index`` is 1-based: VTL0 is VM 1, VTL1 is VM 2."""

    __slots__ = ()
    _bits_ = 64
    _layout_ = (
        ("invd_translations", 0, 2),
        ("_reserved", 2, 50),
        ("vm_index", 52, 2),
        ("_reserved_2", 54, 10),
    )
    invd_translations: int
    vm_index: int


class TdGlaVmAndFlags(BitField):
    """RCX of TDG.VP.INVGLA (u64)."""

    __slots__ = ()
    _bits_ = 64
    _layout_ = (
        ("list", 0, 1),
        ("_reserved_z0", 1, 51),
        ("vm_index", 52, 2),
        ("_reserved_z1", 54, 10),
    )
    list: bool
    vm_index: int


class TdxGlaListInfo(BitField):
    """RDX of TDG.VP.INVGLA in list mode (u64)."""

    __slots__ = ()
    _bits_ = 64
    _layout_ = (
        ("first_entry", 0, 9),
        ("_reserved_z0", 9, 3),
        ("list_gpa", 12, 40),
        ("num_entries", 52, 10),
        ("_reserved_z1", 62, 2),
    )
    first_entry: int
    list_gpa: int
    num_entries: int


class TdxVpEnterRaxResult(BitField):
    """RAX returned by TDG.VP.ENTER (u64)."""

    __slots__ = ()
    _bits_ = 64
    _layout_ = (
        ("vmx_exit", 0, 32, VmxExit),
        ("tdx_exit", 32, 32, TdCallResultCode),
    )
    vmx_exit: VmxExit
    tdx_exit: TdCallResultCode


class TdxInstructionInfo(BitField):
    """R11 returned by TDG.VP.ENTER (u64)."""

    __slots__ = ()
    _bits_ = 64
    _layout_ = (
        ("info", 0, 32),
        ("length", 32, 32),
    )
    info: int
    length: int


@open_enum(8)
class TdxExtendedExitQualificationType(OpenEnum):
    """Type of an extended exit qualification (open, u8; 4-bit field)."""

    NONE = 0
    PENDING_EPT_VIOLATION = 6


class TdxExtendedExitQualification(BitField):
    """Extended exit qualification (u64)."""

    __slots__ = ()
    _bits_ = 64
    _layout_ = (
        ("ty", 0, 4, TdxExtendedExitQualificationType),
        ("_reserved", 4, 60),
    )
    ty: TdxExtendedExitQualificationType


class TdxGp(ClosedEnum):
    """Index into ``gpr_list.gps`` (index 4 is RSP for TDX)."""

    RAX = 0
    RCX = 1
    RDX = 2
    RBX = 3
    RSP = 4
    RBP = 5
    RSI = 6
    RDI = 7
    R8 = 8
    R9 = 9
    R10 = 10
    R11 = 11
    R12 = 12
    R13 = 13
    R14 = 14
    R15 = 15


@open_enum(64)
class TdVmCallR10Result(OpenEnum):
    """R10 after TDG.VP.VMCALL (open, u64)."""

    SUCCESS = 0
    RETRY = 1
    OPERAND_INVALID = 0x8000000000000000
    GPA_INUSE = 0x8000000000000001
    ALIGN_ERROR = 0x8000000000000002


class TdVmCallSubFunction(ClosedEnum):
    """R11 of a TDG.VP.VMCALL (closed, u64)."""

    IoInstr = 0x1E
    RdMsr = 0x1F
    WrMsr = 0x20
    MapGpa = 0x10001


TDX_SHARED_GPA_BOUNDARY_BITS: Final = 47
TDX_SHARED_GPA_BOUNDARY_ADDRESS_BIT: Final = 1 << TDX_SHARED_GPA_BOUNDARY_BITS

TDX_FIELD_CODE_L2_CTLS_VM1: Final = TdxExtendedFieldCode(0xA020000300000051)
"""L2 controls of L2 VM #1 (VTL0)."""

TDX_FIELD_CODE_L2_CTLS_VM2: Final = TdxExtendedFieldCode(0xA020000300000052)
"""L2 controls of L2 VM #2 (VTL1): field code 0x50 + VM index.

The seed (openvmm at bc056994) has 0xA020000300000051 here, a typo that
made its VTL1 call write VM #1's controls; upstream fixed it later
(commit 935b978f). hcltdx uses the corrected value; the seed's value is
kept as SEED_TDX_FIELD_CODE_L2_CTLS_VM2 for reference only.
"""

SEED_TDX_FIELD_CODE_L2_CTLS_VM2: Final = TdxExtendedFieldCode(0xA020000300000051)
"""The seed's (incorrect) VM2 constant; see TDX_FIELD_CODE_L2_CTLS_VM2."""

_FIELD_SIZE_OF_WIDTH: Final = {
    FieldWidth.Width16: FieldSize.Size16Bit,
    FieldWidth.Width32: FieldSize.Size32Bit,
    FieldWidth.Width64: FieldSize.Size64Bit,
    FieldWidth.WidthNatural: FieldSize.Size64Bit,
}

_VMCS_CLASS: Final = (TdVpsClassCode.VMCS_1, TdVpsClassCode.VMCS_2)
_MSR_BITMAP_CLASS: Final = (TdVpsClassCode.MSR_BITMAPS_1, TdVpsClassCode.MSR_BITMAPS_2)
_VMCS_CODE_CACHE: dict[tuple[int, int], TdxExtendedFieldCode] = {}
_CACHE_FIELD_TYPES: Final = (int, VmcsField)
_CACHE_VTL_TYPES: Final = (int, GuestVtl)


def vmcs_field_code(field: Any, vtl: Any) -> TdxExtendedFieldCode:
    """The TDG.VP.RD/WR identifier of VMCS ``field`` in the L2 VM of ``vtl``.

    code = raw | size << 32 | TD_VCPU << 52 | class << 56, class VMCS_1 (36)
    for VTL0 and VMCS_2 (44) for VTL1; size from the encoding's width.
    """
    # Exact types only: 26626.0 or True hash like ints but must be refused.
    if type(field) in _CACHE_FIELD_TYPES and type(vtl) in _CACHE_VTL_TYPES:
        cached = _VMCS_CODE_CACHE.get((field, vtl))
        if cached is not None:
            return cached
    f = VmcsField(field)
    v = GuestVtl(vtl)
    if f & 1:
        raise ValueError(f"{f!r}: high-half access encodings are not accepted")
    if f >> 24:
        raise ValueError(f"{f!r}: encoding does not fit in the 24-bit field code")
    code = TdxExtendedFieldCode(
        field_code=int(f),
        field_size=_FIELD_SIZE_OF_WIDTH[f.field_width],
        context_code=TdxContextCode.TD_VCPU,
        class_code=_VMCS_CLASS[v],
    )
    if f.name is not None:
        # Bounded by the catalogue size; keyed by plain ints (equal hashes).
        _VMCS_CODE_CACHE[(int(f), int(v))] = code
    return code


def msr_bitmap_field_code(index: Any, vtl: Any) -> TdxExtendedFieldCode:
    """The identifier of 64-bit word ``index`` of the MSR bitmap of ``vtl``
    (class MSR_BITMAPS_1 (37) for VTL0, MSR_BITMAPS_2 (45) for VTL1)."""
    i = _index(index, "MSR bitmap word index")
    v = GuestVtl(vtl)
    if i < 0 or i >> 24:
        raise ValueError(f"MSR bitmap word index {i} is outside 0..0xFFFFFF")
    return TdxExtendedFieldCode(
        field_code=i,
        field_size=FieldSize.Size64Bit,
        context_code=TdxContextCode.TD_VCPU,
        class_code=_MSR_BITMAP_CLASS[v],
    )


def l2_ctls_field_code(vtl: Any) -> TdxExtendedFieldCode:
    """The identifier of the L2 controls of ``vtl`` (corrected VM2 value)."""
    if GuestVtl(vtl) == GuestVtl.VTL0:
        return TDX_FIELD_CODE_L2_CTLS_VM1
    return TDX_FIELD_CODE_L2_CTLS_VM2
