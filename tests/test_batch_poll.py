"""Batch VMCS access and polling over every backend: results equal the
one-by-one reads, the simulator's call log shows the same tdcalls, bad input
is refused before any tdcall, Ctrl-C stops a long poll keeping its rows."""

import os
import signal
import threading
import time

import numpy as np
import pytest

import hcltdx
from hcltdx import GuestVtl, VmcsField
from hcltdx._poll import BatchError, PollInterrupted, poll_dtype

F = VmcsField
VTL0, VTL1 = GuestVtl.VTL0, GuestVtl.VTL1
ALL = 0xFFFFFFFFFFFFFFFF

# Readable fields of every width (16, 32, 64, natural).
FIELDS = [
    F.VMX_VMCS_GUEST_CR3,           # natural
    F.VMX_VMCS_GUEST_ES_SELECTOR,   # 16
    F.VMX_VMCS_GUEST_CS_AR,         # 32
    F.VMX_VMCS_GUEST_PAT,           # 64
    F.VMX_VMCS_GUEST_RIP,
    F.VMX_VMCS_GUEST_ES_LIMIT,
    F.VMX_VMCS_GUEST_TR_SELECTOR,
    F.VMX_VMCS_GUEST_EFER,
]


def one_by_one_read(runner, vtl, field):
    return {16: runner.read_vmcs16, 32: runner.read_vmcs32, 64: runner.read_vmcs64}[
        field.width_bits](vtl, field)


def log_inputs(sim):
    return [(int(e["vp"]), int(e["in_rax"]), int(e["in_rcx"]), int(e["in_rdx"]), int(e["in_r8"]),
             int(e["in_r9"])) for e in sim.call_log()]


def seed_values(sim, vp=0):
    """Distinct values in every FIELDS entry of both VTLs, each fitting its width."""
    for vtl in (0, 1):
        for i, f in enumerate(FIELDS):
            value = (0x1111_2222_3333_4444 * (i + 1) + vtl) & ((1 << f.width_bits) - 1)
            if f == F.VMX_VMCS_GUEST_CS_AR:
                value = 0xA09B + vtl
            sim.set_vmcs(vp, vtl, int(f), value)


# ---- read_vmcs_batch ------------------------------------------------------------------------


@pytest.mark.parametrize("vtl", [VTL0, VTL1])
def test_batch_read_equals_one_by_one(runner, sim, vtl):
    seed_values(sim)
    sim.enable_log(256)
    batch = runner.read_vmcs_batch(vtl, FIELDS)
    batch_calls = log_inputs(sim)
    sim.clear_log()
    singles = [one_by_one_read(runner, vtl, f) for f in FIELDS]
    assert batch.dtype == np.uint64
    assert batch.tolist() == singles
    assert all(v != 0 for v in singles)
    # The very same tdcalls, in order, as the one-by-one reads.
    assert batch_calls == log_inputs(sim)
    assert [c[1] for c in batch_calls] == [9] * len(FIELDS)


def test_batch_read_from_uint32_array_and_into_out(runner, sim):
    seed_values(sim)
    enc = np.array([int(f) for f in FIELDS], dtype=np.uint32)
    out = np.zeros(len(FIELDS), dtype=np.uint64)
    res = runner.read_vmcs_batch(VTL0, enc, out=out)
    assert res is out
    assert out.tolist() == [one_by_one_read(runner, VTL0, f) for f in FIELDS]


def test_batch_read_large_batch_releases_gil_path(runner, sim):
    # Above the in-process threshold the loop runs without the GIL.
    fields = [f for f in VmcsField.catalogue() if f.read_mask] * 3
    got = runner.read_vmcs_batch(VTL0, np.array([int(f) for f in fields], dtype=np.uint32))
    assert got.tolist() == [one_by_one_read(runner, VTL0, f) for f in fields]


def test_batch_read_empty(runner, sim):
    sim.enable_log(8)
    assert runner.read_vmcs_batch(VTL0, []).shape == (0,)
    assert len(sim.call_log()) == 0


def test_batch_read_failure_part_way_keeps_earlier_values(runner, sim):
    seed_values(sim)
    fields = FIELDS[:3] + [F.VMX_VMCS_HOST_ES_SELECTOR] + FIELDS[3:]
    out = np.zeros(len(fields), dtype=np.uint64)
    sim.enable_log(64)
    with pytest.raises(BatchError) as ei:
        runner.read_vmcs_batch(VTL1, fields, out=out)
    e = ei.value
    assert e.index == 3
    assert e.field == F.VMX_VMCS_HOST_ES_SELECTOR
    assert e.vtl == 1 and e.vp == 0
    assert e.code.name == "METADATA_FIELD_NOT_READABLE"
    assert "VMX_VMCS_HOST_ES_SELECTOR" in str(e) and "index 3" in str(e)
    expected = [one_by_one_read(runner, VTL1, f) for f in FIELDS[:3]]
    assert e.values.tolist() == expected
    assert out[:3].tolist() == expected
    assert out[3:].tolist() == [0] * (len(fields) - 3)
    # The loop stopped at the failing field: no call after it.
    assert len(log_inputs(sim)) == 4 + 3  # 4 batch calls, then the 3 checks above


