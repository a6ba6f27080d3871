"""Faults: every injectable TDX status on every operation maps to its
exception and leaves the model as it was (or says how far it got); EINTR
during ioctls; Ctrl-C in a long batch; the stand-in daemon killed mid-call;
the backing file removed; a device opened read-only; read()/write() of the
stand-in file. Status values come from tdx-abi §4 (TdCallResultCode)."""

import errno
import gc
import os
import signal
import threading

import numpy as np
import pytest

import hcltdx
from hcltdx import (AcceptPagesAttributes, AcceptPagesBusy, AcceptPagesInvalid, AcceptPagesUnknown,
                    BatchError, GuestVtl, MemoryRange, PageAlreadyAcceptedError,
                    SetPageAttributesError, TdCallLeaf, TdCallResultCode, VmcsAccessError, VmcsField)
from hcltdx import simdev
from hcltdx.errors import BatchInterrupted

VTL0, VTL1 = GuestVtl.VTL0, GuestVtl.VTL1
CR3 = VmcsField.VMX_VMCS_GUEST_CR3
ALL = (1 << 64) - 1
DEVICE_OK, DEVICE_WHY = simdev.available()
needs_device = pytest.mark.skipif(not DEVICE_OK, reason=f"stand-in device unavailable: {DEVICE_WHY}")

# Statuses a TDX module can answer (tdx-abi §4): code << 32 is the RAX.
STATUSES = {
    "OPERAND_INVALID": 0xC0000100,
    "OPERAND_BUSY": 0x80000200,
    "PAGE_ALREADY_ACCEPTED": 0x00000B0A,
    "PAGE_SIZE_MISMATCH": 0xC0000B0B,
    "OPERAND_ADDR_RANGE_ERROR": 0xC0000101,
    "SYS_BUSY": 0x80000202,
    "FIELD_NOT_READABLE": 0xC0000C0C,
    "NON_RECOVERABLE_TD": 0x60000002,
}
FULL = 0x800F  # R, W, Xs, Xu and VALID of L2 VM #1 (tdx-abi §7)
ATTRS = int(hcltdx.TdgMemPageGpaAttr(l2_vm1=hcltdx.GpaVmAttributes(FULL)))
MASK = int(hcltdx.TdgMemPageAttrWriteR8(l2_vm1=hcltdx.GpaVmAttributesMask.ALL_CHANGED))


def status_rax(code):
    return code << 32


# ---- VMCS access: VP.RD / VP.WR ------------------------------------------------------------


@pytest.mark.parametrize("status", list(STATUSES))
def test_vmcs_read_status_maps_to_vmcs_access_error(runner, sim, status):
    code = STATUSES[status]
    sim.set_vmcs(0, 0, 0x6802, 0x1234)
    sim.inject(TdCallLeaf.VP_RD, status_rax(code))
    with pytest.raises(VmcsAccessError) as ei:
        runner.read_vmcs64(VTL0, CR3)
    e = ei.value
    assert e.code == code and e.leaf == TdCallLeaf.VP_RD and e.vp == 0 and e.field == CR3
    assert f"{code:#010x}".upper()[2:] in str(e).upper() or TdCallResultCode(code).name in str(e)
    assert runner.read_vmcs64(VTL0, CR3) == 0x1234  # the fault was one call; state intact


@pytest.mark.parametrize("status", list(STATUSES))
def test_vmcs_write_status_leaves_field_unchanged(runner, sim, status):
    code = STATUSES[status]
    sim.set_vmcs(0, 1, 0x6802, 0x1000)
    sim.inject(TdCallLeaf.VP_WR, status_rax(code))
    with pytest.raises(VmcsAccessError) as ei:
        runner.write_vmcs64(VTL1, CR3, ALL, 0x2000)
    assert ei.value.code == code and ei.value.leaf == TdCallLeaf.VP_WR
    assert sim.vmcs(0, 1, 0x6802) == 0x1000
    runner.write_vmcs64(VTL1, CR3, ALL, 0x2000)  # the retry completes it
    assert sim.vmcs(0, 1, 0x6802) == 0x2000


