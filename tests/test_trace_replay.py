"""The tdcall trace against the simulator's own call log, and replay of a
recorded run: same results, divergence detected and located."""

import errno
import gc

import numpy as np
import pytest

import hcltdx
from hcltdx import GuestVtl, Hcl, MemoryRange, VmcsAccessError, VmcsField, snapshot
from hcltdx._core import TRACE_ENTRY_SIZE
from hcltdx._poll import ReplayDivergence, ReplayState
from hcltdx.trace import TRACE_DTYPE, Trace

F = VmcsField
VTL0, VTL1 = GuestVtl.VTL0, GuestVtl.VTL1
ALL = 0xFFFFFFFFFFFFFFFF
MiB = 1 << 20
FIELDS = [F.VMX_VMCS_GUEST_CR3, F.VMX_VMCS_GUEST_RIP, F.VMX_VMCS_GUEST_CS_AR]
REGS = ("rax", "rcx", "rdx", "r8", "r9")
OUT_REGS = ("rax", "rcx", "rdx", "r8", "r9", "r10", "r11")


def test_trace_dtype_matches_the_c_struct():
    assert TRACE_DTYPE.itemsize == TRACE_ENTRY_SIZE == 128
    assert TRACE_DTYPE.fields["in_rax"][1] == 16
    assert TRACE_DTYPE.fields["out_rax"][1] == 72
    assert TRACE_DTYPE.fields["out_r11"][1] == 120


def workload(hcl):
    """Runner creation, single and batch VMCS access, a failing read, a
    poll, a snapshot, TD-wide accepts. Returns everything it observed."""
    seen = []
    r = hcl.runner(0)
    seen.append(r.write_vmcs64(VTL0, F.VMX_VMCS_GUEST_CR3, ALL, 0x5000))
    seen.append(r.read_vmcs64(VTL0, F.VMX_VMCS_GUEST_CR3))
    seen.append(r.write_vmcs_batch(VTL1, FIELDS, [ALL, ALL, 0xFFFF], [0x6000, 0x7000, 0xC093]).tolist())
    seen.append(r.read_vmcs_batch(VTL1, FIELDS).tolist())
    try:
        r.read_vmcs16(VTL0, F.VMX_VMCS_HOST_ES_SELECTOR)
    except VmcsAccessError as e:
        seen.append(int(e.result))
    p = r.poll_vmcs(VTL0, FIELDS[:2], 3)
    seen.append([p[f.name].tolist() for f in FIELDS[:2]])
    s = r.snapshot(apic=False, vmcs=FIELDS)
    seen.append(s["vmcs_vtl1"].tolist())
    hcl.mshv_vtl.tdx_accept_pages(MemoryRange(0, 4 * MiB))
    hcl.mshv_vtl.tdx_accept_pages(MemoryRange(4 * MiB, 4 * MiB + 8192))
    seen.append(r.read_vmcs32(VTL1, F.VMX_VMCS_GUEST_CS_AR))
    del p, s
    gc.collect()
    r.close()
    return seen


def test_trace_matches_the_simulator_call_log(hcl, sim):
    sim.enable_log(1024)
    with hcl.trace(1024) as t:
        workload(hcl)
    log = sim.call_log()
    calls = t.calls
    assert t.total == len(calls) == len(log) > 10
    assert t.dropped == 0
    assert calls["vp"].tolist() == log["vp"].tolist()
    for reg in REGS:
        assert calls[f"in_{reg}"].tolist() == log[f"in_{reg}"].tolist(), reg
    for reg in OUT_REGS:
        assert calls[f"out_{reg}"].tolist() == log[f"out_{reg}"].tolist(), reg
    assert (calls["err"] == 0).all()
    assert (np.diff(calls["t_ns"].astype(np.int64)) >= 0).all()
    names = t.leaf_names()
    assert names[0] == "VP_WR"  # VTL1's APIC page registration
    assert {"VP_RD", "VP_WR", "MEM_PAGE_ACCEPT"} <= set(names)


