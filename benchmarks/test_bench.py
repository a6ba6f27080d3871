"""hcltdx and the plain-Python baseline, operation by operation, over the
in-process simulator and over the stand-in device (pytest-benchmark).

    PYTHONPATH=. pytest benchmarks/test_bench.py --benchmark-json out.json

Every case records ``extra_info`` (``impl``, ``backend``, ``op``, ``unit``,
``units``: units of work per timed iteration) so ``hcltdx bench`` can put
ns per unit next to the Rust binary's numbers for the same operation name.
Nothing here asserts a timing.
"""

from __future__ import annotations

import contextlib
import math
import os
import time

import pytest

from conftest import quick, round_seconds, rounds

MiB, GiB = 1 << 20, 1 << 30
SAMPLES = 64   # poll_vmcs rows per call

# name -> (unit, units per call, calls per timed iteration)
SINGLE = {
    "noop_cython": ("call", 1, 100),
    "read_vmcs64": ("call", 1, 100),
    "read_vmcs64[int args]": ("call", 1, 100),
    "write_vmcs64": ("call", 1, 100),
    "read_vmcs_batch[1]": ("field", 1, 100),
    "read_vmcs_batch[8]": ("field", 8, 10),
    "read_vmcs_batch[64]": ("field", 64, 1),
    "poll_vmcs[8]": ("sample", SAMPLES, 1),
    "private_regs": ("read+write", 1, 100),
    "snapshot": ("snapshot", 1, 1),
    "vmcs_field_code": ("call", 1, 100),
}
# name -> (device configuration, memory size)
SWEEPS = {
    "tdx_accept_pages[1GiB@2MiB]": ("acc2m", GiB),
    "tdx_accept_pages[64MiB@4KiB]": ("acc4k", 64 * MiB),
    "tdx_set_page_attributes[1GiB@2MiB]": ("attr2m", GiB),
    "tdx_set_page_attributes[64MiB@4KiB]": ("attr4k", 64 * MiB),
}
QUICK_SWEEP = 4 * MiB   # --quick: sweeps over the first 4 MiB only
HOST_MAP = {"acc2m": "2M", "attr2m": "2M", "acc4k": "4K", "attr4k": "4K"}
SIM_ONLY = {"noop_cython", "vmcs_field_code", "read_vmcs64[int args]"}
HCLTDX_ONLY = {"noop_cython", "read_vmcs64[int args]"}   # Rust and plain take ints anyway
# VTL0 full access, mask: VTL0 read/write/execute bits (spec 8.2).
ATTRIBUTES, MASK = 0x800F << 16, 0x000F << 16


def cases():
    for impl in ("hcltdx", "plain"):
        for backend in ("sim", "device"):
            for op in list(SINGLE) + list(SWEEPS):
                if op in SIM_ONLY and backend != "sim":
                    continue
                if op in HCLTDX_ONLY and impl != "hcltdx":
                    continue
                marks = [pytest.mark.device] if backend == "device" else []
                yield pytest.param(impl, backend, op, id=f"{impl}-{backend}-{op}", marks=marks)


def sweep_end(size: int) -> int:
    return min(size, QUICK_SWEEP) if quick() else size


# ---- hcltdx -------------------------------------------------------------------

def hcltdx_single(op, backend, devices, stack):
    from hcltdx import GuestVtl, Hcl, TdxPrivateRegs, VmcsField
    from hcltdx._core import _Baseline
    from hcltdx.tdx import vmcs_field_code

    if backend == "sim":
        hcl = stack.enter_context(Hcl.simulated(vp_count=1))
    else:
        hcl = stack.enter_context(Hcl.open(devices[0]["small"]))
    runner = stack.enter_context(hcl.runner(0))
    VTL0, VTL1 = GuestVtl.VTL0, GuestVtl.VTL1
    CR3 = VmcsField.VMX_VMCS_GUEST_CR3
    fields = [f for f in VmcsField.catalogue() if f.read_mask and f.width_bits == 64]
    reps = range(SINGLE[op][2])
    if op == "noop_cython":
        base = _Baseline()

        def run():
            for _ in reps:
                base.noop(VTL0, CR3)
    elif op == "read_vmcs64":
        def run():
            for _ in reps:
                runner.read_vmcs64(VTL0, CR3)
    elif op == "read_vmcs64[int args]":
        vtl_int, cr3_int = 0, int(CR3)

        def run():
            for _ in reps:
                runner.read_vmcs64(vtl_int, cr3_int)
    elif op == "write_vmcs64":
        def run():
            for _ in reps:
                runner.write_vmcs64(VTL0, CR3, 0xFFFFFFFFFFFFFFFF, 0x1000)
    elif op.startswith("read_vmcs_batch"):
        chosen = fields[:SINGLE[op][1]]

        def run():
            for _ in reps:
                runner.read_vmcs_batch(VTL0, chosen)
    elif op == "poll_vmcs[8]":
        chosen = fields[:8]

        def run():
            runner.poll_vmcs(VTL0, chosen, SAMPLES)
    elif op == "private_regs":
        regs = TdxPrivateRegs.new(VTL1)

        def run():
            for _ in reps:
                runner.read_private_regs(regs)
                runner.write_private_regs(regs)
    elif op == "snapshot":
        chosen = fields[:8]

        def run():
            runner.snapshot(vmcs=chosen)
    elif op == "vmcs_field_code":
        def run():
            for _ in reps:
                vmcs_field_code(CR3, VTL0)
    else:
        raise AssertionError(op)
    return run, None