@pytest.mark.parametrize("at", [0, 3, 7])
def test_write_batch_failure_says_how_far_and_retry_completes(runner, sim, at):
    fields = [VmcsField.VMX_VMCS_GUEST_CR3, VmcsField.VMX_VMCS_GUEST_RIP,
              VmcsField.VMX_VMCS_GUEST_RSP, VmcsField.VMX_VMCS_GUEST_CR0,
              VmcsField.VMX_VMCS_GUEST_CR4, VmcsField.VMX_VMCS_GUEST_RFLAGS,
              VmcsField.VMX_VMCS_GUEST_DR7, VmcsField.VMX_VMCS_GUEST_GDTR_BASE]
    raws = [int(f) for f in fields]
    for i, raw in enumerate(raws):
        sim.set_vmcs(0, 0, raw, 0x100 + i)
    # `at` writes succeed (their own batch), then the next call fails once.
    if at:
        runner.write_vmcs_batch(VTL0, fields[:at], [ALL] * at, [0x900 + i for i in range(at)])
    sim.inject(TdCallLeaf.VP_WR, status_rax(STATUSES["OPERAND_BUSY"]))
    rest = fields[at:]
    with pytest.raises(BatchError) as ei:
        runner.write_vmcs_batch(VTL0, rest, [ALL] * len(rest), [0x900 + at + i for i in range(len(rest))])
    e = ei.value
    assert e.index == 0 and e.total == len(rest) and len(e.values) == 0
    assert [sim.vmcs(0, 0, raw) for raw in raws] == \
        [0x900 + i for i in range(at)] + [0x100 + i for i in range(at, 8)]
    prev = runner.write_vmcs_batch(VTL0, rest, [ALL] * len(rest), [0x900 + at + i for i in range(len(rest))])
    assert prev.tolist() == [0x100 + i for i in range(at, 8)]
    assert [sim.vmcs(0, 0, raw) for raw in raws] == [0x900 + i for i in range(8)]


def test_read_batch_failure_mid_way_keeps_values(runner, sim):
    fields = [VmcsField.VMX_VMCS_GUEST_CR3, VmcsField.VMX_VMCS_GUEST_RIP, 0x6FFE]
    sim.set_vmcs(0, 0, 0x6802, 0x3000)
    sim.set_vmcs(0, 0, 0x681E, 0x4000)
    with pytest.raises(BatchError) as ei:
        runner.read_vmcs_batch(VTL0, fields)  # 0x6FFE is no field: the module refuses it
    assert ei.value.code == TdCallResultCode.METADATA_FIELD_ID_INCORRECT
    assert ei.value.index == 2 and ei.value.values.tolist() == [0x3000, 0x4000]


# ---- page acceptance and attributes ---------------------------------------------------------

ACCEPT_EXC = {
    "OPERAND_INVALID": AcceptPagesInvalid,
    "OPERAND_BUSY": AcceptPagesBusy,
    "PAGE_ALREADY_ACCEPTED": PageAlreadyAcceptedError,
    "OPERAND_ADDR_RANGE_ERROR": AcceptPagesUnknown,
    "SYS_BUSY": AcceptPagesUnknown,
    "FIELD_NOT_READABLE": AcceptPagesUnknown,
    "NON_RECOVERABLE_TD": AcceptPagesUnknown,
}