def test_batch_read_injected_fault(runner, sim):
    sim.inject(9, 0xC0000C0000000000, count=1)
    with pytest.raises(BatchError) as ei:
        runner.read_vmcs_batch(VTL0, FIELDS)
    assert ei.value.index == 0 and ei.value.values.shape == (0,)
    assert ei.value.code.name == "METADATA_FIELD_ID_INCORRECT"
    # The fault was consumed; the next batch succeeds.
    assert runner.read_vmcs_batch(VTL0, FIELDS).shape == (len(FIELDS),)


@pytest.mark.parametrize(
    "fields, exc, match",
    [
        ([F.VMX_VMCS_GUEST_CR3, 0x6803], ValueError, "access_high"),
        ([F.VMX_VMCS_GUEST_CR3, 0x10000], ValueError, "out of range"),
        ([0x1_0000_0000], ValueError, "out of range"),
        ([-2], ValueError, "negative"),
        ([F.VMX_VMCS_GUEST_CR3, "CR3"], TypeError, r"fields\[1\]"),
        ([True], TypeError, "bool"),
        (np.array([0x6802, 0x6803], dtype=np.uint32), ValueError, "access_high"),
        (np.array([26626.0]), TypeError, "integer array"),
        (42, TypeError, "sequence"),
    ],
)
def test_batch_read_bad_fields_refused_before_any_tdcall(runner, sim, fields, exc, match):
    before = sim.counters()
    with pytest.raises(exc, match=match):
        runner.read_vmcs_batch(VTL0, fields)
    with pytest.raises(exc, match=match):
        runner.poll_vmcs(VTL0, fields, 10)
    assert sim.counters() == before


def test_batch_read_bad_vtl_and_out(runner, sim):
    before = sim.counters()
    with pytest.raises(ValueError, match="vtl"):
        runner.read_vmcs_batch(2, FIELDS)
    with pytest.raises(TypeError, match="uint64"):
        runner.read_vmcs_batch(VTL0, FIELDS, out=np.zeros(len(FIELDS), dtype=np.int64))
    with pytest.raises(ValueError, match="entries"):
        runner.read_vmcs_batch(VTL0, FIELDS, out=np.zeros(1, dtype=np.uint64))
    assert sim.counters() == before


def unaligned(n, dtype):
    raw = bytearray(n * np.dtype(dtype).itemsize + 1)
    a = np.frombuffer(raw, dtype=dtype, offset=1, count=n)
    assert a.ctypes.data % 8 == 1
    return a


def read_only(n, dtype):
    a = np.zeros(n, dtype=dtype)
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("make", [
    read_only,
    lambda n, dt: np.zeros(2 * n, dtype=dt)[::2],           # strided
    lambda n, dt: np.zeros(n, dtype=np.dtype(dt).newbyteorder(">")),  # byte-swapped
    unaligned,
])
def test_out_of_the_wrong_layout_refused_before_any_tdcall(runner, sim, make):
    before = sim.counters()
    with pytest.raises((TypeError, ValueError)):
        runner.read_vmcs_batch(VTL0, FIELDS, out=make(len(FIELDS), np.uint64))
    with pytest.raises((TypeError, ValueError)):
        runner.poll_vmcs(VTL0, FIELDS, 4, out=make(4, poll_dtype(FIELDS)))
    assert sim.counters() == before


def test_batch_on_closed_runner_and_other_thread(hcl, sim):
    r = hcl.runner(0)
    errors = []

    def other():
        try:
            r.read_vmcs_batch(VTL0, FIELDS)
        except RuntimeError as e:
            errors.append(e)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert errors and "belongs to the thread" in str(errors[0])
    r.close()
    with pytest.raises(ValueError, match="closed runner"):
        r.read_vmcs_batch(VTL0, FIELDS)


# ---- write_vmcs_batch ----------------------------------------------------------------------


def test_batch_write_returns_previous_and_applies_masks(runner, sim):
    seed_values(sim)
    prev_expected = [one_by_one_read(runner, VTL0, f) for f in FIELDS]
    masks = [(1 << f.width_bits) - 1 for f in FIELDS]
    masks[0] = 0xFF000          # a partial write: only these bits change
    values = [(0x5A5A_5A5A_5A5A_5A5A >> (64 - f.width_bits)) for f in FIELDS]
    values[2] = 0xC093          # CS_AR: writable bits only
    sim.enable_log(64)
    prev = runner.write_vmcs_batch(VTL0, FIELDS, masks, values)
    assert prev.tolist() == prev_expected
    assert [c[1] for c in log_inputs(sim)] == [10] * len(FIELDS)
    assert [c[4] for c in log_inputs(sim)] == values
    assert [c[5] for c in log_inputs(sim)] == masks
    for f, m, v, old in zip(FIELDS, masks, values, prev_expected):
        assert sim.vmcs(0, 0, int(f)) == (old & ~m) | (v & m)