def test_trace_ring_keeps_the_last_calls(hcl, sim):
    r = hcl.runner(0)
    sim.enable_log(64)
    with r.trace(4) as t:
        for i in range(10):
            r.write_vmcs64(VTL0, F.VMX_VMCS_GUEST_RIP, ALL, i)
    assert t.total == 10 and len(t) == 4 and t.dropped == 6
    assert t.calls["in_r8"].tolist() == [6, 7, 8, 9]
    assert t.calls["in_r8"].tolist() == sim.call_log()["in_r8"][-4:].tolist()
    r.close()


def test_trace_stops_on_exception_and_is_off_after(hcl, sim):
    r = hcl.runner(0)
    with pytest.raises(ZeroDivisionError):
        with hcl.trace(16) as t:
            r.read_vmcs64(VTL0, F.VMX_VMCS_GUEST_CR3)
            1 / 0
    assert not t.recording and len(t.calls) == 1
    # Off again: a new trace can start and the old one does not grow.
    r.read_vmcs64(VTL0, F.VMX_VMCS_GUEST_CR3)
    assert len(t.calls) == 1
    with hcl.trace(16) as t2:
        with pytest.raises(RuntimeError, match="already recording"):
            hcl.trace(16).__enter__()
        with pytest.raises(RuntimeError, match="still recording"):
            t2.calls
    r.close()


def test_trace_save_load(hcl, sim, tmp_path):
    with hcl.trace(64) as t:
        r = hcl.runner(1)
        r.read_vmcs_batch(VTL0, FIELDS)
    t.save(tmp_path / "t.npz", host="test")
    u = Trace.load(tmp_path / "t.npz")
    assert u.calls.dtype == TRACE_DTYPE
    assert u.calls.tobytes() == t.calls.tobytes()
    assert u.total == t.total and u.metadata["host"] == "test"
    assert u.metadata["vp_count"] == hcl.vp_count
    assert u.metadata["hcltdx_version"] == hcltdx.__version__
    gc.collect()
    r.close()


def test_trace_load_refuses_other_files(runner, tmp_path):
    snapshot.save(tmp_path / "snap.npz", runner.snapshot())
    np.savez(tmp_path / "other.npz", calls=np.zeros(1, dtype=TRACE_DTYPE),
             metadata=np.array('{"kind": "other"}'))
    for name in ("snap.npz", "other.npz"):
        with pytest.raises(ValueError, match="not an hcltdx trace"):
            Trace.load(tmp_path / name)


# ---- replay ------------------------------------------------------------------------------------


def recorded(hcl, capacity=4096):
    with hcl.trace(capacity) as t:
        seen = workload(hcl)
    return t, seen


def test_replay_reproduces_the_run(hcl, sim):
    t, seen = recorded(hcl)
    rh = Hcl.replay(t)
    assert rh.backend == "replay" and isinstance(rh.sim, ReplayState)
    assert rh.vp_count == hcl.vp_count
    assert workload(rh) == seen
    rh.sim.assert_complete()
    assert rh.sim.position == rh.sim.total == len(t.calls)
    rh.close()


def test_replay_from_a_saved_file(hcl, sim, tmp_path):
    t, seen = recorded(hcl)
    t.save(tmp_path / "run.npz")
    rh = Hcl.replay(str(tmp_path / "run.npz"))
    assert workload(rh) == seen
    rh.sim.assert_complete()
    rh.close()
    # The bare calls array works too.
    rh = Hcl.replay(t.calls, vp_count=2)
    assert workload(rh) == seen
    rh.close()