@pytest.mark.parametrize("status", list(ACCEPT_EXC))
def test_accept_status_maps_and_retry_completes(hcl, sim, status):
    code = STATUSES[status]
    rng = MemoryRange(0x200000, 0x203000)  # not 2 MiB long: three 4 KiB ACCEPTs
    hcl.mshv_vtl.tdx_accept_pages(MemoryRange(0x200000, 0x201000))
    sim.inject(TdCallLeaf.MEM_PAGE_ACCEPT, status_rax(code))
    with pytest.raises(ACCEPT_EXC[status]) as ei:
        hcl.mshv_vtl.tdx_accept_pages(MemoryRange(0x201000, 0x203000))
    e = ei.value
    assert e.code == code and e.gpa == 0x201000
    assert e.accepted == MemoryRange(0x201000, 0x201000)
    assert sim.page_state(0x201000).state == "pending"
    hcl.mshv_vtl.tdx_accept_pages(MemoryRange(e.accepted.end, 0x203000))
    assert all(sim.page_state(g).state == "accepted" for g in range(rng.start, rng.end, 0x1000))


def test_accept_random_busy_reports_progress_and_retries_complete(hcl, sim):
    """OPERAND_BUSY on ~30% of ACCEPTs: each failure says how far it got (the
    pages below are accepted, the page at .gpa is not) and retrying from
    there completes the range with no page accepted twice."""
    start, end = 0x400000, 0x400000 + 0x400000 + 0x20000
    sim.inject_rate(TdCallLeaf.MEM_PAGE_ACCEPT, status_rax(STATUSES["OPERAND_BUSY"]), 0.3, seed=7)
    pos, failures = start, 0
    while pos < end:
        try:
            hcl.mshv_vtl.tdx_accept_pages(MemoryRange(pos, end))
            pos = end
        except AcceptPagesBusy as e:
            failures += 1
            assert e.accepted.start == pos and e.accepted.end == e.gpa >= pos
            assert e.gpa == pos or sim.page_state(e.gpa - 0x1000).state == "accepted"
            assert sim.page_state(e.gpa).state == "pending"
            pos = e.accepted.end
        assert failures < 200
    sim.clear_faults()
    assert failures > 0
    assert all(sim.page_state(g).state == "accepted" for g in range(start, end, 0x1000))
    # Accepting again: the very first page is already accepted.
    with pytest.raises(PageAlreadyAcceptedError):
        hcl.mshv_vtl.tdx_accept_pages(MemoryRange(start, start + 0x1000))


@pytest.mark.parametrize("status", ["OPERAND_INVALID", "OPERAND_BUSY", "SYS_BUSY"])
def test_set_attributes_status_maps_and_retry_completes(hcl, sim, status):
    code = STATUSES[status]
    hcl.mshv_vtl.tdx_accept_pages(MemoryRange(0x600000, 0x603000))
    hcl.mshv_vtl.tdx_set_page_attributes(MemoryRange(0x600000, 0x601000), ATTRS, MASK)
    sim.inject(TdCallLeaf.MEM_PAGE_ATTR_WR, status_rax(code))
    with pytest.raises(SetPageAttributesError) as ei:
        hcl.mshv_vtl.tdx_set_page_attributes(MemoryRange(0x601000, 0x603000), ATTRS, MASK)
    e = ei.value
    assert e.code == code and e.done == MemoryRange(0x601000, 0x601000)
    assert (sim.page_state(0x601000).attrs >> 16) & 0xFFFF != FULL
    hcl.mshv_vtl.tdx_set_page_attributes(MemoryRange(0x601000, 0x603000), ATTRS, MASK, verify=True)
    assert all((sim.page_state(g).attrs >> 16) & 0xFFFF == FULL for g in (0x600000, 0x601000, 0x602000))


def test_accept_attribute_failure_keeps_accepted_pages(hcl, sim):
    sim.inject(TdCallLeaf.MEM_PAGE_ATTR_WR, status_rax(STATUSES["OPERAND_INVALID"]))
    with pytest.raises(AcceptPagesAttributes) as ei:
        hcl.mshv_vtl.tdx_accept_pages(MemoryRange(0x800000, 0x802000), (ATTRS, MASK))
    assert ei.value.leaf == TdCallLeaf.MEM_PAGE_ATTR_WR
    # The page whose attributes failed was accepted (ACCEPT came first).
    assert sim.page_state(0x800000).state == "accepted"