def test_batch_write_arrays(runner, sim):
    enc = np.array([int(F.VMX_VMCS_GUEST_CR3), int(F.VMX_VMCS_GUEST_RIP)], dtype=np.uint32)
    runner.write_vmcs_batch(VTL1, enc, np.array([ALL, ALL], dtype=np.uint64),
                            np.array([0x3000, 0xFFF0], dtype=np.uint64))
    assert runner.read_vmcs_batch(VTL1, enc).tolist() == [0x3000, 0xFFF0]


@pytest.mark.parametrize(
    "masks, values, match",
    [
        ([ALL, 0x1_0000, 0], [0, 0, 0], r"masks\[1\].*16-bit field VMX_VMCS_GUEST_ES_SELECTOR"),
        ([ALL, 0xFFFF, 0], [0, 0x1_0000, 0], r"values\[1\].*16-bit"),
        ([ALL, 1, 1 << 32], [0, 0, 0], r"masks\[2\].*32-bit field VMX_VMCS_GUEST_CS_LIMIT"),
        ([ALL], [0], "1 entries for 3 fields"),
        ([ALL, 1, 1], [1 << 64, 0, 0], r"values\[0\] must be in"),
        ([ALL, 1, -1], [0, 0, 0], r"masks\[2\] must be in"),
    ],
)
def test_batch_write_width_errors_before_any_tdcall(runner, sim, masks, values, match):
    fields = [F.VMX_VMCS_GUEST_CR3, F.VMX_VMCS_GUEST_ES_SELECTOR, F.VMX_VMCS_GUEST_CS_LIMIT]
    before = sim.counters()
    with pytest.raises(ValueError, match=match):
        runner.write_vmcs_batch(VTL0, fields, masks, values)
    assert sim.counters() == before


def test_batch_write_failure_part_way(runner, sim):
    fields = [F.VMX_VMCS_GUEST_CR3, F.VMX_VMCS_GUEST_RIP, F.VMX_VMCS_EXIT_REASON,
              F.VMX_VMCS_GUEST_CR0]
    sim.set_vmcs(0, 0, int(F.VMX_VMCS_GUEST_CR0), 0x31)
    with pytest.raises(BatchError) as ei:
        runner.write_vmcs_batch(VTL0, fields, [ALL, ALL, 0xFFFFFFFF, ALL], [0x7000, 0x8000, 1, 0])
    e = ei.value
    assert e.index == 2 and e.field == F.VMX_VMCS_EXIT_REASON
    assert e.values.tolist() == [0, 0]
    assert e.code.name == "METADATA_FIELD_NOT_WRITABLE"
    # Fields before the failure were written, the one after was not.
    assert sim.vmcs(0, 0, int(F.VMX_VMCS_GUEST_CR3)) == 0x7000
    assert sim.vmcs(0, 0, int(F.VMX_VMCS_GUEST_RIP)) == 0x8000
    assert sim.vmcs(0, 0, int(F.VMX_VMCS_GUEST_CR0)) == 0x31


# ---- batch sizes -----------------------------------------------------------------------------
# Up to 64 fields the codes live on the stack, above they are allocated; up
# to 256 fields an in-process backend keeps the GIL; the loop runs in chunks
# of 256 fields when the GIL is released (always on a device). Every path,
# one test body.

SIZES = [1, 32, 33, 64, 65, 256, 257, 600]

# TDX field codes of these fields, VTL0 and VTL1 (docs/tdx-abi.md section 6).
SPEC_CODES = {
    F.VMX_VMCS_GUEST_CR3: (0x2420000300006802, 0x2C20000300006802),
    F.VMX_VMCS_GUEST_ES_SELECTOR: (0x2420000100000800, 0x2C20000100000800),
    F.VMX_VMCS_GUEST_CS_AR: (0x2420000200004816, 0x2C20000200004816),
    F.VMX_VMCS_GUEST_PAT: (0x2420000300002804, 0x2C20000300002804),
    F.VMX_VMCS_GUEST_ES_LIMIT: (0x2420000200004800, 0x2C20000200004800),
    F.VMX_VMCS_GUEST_TR_SELECTOR: (0x242000010000080E, 0x2C2000010000080E),
    F.VMX_VMCS_GUEST_EFER: (0x2420000300002806, 0x2C20000300002806),
}
CODED = list(SPEC_CODES)


def cycled(fields, n):
    return [fields[i % len(fields)] for i in range(n)]


def as_kind(kind, fields):
    if kind == "list":
        return list(fields)
    if kind == "tuple":
        return tuple(fields)
    if kind == "ints":
        return [int(f) for f in fields]
    if kind == "uint32":
        return np.array([int(f) for f in fields], dtype=np.uint32)
    if kind == "int64":
        return np.array([int(f) for f in fields], dtype=np.int64)
    return (f for f in fields)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("kind", ["list", "tuple", "ints", "uint32", "int64", "iter"])
