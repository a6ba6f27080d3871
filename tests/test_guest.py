"""The synthetic guest (docs/guest.md): off, the model is untouched; on, every
value at a given clock point equals the documented formula, recomputed here
independently of the C code."""

import numpy as np
import pytest

from hcltdx import GuestVtl, VmcsField as F
from hcltdx._cabi import vmcs_catalogue

M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
CODE_BASE, CODE_SIZE = 0xFFFFFFFF81000000, 0x100000
STACK_BASE, STACK_STRIDE, STACK_SIZE = 0xFFFFC90000000000, 0x10000, 0x4000
CR3_ROOTS = (0x100000, 0x300000, 0x500000, 0x700000)
# docs/guest.md, "Exits": 16 buckets by the top 4 bits of x.
BUCKETS = [31] * 4 + [32] * 2 + [30] * 3 + [10] + [48] * 2 + [12] + [28] + [1] * 2
PORTS = (0x3F8, 0x60, 0x64, 0xCF8, 0xCFC, 0x70, 0x71, 0x80)
MEMORY = 64 << 20  # conftest's simulator


def mix64(x):
    x = (x + GOLDEN) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def expected(seed, vp, t, memory=MEMORY):
    h = mix64(seed ^ ((vp * GOLDEN) & M64))
    us = t // 1000
    d = us % 2048
    depth = d if d < 1024 else 2048 - d
    e = {
        "rip": CODE_BASE + ((h & 0xFFFF0) + 16 * us) % CODE_SIZE,
        "rsp": STACK_BASE + vp * STACK_STRIDE + STACK_SIZE - 8 - 8 * depth,
        "cr3": CR3_ROOTS[mix64((h + t // 10_000_000) & M64) & 3],
        "timer": 0xFFFFFFFF - (((3 * t) >> 5) & 0xFFFFFFFF),
    }
    n = t // 100_000
    x = mix64(h ^ ((n * GOLDEN) & M64))
    reason = BUCKETS[x >> 60]
    qual = gpa = gla = length = intr = 0
    if reason in (31, 32, 10):
        length = 2
    elif reason == 12:
        length = 1
    elif reason == 30:
        qual = PORTS[x & 7] << 16 | ((x >> 3) & 1) << 3 | (3 if (x >> 4) & 1 else 0)
        length = 1
    elif reason == 28:
        qual = 3 | ((x >> 8) & 0xF) << 8
        length = 3
    elif reason == 48:
        gpa = ((x >> 16) % (memory // 4096)) * 4096 + ((x >> 4) & 0xFF8)
        gla = 0xFFFF888000000000 + gpa
        qual = (2 if (x >> 3) & 1 else 1) | 0x80 | 0x100
    elif reason == 1:
        intr = 0x80000000 | (0x20 + (x & 0x1F))
    e.update(reason=reason, qual=qual, gpa=gpa, gla=gla, length=length, intr=intr,
             rax=(0x1100 << 32 if reason == 1 else 0) | reason)
    return e


def read_guest(runner, sim, vp):
    v0 = GuestVtl.VTL0
    got = {
        "rip": runner.read_vmcs64(v0, F.VMX_VMCS_GUEST_RIP),
        "rsp": runner.read_vmcs64(v0, F.VMX_VMCS_GUEST_RSP),
        "cr3": runner.read_vmcs64(v0, F.VMX_VMCS_GUEST_CR3),
        "timer": runner.read_vmcs32(v0, F.VMX_VMCS_PREEMPTION_TIMER_VALUE),
        "reason": runner.read_vmcs32(v0, F.VMX_VMCS_EXIT_REASON),
        "qual": runner.read_vmcs64(v0, F.VMX_VMCS_EXIT_QUALIFICATION),
        "gpa": runner.read_vmcs64(v0, F.VMX_VMCS_GUEST_PHYSICAL_ADDRESS),
        "gla": runner.read_vmcs64(v0, F.VMX_VMCS_GUEST_LINEAR_ADDRESS),
        "length": runner.read_vmcs32(v0, F.VMX_VMCS_EXIT_INSTRUCTION_LENGTH),
        "intr": runner.read_vmcs32(v0, F.VMX_VMCS_EXIT_INTERRUPTION_INFO),
    }
    # exit_info (spec 3.3): rax, rcx, rdx, rsi, rdi, r8, r9, r10, r11 at run page + 272.
    ei = np.asarray(sim.run_page(vp))[272:272 + 88].view("<u8")
    got["exit_info"] = [int(v) for v in ei]
    return got


@pytest.fixture
def guest_off(sim):
    yield sim
    sim.guest(False)


POINTS = [0, 999, 1000, 99_999, 100_000, 2_047_999, 10_000_000, 123_456_789,
          3_600_000_000_000, (1 << 62) + 12345]


@pytest.mark.parametrize("seed", [0, 1, 0xDEADBEEFCAFEF00D])
def test_values_match_the_formulas(backend, guest_off, seed):
    sim = guest_off
    hcl = backend.open()
    for vp in range(hcl.vp_count):
        with hcl.runner(vp) as runner:
            for t in POINTS:
                sim.guest(True, seed=seed, start_ns=t)
                got = read_guest(runner, sim, vp)
                e = expected(seed, vp, t)
                for k in ("rip", "rsp", "cr3", "timer", "reason", "qual", "gpa", "gla",
                          "length", "intr"):
                    assert got[k] == e[k], (k, vp, t)
                assert got["exit_info"] == [e["rax"], e["qual"], e["gla"], 0, 0, e["gpa"],
                                            e["intr"], 0, e["length"] << 32, 0, 0], (vp, t)


def test_manual_clock_advances(backend, guest_off):
    sim = guest_off
    hcl = backend.open()
    sim.guest(True, seed=7)
    assert sim.guest_enabled and sim.guest_clock == 0
    with hcl.runner(0) as runner:
        seen = []
        for _ in range(5):
            seen.append(runner.read_vmcs64(GuestVtl.VTL0, F.VMX_VMCS_GUEST_RIP))
            sim.guest_advance(250_000)
        assert sim.guest_clock == 5 * 250_000
        assert seen == [expected(7, 0, k * 250_000)["rip"] for k in range(5)]
        assert len(set(seen)) == 5
        # The guest owns its fields: a write lasts until the next tdcall.
        runner.write_vmcs64(GuestVtl.VTL0, F.VMX_VMCS_GUEST_CR3, M64, 0x1234000)
        assert runner.read_vmcs64(GuestVtl.VTL0, F.VMX_VMCS_GUEST_CR3) == \
            expected(7, 0, 5 * 250_000)["cr3"]


def test_values_stay_inside_masks_and_regions(backend, guest_off):
    sim = guest_off
    hcl = backend.open()
    masks = {enc: r for _n, enc, r, _w in vmcs_catalogue()}
    width = {0: 0xFFFF, 1: M64, 2: 0xFFFFFFFF, 3: M64}
    rng = np.random.default_rng(5)
    with hcl.runner(1) as runner:
        sim.guest(True, seed=99)
        for t in rng.integers(0, 1 << 50, size=60):
            sim.guest(True, seed=99, start_ns=int(t))
            g = read_guest(runner, sim, 1)
            assert CODE_BASE <= g["rip"] < CODE_BASE + CODE_SIZE and g["rip"] % 16 == 0
            lo = STACK_BASE + STACK_STRIDE
            assert lo + STACK_SIZE - 8 - 8 * 1024 <= g["rsp"] <= lo + STACK_SIZE - 8
            assert g["cr3"] in CR3_ROOTS and g["cr3"] % 4096 == 0
            assert g["reason"] in {1, 10, 12, 28, 30, 31, 32, 48}
            assert g["gpa"] < MEMORY
            for enc in (F.VMX_VMCS_EXIT_REASON, F.VMX_VMCS_PREEMPTION_TIMER_VALUE,
                        F.VMX_VMCS_EXIT_INTERRUPTION_INFO):
                v = runner.read_vmcs32(GuestVtl.VTL0, enc)
                assert v & ~(masks[int(enc)] & width[(int(enc) >> 13) & 3]) == 0


def test_off_leaves_the_model_alone(backend, guest_off):
    sim = guest_off
    hcl = backend.open()
    assert not sim.guest_enabled
    with hcl.runner(0) as runner:
        # Reset values (docs/simulator.md): 0 for these fields.
        assert runner.read_vmcs64(GuestVtl.VTL0, F.VMX_VMCS_GUEST_RIP) == 0
        assert runner.read_vmcs32(GuestVtl.VTL0, F.VMX_VMCS_EXIT_REASON) == 0
        runner.write_vmcs64(GuestVtl.VTL0, F.VMX_VMCS_GUEST_RIP, M64, 0xFFF0)
        assert runner.read_vmcs64(GuestVtl.VTL0, F.VMX_VMCS_GUEST_RIP) == 0xFFF0
        assert not np.asarray(sim.run_page(0))[272:360].any()
        # On, then off: the fields keep their last values and take writes again.
        sim.guest(True, seed=3, start_ns=5_000_000)
        rip = runner.read_vmcs64(GuestVtl.VTL0, F.VMX_VMCS_GUEST_RIP)
        assert rip == expected(3, 0, 5_000_000)["rip"]
        sim.guest(False)
        assert runner.read_vmcs64(GuestVtl.VTL0, F.VMX_VMCS_GUEST_RIP) == rip
        runner.write_vmcs64(GuestVtl.VTL0, F.VMX_VMCS_GUEST_RIP, M64, 0x1000)
        assert runner.read_vmcs64(GuestVtl.VTL0, F.VMX_VMCS_GUEST_RIP) == 0x1000
    sim.guest(True)
    sim.reset()
    assert not sim.guest_enabled  # reset: back to the state after construction


def test_wall_clock_moves_and_bad_arguments(sim):
    try:
        sim.guest(True, clock="wall", start_ns=10)
        a = sim.guest_clock
        b = sim.guest_clock
        assert 10 <= a <= b
        with pytest.raises(ValueError, match="manual"):
            sim.guest_advance(1)
    finally:
        sim.guest(False)
    with pytest.raises(TypeError):
        sim.guest(1)
    with pytest.raises(ValueError, match="clock"):
        sim.guest(True, clock="tsc")
    with pytest.raises(ValueError):
        sim.guest(True, seed=-1)
    with pytest.raises(ValueError):
        sim.guest_state(99)
    assert not sim.guest_enabled


def test_guest_state_is_pure(sim):
    sim.guest(False, seed=0)  # guest_state uses the seed last configured
    st = sim.guest_state(1, 123_456_789)
    e = expected(0, 1, 123_456_789)
    assert (st["rip"], st["rsp"], st["cr3"], st["exit_reason"], st["exit_rax"]) == \
        (e["rip"], e["rsp"], e["cr3"], e["reason"], e["rax"])
    assert not sim.guest_enabled
