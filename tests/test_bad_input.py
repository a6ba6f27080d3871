"""The bad-input table: for every public function and constructor, wrong
types, out-of-range values, closed objects, the wrong VTL or VP, unaligned or
empty ranges, fields of the wrong width, each with its documented exception
and the word its message must name. One test walks the table over every
backend and checks that no tdcall reached the model (refused before any
system call)."""

import gc

import numpy as np
import pytest

import hcltdx
from hcltdx import GuestVtl, MemoryRange, TdxPrivateRegs, VmcsField

F = VmcsField
CR3 = F.VMX_VMCS_GUEST_CR3                 # 64/natural
ES_LIMIT = F.VMX_VMCS_GUEST_ES_LIMIT       # 32-bit
ES_SEL = F.VMX_VMCS_GUEST_ES_SELECTOR      # 16-bit
ALL = (1 << 64) - 1
BIG = 1 << 64
NOT_INTS = [None, "1", 1.0, b"\x01", [1], object()]


class Ctx:
    def __init__(self, backend):
        self.backend = backend
        self.sim = backend.sim
        h2 = backend.open()
        r2 = h2.runner(1)
        r2.close()
        h2.close()
        self.closed_hcl, self.closed_r = h2, r2
        self.hcl = backend.open()
        self.r = self.hcl.runner(0)   # after r2: a device runner needs its own thread
        self.regs = TdxPrivateRegs.new(GuestVtl.VTL0)

    def close(self):
        gc.collect()
        self.r.close()
        self.hcl.close()


