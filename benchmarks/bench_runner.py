"""Single-call costs of the runner on the simulator, against yardsticks
measured in the same run.

    python benchmarks/bench_runner.py [--quick] [--rust PATH] [--ir] [--cpu N]

Yardsticks: a no-op ``cpdef`` method called with three ints (the cost of any
Cython method call from Python), and a compiled loop over the same C backend
table (``_Baseline.table_loop``; with ``--rust PATH`` also the per-call time
printed by the Rust program at PATH, see benchmarks/rust_table/; the batch
rows are compared with the same program reading the batch's 64 fields in a
loop). Every timing is the best of several interleaved rounds, the Rust
program's runs among them; ratios come from one run. The process (and the
Rust program) runs pinned to one CPU.

The VMCS value read is a large one (CR3 = 0x1_2345_6000 is written first), so
the result is a fresh Python int as users get, not a cached small int.
Variants show the argument types users pass: plain ints, ``VmcsField`` and
``GuestVtl`` members bound to locals, and the members looked up on the class
in the loop (``runner.read_vmcs64(GuestVtl.VTL0, VmcsField.X)``).

``--ir`` re-runs the same loops under callgrind (valgrind) and prints
instructions per call, a measure that other load on the machine does not
disturb (it needs valgrind and its callgrind.h, and a C compiler); with
``--rust`` the Rust loop is counted too (two runs of different lengths,
differenced).

Then: read_private_regs, and accepting 1 GiB (512 2 MiB ACCEPTs; 262,144 4 KiB
ACCEPTs after 512 failed 2 MiB attempts), and the stand-in device if present.
"""

import argparse
import ctypes
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

import hcltdx
from hcltdx import GuestVtl, MemoryRange, TdCallLeaf, TdxPrivateRegs, VmcsField, vmcs_field_code
from hcltdx._core import _Baseline

CR3 = 0x1_2345_6000
ALL = (1 << 64) - 1