@pytest.mark.parametrize("vtl", [0, 1])
def test_batch_read_every_size_and_kind_of_fields(runner, sim, n, kind, vtl):
    seed_values(sim)
    fields = cycled(CODED, n)
    sim.enable_log(n + 8)
    got = runner.read_vmcs_batch(vtl, as_kind(kind, fields))
    assert log_inputs(sim) == [(0, 9, 0, SPEC_CODES[f][vtl], 0, 0) for f in fields]
    sim.clear_log()
    assert got.dtype == np.uint64 and got.shape == (n,)
    assert got.tolist() == [one_by_one_read(runner, vtl, f) for f in fields]
    out = np.zeros(n, dtype=np.uint64)
    assert runner.read_vmcs_batch(vtl, as_kind(kind, fields), out=out) is out
    assert out.tolist() == got.tolist()


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("arrays", [False, True])
def test_batch_write_every_size(runner, sim, n, arrays):
    # CR3 (natural), ES_SELECTOR (16-bit), PAT (64-bit), repeated: each write
    # returns what the previous one of the same field left.
    kinds = [(F.VMX_VMCS_GUEST_CR3, ALL), (F.VMX_VMCS_GUEST_ES_SELECTOR, 0xFFFF),
             (F.VMX_VMCS_GUEST_PAT, 0xFFFF_FFFF_0000_0000)]
    fields = [kinds[i % 3][0] for i in range(n)]
    masks = [kinds[i % 3][1] for i in range(n)]
    values = [((i + 1) << 12) if i % 3 == 0 else (i * 8) & 0xFFFF if i % 3 == 1
              else (0x0606_0606 + i) << 32 for i in range(n)]
    state = {f: one_by_one_read(runner, VTL0, f) for f, _ in kinds}
    expected = []
    for f, m, v in zip(fields, masks, values):
        expected.append(state[f])
        state[f] = (state[f] & ~m) | (v & m)
    sim.enable_log(n + 8)
    if arrays:
        prev = runner.write_vmcs_batch(VTL0, np.array([int(f) for f in fields], dtype=np.uint32),
                                       np.array(masks, dtype=np.uint64),
                                       np.array(values, dtype=np.uint64))
    else:
        prev = runner.write_vmcs_batch(VTL0, fields, masks, values)
    assert log_inputs(sim) == [(0, 10, 0, SPEC_CODES[f][0], v, m)
                               for f, m, v in zip(fields, masks, values)]
    assert prev.tolist() == expected
    for f, _ in kinds:
        assert sim.vmcs(0, 0, int(f)) == state[f]


@pytest.mark.parametrize("at", [0, 63, 64, 65, 255, 256, 300])
def test_batch_read_failure_at_any_index(runner, sim, at):
    seed_values(sim)
    n = 320
    fields = cycled(CODED, n)
    fields[at] = F.VMX_VMCS_HOST_ES_SELECTOR   # not readable (spec: NOT_READABLE)
    out = np.zeros(n, dtype=np.uint64)
    sim.enable_log(n + 8)
    with pytest.raises(BatchError) as ei:
        runner.read_vmcs_batch(VTL1, fields, out=out)
    e = ei.value
    assert (e.index, e.field, e.vtl, e.total) == (at, F.VMX_VMCS_HOST_ES_SELECTOR, 1, n)
    assert e.code.name == "METADATA_FIELD_NOT_READABLE"
    assert len(log_inputs(sim)) == at + 1      # nothing after the failing field
    sim.clear_log()
    expected = [one_by_one_read(runner, VTL1, f) for f in fields[:at]]
    assert e.values.tolist() == expected
    assert out[:at].tolist() == expected and not out[at:].any()


@pytest.mark.parametrize("at", [0, 64, 65, 300])
def test_batch_write_failure_at_any_index(runner, sim, at):
    n = 320
    fields = [F.VMX_VMCS_GUEST_CR3] * n
    fields[at] = F.VMX_VMCS_EXIT_REASON          # read-only
    values = [(i + 1) << 12 for i in range(n)]
    values[at] = 1
    masks = [ALL] * n
    masks[at] = 0xFFFFFFFF
    sim.set_vmcs(0, 0, int(F.VMX_VMCS_GUEST_CR3), 0x1000)
    with pytest.raises(BatchError) as ei:
        runner.write_vmcs_batch(VTL0, fields, masks, values)
    e = ei.value
    assert (e.index, e.field, e.total) == (at, F.VMX_VMCS_EXIT_REASON, n)
    assert e.code.name == "METADATA_FIELD_NOT_WRITABLE"
    assert e.values.tolist() == ([0x1000] + values[:at - 1] if at else [])
    assert sim.vmcs(0, 0, int(F.VMX_VMCS_GUEST_CR3)) == (values[at - 1] if at else 0x1000)


@pytest.mark.parametrize("at", [0, 64, 65, 300])
@pytest.mark.parametrize("kind", ["list", "tuple", "uint32", "iter"])
def test_batch_bad_field_at_any_index_refused_before_any_tdcall(runner, sim, at, kind):
    fields = [int(f) for f in cycled(CODED, 320)]
    fields[at] = 0x6803
    before = sim.counters()
    with pytest.raises(ValueError, match=rf"index {at}\) has access_high set"):
        runner.read_vmcs_batch(VTL0, as_kind(kind, fields))
    with pytest.raises(ValueError, match=rf"index {at}\) has access_high set"):
        runner.write_vmcs_batch(VTL0, as_kind(kind, fields), [0] * 320, [0] * 320)
    assert sim.counters() == before