def test_accept_attribute_failure_reports_the_accepted_page(hcl, sim):
    sim.inject(TdCallLeaf.MEM_PAGE_ATTR_WR, status_rax(STATUSES["OPERAND_INVALID"]))
    with pytest.raises(AcceptPagesAttributes) as ei:
        hcl.mshv_vtl.tdx_accept_pages(MemoryRange(0x800000, 0x802000), (ATTRS, MASK))
    assert sim.page_state(0x800000).state == "accepted"
    assert ei.value.accepted == MemoryRange(0x800000, 0x801000)


@pytest.mark.parametrize("status", ["OPERAND_INVALID", "OPERAND_BUSY"])
def test_l2_ctls_and_invgla_statuses(runner, sim, status):
    code = STATUSES[status]
    before = sim.l2_ctls(0, 0)
    sim.inject(TdCallLeaf.VP_WR, status_rax(code))  # L2 controls are a VP.WR (tdx-abi §7)
    with pytest.raises(hcltdx.TdCallError) as ei:
        runner.set_l2_ctls(VTL0, 0x3)
    assert ei.value.code == code and ei.value.leaf == TdCallLeaf.VP_WR
    assert sim.l2_ctls(0, 0) == before
    n = sim.invgla_count(0)
    sim.inject(TdCallLeaf.VP_INVGLA, status_rax(code))
    with pytest.raises(hcltdx.TdCallError) as ei:
        runner.invgla(1, 0x1000)
    assert ei.value.code == code and ei.value.leaf == TdCallLeaf.VP_INVGLA
    assert sim.invgla_count(0) == n


def test_raw_tdcall_returns_injected_status_in_rax(hcl, sim):
    for status, code in STATUSES.items():
        sim.inject(TdCallLeaf.VP_RD, status_rax(code))
        out = hcl.tdcall(0, TdCallLeaf.VP_RD, rdx=0x2420000300006802)
        assert out.rax == status_rax(code), status


# ---- EINTR, Ctrl-C ---------------------------------------------------------------------------


def test_signal_storm_during_calls_loses_nothing(runner, sim):
    """A signal handler runs again and again while the main thread issues
    calls: every ioctl interrupted with EINTR is retried; every value is
    right and nothing raises."""
    hits = []
    old = signal.signal(signal.SIGUSR1, lambda *a: hits.append(1))
    stop = threading.Event()
    main = threading.main_thread().ident

    def storm():
        while not stop.is_set():
            signal.pthread_kill(main, signal.SIGUSR1)
            stop.wait(0.0005)

    t = threading.Thread(target=storm)
    t.start()
    try:
        for i in range(600):
            runner.write_vmcs64(VTL0, CR3, ALL, i << 12)
            assert runner.read_vmcs64(VTL0, CR3) == i << 12
        vals = runner.read_vmcs_batch(VTL0, [CR3] * 300)
        assert vals.tolist() == [599 << 12] * 300
        prev = runner.write_vmcs_batch(VTL0, [CR3] * 100, [ALL] * 100, [(1000 + i) << 12 for i in range(100)])
        assert prev.tolist() == [599 << 12] + [(1000 + i) << 12 for i in range(99)]
    finally:
        stop.set()
        t.join()
        signal.signal(signal.SIGUSR1, old)
    assert hits and sim.vmcs(0, 0, 0x6802) == 1099 << 12


def _interrupt_when(sim, leaf_slot, n):
    """SIGINT to the main thread once the model counted n calls of a leaf
    (no timing: the batch is known to be running)."""
    main = threading.main_thread().ident
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            if sim.counters()[leaf_slot] >= n:
                signal.pthread_kill(main, signal.SIGINT)
                return
            stop.wait(0.001)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return stop, t


