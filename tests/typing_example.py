"""Checked by mypy in tests/test_typing.py: the public API as users write it."""

import numpy as np

import hcltdx
from hcltdx import GuestVtl, MemoryRange, TdxPrivateRegs, VmcsField


def tour() -> int:
    with hcltdx.Hcl.simulated(vp_count=1) as hcl:
        hcl.mshv_vtl.tdx_accept_pages(MemoryRange(0, 0x200000))
        with hcl.runner(0) as r:
            cr3: int = r.read_vmcs64(GuestVtl.VTL0, VmcsField.VMX_VMCS_GUEST_CR3)
            old: int = r.write_vmcs32(GuestVtl.VTL1, VmcsField.VMX_VMCS_PROCESSOR_CONTROLS, 1, 1)
            regs = TdxPrivateRegs.new(GuestVtl.VTL0)
            r.read_private_regs(regs)
            gps: np.ndarray = r.tdx_enter_guest_gps()
            out = hcl.tdcall(0, hcltdx.TdCallLeaf.VP_RD, rdx=0x2420000300006802)
            ok: bool = out.rax.is_success
            return cr3 + old + int(gps[0]) + int(ok) + regs.rip
