"""Snapshots and the recorder over every backend: contents equal the mapped
pages and one-by-one reads; save/load round-trips exactly; diff names
exactly what changed."""

import gc

import numpy as np
import pytest

import hcltdx
from hcltdx import GuestVtl, Hcl, TdxPrivateRegs, VmcsField
from hcltdx import abi
from hcltdx import snapshot as S
from hcltdx._poll import BatchError, snapshot_dtype

F = VmcsField
VTL0, VTL1 = GuestVtl.VTL0, GuestVtl.VTL1
ALL = 0xFFFFFFFFFFFFFFFF
FIELDS = [F.VMX_VMCS_GUEST_CR3, F.VMX_VMCS_GUEST_RIP, F.VMX_VMCS_GUEST_CS_AR,
          F.VMX_VMCS_GUEST_ES_SELECTOR]


def dirty(runner):
    """Put recognisable values in the run page, APIC pages and VMCS."""
    regs = TdxPrivateRegs(rflags=0x202, rip=0xFFF0, ssp=0x10, rvi=0x31, svi=0x20,
                          msr_star=0x23, msr_lstar=0xFFFF8000, msr_tsc_aux=7,
                          vp_entry_flags=0x0020000000000001)
    runner.write_private_regs(regs)
    gps = runner.tdx_enter_guest_gps()
    gps[:] = np.arange(16, dtype=np.uint64) * 0x1111
    runner.tdx_vp_enter_exit_info()["rax"] = 0x30          # EPT_VIOLATION
    runner.tdx_apic_page(VTL0)["tpr"]["value"] = 0x20
    runner.tdx_apic_page(VTL1)["irr"][1]["value"] = 0x4
    runner.write_vmcs64(VTL0, F.VMX_VMCS_GUEST_CR3, ALL, 0x7000)
    runner.write_vmcs64(VTL1, F.VMX_VMCS_GUEST_RIP, ALL, 0x1234)
    runner.write_vmcs32(VTL0, F.VMX_VMCS_GUEST_CS_AR, 0xFFFFFFFF, 0xA09B)
    del gps
    return regs


def test_snapshot_holds_pages_and_registers(runner, sim):
    regs = dirty(runner)
    s = runner.snapshot(vmcs=FIELDS)
    assert s.shape == () and s.dtype == snapshot_dtype(vmcs=FIELDS)
    assert s.dtype.names == ("t_ns", "context", "apic_vtl0", "apic_vtl1", "private_regs",
                             "vmcs_vtl0", "vmcs_vtl1")
    assert s["context"].dtype == abi.TDX_VP_CONTEXT_DTYPE
    assert s["context"].tobytes() == bytes(runner.run_page()["context"].tobytes())
    assert s["context"].tobytes() == sim.run_page(0)[272:272 + 1024].tobytes()
    assert s["apic_vtl0"].tobytes() == runner.tdx_apic_page(VTL0).tobytes()
    assert s["apic_vtl1"].tobytes() == runner.tdx_apic_page(VTL1).tobytes()
    assert int(s["context"]["gpr_list"]["gps"][5]) == 5 * 0x1111
    pr = s["private_regs"]
    for name, value in regs.as_dict().items():
        assert int(pr[name]) == int(value), name
    for vtl in (VTL0, VTL1):
        sub = s[f"vmcs_vtl{int(vtl)}"]
        for f in FIELDS:
            one = {16: runner.read_vmcs16, 32: runner.read_vmcs32, 64: runner.read_vmcs64}[
                f.width_bits](vtl, f)
            assert int(sub[f.name]) == one
    assert int(s["vmcs_vtl0"]["VMX_VMCS_GUEST_CR3"]) == 0x7000
    assert int(s["vmcs_vtl1"]["VMX_VMCS_GUEST_RIP"]) == 0x1234