@needs_device
@pytest.mark.parametrize("leaf", ["VP_RD", "VP_WR"])
def test_ctrl_c_stops_a_long_device_batch_part_way(simdev_mount, leaf):
    sim = simdev_mount.sim
    sim.reset()
    total = 200_000
    hcl = hcltdx.Hcl.open(simdev_mount.path, vp_count=2)
    r = hcl.runner(0)
    try:
        sim.set_vmcs(0, 0, 0x6802, 0x5000)
        base = sim.counters()[leaf]
        stop, t = _interrupt_when(sim, leaf, base + 500)
        try:
            with pytest.raises(BatchInterrupted) as ei:
                if leaf == "VP_RD":
                    r.read_vmcs_batch(VTL0, [CR3] * total)
                else:
                    r.write_vmcs_batch(VTL0, [CR3] * total, [ALL] * total, [0x5000] * total)
        finally:
            stop.set()
            t.join()
        e = ei.value
        assert isinstance(e, KeyboardInterrupt) and e.total == total
        assert 500 <= e.index < total
        # Exactly `index` fields were done, and nothing beyond was issued.
        assert sim.counters()[leaf] - base == e.index
        assert e.values.tolist() == [0x5000] * e.index
        assert r.read_vmcs64(VTL0, CR3) == 0x5000  # the runner is free again
    finally:
        r.close()
        hcl.close()


@pytest.mark.parametrize("leaf", ["VP_RD", "VP_WR"])
def test_ctrl_c_stops_a_long_in_process_batch_between_chunks(leaf):
    """In-process backends release the GIL for long batches too, in chunks of
    256 fields: Ctrl-C lands between two chunks and keeps what was done."""
    sim = hcltdx.Sim(vp_count=1)
    hcl = hcltdx.Hcl.from_sim(sim)
    r = hcl.runner(0)
    total = 4_000_000
    fields = np.full(total, int(CR3), dtype=np.uint32)
    try:
        sim.set_vmcs(0, 0, 0x6802, 0x5000)
        if leaf == "VP_WR":
            masks = np.full(total, ALL, dtype=np.uint64)
            values = np.full(total, 0x5000, dtype=np.uint64)
        base = sim.counters()[leaf]
        stop, t = _interrupt_when(sim, leaf, base + 500)
        try:
            with pytest.raises(BatchInterrupted) as ei:
                if leaf == "VP_RD":
                    r.read_vmcs_batch(VTL0, fields)
                else:
                    r.write_vmcs_batch(VTL0, fields, masks, values)
        finally:
            stop.set()
            t.join()
        e = ei.value
        assert isinstance(e, KeyboardInterrupt) and e.total == total
        assert 500 <= e.index < total and e.index % 256 == 0
        assert sim.counters()[leaf] - base == e.index
        assert e.values.tolist() == [0x5000] * e.index
        assert r.read_vmcs64(VTL0, CR3) == 0x5000
    finally:
        r.close()
        hcl.close()


# ---- the stand-in device: holes, read-only, daemon killed, backing removed -------------------


@needs_device
def test_stand_in_file_refuses_read_and_write_like_the_kernel(simdev_mount):
    """The kernel's mshv_vtl has no read/write (EINVAL); the stand-in must not
    hand out zeros for holes or write into its backing file."""
    sim = simdev_mount.sim
    sim.reset()
    fd = os.open(simdev_mount.path, os.O_RDWR)
    try:
        for offset in (0, 4096, 2 * 4096, 0x30000 * 4096, 0x40000 * 4096):
            with pytest.raises(OSError) as ei:
                os.pread(fd, 4096, offset)
            assert ei.value.errno == errno.EINVAL
            with pytest.raises(OSError) as ei:
                os.pwrite(fd, b"\xAA" * 64, offset)
            assert ei.value.errno == errno.EINVAL
        assert not sim.run_page(0)[:64].any()
        # mmap still reaches the simulator's pages.
        hcl = hcltdx.Hcl.open(simdev_mount.path, vp_count=2)
        with hcl.runner(0) as r:
            gps = r.tdx_enter_guest_gps()
            gps[1] = 0x77
            assert int(sim.run_page(0)[520:528].view("<u8")[0]) == 0x77
            del gps
        hcl.close()
    finally:
        os.close(fd)