@pytest.mark.parametrize("at", [0, 64, 65, 300])
def test_batch_write_value_too_wide_at_any_index_refused_before_any_tdcall(runner, sim, at):
    fields = [F.VMX_VMCS_GUEST_ES_SELECTOR] * 320
    values = [0] * 320
    values[at] = 0x1_0000
    before = sim.counters()
    with pytest.raises(ValueError, match=rf"values\[{at}\] = 0x10000 does not fit the 16-bit"):
        runner.write_vmcs_batch(VTL0, fields, [0xFFFF] * 320, values)
    with pytest.raises(ValueError, match=rf"values\[{at}\] = 0x10000 does not fit the 16-bit"):
        runner.write_vmcs_batch(VTL0, fields, np.full(320, 0xFFFF, dtype=np.uint64),
                                np.array(values, dtype=np.uint64))
    assert sim.counters() == before


def _unaligned(values, dtype):
    """``values`` in an array of ``dtype`` that starts one byte into a buffer."""
    a = np.asarray(values, dtype=dtype)
    buf = np.zeros(a.nbytes + 1, dtype=np.uint8)
    view = buf[1:].view(a.dtype)
    view[:] = a
    assert not view.flags.aligned
    return view


@pytest.mark.parametrize("layout", ["big-endian", "unaligned", "strided"])
def test_batch_arrays_of_any_layout(runner, sim, layout):
    fields = cycled(CODED, 70)
    raws = [int(f) for f in fields]
    masks = [ALL] * 70
    values = [(i + 1) << 12 for i in range(70)]
    if layout == "big-endian":
        enc, m, v = (np.array(raws, dtype=">u4"), np.array(masks, dtype=">u8"),
                     np.array(values, dtype=">u8"))
    elif layout == "unaligned":
        enc, m, v = _unaligned(raws, "<u4"), _unaligned(masks, "<u8"), _unaligned(values, "<u8")
    else:
        enc = np.repeat(np.array(raws, dtype=np.uint32), 2)[::2]
        m = np.repeat(np.array(masks, dtype=np.uint64), 2)[::2]
        v = np.repeat(np.array(values, dtype=np.uint64), 2)[::2]
    seed_values(sim)
    sim.enable_log(160)
    got = runner.read_vmcs_batch(VTL0, enc)
    assert [c[3] for c in log_inputs(sim)] == [SPEC_CODES[f][0] for f in fields]
    sim.clear_log()
    assert got.tolist() == [one_by_one_read(runner, VTL0, f) for f in fields]
    sim.clear_log()
    cr3 = [F.VMX_VMCS_GUEST_CR3] * 70
    enc_cr3 = np.array([int(F.VMX_VMCS_GUEST_CR3)] * 70, dtype=enc.dtype)
    runner.write_vmcs_batch(VTL0, enc_cr3 if layout == "big-endian" else cr3, m, v)
    assert [(c[4], c[5]) for c in log_inputs(sim)] == list(zip(values, masks))
    assert sim.vmcs(0, 0, int(F.VMX_VMCS_GUEST_CR3)) == values[-1]


class _Shrinking(int):
    """An int subclass whose comparisons empty the list it sits in."""
    victim = None

    def __ge__(self, other):
        del self.victim[1:]
        return int(self) >= other

    def __le__(self, other):
        del self.victim[1:]
        return int(self) <= other

    def __lt__(self, other):
        del self.victim[1:]
        return int(self) < other

    def __gt__(self, other):
        del self.victim[1:]
        return int(self) > other


class _Growing(_Shrinking):
    """An int subclass whose comparisons grow the list it sits in."""

    def __ge__(self, other):
        self.victim.append(0x6802)
        return int(self) >= other

    def __le__(self, other):
        self.victim.append(0x6802)
        return int(self) <= other


@pytest.mark.parametrize("n", [3, 65])
@pytest.mark.parametrize("change", [_Shrinking, _Growing])
def test_batch_fields_list_changed_while_checked(runner, sim, n, change):
    fields = [F.VMX_VMCS_GUEST_CR3] * n
    odd = change(int(F.VMX_VMCS_GUEST_RIP))
    odd.victim = fields
    fields[0] = odd
    before = sim.counters()
    with pytest.raises(RuntimeError, match="fields changed size"):
        runner.read_vmcs_batch(VTL0, fields)
    assert sim.counters() == before
    # A tuple cannot change: the same subclass is read like any int.
    fields = [odd] + [F.VMX_VMCS_GUEST_CR3] * (n - 1)
    odd.victim = [0, 0]
    sim.set_vmcs(0, 0, int(F.VMX_VMCS_GUEST_RIP), 0x1234)
    assert runner.read_vmcs_batch(VTL0, tuple(fields))[0] == 0x1234


class _Plain(int):
    pass


