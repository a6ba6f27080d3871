"""Simulator costs (prints numbers only; never asserts a time).

    python benchmarks/bench_sim.py          # or: pytest benchmarks/bench_sim.py --benchmark-only
"""

import time

from hcltdx._sim import Sim

RIP_VTL0 = 0x242000030000681E


def _per_call(fn, n):
    t0 = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - t0) / n


def test_sim_vp_rd(benchmark):
    sim = Sim(vp_count=1)
    benchmark(sim._tdcall, 0, 9, 0, RIP_VTL0)


def test_hcl_vp_rd(benchmark):
    import hcltdx
    hcl = hcltdx.Hcl.simulated(vp_count=1)
    benchmark(hcl.tdcall, 0, 9, 0, RIP_VTL0)


def test_accept_1gib_2m(benchmark):
    def run():
        sim = Sim(vp_count=1, memory_size=1 << 30)
        for gpa in range(0, 1 << 30, 1 << 21):
            sim._tdcall(0, 6, gpa | 1)
    benchmark.pedantic(run, rounds=3)


def main():
    sim = Sim(vp_count=1)
    print(f"Sim._tdcall VP.RD: {_per_call(lambda: sim._tdcall(0, 9, 0, RIP_VTL0), 200_000):.0f} ns/call")
    try:
        import hcltdx
        hcl = hcltdx.Hcl.simulated(vp_count=1)
        print(f"Hcl.tdcall VP.RD:  {_per_call(lambda: hcl.tdcall(0, 9, 0, RIP_VTL0), 200_000):.0f} ns/call")
    except (ImportError, AttributeError):
        pass
    big = Sim(vp_count=1, memory_size=1 << 30)
    t0 = time.perf_counter()
    for gpa in range(0, 1 << 30, 1 << 21):
        big._tdcall(0, 6, gpa | 1)
    print(f"accept 1 GiB as 512 x 2 MiB: {(time.perf_counter() - t0) * 1e3:.1f} ms")
    print(f"footprint, 1 GiB TD: {big.footprint()} bytes")
    print(f"footprint, 4 GiB TD: {Sim(vp_count=1, memory_size=4 << 30).footprint()} bytes")


if __name__ == "__main__":
    main()