@needs_device
def test_device_opened_read_only(simdev_mount):
    simdev_mount.sim.reset()
    fd = os.open(simdev_mount.path, os.O_RDONLY)
    try:
        hcl = hcltdx.Hcl.from_fd(fd, vp_count=2)
    finally:
        os.close(fd)
    before = os.sched_getaffinity(0)
    try:
        with pytest.raises(OSError) as ei:
            hcl.runner(0)   # a shared writable mapping of a read-only fd
        assert ei.value.errno == errno.EACCES and "run page of VP 0" in str(ei.value)
        assert os.sched_getaffinity(0) == before   # the failed runner unpinned the thread
        # The VP is not left half-claimed: a read-write Hcl gets its runner.
        good = hcltdx.Hcl.open(simdev_mount.path, vp_count=2)
        good.runner(0).close()
        good.close()
    finally:
        hcl.close()


@needs_device
def test_daemon_killed_while_a_thread_is_calling():
    with simdev.mount(vp_count=1, in_process=False) as dev:
        hcl = hcltdx.Hcl.open(dev.path, vp_count=1)
        errors, calls = [], [0]
        started = threading.Event()

        def loop():
            try:
                with hcl.runner(0) as r:
                    while True:
                        r.read_vmcs64(VTL0, CR3)
                        calls[0] += 1
                        started.set()
            except OSError as e:
                errors.append(e)
                started.set()

        t = threading.Thread(target=loop)
        with simdev.Watchdog(dev.mountpoint, 30) as dog:
            t.start()
            started.wait(30)
            dev.kill()
            t.join(60)
            assert not dog.disarm()
        assert not t.is_alive() and calls[0] > 0
        assert len(errors) == 1 and errors[0].errno in (errno.ECONNABORTED, errno.ENOTCONN)
        hcl.close()


def test_backing_file_removed_while_in_use(tmp_path):
    path = tmp_path / "backing"
    sim = hcltdx.Sim(vp_count=2, memory_size=16 << 20, backing=str(path))
    hcl = hcltdx.Hcl.from_sim(sim)
    r = hcl.runner(1)
    gps = r.tdx_enter_guest_gps()
    os.unlink(path)
    gps[2] = 0x99
    r.write_vmcs64(VTL0, CR3, ALL, 0x6000)
    assert r.read_vmcs64(VTL0, CR3) == 0x6000
    assert int(sim.run_page(1)[528:536].view("<u8")[0]) == 0x99
    hcl.mshv_vtl.tdx_accept_pages(MemoryRange(0, 0x200000))
    assert sim.page_state(0x1000).state == "accepted"
    del gps
    gc.collect()
    r.close()
    hcl.close()


def test_failures_survive_pickle_with_their_details(hcl, sim):
    import copy
    import pickle

    sim.inject(TdCallLeaf.MEM_PAGE_ACCEPT, status_rax(STATUSES["OPERAND_BUSY"]))
    with pytest.raises(AcceptPagesBusy) as ei:
        hcl.mshv_vtl.tdx_accept_pages(MemoryRange(0x200000, 0x201000))
    for e in (ei.value,):
        again = pickle.loads(pickle.dumps(e))
        assert type(again) is type(e) and str(again) == str(e)
        assert copy.copy(e).__dict__.keys() == e.__dict__.keys()
    assert pickle.loads(pickle.dumps(ei.value)).accepted == ei.value.accepted


def test_batch_interrupted_survives_pickle():
    import copy
    import pickle

    e = BatchInterrupted(3, np.arange(3, dtype=np.uint64), 10)
    for again in (pickle.loads(pickle.dumps(e)), copy.copy(e), copy.deepcopy(e)):
        assert type(again) is BatchInterrupted and str(again) == str(e)
        assert (again.index, again.total) == (3, 10) and again.values.tolist() == [0, 1, 2]