@pytest.mark.parametrize("kind", ["list", "tuple", "iter", "scalars", "uint64", "int64", "uint32"])
def test_batch_write_masks_and_values_of_every_kind(runner, sim, kind):
    fields = [F.VMX_VMCS_GUEST_CR3, F.VMX_VMCS_GUEST_ES_SELECTOR, F.VMX_VMCS_GUEST_PAT] * 30
    masks = [ALL, 0xFFFF, 0xFFFF_FFFF_0000_0000] * 30
    values = [0x7000 + i if i % 3 == 0 else 0x18 if i % 3 == 1 else 0x0707_0707_0000_0000
              for i in range(90)]

    def conv(xs):
        if kind == "list":
            return list(xs)
        if kind == "tuple":
            return tuple(xs)
        if kind == "iter":
            return iter(xs)
        if kind == "scalars":   # numpy scalars and an int subclass
            return [np.uint64(x) if i % 2 else _Plain(x) for i, x in enumerate(xs)]
        if kind == "uint32":
            return np.array(xs, dtype=np.uint64).astype(np.uint32) if max(xs) < 1 << 32 else \
                np.array(xs, dtype=np.uint64)
        if kind == "int64":
            return np.array(xs, dtype=np.uint64).view(np.int64) if max(xs) < 1 << 63 else \
                np.array(xs, dtype=np.uint64)
        return np.array(xs, dtype=np.uint64)

    sim.enable_log(128)
    runner.write_vmcs_batch(VTL0, fields, conv(masks), conv(values))
    assert [(c[3], c[4], c[5]) for c in log_inputs(sim)] == [
        (SPEC_CODES[f][0], v, m) for f, m, v in zip(fields, masks, values)]
    assert sim.vmcs(0, 0, int(F.VMX_VMCS_GUEST_CR3)) == 0x7000 + 87
    assert sim.vmcs(0, 0, int(F.VMX_VMCS_GUEST_ES_SELECTOR)) == 0x18


def test_batch_write_values_list_changed_while_checked(runner, sim):
    fields = [F.VMX_VMCS_GUEST_CR3] * 4
    values = [0x1000, _Shrinking(0x2000), 0x3000, 0x4000]
    values[1].victim = values
    before = sim.counters()
    with pytest.raises(RuntimeError, match="values changed size"):
        runner.write_vmcs_batch(VTL0, fields, [ALL] * 4, values)
    assert sim.counters() == before


@pytest.mark.parametrize("n", [3, 65, 300])
def test_batch_traced_records_every_call(hcl, sim, n):
    r = hcl.runner(0)
    fields = cycled(CODED, n)
    seed_values(sim)
    values = [(i + 1) << 12 for i in range(n)]
    with hcl.trace(2 * n + 8) as t:
        got = r.read_vmcs_batch(VTL1, fields)
        prev = r.write_vmcs_batch(VTL0, [F.VMX_VMCS_GUEST_CR3] * n, [ALL] * n, values)
    calls = t.calls
    assert len(calls) == 2 * n
    rd, wr = calls[:n], calls[n:]
    assert rd["in_rax"].tolist() == [9] * n
    assert rd["in_rdx"].tolist() == [SPEC_CODES[f][1] for f in fields]
    assert (rd["out_rax"] >> 32).tolist() == [0] * n
    assert rd["out_r8"].tolist() == got.tolist()
    assert wr["in_rax"].tolist() == [10] * n
    assert wr["in_rdx"].tolist() == [SPEC_CODES[F.VMX_VMCS_GUEST_CR3][0]] * n
    assert wr["in_r8"].tolist() == values and wr["in_r9"].tolist() == [ALL] * n
    assert wr["out_r8"].tolist() == prev.tolist()
    r.close()


# ---- poll_vmcs ---------------------------------------------------------------------------------


def test_poll_columns_values_and_timestamps(runner, sim):
    seed_values(sim)
    res = runner.poll_vmcs(VTL0, FIELDS, 50)
    assert res.dtype.names == ("t_ns",) + tuple(f.name for f in FIELDS)
    assert res.dtype == poll_dtype(FIELDS)
    assert len(res) == 50
    for f in FIELDS:
        assert (res[f.name] == one_by_one_read(runner, VTL0, f)).all()
    assert (np.diff(res["t_ns"].astype(np.int64)) >= 0).all()
    now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    assert 0 < res["t_ns"][0] <= now


def test_poll_interval_strictly_increasing(runner, sim):
    res = runner.poll_vmcs(VTL1, FIELDS[:2], 20, interval_ns=200_000)
    d = np.diff(res["t_ns"].astype(np.int64))
    assert (d > 0).all()
    # Fixed rate: every sample is at least one interval after its predecessor's slot.
    assert res["t_ns"][-1] - res["t_ns"][0] >= 19 * 200_000 - 200_000