def test_snapshot_parts_and_per_vtl_fields(runner, sim):
    s = runner.snapshot(context=False, apic=False, private_regs=False,
                        vmcs={VTL1: [F.VMX_VMCS_GUEST_CR3]})
    assert s.dtype.names == ("t_ns", "vmcs_vtl1")
    assert s["vmcs_vtl1"].dtype.names == ("VMX_VMCS_GUEST_CR3",)
    bare = runner.snapshot(apic=False, private_regs=False)
    assert bare.dtype.names == ("t_ns", "context")
    every = runner.snapshot(context=False, apic=False, private_regs=False, vmcs="all")
    assert len(every["vmcs_vtl0"].dtype.names) == sum(1 for f in F.catalogue() if f.read_mask)


def test_snapshot_dtype_cached_per_configuration():
    a = snapshot_dtype(vmcs=FIELDS)
    assert snapshot_dtype(vmcs=list(FIELDS)) is a
    assert snapshot_dtype(vmcs=FIELDS, tsc_deadline_layout=True) is not a
    assert snapshot_dtype(vmcs=FIELDS, tsc_deadline_layout=True)["context"] == \
        abi.TDX_VP_CONTEXT_TSC_DEADLINE_DTYPE


def test_snapshot_tsc_deadline_layout():
    with Hcl.simulated(tsc_deadline_layout=True) as h:
        r = h.runner(0)
        r.l2_tsc_deadline()["deadline"] = 0xABCDEF
        s = r.snapshot(apic=False)
        assert int(s["context"]["l2_tsc_deadline"]["deadline"]) == 0xABCDEF
        gc.collect()
        r.close()


def test_snapshot_bad_vmcs_refused_before_any_tdcall(runner, sim):
    before = sim.counters()
    for bad in ([0x6803], {2: FIELDS}, "some", [F.VMX_VMCS_GUEST_CR3, F.VMX_VMCS_GUEST_CR3]):
        with pytest.raises(ValueError):
            runner.snapshot(vmcs=bad)
    assert sim.counters() == before


def test_snapshot_unreadable_field(runner, sim):
    with pytest.raises(BatchError) as ei:
        runner.snapshot(vmcs={VTL0: [F.VMX_VMCS_GUEST_CR3], VTL1: [F.VMX_VMCS_HOST_ES_SELECTOR]})
    assert ei.value.index == 1 and ei.value.vtl == 1
    assert ei.value.field == F.VMX_VMCS_HOST_ES_SELECTOR


def test_recorder_fills_then_refuses(runner, sim):
    rec = runner.recorder(3, vmcs=FIELDS)
    assert len(rec) == 0 and rec.records.shape == (0,) and rec.capacity == 3
    for i in range(3):
        runner.write_vmcs64(VTL0, F.VMX_VMCS_GUEST_RIP, ALL, 0x100 * (i + 1))
        assert rec.take() == i
    assert rec.full
    with pytest.raises(S.RecorderFull, match="full"):
        rec.take()
    assert rec.records["vmcs_vtl0"]["VMX_VMCS_GUEST_RIP"].tolist() == [0x100, 0x200, 0x300]
    assert (np.diff(rec.records["t_ns"].astype(np.int64)) >= 0).all()
    # Same bytes as a snapshot, apart from the time.
    one = runner.snapshot(vmcs=FIELDS)
    last = rec.records[-1].copy()
    last["t_ns"] = one["t_ns"]
    assert last.tobytes() == one.tobytes()
    rec.clear()
    assert len(rec) == 0
    rec.take()
    assert len(rec) == 1


def test_recorder_bad_options(runner):
    with pytest.raises(TypeError, match="colour"):
        runner.recorder(2, colour=True)
    with pytest.raises(ValueError):
        runner.recorder(0)
    with pytest.raises(TypeError):
        hcltdx._poll.Recorder()
    assert "not made by" in repr(hcltdx._poll.Recorder.__new__(hcltdx._poll.Recorder))


def test_recorder_on_a_closed_or_half_built_runner(hcl):
    r = hcl.runner(1)
    r.close()
    for bad in (r, hcltdx.TdxRunner.__new__(hcltdx.TdxRunner)):
        with pytest.raises(ValueError, match="closed runner"):
            hcltdx._poll.recorder(bad, 2)


