"""Lifetime: views outliving their owners, close with live views, runners
dropped without close, objects left open at interpreter exit, fork after
open. Crash-prone cases run in a subprocess so a crash fails the test."""

import gc
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import hcltdx
from hcltdx import GuestVtl, VmcsField
from hcltdx import simdev

VTL0 = GuestVtl.VTL0
CR3 = VmcsField.VMX_VMCS_GUEST_CR3
ALL = (1 << 64) - 1
DEVICE_OK, DEVICE_WHY = simdev.available()
needs_device = pytest.mark.skipif(not DEVICE_OK, reason=f"stand-in device unavailable: {DEVICE_WHY}")
TWO_CPUS = len(os.sched_getaffinity(0)) >= 2


def run_python(code, timeout=120):
    res = subprocess.run([sys.executable, "-X", "dev", "-c", textwrap.dedent(code)],
                         capture_output=True, text=True, timeout=timeout)
    return res.returncode, res.stdout, res.stderr


# ---- views -----------------------------------------------------------------------------


def test_every_view_outlives_runner_and_hcl(backend):
    hcl = backend.open()
    r = hcl.runner(1)
    views = [r.tdx_enter_guest_gps(), r.fx_state(), r.run_page(), r.tdx_apic_page(VTL0),
             r.tdx_apic_page(GuestVtl.VTL1), r.tdx_vp_context()]
    del r, hcl
    gc.collect()
    gps = views[0]
    gps[5] = 0xABCD
    # The run page of VP 1 is the simulator's: the GPR list sits at offset 512 (section 2.3).
    assert int(backend.sim.run_page(1)[512 + 5 * 8:512 + 6 * 8].view("<u8")[0]) == 0xABCD
    for v in views:
        v[...] = v.copy()  # every view is still mapped and writable


def test_close_with_live_view_closes_nothing_then_closes(backend):
    hcl = backend.open()
    r1 = hcl.runner(1)
    apic = r1.tdx_apic_page(VTL0)
    with pytest.raises(BufferError, match="VTL0 APIC page of VP 1"):
        hcl.close()
    # Nothing was closed: the runner and the raw transport still work.
    r1.write_vmcs64(VTL0, CR3, ALL, 0x1000)
    assert r1.read_vmcs64(VTL0, CR3) == 0x1000 and backend.sim.vmcs(1, 0, 0x6802) == 0x1000
    assert not hcl.closed and not r1.closed
    sub = apic["tpr"]  # a view of a view still holds the page
    del apic
    gc.collect()
    with pytest.raises(BufferError):
        r1.close()
    del sub
    gc.collect()
    hcl.close()
    assert r1.closed


def test_view_of_closed_runner_cannot_be_made(backend):
    hcl = backend.open()
    r = hcl.runner(0)
    r.close()
    for make in (r.tdx_enter_guest_gps, r.run_page, r.fx_state, lambda: r.tdx_apic_page(VTL0)):
        with pytest.raises(ValueError, match="closed"):
            make()


# ---- runners dropped without close -------------------------------------------------------


def _affinity_after(hcl, drop_elsewhere):
    """In a fresh thread: note the affinity, make a runner of VP 1 (which pins
    the thread to CPU 1 on a device), lose it without close(); return the
    affinity before, while pinned and after."""
    out = {}
    handed = []
    let_go, dropped = threading.Event(), threading.Event()

    def work():
        out["before"] = os.sched_getaffinity(0)
        r = hcl.runner(1)
        out["pinned"] = os.sched_getaffinity(0)
        if drop_elsewhere:
            handed.append(r)
            del r
            let_go.set()          # from here on only `handed` holds the runner
            dropped.wait(30)
        else:
            del r
            gc.collect()
        out["after"] = os.sched_getaffinity(0)

    t = threading.Thread(target=work)
    t.start()
    if drop_elsewhere:
        let_go.wait(30)
        assert len(handed) == 1
        handed.clear()  # the last reference goes away in this thread
        gc.collect()
        dropped.set()
    t.join(60)
    return out


@needs_device
@pytest.mark.skipif(not TWO_CPUS, reason="needs CPUs 0 and 1")
@pytest.mark.parametrize("drop_elsewhere", [False, True], ids=["same-thread", "other-thread"])
def test_dropped_device_runner_unpins_its_thread(simdev_mount, drop_elsewhere):
    simdev_mount.sim.reset()
    hcl = hcltdx.Hcl.open(simdev_mount.path, vp_count=2)
    try:
        with pytest.warns(ResourceWarning, match="unclosed hcltdx.TdxRunner of VP 1"):
            out = _affinity_after(hcl, drop_elsewhere)
        assert out["pinned"] == {1}
        assert out["after"] == out["before"] != {1}
        # The VP is free again: a new runner can be made.
        hcl.runner(1).close()
    finally:
        hcl.close()


