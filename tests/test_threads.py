"""Threads: many threads on one Hcl with one runner each (VPs in parallel),
two threads on one runner (refused), two device runners on one thread
(refused), polling in one thread while another accepts memory."""

import os
import threading

import numpy as np
import pytest

import hcltdx
from hcltdx import GuestVtl, MemoryRange, VmcsField

VTL0, VTL1 = GuestVtl.VTL0, GuestVtl.VTL1
CR3 = VmcsField.VMX_VMCS_GUEST_CR3
RIP = VmcsField.VMX_VMCS_GUEST_RIP
ALL = (1 << 64) - 1


def run_threads(target, args_list, timeout=120):
    errors = []

    def wrap(*a):
        try:
            target(*a)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=a) for a in args_list]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return errors


def test_one_runner_per_thread_per_vp_in_parallel(backend):
    """Four threads: two per VP, in turn (each VP's runner is made, used and
    closed by one thread at a time), all on one Hcl; every VP ends with its
    own values and the model counted every call."""
    hcl = backend.open()
    locks = {0: threading.Lock(), 1: threading.Lock()}
    base = backend.sim.counters()
    n = 150

    def work(vp, tag):
        for _ in range(3):
            with locks[vp]:
                with hcl.runner(vp) as r:
                    for i in range(n):
                        v = (tag << 40) | (vp << 32) | i
                        r.write_vmcs64(VTL0, CR3, ALL, v)
                        assert r.read_vmcs64(VTL0, CR3) == v
                    vals = r.read_vmcs_batch(VTL0, [CR3] * 64)
                    assert (vals == v).all()

    errors = run_threads(work, [(0, 1), (0, 2), (1, 3), (1, 4)])
    assert errors == []
    after = backend.sim.counters()
    # 4 threads x 3 rounds x (n writes + 1 VTL1 APIC registration) VP.WR, (n reads + 64) VP.RD.
    assert after["VP_WR"] - base["VP_WR"] == 4 * 3 * (n + 1)
    assert after["VP_RD"] - base["VP_RD"] == 4 * 3 * (n + 64)
    for vp in (0, 1):
        assert backend.sim.vmcs(vp, 0, 0x6802) >> 32 & 0xFF == vp
        assert backend.sim.vmcs(vp, 0, 0x6802) & 0xFFFFFFFF == n - 1


def test_second_thread_on_a_runner_is_refused(runner, sim):
    runner.write_vmcs64(VTL0, CR3, ALL, 0x1000)
    before = sim.counters()
    seen = []

    def other():
        for call in (lambda: runner.read_vmcs64(VTL0, CR3),
                     lambda: runner.write_vmcs64(VTL0, CR3, ALL, 0x2000),
                     lambda: runner.read_vmcs_batch(VTL0, [CR3]),
                     lambda: runner.poll_vmcs(VTL0, [CR3], 2),
                     lambda: runner.snapshot()):
            try:
                call()
                seen.append("ran")
            except RuntimeError as e:
                seen.append("belongs to the thread" in str(e))

    errors = run_threads(other, [()])
    assert errors == [] and seen == [True] * 5
    assert sim.counters() == before and sim.vmcs(0, 0, 0x6802) == 0x1000


def test_device_thread_with_two_runners_is_refused(simdev_mount):
    simdev_mount.sim.reset()
    hcl = hcltdx.Hcl.open(simdev_mount.path, vp_count=2)
    try:
        r0 = hcl.runner(0)
        with pytest.raises(RuntimeError, match="thread of its own"):
            hcl.runner(1)
        other = hcltdx.Hcl.open(simdev_mount.path, vp_count=2)   # not even through another Hcl
        with pytest.raises(RuntimeError, match="thread of its own"):
            other.runner(1)
        other.close()
        # r0 still reaches VP 0 (the refused runner did not re-pin the thread).
        r0.write_vmcs64(VTL0, CR3, ALL, 0xA000)
        assert simdev_mount.sim.vmcs(0, 0, 0x6802) == 0xA000
        assert simdev_mount.sim.vmcs(1, 0, 0x6802) == 0
        assert os.sched_getaffinity(0) == {0}
        r0.close()
        with hcl.runner(1) as r1:   # after close, the thread may take another VP
            r1.write_vmcs64(VTL0, CR3, ALL, 0xB000)
        assert simdev_mount.sim.vmcs(1, 0, 0x6802) == 0xB000
    finally:
        hcl.close()


def test_poll_in_one_thread_while_another_accepts_memory(backend):
    hcl = backend.open()
    sim = backend.sim
    done = threading.Event()
    polled = {}

    def poller():
        with hcl.runner(1) as r:
            r.write_vmcs64(VTL0, RIP, ALL, 0xFEED)
            rows = 0
            while True:   # at least one poll, however the threads are scheduled
                out = r.poll_vmcs(VTL0, [RIP, CR3], 50, interval_ns=0)
                assert (out["VMX_VMCS_GUEST_RIP"] == 0xFEED).all()
                rows += len(out)
                if done.is_set():
                    break
            polled["rows"] = rows

    def acceptor():
        try:
            for i in range(16):
                hcl.mshv_vtl.tdx_accept_pages(MemoryRange(i * 0x200000, i * 0x200000 + 0x200000))
                hcl.mshv_vtl.tdx_accept_pages(MemoryRange(0x2000000 + i * 0x3000,
                                                          0x2000000 + (i + 1) * 0x3000))
        finally:
            done.set()

    errors = run_threads(lambda f: f(), [(poller,), (acceptor,)])
    assert errors == []
    assert polled["rows"] >= 50
    counts = sim.page_counts()
    assert counts["accepted"] == 16 * 512 + 16 * 3
    assert sim.counters()["MEM_PAGE_ACCEPT"] == 16 + 16 * 3


def test_close_from_another_thread_during_calls_is_refused_or_clean(backend):
    """One thread hammers its runner while another tries to close the Hcl:
    close either refuses (a call in flight) or closes, and the worker then
    gets ValueError, never a crash."""
    hcl = backend.open()
    started = threading.Event()
    outcome = {}

    def worker():
        r = hcl.runner(0)
        started.set()
        try:
            for _ in range(200000):
                r.read_vmcs64(VTL0, CR3)
            outcome["worker"] = "finished"
        except ValueError as e:
            outcome["worker"] = "closed" if "closed" in str(e) else repr(e)
        finally:
            try:
                r.close()
            except Exception:  # noqa: BLE001
                pass

    def closer():
        started.wait(30)
        for _ in range(1000):
            try:
                hcl.close()
                outcome["close"] = "closed"
                return
            except RuntimeError as e:
                assert "in progress" in str(e) or "inside a tdcall" in str(e)
        outcome["close"] = "refused"

    errors = run_threads(lambda f: f(), [(worker,), (closer,)])
    assert errors == []
    assert outcome["worker"] in ("finished", "closed")
    assert outcome["close"] in ("closed", "refused")
    if outcome["close"] == "closed":
        assert hcl.closed


def test_owner_id_is_the_threads_ident_in_every_thread():
    """Runner ownership compares an id read from the thread pointer with the
    one taken at creation; it must be threading.get_ident() in any thread."""
    from hcltdx._core import _thread_id

    seen = {}

    def record(i):
        seen[i] = (_thread_id(), threading.get_ident())

    threads = [threading.Thread(target=record, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _thread_id() == threading.get_ident()
    assert len(seen) == 8 and all(a == b for a, b in seen.values())
    assert len({a for a, _ in seen.values()} | {_thread_id()}) >= 2