def test_replay_detects_a_different_field(hcl, sim):
    t, _ = recorded(hcl)
    rh = Hcl.replay(t)
    r = rh.runner(0)
    r.write_vmcs64(VTL0, F.VMX_VMCS_GUEST_CR3, ALL, 0x5000)
    with pytest.raises(ReplayDivergence, match="diverged at call 2") as ei:
        r.read_vmcs64(VTL0, F.VMX_VMCS_GUEST_CR0)   # the recording read CR3 here
    assert ei.value.errno == errno.EPROTO and ei.value.position == 2
    st = rh.sim
    assert st.diverged and st.position == 2
    assert int(st.expected["in_rdx"]) == 0x2420000300006802
    assert st.got["rdx"] == 0x2420000300006800
    with pytest.raises(ReplayDivergence, match=r"diverged at call 2: expected VP_RD.*rdx=0x2420000300006802.*"
                                               r"got VP_RD.*rdx=0x2420000300006800") as di:
        st.check()
    assert di.value.position == 2 and di.value.errno == errno.EPROTO
    # Sticky: later calls fail too, until rewound.
    with pytest.raises(OSError):
        r.read_vmcs64(VTL0, F.VMX_VMCS_GUEST_CR3)
    gc.collect()
    r.close()
    rh.close()


def test_replay_divergence_in_a_batch_is_raised_directly(hcl, sim):
    t, _ = recorded(hcl)
    rh = Hcl.replay(t)
    r = rh.runner(0)
    r.write_vmcs64(VTL0, F.VMX_VMCS_GUEST_CR3, ALL, 0x5000)
    r.read_vmcs64(VTL0, F.VMX_VMCS_GUEST_CR3)
    with pytest.raises(ReplayDivergence, match="diverged at call 3") as ei:
        r.read_vmcs_batch(VTL1, FIELDS)            # the recording wrote them
    assert isinstance(ei.value, OSError) and ei.value.position == 3
    gc.collect()
    r.close()
    rh.close()


def test_replay_past_the_end(hcl, sim):
    with hcl.trace(64) as t:
        r = hcl.runner(0)
        r.read_vmcs64(VTL0, F.VMX_VMCS_GUEST_RIP)
    gc.collect()
    r.close()
    rh = Hcl.replay(t)
    r = rh.runner(0)
    r.read_vmcs64(VTL0, F.VMX_VMCS_GUEST_RIP)
    rh.sim.assert_complete()
    with pytest.raises(OSError):
        r.read_vmcs64(VTL0, F.VMX_VMCS_GUEST_RIP)
    with pytest.raises(ReplayDivergence, match="only 2 calls"):
        rh.sim.check()
    assert rh.sim.expected is None
    rh.sim.rewind()
    assert not rh.sim.diverged and rh.sim.position == 0
    gc.collect()
    r.close()
    rh.close()


def test_replay_incomplete(hcl, sim):
    t, _ = recorded(hcl)
    rh = Hcl.replay(t)
    rh.runner(0).close()
    with pytest.raises(ReplayDivergence, match="incomplete: 1 of"):
        rh.sim.assert_complete()
    rh.close()


def test_replay_lenient_lookup(hcl, sim):
    t, seen = recorded(hcl)
    rh = Hcl.replay(t, strict=False)
    r = rh.runner(0)
    # Out of order: a read recorded later is found, then an earlier one again.
    assert r.read_vmcs32(VTL1, F.VMX_VMCS_GUEST_CS_AR) == seen[-1]
    assert r.read_vmcs64(VTL0, F.VMX_VMCS_GUEST_CR3) == seen[1]
    assert rh.sim.skipped > 0 and not rh.sim.diverged
    with pytest.raises(OSError):
        r.read_vmcs64(VTL0, F.VMX_VMCS_GUEST_CR0)   # never recorded
    assert rh.sim.diverged
    gc.collect()
    r.close()
    rh.close()