def _cases():
    c = []

    def add(name, fn, exc, match=None):
        c.append(pytest.param(fn, exc, match, id=name))

    # ---- VTL / field / width / values on every VMCS method ------------------------------------
    reads = {"read_vmcs64": CR3, "read_vmcs32": ES_LIMIT, "read_vmcs16": ES_SEL}
    writes = {"write_vmcs64": (CR3, 64), "write_vmcs32": (ES_LIMIT, 32), "write_vmcs16": (ES_SEL, 16)}
    for m, field in reads.items():
        for vtl in (2, -1, None, "0", 1.0, True):
            add(f"{m}-vtl={vtl!r}", lambda x, m=m, f=field, v=vtl: getattr(x.r, m)(v, f),
                ValueError, "vtl")
        for bad in NOT_INTS + [True]:
            add(f"{m}-field={bad!r}", lambda x, m=m, b=bad: getattr(x.r, m)(0, b), TypeError, "field")
        for bad in (-1, 1 << 24, BIG):
            add(f"{m}-field-range={bad:#x}", lambda x, m=m, b=bad: getattr(x.r, m)(0, b),
                ValueError, "field")
        wrong = {"read_vmcs64": ES_LIMIT, "read_vmcs32": CR3, "read_vmcs16": CR3}[m]
        add(f"{m}-wrong-width", lambda x, m=m, w=wrong: getattr(x.r, m)(0, w), ValueError, "wide")
        add(f"{m}-closed-runner", lambda x, m=m, f=field: getattr(x.closed_r, m)(0, f),
            ValueError, "closed")
    for m, (field, bits) in writes.items():
        for vtl in (2, -1, None):
            add(f"{m}-vtl={vtl!r}", lambda x, m=m, f=field, v=vtl: getattr(x.r, m)(v, f, 1, 1),
                ValueError, "vtl")
        for arg in ("mask", "value"):
            for bad in (-1, 1 << bits):
                args = (bad, 0) if arg == "mask" else (ALL >> (64 - bits), bad)
                add(f"{m}-{arg}={bad:#x}", lambda x, m=m, f=field, a=args: getattr(x.r, m)(0, f, *a),
                    ValueError, arg)
            for bad in (None, 1.5, "1"):
                args = (bad, 0) if arg == "mask" else (1, bad)
                add(f"{m}-{arg}={bad!r}", lambda x, m=m, f=field, a=args: getattr(x.r, m)(0, f, *a),
                    TypeError, arg)
        wrong = {"write_vmcs64": ES_SEL, "write_vmcs32": CR3, "write_vmcs16": ES_LIMIT}[m]
        add(f"{m}-wrong-width", lambda x, m=m, w=wrong: getattr(x.r, m)(0, w, 1, 1), ValueError, "wide")
        add(f"{m}-closed-runner", lambda x, m=m, f=field: getattr(x.closed_r, m)(0, f, 1, 1),
            ValueError, "closed")

    # ---- other runner methods -------------------------------------------------------------------
    add("write_msr_bitmap-i-range", lambda x: x.r.write_msr_bitmap(0, 1 << 24, 1, 1), ValueError, "i")
    add("write_msr_bitmap-i-type", lambda x: x.r.write_msr_bitmap(0, "0", 1, 1), TypeError, "i")
    add("write_msr_bitmap-vtl", lambda x: x.r.write_msr_bitmap(3, 0, 1, 1), ValueError, "vtl")
    add("set_msr_bit-msr-range", lambda x: x.r.set_msr_bit(0, 0x2000, True, True), ValueError, "MSR")
    add("set_msr_bit-msr-type", lambda x: x.r.set_msr_bit(0, "0x10", True, True), TypeError, "msr")
    add("set_l2_ctls-value", lambda x: x.r.set_l2_ctls(0, -1), ValueError, "value")
    add("set_l2_ctls-vtl", lambda x: x.r.set_l2_ctls(2, 0), ValueError, "vtl")
    add("invgla-flags-type", lambda x: x.r.invgla(None, 0), TypeError, "gla_flags")
    add("invgla-info-range", lambda x: x.r.invgla(0, BIG), ValueError, "gla_info")
    add("tdx_apic_page-vtl", lambda x: x.r.tdx_apic_page(2), ValueError, "vtl")
    add("set_cr2-type", lambda x: x.r.set_cr2("0"), TypeError, None)
    add("set_cr2-range", lambda x: x.r.set_cr2(BIG), ValueError, None)
    add("read_private_regs-None", lambda x: x.r.read_private_regs(None), TypeError, None)
    add("read_private_regs-type", lambda x: x.r.read_private_regs({}), TypeError, None)
    add("write_private_regs-type", lambda x: x.r.write_private_regs(1), TypeError, None)
    add("run_page-closed", lambda x: x.closed_r.run_page(), ValueError, "closed")
    add("gps-closed", lambda x: x.closed_r.tdx_enter_guest_gps(), ValueError, "closed")
    add("cr2-closed", lambda x: x.closed_r.cr2(), ValueError, "closed")

    # ---- batches, polling, snapshots ------------------------------------------------------------
    add("read_vmcs_batch-vtl", lambda x: x.r.read_vmcs_batch(2, [CR3]), ValueError, "vtl")
    add("read_vmcs_batch-fields-type", lambda x: x.r.read_vmcs_batch(0, 5), TypeError, None)
    add("read_vmcs_batch-field-None", lambda x: x.r.read_vmcs_batch(0, [CR3, None]), TypeError, None)
    add("read_vmcs_batch-field-range", lambda x: x.r.read_vmcs_batch(0, [CR3, 1 << 24]),
        ValueError, "index 1")
    add("read_vmcs_batch-out-dtype", lambda x: x.r.read_vmcs_batch(0, [CR3], out=np.zeros(1, np.int64)),
        TypeError, "out")
    add("read_vmcs_batch-out-len", lambda x: x.r.read_vmcs_batch(0, [CR3], out=np.zeros(2, np.uint64)),
        ValueError, "out")
    add("read_vmcs_batch-out-strided",
        lambda x: x.r.read_vmcs_batch(0, [CR3, CR3], out=np.zeros(4, np.uint64)[::2]), ValueError, "out")
    add("read_vmcs_batch-closed", lambda x: x.closed_r.read_vmcs_batch(0, [CR3]), ValueError, "closed")
    add("write_vmcs_batch-len", lambda x: x.r.write_vmcs_batch(0, [CR3, CR3], [ALL], [1, 2]),
        ValueError, "masks")
    add("write_vmcs_batch-value-width", lambda x: x.r.write_vmcs_batch(0, [ES_SEL], [0xFFFF], [0x10000]),
        ValueError, "values")
    add("write_vmcs_batch-negative", lambda x: x.r.write_vmcs_batch(0, [CR3], [ALL], [-1]),
        ValueError, "values")
    add("write_vmcs_batch-float", lambda x: x.r.write_vmcs_batch(0, [CR3], [ALL], [1.0]),
        TypeError, "values")
    add("write_vmcs_batch-array-float",
        lambda x: x.r.write_vmcs_batch(0, [CR3], [ALL], np.ones(1)), TypeError, "values")
    add("poll_vmcs-samples-negative", lambda x: x.r.poll_vmcs(0, [CR3], -1), ValueError, "samples")
    add("poll_vmcs-samples-type", lambda x: x.r.poll_vmcs(0, [CR3], "10"), TypeError, "samples")
    add("poll_vmcs-interval", lambda x: x.r.poll_vmcs(0, [CR3], 1, interval_ns=-5), ValueError,
        "interval")
    add("poll_vmcs-kwarg", lambda x: x.r.poll_vmcs(0, [CR3], 1, bogus=1), TypeError, None)
    add("snapshot-vmcs-type", lambda x: x.r.snapshot(vmcs=5), TypeError, None)
    add("recorder-capacity", lambda x: x.r.recorder(0), ValueError, None)
    add("recorder-closed", lambda x: x.closed_r.recorder(2), ValueError, "closed")

    # ---- Hcl -----------------------------------------------------------------------------------
    for vp in (-1, 2, 1 << 40):
        add(f"runner-vp={vp}", lambda x, vp=vp: x.hcl.runner(vp), ValueError, "vp")
        add(f"tdcall-vp={vp}", lambda x, vp=vp: x.hcl.tdcall(vp, 9), ValueError, "vp")
    for bad in (None, "0", 1.0, True):
        add(f"runner-vp={bad!r}", lambda x, b=bad: x.hcl.runner(b), TypeError, "vp")
    add("runner-open-twice", lambda x: x.hcl.runner(0), RuntimeError, "already open")
    add("runner-closed-hcl", lambda x: x.closed_hcl.runner(0), ValueError, "closed")
    add("tdcall-leaf-type", lambda x: x.hcl.tdcall(0, "9"), TypeError, "leaf")
    add("tdcall-leaf-range", lambda x: x.hcl.tdcall(0, BIG), ValueError, "leaf")
    add("tdcall-vmcall", lambda x: x.hcl.tdcall(0, 0), ValueError, "VP_VMCALL")
    add("tdcall-enter", lambda x: x.hcl.tdcall(0, 25), ValueError, "VP_ENTER")
    add("tdcall-r10", lambda x: x.hcl.tdcall(0, 9, r10=1), ValueError, "r10")
    add("tdcall-rcx-range", lambda x: x.hcl.tdcall(0, 9, rcx=-1), ValueError, "rcx")
    add("tdcall-closed", lambda x: x.closed_hcl.tdcall(0, 9), ValueError, "closed")
    add("mshv_vtl-closed", lambda x: x.closed_hcl.mshv_vtl, ValueError, "closed")
    add("trace-capacity", lambda x: x.hcl.trace(0).__enter__(), ValueError, None)
    add("fileno-closed", lambda x: x.closed_hcl.fileno(), ValueError, "closed")
    add("Hcl()", lambda x: hcltdx.Hcl(), TypeError, "not supposed")
    add("TdxRunner()", lambda x: hcltdx.TdxRunner(), TypeError, "not supposed")
    add("from_sim-type", lambda x: hcltdx.Hcl.from_sim(object()), TypeError, None)
    add("from_fd-negative", lambda x: hcltdx.Hcl.from_fd(-1), ValueError, "fd")
    add("from_fd-type", lambda x: hcltdx.Hcl.from_fd("3"), ValueError, "fd")
    add("open-vp_count", lambda x: hcltdx.Hcl.open("/dev/null", vp_count=0), ValueError, "vp_count")
    add("open-path-type", lambda x: hcltdx.Hcl.open(3.5), TypeError, None)
    add("replay-type", lambda x: hcltdx.Hcl.replay(5), TypeError, None)

    # ---- page operations -------------------------------------------------------------------------
    acc = lambda x, *a, **k: x.hcl.mshv_vtl.tdx_accept_pages(*a, **k)  # noqa: E731
    att = lambda x, *a, **k: x.hcl.mshv_vtl.tdx_set_page_attributes(*a, **k)  # noqa: E731
    add("accept-range-type", lambda x: acc(x, "0-4096"), TypeError, "range")
    add("accept-range-list", lambda x: acc(x, [0, 4096]), TypeError, "range")
    add("accept-unaligned-start", lambda x: acc(x, (0x1001, 0x2000)), ValueError, "aligned")
    add("accept-unaligned-end", lambda x: acc(x, (0x1000, 0x2001)), ValueError, "aligned")
    add("accept-reversed", lambda x: acc(x, (0x2000, 0x1000)), ValueError, "below")
    add("accept-negative", lambda x: acc(x, (-0x1000, 0x1000)), ValueError, "negative")
    add("accept-beyond-64-bits", lambda x: acc(x, (0, BIG)), ValueError, "64 bits")
    add("accept-attributes-not-a-pair", lambda x: acc(x, MemoryRange(0, 0x1000), 5), TypeError,
        "attributes")
    add("set_attributes-attrs-type", lambda x: att(x, MemoryRange(0, 0x1000), "a", 0), TypeError, None)
    add("set_attributes-mask-range", lambda x: att(x, MemoryRange(0, 0x1000), 0, -1), ValueError, None)
    add("set_attributes-range-type", lambda x: att(x, None, 0, 0), TypeError, "range")
    add("MemoryRange-unaligned", lambda x: MemoryRange(1, 0x1000), ValueError, "aligned")
    add("MemoryRange-immutable", lambda x: setattr(MemoryRange(0, 0x1000), "start", 0), AttributeError,
        "immutable")

    # ---- TdxPrivateRegs --------------------------------------------------------------------------
    add("regs-new-vtl", lambda x: TdxPrivateRegs.new(2), ValueError, "vtl")
    add("regs-rvi-width", lambda x: setattr(x.regs, "rvi", 256), ValueError, "rvi")
    add("regs-rip-type", lambda x: setattr(x.regs, "rip", "0"), TypeError, "rip")
    add("regs-rflags-range", lambda x: setattr(x.regs, "rflags", BIG), ValueError, "rflags")
    add("regs-unknown-field", lambda x: TdxPrivateRegs(bogus=1), TypeError, None)

    # ---- the simulator's control panel -----------------------------------------------------------
    add("Sim-vp_count", lambda x: hcltdx.Sim(vp_count=0), ValueError, "vp_count")
    add("Sim-vp_count-max", lambda x: hcltdx.Sim(vp_count=65), ValueError, "vp_count")
    add("Sim-memory-unaligned", lambda x: hcltdx.Sim(memory_size=3 << 20), ValueError, "2 MiB")
    add("Sim-host_map", lambda x: hcltdx.Sim(host_map="1G"), ValueError, "host_map")
    add("Sim-tsc-type", lambda x: hcltdx.Sim(tsc_deadline_layout=1), TypeError, None)
    add("sim-inject-leaf", lambda x: x.sim.inject(0, 1), ValueError, "leaf")
    add("sim-inject_rate-p", lambda x: x.sim.inject_rate(9, 1, 1.5), ValueError, "probability")
    add("sim-inject_rate-type", lambda x: x.sim.inject_rate(9, 1, "0.5"), TypeError, "probability")
    add("sim-map_host-level", lambda x: x.sim.map_host(MemoryRange(0, 0x1000), 7), ValueError, None)
    add("sim-page_state-range", lambda x: x.sim.page_state(x.sim.memory_size), ValueError, "gpa")
    add("sim-vmcs-vp", lambda x: x.sim.vmcs(9, 0, 0x6802), ValueError, None)
    add("sim-run_page-vp", lambda x: x.sim.run_page(9), ValueError, None)
    return c


CASES = _cases()


@pytest.mark.parametrize("fn, exc, match", CASES)
def test_bad_input_refused_before_any_call(backend, fn, exc, match):
    x = Ctx(backend)
    before = x.sim.counters()
    try:
        with pytest.raises(exc, match=match) as ei:
            fn(x)
        assert str(ei.value), "the exception says nothing"
        assert x.sim.counters() == before, "a tdcall was issued before the input was refused"
        # The objects are still usable afterwards.
        assert x.r.read_vmcs64(GuestVtl.VTL0, CR3) >= 0
    finally:
        x.close()


def test_range_above_gpa_space_refused(backend):
    x = Ctx(backend)
    try:
        before = x.sim.counters()
        with pytest.raises(ValueError):
            x.hcl.mshv_vtl.tdx_accept_pages(MemoryRange(1 << 52, (1 << 52) + 0x1000))
        assert x.sim.counters() == before
    finally:
        x.close()


def test_table_size():
    # The closing note quotes this count (cases per backend).
    print(f"\nbad-input table: {len(CASES)} cases")
    assert len(CASES) > 150
