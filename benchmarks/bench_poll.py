"""Batch reads, polling, snapshots and tracing: what they cost.

    python benchmarks/bench_poll.py [--quick]

Prints a table per backend (the in-process simulator and, when FUSE is
available, the stand-in device). Numbers only; nothing here is
a pass/fail check.
"""

import argparse
import gc
import threading
import time

import numpy as np

from hcltdx import GuestVtl, Hcl, VmcsField

VTL0 = GuestVtl.VTL0
FIELDS = [f for f in VmcsField.catalogue() if f.read_mask and f.width_bits == 64][:16]


def best(fn, repeat=5):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def row(label, value, unit):
    print(f"  {label:<52} {value:>12.1f} {unit}")


def python_counter_rate(seconds, busy=None):
    """Increments per second of a pure-Python loop, optionally while ``busy``
    runs in another thread."""
    stop = threading.Event()
    count = [0]

    def counter():
        n = 0
        while not stop.is_set():
            n += 1
        count[0] = n

    if busy is not None:
        started = threading.Event()
        worker = threading.Thread(target=busy, args=(started, stop))
        worker.start()
        started.wait()
    t = threading.Thread(target=counter)
    t0 = time.perf_counter()
    t.start()
    time.sleep(seconds)
    stop.set()
    t.join()
    elapsed = time.perf_counter() - t0
    if busy is not None:
        worker.join()
    return count[0] / elapsed


def bench(name, make, quick):
    n_iter = 200 if quick else 2000
    hcl = make()
    r = hcl.runner(0)
    print(f"\n{name}: {len(FIELDS)} fields, {n_iter} iterations")
    enc = np.array([int(f) for f in FIELDS], dtype=np.uint32)
    out = np.empty(len(FIELDS), dtype=np.uint64)

    def py_loop():
        for _ in range(n_iter):
            for f in FIELDS:
                r.read_vmcs64(VTL0, f)

    def batch_list():
        for _ in range(n_iter):
            r.read_vmcs_batch(VTL0, FIELDS)

    def batch_array():
        for _ in range(n_iter):
            r.read_vmcs_batch(VTL0, enc, out=out)

    per = n_iter * len(FIELDS)
    t_py = best(py_loop)
    row("read_vmcs64, Python loop (per field)", t_py / per * 1e9, "ns")
    row("read_vmcs_batch, list of VmcsField (per field)", best(batch_list) / per * 1e9, "ns")
    row("read_vmcs_batch, uint32 array + out (per field)", best(batch_array) / per * 1e9, "ns")
    t_poll = best(lambda: r.poll_vmcs(VTL0, enc, n_iter))
    row("poll_vmcs, interval 0 (per field)", t_poll / per * 1e9, "ns")
    row("  speed-up of poll over the Python loop", t_py / t_poll, "x")

    # Snapshots per second vs numpy copying the same bytes out of the views.
    snaps = 200 if quick else 2000
    rec = r.recorder(snaps, vmcs=FIELDS)

    def take_all():
        rec.clear()
        for _ in range(snaps):
            rec.take()

    ctx, a0, a1 = r.tdx_vp_context(), r.tdx_apic_page(0), r.tdx_apic_page(1)
    dst = np.empty((), dtype=rec.dtype)

    def numpy_copy():
        for _ in range(snaps):
            dst["context"] = ctx
            dst["apic_vtl0"] = a0
            dst["apic_vtl1"] = a1

    # The same bytes through flat uint8 views (numpy's best case).
    raw = np.empty(1024 + 8192, dtype=np.uint8)
    b_ctx = np.frombuffer(ctx, dtype=np.uint8)
    b_a0 = np.frombuffer(a0, dtype=np.uint8)
    b_a1 = np.frombuffer(a1, dtype=np.uint8)

    def numpy_bytes():
        for _ in range(snaps):
            raw[:1024] = b_ctx
            raw[1024:5120] = b_a0
            raw[5120:] = b_a1

    rec_nov = r.recorder(snaps)

    def take_no_vmcs():
        rec_nov.clear()
        for _ in range(snaps):
            rec_nov.take()

    row("Recorder.take, pages + private regs + 2x16 VMCS (/s)", snaps / best(take_all), "/s")
    row("Recorder.take, pages + private regs only (/s)", snaps / best(take_no_vmcs), "/s")
    row("numpy: assign the three record views (/s)", snaps / best(numpy_copy), "/s")
    row("numpy: copy the same bytes as uint8 views (/s)", snaps / best(numpy_bytes), "/s")
    row("runner.snapshot(vmcs=...) (/s)",
        snaps / best(lambda: [r.snapshot(vmcs=FIELDS) for _ in range(snaps)]), "/s")
    del ctx, a0, a1, b_ctx, b_a0, b_a1

    # Tracing: off costs one NULL check on the hot path.
    f = VmcsField.VMX_VMCS_GUEST_CR3

    def reads():
        for _ in range(n_iter * 10):
            r.read_vmcs64(VTL0, f)

    off = best(reads)
    with hcl.trace(1 << 16):
        on = best(reads)
    row("read_vmcs64, trace off", off / (n_iter * 10) * 1e9, "ns")
    row("read_vmcs64, trace on", on / (n_iter * 10) * 1e9, "ns")
    gc.collect()
    r.close()

    # GIL release: a Python counter in one thread while another polls.
    def poller(started, stop):
        try:
            pr = hcl.runner(1)
        finally:
            started.set()   # never leave the main thread waiting on a failed start
        while not stop.is_set():
            pr.poll_vmcs(VTL0, enc, 2000)
        pr.close()

    secs = 0.5 if quick else 2.0
    solo = python_counter_rate(secs)
    shared = python_counter_rate(secs, poller)
    row("Python counter alone (M increments/s)", solo / 1e6, "M/s")
    row("Python counter while polling in another thread", shared / 1e6, "M/s")
    row("  ratio (target >= 80%)", 100 * shared / solo, "%")
    hcl.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer iterations")
    args = ap.parse_args()
    bench("simulator", lambda: Hcl.simulated(vp_count=2), args.quick)
    from hcltdx import simdev

    ok, why = simdev.available()
    if not ok:
        print(f"\nstand-in device skipped: {why}")
        return
    with simdev.mount(vp_count=2, memory_size=64 << 20) as dev:
        bench("stand-in device (FUSE, real ioctl)", lambda: Hcl.open(dev.path, vp_count=2),
              args.quick)


if __name__ == "__main__":
    main()