@needs_device
@pytest.mark.skipif(not TWO_CPUS, reason="needs CPUs 0 and 1")
def test_hcl_close_unpins_a_runner_thread(simdev_mount):
    simdev_mount.sim.reset()
    hcl = hcltdx.Hcl.open(simdev_mount.path, vp_count=2)
    out = {}
    made, closed = threading.Event(), threading.Event()

    def work():
        out["before"] = os.sched_getaffinity(0)
        r = hcl.runner(1)  # noqa: F841 (kept open until hcl.close())
        made.set()
        closed.wait(30)
        out["after"] = os.sched_getaffinity(0)
        out["closed"] = r.closed

    t = threading.Thread(target=work)
    t.start()
    made.wait(30)
    hcl.close()
    closed.set()
    t.join(60)
    assert out["closed"] and out["after"] == out["before"]


# ---- interpreter exit ----------------------------------------------------------------------


def test_sim_objects_left_open_at_exit():
    rc, out, err = run_python("""
        import hcltdx
        hcl = hcltdx.Hcl.simulated(vp_count=2)
        r = hcl.runner(0)
        gps = r.tdx_enter_guest_gps()
        rec = r.recorder(4)
        rec.take()
        t = hcl.trace(16).__enter__()
        r.read_vmcs64(0, 0x6802)
        print("end", flush=True)
    """)
    assert rc == 0 and out.strip() == "end", err[-2000:]
    assert "Fatal Python error" not in err and "Segmentation" not in err


@needs_device
def test_device_objects_left_open_at_exit():
    rc, out, err = run_python("""
        import hcltdx
        from hcltdx import simdev
        cm = simdev.mount(vp_count=2)
        dev = cm.__enter__()
        hcl = hcltdx.Hcl.open(dev.path, vp_count=2)
        r = hcl.runner(0)
        gps = r.tdx_enter_guest_gps()
        r.write_vmcs64(0, 0x6802, 2**64 - 1, 0x5000)
        hcl2 = hcltdx.Hcl.open(dev.path, vp_count=2)   # no view, no runner
        del hcl2
        print("end", dev.mountpoint, flush=True)
    """)
    assert rc == 0 and out.startswith("end"), err[-2000:]
    assert "ResourceWarning: unclosed hcltdx.Hcl" in err
    assert "Fatal Python error" not in err and "Segmentation" not in err
    mountpoint = out.split()[1]
    assert not simdev.is_mounted(mountpoint)


# ---- fork ---------------------------------------------------------------------------------


def _in_child(fn):
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            code = fn()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_fork_after_open(backend):
    hcl = backend.open()
    r = hcl.runner(0)
    r.write_vmcs64(VTL0, CR3, ALL, 0x7000)

    def child():
        # The child's calls must work (device: through the inherited fd; the
        # simulator: on the child's copy) and see the state at fork time.
        ok = r.read_vmcs64(VTL0, CR3) == 0x7000
        r.write_vmcs64(VTL0, CR3, ALL, 0x8000)
        ok = ok and r.read_vmcs64(VTL0, CR3) == 0x8000
        r.close()
        hcl.close()
        return 0 if ok else 1

    assert _in_child(child) == 0
    expected = 0x8000 if backend.name == "device" else 0x7000  # one model vs. a copy
    assert r.read_vmcs64(VTL0, CR3) == expected
    r.close()


@needs_device
def test_forked_child_exiting_normally_leaves_parents_device_mounted():
    rc, out, err = run_python("""
        import os, sys
        import hcltdx
        from hcltdx import simdev
        with simdev.mount(vp_count=1) as dev:
            pid = os.fork()
            if pid == 0:
                sys.exit(0)   # a normal exit: the child's atexit hooks run
            os.waitpid(pid, 0)
            print("mounted" if simdev.is_mounted(dev.mountpoint) else "unmounted", flush=True)
            hcl = hcltdx.Hcl.open(dev.path, vp_count=1)
            hcl.runner(0).close()
            hcl.close()
            print("used", flush=True)
    """)
    assert rc == 0 and out.split() == ["mounted", "used"], (out, err[-2000:])