def test_poll_unknown_encoding_column_name(runner, sim):
    assert poll_dtype([0x6802, 0x681E]).names[1] == "VMX_VMCS_GUEST_CR3"
    assert poll_dtype(np.array([0x6C00], dtype=np.uint32)).names[1] in ("VMX_VMCS_HOST_CR0", "0x6c00")
    with pytest.raises(ValueError, match="twice"):
        runner.poll_vmcs(VTL0, [F.VMX_VMCS_GUEST_CR3, 0x6802], 3)


def test_poll_into_out_without_allocation(runner, sim):
    out = np.zeros(100, dtype=poll_dtype(FIELDS[:3]))
    res = runner.poll_vmcs(VTL0, FIELDS[:3], 40, out=out)
    assert len(res) == 40 and np.shares_memory(res, out)
    assert (out["t_ns"][:40] > 0).all() and (out["t_ns"][40:] == 0).all()
    with pytest.raises(TypeError, match="dtype"):
        runner.poll_vmcs(VTL0, FIELDS[:2], 10, out=out)
    with pytest.raises(ValueError, match="rows"):
        runner.poll_vmcs(VTL0, FIELDS[:3], 101, out=out)


def test_poll_zero_samples_and_bad_counts(runner, sim):
    assert len(runner.poll_vmcs(VTL0, FIELDS, 0)) == 0
    with pytest.raises(ValueError):
        runner.poll_vmcs(VTL0, FIELDS, -1)
    with pytest.raises(TypeError):
        runner.poll_vmcs(VTL0, FIELDS, 10, interval_ns=1.5)
    with pytest.raises(TypeError, match="callable"):
        runner.poll_vmcs(VTL0, FIELDS, 10, progress=3)


def test_poll_grows_past_first_chunk(runner, sim):
    res = runner.poll_vmcs(VTL0, [F.VMX_VMCS_GUEST_RIP], 70_000)
    assert len(res) == 70_000
    assert (np.diff(res["t_ns"].astype(np.int64)) >= 0).all()


def test_poll_changes_only_no_change_gives_one_row(runner, sim):
    res = runner.poll_vmcs(VTL0, FIELDS, 500, changes_only=True)
    assert len(res) == 1


def test_poll_changes_only_sees_each_change(runner, sim):
    f = F.VMX_VMCS_GUEST_RIP
    written = [0x1000]
    sim.set_vmcs(0, 0, int(f), 0x1000)

    def progress(done, total):
        written.append(written[-1] + 0x10)
        sim.set_vmcs(0, 0, int(f), written[-1])

    res = runner.poll_vmcs(VTL0, [f, F.VMX_VMCS_GUEST_CR3], 1000, interval_ns=1_000_000,
                           progress=progress, changes_only=True)
    rips = res[f.name].tolist()
    # Every value written before the final progress call, once each, in order.
    assert rips == written[:-1]
    assert len(rips) >= 2
    assert (np.diff(res["t_ns"].astype(np.int64)) > 0).all()


def test_poll_changes_only_from_another_thread(runner, sim):
    f = F.VMX_VMCS_GUEST_CR3
    stop = threading.Event()

    def writer():
        v = 0
        while not stop.is_set():
            v += 0x1000
            sim.set_vmcs(0, 0, int(f), v)
            time.sleep(0.002)

    t = threading.Thread(target=writer)
    t.start()
    try:
        res = runner.poll_vmcs(VTL0, [f], 200, interval_ns=1_000_000, changes_only=True)
    finally:
        stop.set()
        t.join()
    vals = res[f.name].astype(np.int64)
    assert len(vals) >= 1
    assert (np.diff(vals) != 0).all()       # no repeated row
    assert (np.diff(vals) > 0).all()        # the writer only increases


