"""A tour of hcltdx on the embedded simulator: ``hcltdx demo``.

Creates a simulated TD, accepts its memory the way OpenHCL does, opens a
runner, programs a few VMCS fields and the private registers, and prints
what the TDX module saw.
"""

from __future__ import annotations

import time

import hcltdx
from hcltdx import (
    GpaVmAttributes,
    GpaVmAttributesMask,
    GuestVtl,
    MemoryRange,
    TdgMemPageAttrWriteR8,
    TdgMemPageGpaAttr,
    TdxL2Ctls,
    TdxPrivateRegs,
    VmcsField,
)


def run(vp_count: int = 2, memory_size: int = 1 << 30, out=print) -> dict:
    """Run the tour; returns the numbers it printed (for tests)."""
    result: dict = {}
    with hcltdx.Hcl.simulated(vp_count=vp_count, memory_size=memory_size) as hcl:
        out(f"{hcl}: {memory_size >> 20} MiB of private memory, host maps it at 2 MiB")

        attrs = TdgMemPageGpaAttr(l2_vm1=GpaVmAttributes.FULL_ACCESS)
        mask = TdgMemPageAttrWriteR8(l2_vm1=GpaVmAttributesMask.ALL_CHANGED)
        t0 = time.perf_counter()
        hcl.mshv_vtl.tdx_accept_pages(MemoryRange(0, memory_size), (attrs, mask))
        dt = time.perf_counter() - t0
        counters = hcl.sim.counters()
        out(f"accepted {memory_size >> 20} MiB in {dt * 1e3:.1f} ms: "
            f"{counters['MEM_PAGE_ACCEPT']} ACCEPT + {counters['MEM_PAGE_ATTR_WR']} ATTR.WR calls")
        result["accept_calls"] = counters["MEM_PAGE_ACCEPT"]

        with hcl.runner(0) as runner:
            vtl0 = GuestVtl.VTL0
            runner.write_vmcs64(vtl0, VmcsField.VMX_VMCS_GUEST_CR3, ~0 & (2**64 - 1), 0x1000)
            runner.write_vmcs64(vtl0, VmcsField.VMX_VMCS_GUEST_CR0, ~0 & (2**64 - 1), 0x80000031)
            runner.write_vmcs32(vtl0, VmcsField.VMX_VMCS_ENTRY_CONTROLS, 0xFFFFFFFF, 0x200)
            runner.set_l2_ctls(vtl0, TdxL2Ctls(enable_shared_ept=True, enable_tdvmcall=True))
            cr3 = runner.read_vmcs64(vtl0, VmcsField.VMX_VMCS_GUEST_CR3)
            out(f"VTL0 guest CR3 = {cr3:#x}, CR0 = "
                f"{runner.read_vmcs64(vtl0, VmcsField.VMX_VMCS_GUEST_CR0):#x}")
            result["cr3"] = cr3

            regs = TdxPrivateRegs.new(vtl0)
            regs.rip = 0xFFF0
            runner.write_private_regs(regs)
            gps = runner.tdx_enter_guest_gps()  # a zero-copy numpy view of the run page
            gps[0] = 0x1234
            out(f"private registers written: rip={regs.rip:#x}, "
                f"entry flags {int(regs.vp_entry_flags):#018x}; gps[RAX] = {int(gps[0]):#x}")
            del gps

            n = 200_000
            t0 = time.perf_counter()
            for _ in range(n):
                runner.read_vmcs64(vtl0, VmcsField.VMX_VMCS_GUEST_CR3)
            per = (time.perf_counter() - t0) / n * 1e9
            out(f"read_vmcs64 through the simulator: {per:.0f} ns per call")
            result["read_ns"] = per

        counters = hcl.sim.counters()
        out("tdcalls by leaf: " + ", ".join(f"{k}={v}" for k, v in counters.items() if v))
        result["counters"] = counters
    return result


def main_job(vp_count: int = 2, memory_size: int = 1 << 30, seconds: float = 3.0,
             outdir: str = "hcltdx-demo", out=print, tour: bool = True, seed: int = 1,
             rate: float = 10_000.0) -> int:
    """The job the README's first command runs: the tour, then a recording of
    VP 0 on the simulator with its synthetic guest on, and the report of it.
    Prints where the files are; returns 0."""
    import os

    from hcltdx import record, report
    from hcltdx.cli import DEFAULT_FIELDS, parse_field

    if tour:
        out("== the API tour ==")
        run(vp_count=vp_count, memory_size=memory_size, out=out)
        out("")
    os.makedirs(outdir, exist_ok=True)
    fields = [parse_field(f) for f in DEFAULT_FIELDS]
    samples = max(1, int(seconds * rate))
    out(f"== recording {seconds:g} s of VP 0 at {rate:g} samples/s (simulator, synthetic guest) ==")
    with hcltdx.Hcl.simulated(vp_count=vp_count, memory_size=memory_size) as hcl:
        hcl.sim.guest(True, seed=seed, clock="wall")
        with hcl.runner(0) as runner:
            t0 = time.perf_counter()
            rows = runner.poll_vmcs(GuestVtl.VTL0, [e for _, e in fields], samples,
                                    interval_ns=int(1e9 / rate))
            dt = time.perf_counter() - t0
    import socket

    meta = {"device": "sim", "simulator": True, "guest": True, "seed": seed,
            "host": socket.gethostname(), "vp": 0, "vtl": 0, "interval_ns": int(1e9 / rate),
            "hcltdx_version": hcltdx.__version__, "started": time.time() - dt}
    path = os.path.join(outdir, "recording.npz")
    record.save(path, rows, meta)
    out(f"recorded {len(rows)} samples of {len(fields)} fields in {dt:.2f} s")
    summary, files = report.write(record.load(path), path, os.path.join(outdir, "report"))
    out("")
    out(report.render_text(summary))
    out("files:")
    for f in [path, *files]:
        out(f"  {os.path.abspath(f)}")
    out("next: hcltdx report " + os.path.abspath(path) + "   (or hcltdx -h)")
    return 0
