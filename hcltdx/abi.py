"""numpy structured dtypes for the mshv_vtl kernel ABI (docs/tdx-abi.md
section 3).

Every dtype spells out its offsets and itemsize, little-endian, and uses
the C field names of ``include/hcltdx/abi.h`` (pads included), so a record
or a view over a mapped page matches the kernel byte for byte. The tests
check each one against the compiled C layout and the spec's numbers.
"""

from __future__ import annotations

from typing import Any, Final, Sequence

import numpy as np

from hcltdx.protocol import MSHV_VTL_TDCALL

__all__ = [
    "MSHV_VTL_TDCALL",
    "MSHV_TDCALL_DTYPE",
    "FXSAVE_DTYPE",
    "APIC_REGISTER_DTYPE",
    "APIC_PAGE_DTYPE",
    "EXIT_INFO_DTYPE",
    "VP_STATE_DTYPE",
    "ENTER_GUEST_STATE_DTYPE",
    "TSC_DEADLINE_DTYPE",
    "TDX_VP_CONTEXT_DTYPE",
    "TDX_VP_CONTEXT_TSC_DEADLINE_DTYPE",
    "HV_MESSAGE_DTYPE",
    "RUN_PAGE_DTYPE",
    "RUN_PAGE_TSC_DEADLINE_DTYPE",
    "run_page_dtype",
    "RUN_PAGE_SIZE",
    "CONTEXT_OFFSET",
]


def _struct(fields: Sequence[tuple[str, Any, int]], itemsize: int) -> np.dtype[np.void]:
    names, formats, offsets = zip(*fields)
    dt = np.dtype(
        {
            "names": list(names),
            "formats": list(formats),
            "offsets": list(offsets),
            "itemsize": itemsize,
        }
    )
    end = max(off + np.dtype(fmt).itemsize for _, fmt, off in fields)
    if end > itemsize:
        raise AssertionError(f"fields overrun itemsize {itemsize}")
    return dt


def _bytes(n: int) -> tuple[str, tuple[int, ...]]:
    return ("u1", (n,))


MSHV_TDCALL_DTYPE: Final = _struct(
    [(name, "<u8", 8 * i) for i, name in enumerate(("rax", "rcx", "rdx", "r8", "r9", "r10_out", "r11_out"))],
    56,
)
"""``struct mshv_tdcall`` (packed, 56 bytes): argument of MSHV_VTL_TDCALL."""

FXSAVE_DTYPE: Final = _struct(
    [
        ("fcw", "<u2", 0),
        ("fsw", "<u2", 2),
        ("ftw", "u1", 4),
        ("reserved", "u1", 5),
        ("fop", "<u2", 6),
        ("fip", "<u8", 8),
        ("fdp", "<u8", 16),
        ("mxcsr", "<u4", 24),
        ("mxcsr_mask", "<u4", 28),
        ("st", ("u1", (8, 16)), 32),
        ("xmm", ("u1", (16, 16)), 160),
        ("reserved2", _bytes(48), 416),
        ("unused", _bytes(48), 464),
    ],
    512,
)
"""Legacy FXSAVE image (512 bytes)."""

APIC_REGISTER_DTYPE: Final = _struct(
    [("value", "<u4", 0), ("reserved", ("<u4", (3,)), 4)],
    16,
)
"""One 16-byte virtual-APIC register slot."""


def _apic(n: int) -> Any:
    return APIC_REGISTER_DTYPE if n == 1 else (APIC_REGISTER_DTYPE, (n,))


_APIC_SLOTS = (
    # name, first slot, count
    ("reserved_0", 0x00, 2),
    ("id", 0x02, 1),
    ("version", 0x03, 1),
    ("reserved_4", 0x04, 4),
    ("tpr", 0x08, 1),
    ("apr", 0x09, 1),
    ("ppr", 0x0A, 1),
    ("eoi", 0x0B, 1),
    ("rrd", 0x0C, 1),
    ("ldr", 0x0D, 1),
    ("dfr", 0x0E, 1),
    ("svr", 0x0F, 1),
    ("isr", 0x10, 8),
    ("tmr", 0x18, 8),
    ("irr", 0x20, 8),
    ("esr", 0x28, 1),
    ("reserved_29", 0x29, 6),
    ("lvt_cmci", 0x2F, 1),
    ("icr", 0x30, 2),
    ("lvt_timer", 0x32, 1),
    ("lvt_thermal", 0x33, 1),
    ("lvt_pmc", 0x34, 1),
    ("lvt_lint0", 0x35, 1),
    ("lvt_lint1", 0x36, 1),
    ("lvt_error", 0x37, 1),
    ("timer_icr", 0x38, 1),
    ("timer_ccr", 0x39, 1),
    ("reserved_3a", 0x3A, 4),
    ("timer_dcr", 0x3E, 1),
    ("reserved_3f", 0x3F, 1),
    ("reserved_40", 0x40, 192),
)

APIC_PAGE_DTYPE: Final = _struct(
    [(name, _apic(count), slot * 16) for name, slot, count in _APIC_SLOTS],
    4096,
)
"""The 4096-byte virtual-APIC page: 256 register slots (slot = xAPIC
register number, byte offset = slot * 16)."""