def test_poll_progress_callback(runner, sim):
    calls = []
    runner.poll_vmcs(VTL0, FIELDS[:2], 400, interval_ns=1_000_000,
                     progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (400, 400)
    assert len(calls) >= 2
    assert all(d < t for d, t in calls[:-1])   # (total, total) comes once, last
    assert all(t == 400 for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_poll_runner_is_busy_inside_progress(hcl, sim):
    r = hcl.runner(0)
    seen = []

    def progress(done, total):
        if done < total:
            for call in (lambda: r.read_vmcs64(VTL0, F.VMX_VMCS_GUEST_CR3), hcl.close):
                try:
                    call()
                except RuntimeError as e:
                    seen.append(str(e))

    r.poll_vmcs(VTL0, FIELDS[:1], 300, interval_ns=1_000_000, progress=progress)
    assert any("already inside a call" in s for s in seen)
    assert any("cannot close" in s for s in seen)
    # Afterwards the runner is usable again.
    assert r.read_vmcs64(VTL0, F.VMX_VMCS_GUEST_CR3) == 0
    r.close()


def test_poll_releases_the_gil_during_device_calls():
    """The stand-in device is served by a thread of this process that needs
    the GIL for every request: a poll (or batch) holding the GIL across its
    ioctls would deadlock. A watchdog aborts the FUSE connection after 60 s,
    so a regression fails instead of hanging."""
    from conftest import device_unavailable_reason

    reason = device_unavailable_reason()
    if reason:
        pytest.skip(f"FUSE stand-in device unavailable: {reason}")
    from hcltdx import simdev

    with simdev.mount(vp_count=2, in_process=True) as dev:
        dev.sim.set_vmcs(0, 0, 0x6802, 0xC3000)
        with simdev.Watchdog(dev.mountpoint, 60) as dog:
            hcl = hcltdx.Hcl.open(dev.path, vp_count=2)
            try:
                with hcl.runner(0) as r:
                    rows = r.poll_vmcs(VTL0, [F.VMX_VMCS_GUEST_CR3, F.VMX_VMCS_GUEST_CR0], 200)
                    vals = r.read_vmcs_batch(VTL0, [F.VMX_VMCS_GUEST_CR3] * 50)
            finally:
                hcl.close()
            assert not dog.fired
        assert len(rows) == 200 and set(rows["VMX_VMCS_GUEST_CR3"].tolist()) == {0xC3000}
        assert vals.tolist() == [0xC3000] * 50


def _signal_once_polling(sim, send, calls=2):
    """Send the signal once the model has counted `calls` more VP.RDs: the
    poll is then certainly running (a timer could fire before it starts, on a
    loaded machine, and interrupt the test itself)."""
    base = sim.counters()["VP_RD"]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            if sim.counters()["VP_RD"] >= base + calls:
                send()
                return
            stop.wait(0.001)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return stop, t


def test_poll_ctrl_c_stops_long_poll_keeping_samples(runner, sim):
    main = threading.main_thread().ident
    stop, t = _signal_once_polling(sim, lambda: signal.pthread_kill(main, signal.SIGINT), calls=4)
    try:
        with pytest.raises(PollInterrupted) as ei:
            runner.poll_vmcs(VTL0, FIELDS[:2], 10**9, interval_ns=1_000_000)
    finally:
        stop.set()
        t.join()
    e = ei.value
    assert isinstance(e, KeyboardInterrupt)
    assert 0 < len(e.samples) <= e.taken < 10**9   # stopped early, samples kept
    assert e.samples.dtype == poll_dtype(FIELDS[:2])
    assert (np.diff(e.samples["t_ns"].astype(np.int64)) > 0).all()
    # The runner and the Hcl are free again.
    assert runner.read_vmcs_batch(VTL0, FIELDS[:2]).shape == (2,)


def test_poll_ctrl_c_via_os_kill_back_to_back(runner, sim):
    stop, t = _signal_once_polling(sim, lambda: os.kill(os.getpid(), signal.SIGINT))
    try:
        with pytest.raises(PollInterrupted) as ei:
            runner.poll_vmcs(VTL0, [F.VMX_VMCS_GUEST_RIP], 10**12, changes_only=True)
    finally:
        stop.set()
        t.join()
    assert len(ei.value.samples) == 1 and ei.value.taken >= 1


def test_poll_ctrl_c_inside_progress_keeps_samples(runner, sim):
    def progress(done, total):
        if done < total:
            raise KeyboardInterrupt     # what SIGINT does while the callback runs

    with pytest.raises(PollInterrupted) as ei:
        runner.poll_vmcs(VTL0, FIELDS[:1], 10**9, interval_ns=1_000_000, progress=progress)
    assert 0 < len(ei.value.samples) == ei.value.taken


def test_poll_failure_raises_batch_error_with_rows(runner, sim):
    sim.enable_log(8)
    with pytest.raises(BatchError) as ei:
        runner.poll_vmcs(VTL0, [F.VMX_VMCS_GUEST_CR3, F.VMX_VMCS_HOST_ES_SELECTOR], 5)
    assert ei.value.index == 1 and ei.value.samples.shape == (0,)
    assert ei.value.values.tolist() == [0]


class _IntSub(int):
    pass


def test_batch_list_items_of_every_kind_in_any_position(runner, sim):
    """Members and plain ints are converted in one C loop that stops at any
    other item; the item is checked in Python and the loop goes on after it.
    Every position must hold its own field's value."""
    seed_values(sim)
    kinds = [lambda f: f, int, np.uint32, np.int64, _IntSub, lambda f: np.uint16(int(f))]
    fields = []
    for i, f in enumerate(FIELDS * 3):
        fields.append(kinds[(i * 5) % len(kinds)](f))
    fields += [0, VmcsField(0)]           # encoding 0: an int without digits
    want = [one_by_one_read(runner, VTL0, VmcsField(int(f))) for f in fields]
    for seq in (fields, tuple(fields), iter(fields)):
        assert runner.read_vmcs_batch(VTL0, seq).tolist() == want
    # A bad item after slow ones is still named by its index.
    with pytest.raises(ValueError, match=r"index 4"):
        runner.read_vmcs_batch(VTL0, [np.uint32(0x6802), 0x6802, _IntSub(0x6802), F.VMX_VMCS_GUEST_CR3,
                                      0x6803])
    with pytest.raises(ValueError, match=r"index 2"):
        runner.read_vmcs_batch(VTL0, [_IntSub(0x6802), 0x6802, 1 << 30])
    with pytest.raises(ValueError, match=r"index 1"):
        runner.read_vmcs_batch(VTL0, [0x6802, -0x6802])