def test_replay_registers_the_recorded_vtl1_apic_page(hcl, sim):
    sim.enable_log(16)
    with hcl.trace(16) as t:
        hcl.runner(1).close()
    registered = int(sim.call_log()[0]["in_r8"])
    rh = Hcl.replay(t)
    with rh.trace(16) as again:
        r = rh.runner(1)
    assert r.tdx_apic_page(VTL1).nbytes == 4096
    rh.sim.assert_complete()
    # The replayed runner registered the address the simulator was given.
    assert int(again.calls[0]["in_r8"]) == registered != 0
    gc.collect()
    r.close()
    rh.close()


def test_replay_bad_sources():
    with pytest.raises(TypeError):
        Hcl.replay(np.zeros(3))
    with pytest.raises(TypeError, match="lacks"):
        Hcl.replay(np.zeros(3, dtype=[("vp", "<u4")]))
    with pytest.raises(TypeError):
        ReplayState()


def test_replay_recorded_eproto_is_not_a_divergence(hcl, sim):
    with hcl.trace(64) as t:
        r = hcl.runner(0)
        r.read_vmcs_batch(VTL0, FIELDS)
    gc.collect()
    r.close()
    calls = t.calls.copy()
    assert t.leaf_names()[:2] == ["VP_WR", "VP_RD"]
    calls["err"][1] = errno.EPROTO     # as if the transport had failed with EPROTO
    rh = Hcl.replay(calls, vp_count=hcl.vp_count)
    r = rh.runner(0)
    with pytest.raises(OSError) as ei:
        r.read_vmcs_batch(VTL0, FIELDS)
    assert ei.value.errno == errno.EPROTO
    assert not isinstance(ei.value, ReplayDivergence)
    assert not rh.sim.diverged and rh.sim.position == 2
    gc.collect()
    r.close()
    rh.close()


def test_closing_the_hcl_keeps_a_recording_trace(backend):
    hcl = backend.open()
    with hcl.trace(16) as t:
        hcl.tdcall(0, 9, rdx=0x2420000300006802)
        hcl.close()
    assert len(t.calls) == 1 and int(t.calls[0]["in_rdx"]) == 0x2420000300006802


@pytest.mark.parametrize("how", ["read_vmcs64", "write_vmcs64", "tdcall"])
def test_replay_transport_failure_names_the_leaf_sent(hcl, sim, how):
    # A recorded transport failure (err != 0) whose recorded output RAX is a
    # different leaf number: the OSError names the leaf that was sent
    # (VP.RD = 9 or VP.WR = 10), not what RAX holds after the call.
    cr3 = VmcsField.VMX_VMCS_GUEST_CR3
    code = hcltdx.vmcs_field_code(cr3, VTL0)
    with hcl.trace(16) as t:
        r = hcl.runner(0)
        if how == "read_vmcs64":
            r.read_vmcs64(VTL0, cr3)
        elif how == "write_vmcs64":
            r.write_vmcs64(VTL0, cr3, 0xFFF000, 0x5000)
        else:
            hcl.tdcall(0, 9, rdx=code)
    gc.collect()
    r.close()
    calls = t.calls.copy()
    last = len(calls) - 1
    sent = int(calls["in_rax"][last])
    assert sent in (9, 10)
    calls["err"][last] = errno.EFAULT
    calls["out_rax"][last] = 6          # MEM_PAGE_ACCEPT's leaf number
    rh = Hcl.replay(calls, vp_count=hcl.vp_count)
    r = rh.runner(0)
    with pytest.raises(OSError) as ei:
        if how == "read_vmcs64":
            r.read_vmcs64(VTL0, cr3)
        elif how == "write_vmcs64":
            r.write_vmcs64(VTL0, cr3, 0xFFF000, 0x5000)
        else:
            rh.tdcall(0, 9, rdx=code)
    assert ei.value.errno == errno.EFAULT
    msg = str(ei.value)
    assert ("VP_RD" if sent == 9 else "VP_WR") in msg
    assert "MEM_PAGE_ACCEPT" not in msg
    gc.collect()
    r.close()
    rh.close()