EXIT_INFO_DTYPE: Final = _struct(
    [
        (name, "<u8", 8 * i)
        for i, name in enumerate(
            ("rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13")
        )
    ],
    88,
)
"""``tdx_tdg_vp_enter_exit_info``: registers returned by TDG.VP.ENTER."""

VP_STATE_DTYPE: Final = _struct(
    [
        (name, "<u8", 8 * i)
        for i, name in enumerate(
            (
                "msr_kernel_gs_base",
                "msr_star",
                "msr_lstar",
                "msr_sfmask",
                "msr_xss",
                "cr2",
                "msr_tsc_aux",
                "flags",
            )
        )
    ],
    64,
)
"""``tdx_vp_state``: state the kernel saves/restores around VP.ENTER."""

ENTER_GUEST_STATE_DTYPE: Final = _struct(
    [
        ("gps", ("<u8", (16,)), 0),
        ("rflags", "<u8", 128),
        ("rip", "<u8", 136),
        ("ssp", "<u8", 144),
        ("rvi", "u1", 152),
        ("svi", "u1", 153),
        ("reserved", _bytes(6), 154),
    ],
    160,
)
"""``tdx_l2_enter_guest_state`` (the ``gpr_list``; gps indexed by TdxGp)."""

TSC_DEADLINE_DTYPE: Final = _struct(
    [("deadline", "<u8", 0), ("update_deadline", "u1", 8), ("pad", _bytes(7), 9)],
    16,
)
"""``tdx_l2_tsc_deadline_state`` (newer kernels only)."""

TDX_VP_CONTEXT_DTYPE: Final = _struct(
    [
        ("exit_info", EXIT_INFO_DTYPE, 0),
        ("pad1", _bytes(48), 88),
        ("vp_state", VP_STATE_DTYPE, 136),
        ("pad2", _bytes(32), 200),
        ("entry_rcx", "<u8", 232),
        ("gpr_list", ENTER_GUEST_STATE_DTYPE, 240),
        ("pad3", _bytes(96), 400),
        ("fx_state", FXSAVE_DTYPE, 496),
        ("pad4", _bytes(16), 1008),
    ],
    1024,
)
"""``tdx_vp_context`` as the seed knows it (1024 bytes)."""

TDX_VP_CONTEXT_TSC_DEADLINE_DTYPE: Final = _struct(
    [
        ("exit_info", EXIT_INFO_DTYPE, 0),
        ("pad1", _bytes(48), 88),
        ("vp_state", VP_STATE_DTYPE, 136),
        ("pad2", _bytes(32), 200),
        ("entry_rcx", "<u8", 232),
        ("gpr_list", ENTER_GUEST_STATE_DTYPE, 240),
        ("l2_tsc_deadline", TSC_DEADLINE_DTYPE, 400),
        ("pad3", _bytes(80), 416),
        ("fx_state", FXSAVE_DTYPE, 496),
        ("pad4", _bytes(16), 1008),
    ],
    1024,
)
"""``tdx_vp_context`` of newer kernels: an L2 TSC-deadline block at 400."""

HV_MESSAGE_DTYPE: Final = _struct(
    [
        ("typ", "<u4", 0),
        ("len", "u1", 4),
        ("flags", "u1", 5),
        ("rsvd", "<u2", 6),
        ("id", "<u8", 8),
        ("payload", _bytes(240), 16),
    ],
    256,
)
"""``HvMessage`` (256 bytes), the view of the run page's exit_message."""

CONTEXT_OFFSET: Final = 272
RUN_PAGE_SIZE: Final = 1652


def _run_page(context: np.dtype[np.void]) -> np.dtype[np.void]:
    return _struct(
        [
            ("cancel", "<u4", 0x000),
            ("vtl_ret_action_size", "<u4", 0x004),
            ("flags", "<u4", 0x008),
            ("scan_proxy_irr", "u1", 0x00C),
            ("offload_flags", "u1", 0x00D),
            ("pad", "u1", 0x00E),
            ("mode", "u1", 0x00F),
            ("exit_message", HV_MESSAGE_DTYPE, 0x010),
            # A byte union in the kernel; for TDX it is the TDX context.
            ("context", context, CONTEXT_OFFSET),
            ("vtl_ret_actions", _bytes(256), 0x510),
            ("proxy_irr", ("<u4", (8,)), 0x610),
            ("target_vtl", "u1", 0x630),
            ("proxy_irr_blocked", ("<u4", (8,)), 0x634),
            ("proxy_irr_exit", ("<u4", (8,)), 0x654),
        ],
        RUN_PAGE_SIZE,
    )


RUN_PAGE_DTYPE: Final = _run_page(TDX_VP_CONTEXT_DTYPE)
"""``hcl_run`` (1652 bytes) with the seed's TDX context layout."""

RUN_PAGE_TSC_DEADLINE_DTYPE: Final = _run_page(TDX_VP_CONTEXT_TSC_DEADLINE_DTYPE)
"""``hcl_run`` with the newer kernels' TSC-deadline context layout."""


def run_page_dtype(tsc_deadline: bool) -> np.dtype[np.void]:
    """The run-page dtype for a kernel with or without the TSC-deadline block."""
    if not isinstance(tsc_deadline, bool):
        raise TypeError(f"tsc_deadline must be a bool, got {type(tsc_deadline).__name__}")
    return RUN_PAGE_TSC_DEADLINE_DTYPE if tsc_deadline else RUN_PAGE_DTYPE
