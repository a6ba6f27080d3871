"""Runner costs on the simulator (and the stand-in device when available).

    python benchmarks/bench_runner.py

Prints: read_vmcs64 vs a no-op Cython method with the same arguments (the
target is at most 1.5x), read_private_regs, and accepting 1 GiB 2 MiB-aligned
with the host mapping it at 2 MiB (512 ACCEPTs) and at 4 KiB (512 failed
2 MiB attempts + 262,144 4 KiB accepts). Ratios come from one run.
"""

import sys
import time

import hcltdx
from hcltdx import GuestVtl, MemoryRange, TdxPrivateRegs, VmcsField
from hcltdx._core import _Baseline


def per_call_ns(fn, n, repeat=5):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        fn(n)
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


def main():
    n = 1_000_000
    vtl, field = GuestVtl.VTL0, VmcsField.VMX_VMCS_GUEST_CR3
    base = _Baseline()

    def noop(n, f=base.noop):
        for _ in range(n):
            f(vtl, field)

    hcl = hcltdx.Hcl.simulated(vp_count=1)
    runner = hcl.runner(0)

    def read(n, f=runner.read_vmcs64):
        for _ in range(n):
            f(vtl, field)

    regs = TdxPrivateRegs()

    def priv(n, f=runner.read_private_regs):
        for _ in range(n):
            f(regs)

    t_noop = per_call_ns(noop, n)
    t_read = per_call_ns(read, n)
    t_priv = per_call_ns(priv, n)
    print(f"{'operation':44} {'ns/call':>9}")
    print(f"{'no-op Cython method (vtl, field)':44} {t_noop:9.1f}")
    print(f"{'read_vmcs64 on the simulator':44} {t_read:9.1f}   ratio {t_read / t_noop:.2f}x")
    print(f"{'read_private_regs':44} {t_priv:9.1f}")
    runner.close()
    hcl.close()

    for host_map, label in (("2M", "host maps 2 MiB"), ("4K", "host maps 4 KiB")):
        hcl = hcltdx.Hcl.simulated(vp_count=1, memory_size=1 << 30, host_map=host_map)
        t0 = time.perf_counter()
        hcl.mshv_vtl.tdx_accept_pages(MemoryRange(0, 1 << 30))
        dt = time.perf_counter() - t0
        c = hcl.sim.counters()["MEM_PAGE_ACCEPT"]
        print(f"{'accept 1 GiB, ' + label:44} {dt * 1e3:9.1f} ms  ({c} ACCEPT calls, "
              f"{dt / c * 1e9:.0f} ns each)")
        hcl.close()

    try:
        from hcltdx import simdev
        ok, why = simdev.available()
    except ImportError as e:  # pragma: no cover
        ok, why = False, str(e)
    if not ok:
        print(f"stand-in device: skipped ({why})")
        return 0
    with simdev.mount(vp_count=1, in_process=False) as dev:
        hcl = hcltdx.Hcl.open(dev.path, vp_count=1)
        runner = hcl.runner(0)
        m = 20_000
        t_dev = per_call_ns(lambda k: [runner.read_vmcs64(vtl, field) for _ in range(k)], m, 3)
        print(f"{'read_vmcs64 on the stand-in device (pinned)':44} {t_dev:9.1f}")
        runner.close()
        hcl.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