def best_ns(fn, n, rounds):
    """Per-call ns of fn(n), best of `rounds` runs."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        fn(n)
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


def interleaved(cases, n, rounds):
    """{name: best ns/call}, running each case once per round so that a noisy
    spell of the machine hits every case alike. A case that returns a number
    (a program timing itself) gives that number instead of its wall time."""
    best = {name: float("inf") for name, _ in cases}
    for _ in range(rounds):
        for name, fn in cases:
            t0 = time.perf_counter_ns()
            got = fn(n)
            t = got if isinstance(got, float) else (time.perf_counter_ns() - t0) / n
            best[name] = min(best[name], t)
    return best


def rust_ns(path, iters, codes=None, runs=5):
    """ns per VP.RD of the Rust table loop; with ``codes``, ns per field of a
    loop over those field codes (each value cut to its width). The best of
    ``runs`` timed runs of iters/5 calls."""
    argv = [path, str(iters), ",".join(f"{c:x}" for c in codes) if codes else "-", str(runs)]
    key = "rust_batch_ns_per_field" if codes else "rust_vp_rd_ns_per_call"
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith(key):
            return float(line.split()[1])
    raise RuntimeError(f"{path} printed no {key} line:\n{out}")


MARKS_C = r"""
#include <valgrind/callgrind.h>
void cg_start(void) { CALLGRIND_START_INSTRUMENTATION; }
void cg_zero(void) { CALLGRIND_ZERO_STATS; }
void cg_dump(const char *name) { CALLGRIND_DUMP_STATS_AT(name); }
"""


def instructions(cases, n, workdir):
    """Inside callgrind: run each case once for n calls between a zeroing and
    a dump of the counters; the parent reads the dumps."""
    lib = ctypes.CDLL(os.path.join(workdir, "marks.so"))
    lib.cg_start()
    for name, fn in cases:
        fn(10)  # warm (specialisation, caches)
        lib.cg_zero()
        fn(n)
        lib.cg_dump(f"case={name} n={n}".encode())
    return {}


def run_under_callgrind(argv):
    """{case: instructions per call}, from a child under callgrind."""
    vg = shutil.which("valgrind")
    if vg is None:
        raise SystemExit("--ir needs valgrind")
    work = tempfile.mkdtemp(prefix="hcltdx_ir_")
    try:
        with open(os.path.join(work, "marks.c"), "w") as f:
            f.write(MARKS_C)
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", os.path.join(work, "marks.so"),
                        os.path.join(work, "marks.c")], check=True)
        subprocess.run([vg, "--tool=callgrind", "--instr-atstart=no",
                        f"--callgrind-out-file={work}/cg.out.%p", sys.executable,
                        os.path.abspath(__file__), "--ir-child", work, *argv],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out = {}
        for path in glob.glob(os.path.join(work, "cg.out.*")):
            desc = total = None
            with open(path) as f:
                for line in f:
                    if line.startswith("desc: Trigger: Client Request: case="):
                        desc = line.split("case=", 1)[1].split()
                    elif line.startswith(("summary:", "totals:")):
                        total = int(line.split()[1])
            if desc and total is not None:
                name, n = desc[0], int(desc[1].split("=")[1])
                out[name] = total / n
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def rust_ir(path, codes=None):
    """Instructions per VP.RD of the Rust table loop (per field with
    ``codes``): callgrind totals of two runs of different lengths,
    differenced (start-up and set-up cancel). The program makes a tenth of
    its rounds as warm-up, then 5 rounds of a fifth."""
    vg = shutil.which("valgrind")
    totals = {}
    tail = [",".join(f"{c:x}" for c in codes)] if codes else []
    width = len(codes) if codes else 1
    calls = {}
    with tempfile.TemporaryDirectory(prefix="hcltdx_ir_rust_") as work:
        for iters in (100_000, 300_000):
            out = os.path.join(work, f"cg.{iters}")
            subprocess.run([vg, "--tool=callgrind", f"--callgrind-out-file={out}", path, str(iters),
                            *tail], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            with open(out) as f:
                totals[iters] = next(int(line.split()[1]) for line in f
                                     if line.startswith(("summary:", "totals:")))
            per = max(iters // width, 1)
            calls[iters] = (per // 10 + 5 * (per // 5)) * width
    return (totals[300_000] - totals[100_000]) / (calls[300_000] - calls[100_000])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer iterations")
    ap.add_argument("--rust", metavar="PATH", help="Rust table-loop binary (benchmarks/rust_table)")
    ap.add_argument("--ir", action="store_true", help="also count instructions per call (callgrind)")
    ap.add_argument("--ir-child", metavar="DIR", help=argparse.SUPPRESS)
    ap.add_argument("--cpu", type=int, help="CPU to pin to (default: the first this process may use)")
    args = ap.parse_args(argv)
    # One CPU for the whole run, the Rust program included (it inherits it):
    # a migration mid-round costs more than the calls being timed.
    os.sched_setaffinity(0, {args.cpu if args.cpu is not None else min(os.sched_getaffinity(0))})
    n = 200_000 if args.quick else 1_000_000
    rounds = 5 if args.quick else 9

    base = _Baseline()
    hcl = hcltdx.Hcl.simulated(vp_count=1)
    runner = hcl.runner(0)
    vtl, field = GuestVtl.VTL0, VmcsField.VMX_VMCS_GUEST_CR3
    runner.write_vmcs64(vtl, field, ALL, CR3)
    assert runner.read_vmcs64(vtl, field) == CR3
    code = vmcs_field_code(field, vtl)
    raw = int(field)
    readable = [f for f in VmcsField.catalogue() if f.read_mask and (int(f) & 1) == 0]
    fields64 = readable[:64]
    assert len(fields64) == 64
    fields64_u32 = np.array(fields64, dtype=np.uint32)
    out64 = np.empty(64, dtype=np.uint64)
    nb = max(n // 64, 1000)

    def noop3(k, f=base.noop3):
        for _ in range(k):
            f(0, 0x6802, 0)

    def empty_loop(k):
        for _ in range(k):
            pass

    def attr_vtl(k):
        for _ in range(k):
            GuestVtl.VTL0

    def attr_field(k):
        for _ in range(k):
            VmcsField.VMX_VMCS_GUEST_CR3

    def read_ints(k, f=runner.read_vmcs64, r=raw):
        for _ in range(k):
            f(0, r)

    def read_members(k, f=runner.read_vmcs64, v=vtl, fl=field):
        for _ in range(k):
            f(v, fl)

    def read_demo(k):
        for _ in range(k):
            runner.read_vmcs64(GuestVtl.VTL0, VmcsField.VMX_VMCS_GUEST_CR3)

    def write_members(k, f=runner.write_vmcs64, v=vtl, fl=field):
        for _ in range(k):
            f(v, fl, ALL, CR3)

    def tdcall(k, f=hcl.tdcall, leaf=int(TdCallLeaf.VP_RD)):
        for _ in range(k):
            f(0, leaf, rdx=code)

    def table(k):
        base.table_loop(hcl, 0, code, k)

    def batch_list(k, f=runner.read_vmcs_batch, v=vtl):
        for _ in range(k):
            f(v, fields64, out64)

    def batch_u32(k, f=runner.read_vmcs_batch, v=vtl):
        for _ in range(k):
            f(v, fields64_u32, out64)

    def batch1_list(k, f=runner.read_vmcs_batch, v=vtl, one=[field]):
        for _ in range(k):
            f(v, one)

    def batch1_u32(k, f=runner.read_vmcs_batch, v=vtl, one=np.array([field], dtype=np.uint32)):
        for _ in range(k):
            f(v, one)

    single_cases = [
        ("noop3", noop3), ("empty", empty_loop), ("attr_vtl", attr_vtl),
        ("attr_field", attr_field), ("read_ints", read_ints),
        ("read_members", read_members), ("read_demo", read_demo),
        ("write", write_members), ("tdcall", tdcall), ("table", table),
        ("batch1_list", batch1_list), ("batch1_u32", batch1_u32),
    ]
    batch_cases = [("batch_list", batch_list), ("batch_u32", batch_u32)]
    if args.ir_child:
        instructions(single_cases, 20_000, args.ir_child)
        instructions(batch_cases, 500, args.ir_child)
        return 0
    # The Rust program runs inside the same rounds, one timed run of as many
    # calls as the Python cases make each time, so that load on the machine
    # falls on both sides alike and each side's figure is a best of `rounds`.
    codes64 = [vmcs_field_code(f, vtl) for f in fields64]
    if args.rust:
        single_cases.append(("rust", lambda k: rust_ns(args.rust, 5 * k, runs=1)))
        batch_cases.append(("rust64", lambda k: 64 * rust_ns(args.rust, 5 * 64 * k, codes64, runs=1)))
    single = interleaved(single_cases, n, rounds)
    batch = interleaved(batch_cases, nb, rounds)
    per_field = {k: v / 64 for k, v in batch.items()}
    t_rust = single.get("rust")
    t_rust64 = per_field.get("rust64")

    t0 = single["noop3"]
    tt = single["table"]
    print(f"{'operation':58} {'ns/call':>8}  {'/no-op':>7} {'/table':>7}"
          + (f" {'/Rust':>6}" if t_rust else ""))

    def row(label, t, vs_table=True, rust=None):
        rust = rust or t_rust
        s = f"{label:58} {t:8.1f}  {t / t0:6.2f}x"
        s += f" {t / tt:6.2f}x" if vs_table else " " * 8
        if rust:
            s += f" {t / rust:5.2f}x" if vs_table else ""
        print(s)

    row("no-op cpdef method, 3 int args", t0, False)
    row("empty loop iteration (subtract from the two below)", single["empty"], False)
    print(f"{'GuestVtl.VTL0 (attribute load, loop removed)':58} "
          f"{single['attr_vtl'] - single['empty']:8.1f}")
    print(f"{'VmcsField.VMX_VMCS_GUEST_CR3 (attribute load, loop removed)':58} "
          f"{single['attr_field'] - single['empty']:8.1f}")
    row("read_vmcs64(0, 0x6802)", single["read_ints"])
    row("read_vmcs64(vtl, field) with members in locals", single["read_members"])
    row("read_vmcs64(GuestVtl.VTL0, VmcsField.X) as in the demo", single["read_demo"])
    row("write_vmcs64(vtl, field, mask, value)", single["write"])
    row("hcl.tdcall(0, VP_RD, rdx=code)", single["tdcall"])
    row("C loop over the backend table, per VP.RD", tt)
    if t_rust:
        print(f"{'Rust loop over the backend table, per VP.RD':58} {t_rust:8.1f}")
    row("read_vmcs_batch of 1 field, list", single["batch1_list"])
    row("read_vmcs_batch of 1 field, uint32 array", single["batch1_u32"])
    # The batches' Rust column: a Rust loop over the same 64 fields.
    row("read_vmcs_batch of 64 fields (list), per field", per_field["batch_list"], rust=t_rust64)
    row("read_vmcs_batch of 64 fields (uint32 array), per field", per_field["batch_u32"],
        rust=t_rust64)
    if t_rust64:
        print(f"{'Rust loop over the same 64 fields, per field':58} {t_rust64:8.1f}")

    if args.ir:
        ir = run_under_callgrind([a for a in argv if a != "--ir"])
        for k in ("batch_list", "batch_u32"):
            ir[k] /= 64
        i0, it = ir["noop3"], ir["table"]
        ir_rust = rust_ir(args.rust) if args.rust else None
        ir_rust64 = rust_ir(args.rust, codes64) if args.rust else None
        print()
        print(f"{'instructions per call (callgrind, one run)':58} {'Ir':>8}  {'/no-op':>7} {'/table':>7}"
              + (f" {'/Rust':>7}" if ir_rust else ""))
        labels = [
            ("noop3", "no-op cpdef method, 3 int args"),
            ("empty", "empty loop iteration"),
            ("attr_vtl", "loop with GuestVtl.VTL0"),
            ("attr_field", "loop with VmcsField.VMX_VMCS_GUEST_CR3"),
            ("read_ints", "read_vmcs64(0, 0x6802)"),
            ("read_members", "read_vmcs64(vtl, field), members in locals"),
            ("read_demo", "read_vmcs64(GuestVtl.VTL0, VmcsField.X)"),
            ("write", "write_vmcs64(vtl, field, mask, value)"),
            ("tdcall", "hcl.tdcall(0, VP_RD, rdx=code)"),
            ("table", "C loop over the backend table, per VP.RD"),
            ("batch1_list", "read_vmcs_batch of 1 field, list"),
            ("batch1_u32", "read_vmcs_batch of 1 field, uint32 array"),
            ("batch_list", "read_vmcs_batch of 64 fields (list), per field"),
            ("batch_u32", "read_vmcs_batch of 64 fields (uint32), per field"),
        ]
        for key, label in labels:
            rust = ir_rust64 if key in ("batch_list", "batch_u32") else ir_rust
            print(f"{label:58} {ir[key]:8.0f}  {ir[key] / i0:6.2f}x {ir[key] / it:6.2f}x"
                  + (f" {ir[key] / rust:6.2f}x" if rust else ""))
        if ir_rust:
            print(f"{'Rust loop over the backend table, per VP.RD':58} {ir_rust:8.0f}  "
                  f"{ir_rust / i0:6.2f}x {ir_rust / it:6.2f}x {1:6.2f}x")
            print(f"{'Rust loop over the same 64 fields, per field':58} {ir_rust64:8.0f}  "
                  f"{ir_rust64 / i0:6.2f}x {ir_rust64 / it:6.2f}x")
        print()

    regs = TdxPrivateRegs()

    def priv(k, f=runner.read_private_regs):
        for _ in range(k):
            f(regs)

    print(f"{'read_private_regs':58} {best_ns(priv, n // 10, 3):8.1f}")
    runner.close()
    hcl.close()

    for host_map, label in (("2M", "host maps 2 MiB"), ("4K", "host maps 4 KiB")):
        hcl = hcltdx.Hcl.simulated(vp_count=1, memory_size=1 << 30, host_map=host_map)
        t1 = time.perf_counter()
        hcl.mshv_vtl.tdx_accept_pages(MemoryRange(0, 1 << 30))
        dt = time.perf_counter() - t1
        c = hcl.sim.counters()["MEM_PAGE_ACCEPT"]
        print(f"{'accept 1 GiB, ' + label:58} {dt * 1e3:8.1f} ms ({c} ACCEPT calls, "
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
        t_dev = best_ns(lambda k: [runner.read_vmcs64(vtl, field) for _ in range(k)], m, 3)
        t_tdc = best_ns(lambda k: [hcl.tdcall(0, 9, rdx=code) for _ in range(k)], m, 3)
        print(f"{'read_vmcs64 on the stand-in device (pinned)':58} {t_dev:8.1f}")
        print(f"{'hcl.tdcall on the stand-in device (pinned runner thread)':58} {t_tdc:8.1f}")
        runner.close()
        hcl.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