def test_save_load_round_trip(runner, sim, tmp_path):
    dirty(runner)
    rec = runner.recorder(4, vmcs={VTL0: FIELDS, VTL1: FIELDS[:2]})
    for _ in range(4):
        rec.take()
        runner.write_vmcs64(VTL0, F.VMX_VMCS_GUEST_CR3, ALL, 0x9000)
    path = tmp_path / "snaps.npz"
    S.save(path, rec, note="test")
    records, meta = S.load(path)
    assert records.dtype == rec.records.dtype
    assert np.array_equal(records, rec.records)
    assert records.tobytes() == rec.records.tobytes()
    assert meta["vp"] == 0 and meta["note"] == "test"
    assert meta["hcltdx_version"] == hcltdx.__version__
    assert meta["tsc_deadline_layout"] is False
    assert meta["vmcs_fields"] == {"0": [int(f) for f in FIELDS], "1": [int(f) for f in FIELDS[:2]]}
    assert meta["vmcs_names"]["vmcs_vtl1"] == [f.name for f in FIELDS[:2]]
    assert meta["shape"] == [4]
    one = runner.snapshot()
    S.save(tmp_path / "one.npz", one, vp=0)
    loaded = S.load(tmp_path / "one.npz")
    assert loaded.records.shape == () and loaded.records.tobytes() == one.tobytes()
    assert loaded.metadata["vp"] == 0


def test_load_refuses_other_files(tmp_path):
    np.savez(tmp_path / "x.npz", records=np.zeros(2), metadata=np.array('{"kind": "other"}'))
    with pytest.raises(ValueError, match="not an hcltdx snapshot"):
        S.load(tmp_path / "x.npz")


def test_diff_finds_exactly_the_changes(runner, sim):
    dirty(runner)
    a = runner.snapshot(vmcs=FIELDS)
    runner.tdx_enter_guest_gps()[4] = 0xDEAD
    runner.tdx_vp_context()["gpr_list"]["rip"] = 0x4000
    runner.tdx_apic_page(VTL1)["isr"][7]["value"] = 0x80000000
    runner.write_vmcs64(VTL0, F.VMX_VMCS_GUEST_CR3, ALL, 0x8000)
    runner.write_vmcs16(VTL1, F.VMX_VMCS_GUEST_ES_SELECTOR, 0xFFFF, 0x10)
    gc.collect()
    b = runner.snapshot(vmcs=FIELDS)
    changes = {c.name: (c.old, c.new) for c in S.diff(a, b)}
    assert changes == {
        "context.gpr_list.gps[4]": (4 * 0x1111, 0xDEAD),
        "context.gpr_list.rip": (0xFFF0, 0x4000),
        "private_regs.rip": (0xFFF0, 0x4000),
        "apic_vtl1.isr[7].value": (0, 0x80000000),
        "vmcs_vtl0.VMX_VMCS_GUEST_CR3": (0x7000, 0x8000),
        "vmcs_vtl1.VMX_VMCS_GUEST_ES_SELECTOR": (0, 0x10),
    }
    assert S.diff(a, a) == []
    rec = np.stack([a, b])
    assert len(S.diff(rec[0], rec[1])) == 6
    with pytest.raises(ValueError):
        S.diff(rec, rec)
    with pytest.raises(ValueError):
        S.diff(a, runner.snapshot())


def test_decoders():
    assert S.exit_reason_name(0x30) == "EPT_VIOLATION"
    assert S.exit_reason_name(0x80000021) == "BAD_GUEST_STATE (vm_enter_failed)"
    assert S.exit_reason_name(0x7777) == "0x7777"
    rf = S.decode_rflags(0x202)
    assert rf["interrupt_enable"] is True and rf["reserved_must_be_1"] is True and rf["carry"] is False
    ar = S.decode_segment_attributes(0xA09B)
    assert ar == {"typ": 11, "user": True, "dpl": 0, "present": True, "available": False,
                  "long_mode": True, "default_size": False, "granularity": True, "null": False}


def test_describe(runner, sim):
    dirty(runner)
    text = "\n".join(S.describe(runner.snapshot(vmcs=FIELDS)))
    assert "exit: EPT_VIOLATION" in text
    assert "rip=0xfff0" in text and "interrupt_enable" in text
    assert "irr=[34]" in text
    assert "GUEST_CR3" in text and "0x7000" in text
    assert "long_mode" in text  # CS_AR decoded
