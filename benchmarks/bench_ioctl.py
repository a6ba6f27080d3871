"""MSHV_VTL_TDCALL round trips through the FUSE stand-in device.

VP.RD of GUEST_RIP, 20,000 calls per row, via hcltdx (``hcl.tdcall``) and
via Python's ``fcntl.ioctl`` on the same file; daemon as a thread of this
process or as a child process; placements:

* ``same CPU``: caller and daemon pinned to CPU 0;
* ``split``: caller on CPU 0, daemon on CPU 1;
* ``unpinned``: the benchmark pins nothing (hcltdx pins the calling thread
  to the VP's CPU for each call, as it must on a device).

Prints a table of median and p99 in microseconds. Run as root:
``python benchmarks/bench_ioctl.py [--calls N]``.
"""

import argparse
import contextlib
import fcntl
import os
import statistics
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import hcltdx  # noqa: E402
from hcltdx import simdev  # noqa: E402
from hcltdx.tdx import TdCallLeaf, vmcs_field_code  # noqa: E402
from hcltdx.vmx import VmcsField  # noqa: E402

TDCALL = 0xC038B832
VP_RD = int(TdCallLeaf.VP_RD)
RIP = int(vmcs_field_code(VmcsField.VMX_VMCS_GUEST_RIP, 0))


@contextlib.contextmanager
def caller_on(cpus):
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


def measure(call, n):
    for _ in range(min(1000, n)):
        call()
    clock = time.perf_counter_ns
    samples = [0] * n
    for i in range(n):
        t0 = clock()
        call()
        samples[i] = clock() - t0
    samples.sort()
    return statistics.median(samples) / 1000, samples[int(n * 0.99)] / 1000


def clients(path):
    hcl = hcltdx.Hcl.open(path)
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    buf = bytearray(56)
    request = struct.pack("<7Q", VP_RD, 0, RIP, 0, 0, 0, 0)

    def via_fcntl():
        buf[:] = request
        fcntl.ioctl(fd, TDCALL, buf)

    def via_hcltdx():
        hcl.tdcall(0, VP_RD, 0, RIP)

    def close():
        hcl.close()
        os.close(fd)

    return {"hcl.tdcall": via_hcltdx, "fcntl.ioctl": via_fcntl}, close


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args(argv)
    ok, why = simdev.available()
    if not ok:
        print(f"stand-in device unavailable: {why}")
        return 0
    ncpu = len(os.sched_getaffinity(0))
    vps = min(os.cpu_count(), 64)
    placements = [("same CPU", {0}, 0)]
    if ncpu >= 2:
        placements.append(("split", {0}, 1))
    placements.append(("unpinned", None, None))
    rows = []
    for in_process in (True, False):
        daemon = "thread" if in_process else "child process"
        for label, caller_cpus, daemon_cpu in placements:
            with simdev.mount(vp_count=vps, in_process=in_process, daemon_cpu=daemon_cpu) as dev:
                calls, close = clients(dev.path)
                try:
                    pin = caller_on(caller_cpus) if caller_cpus else contextlib.nullcontext()
                    with pin:
                        for name, call in calls.items():
                            med, p99 = measure(call, args.calls)
                            rows.append((daemon, label, name, med, p99))
                finally:
                    close()
    print(f"MSHV_VTL_TDCALL (VP.RD) through the FUSE stand-in, {args.calls} calls, "
          f"{ncpu} CPUs, kernel {os.uname().release}")
    print(f"{'daemon':<14} {'placement':<10} {'client':<12} {'median µs':>10} {'p99 µs':>9}")
    for daemon, label, name, med, p99 in rows:
        print(f"{daemon:<14} {label:<10} {name:<12} {med:>10.1f} {p99:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