def hcltdx_sweep(op, backend, devices, stack):
    from hcltdx import Hcl, MemoryRange

    config, size = SWEEPS[op]
    rng = MemoryRange(0, sweep_end(size))
    if backend == "sim":
        hcl = stack.enter_context(Hcl.simulated(vp_count=1, memory_size=size,
                                                host_map=HOST_MAP[config]))

        def reset():
            hcl.sim.reset()
            if config.startswith("attr"):
                hcl.mshv_vtl.tdx_accept_pages(MemoryRange(0, size))
    else:
        hcl = stack.enter_context(Hcl.open(devices[0][config]))

        def reset():
            devices[1](config)
    vtl = hcl.mshv_vtl
    if config.startswith("acc"):
        return (lambda: vtl.tdx_accept_pages(rng)), reset
    reset()
    return (lambda: vtl.tdx_set_page_attributes(rng, ATTRIBUTES, MASK)), None


# ---- plain Python ---------------------------------------------------------------

def plain_transport(backend, devices, simlib, stack, config="small", size=64 * MiB):
    import plain

    if backend == "sim":
        t = plain.PlainSim(simlib, memory_size=size, host_map=HOST_MAP.get(config, "2M"))
        reset = t.reset
    else:
        t = plain.PlainDevice(devices[0][config])

        def reset():
            devices[1](config)
    stack.callback(t.close)
    return t, reset


def plain_single(op, backend, devices, simlib, stack):
    import plain

    t, _ = plain_transport(backend, devices, simlib, stack)
    CR3 = 0x6802
    fields = plain.readable_64bit_fields(simlib)
    reps = range(SINGLE[op][2])
    if op == "read_vmcs64":
        def run():
            for _ in reps:
                t.read_vmcs64(0, CR3)
    elif op == "write_vmcs64":
        def run():
            for _ in reps:
                t.write_vmcs64(0, CR3, 0xFFFFFFFFFFFFFFFF, 0x1000)
    elif op.startswith("read_vmcs_batch"):
        chosen = fields[:SINGLE[op][1]]

        def run():
            for _ in reps:
                t.read_vmcs_batch(0, chosen)
    elif op == "poll_vmcs[8]":
        chosen = fields[:8]

        def run():
            t.poll_vmcs(0, chosen, SAMPLES)
    elif op == "private_regs":
        regs = t.read_private_regs()

        def run():
            for _ in reps:
                r = t.read_private_regs()
                t.write_private_regs(r)
        del regs
    elif op == "snapshot":
        chosen = fields[:8]

        def run():
            t.snapshot(chosen)
    elif op == "vmcs_field_code":
        code = plain.vmcs_field_code

        def run():
            for _ in reps:
                code(CR3, 0)
    else:
        raise AssertionError(op)
    return run, None


def plain_sweep(op, backend, devices, simlib, stack):
    config, size = SWEEPS[op]
    t, reset0 = plain_transport(backend, devices, simlib, stack, config, size)
    end = sweep_end(size)

    def reset():
        reset0()
        if config.startswith("attr") and backend == "sim":   # the device server accepts itself
            t.tdx_accept_pages(0, size)
    if config.startswith("acc"):
        return (lambda: t.tdx_accept_pages(0, end)), reset
    reset()
    return (lambda: t.tdx_set_page_attributes(0, end, ATTRIBUTES, MASK)), None


def calibrate(run, backend: str) -> int:
    """Iterations that take about one round (the Rust binary's rule: double
    until a tenth of the round, then scale), on the clock the round is timed
    with (``hcltdx bench`` times the simulator rows in thread CPU time)."""
    cpu = backend == "sim" and os.environ.get("HCLTDX_BENCH_SIM_CLOCK") == "cpu"
    clock = time.thread_time if cpu else time.perf_counter
    target, n = round_seconds(), 1
    run()   # warm: first-touch faults and cold caches are not the steady cost
    while True:
        t0 = clock()
        for _ in range(n):
            run()
        dt = clock() - t0
        if dt >= target / 10:
            return max(1, math.ceil(n * target / max(dt, 1e-9)))
        n *= 2


# ---- the benchmark -----------------------------------------------------------------

@pytest.mark.parametrize("impl,backend,op", cases())
def test_op(benchmark, request, impl, backend, op):
    devices = request.getfixturevalue("devices") if backend == "device" else None
    simlib = request.getfixturevalue("simlib") if impl == "plain" else None
    with contextlib.ExitStack() as stack:
        sweep = op in SWEEPS
        if impl == "hcltdx":
            make = hcltdx_sweep if sweep else hcltdx_single
            run, setup = make(op, backend, devices, stack)
        else:
            make = plain_sweep if sweep else plain_single
            run, setup = make(op, backend, devices, simlib, stack)
        if sweep:
            unit, units, n_iter = "sweep", 1, 1
        else:
            unit, per_call, inner = SINGLE[op]
            units = per_call * inner
            n_iter = calibrate(run, backend)
        benchmark.group = f"{backend}: {op}"
        benchmark.extra_info.update(impl=impl, backend=backend, op=op, unit=unit, units=units)
        if setup is not None:
            benchmark.pedantic(run, setup=setup, rounds=rounds(True), iterations=1)
        else:
            benchmark.pedantic(run, rounds=rounds(sweep), iterations=n_iter,
                               warmup_rounds=0 if sweep else 1)
