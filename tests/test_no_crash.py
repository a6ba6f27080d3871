"""No public call sequence crashes the interpreter: objects made with
``__new__`` (skipping ``__init__``), closed or half-built objects, every
method called on them. Each case runs in a subprocess, so a crash fails the
test instead of killing the run."""

import subprocess
import sys
import textwrap

import pytest

CALL_EVERYTHING = """
def call_everything(obj):
    repr(obj)
    str(obj)
    for name in dir(obj):
        if name.startswith("__"):
            continue
        try:
            attr = getattr(obj, name)
            if callable(attr):
                attr()
        except Exception:
            pass
        for args in ((0,), (0, 0), (0, 0x6802), (0, [0x6802]), (0, [0x6802], 1)):
            try:
                attr = getattr(obj, name)
                if callable(attr):
                    attr(*args)
            except Exception:
                pass
"""

CASES = {
    "uninitialised objects of every extension type": """
        import hcltdx, hcltdx._core as core, hcltdx._poll as poll
        for cls in (hcltdx.Sim, hcltdx.Hcl, hcltdx.TdxRunner, hcltdx.TdxPrivateRegs,
                    hcltdx.MshvVtl, core._Page, poll.Recorder, poll.ReplayState):
            call_everything(cls.__new__(cls))
        try:
            hcltdx.Hcl.from_sim(hcltdx.Sim.__new__(hcltdx.Sim))
        except ValueError:
            pass
        m = hcltdx.MshvVtl.__new__(hcltdx.MshvVtl)
        for f in (lambda: m.tdx_accept_pages(hcltdx.MemoryRange(0, 4096)),
                  lambda: m.tdx_set_page_attributes((0, 4096), 0, 0),
                  lambda: core._accept_pages(None, (0, 4096), None, False)):
            try:
                f()
            except (ValueError, TypeError):
                pass
    """,
    "everything after close": """
        import gc, hcltdx
        h = hcltdx.Hcl.simulated()
        r = h.runner(0)
        rec = r.recorder(4)
        r.close(); h.close()
        for obj in (h, r, h.sim, rec):
            call_everything(obj)
    """,
    "views outliving every owner": """
        import gc, hcltdx
        h = hcltdx.Hcl.simulated()
        r = h.runner(0)
        views = [r.tdx_enter_guest_gps(), r.tdx_apic_page(0), r.tdx_apic_page(1), r.fx_state(),
                 r.run_page(), h.sim.run_page(0), h.sim.apic_page(0, 1)]
        del h, r
        gc.collect()
        for v in views:
            v[...] = 0
    """,
    "wrong types everywhere": """
        import hcltdx
        h = hcltdx.Hcl.simulated()
        r = h.runner(0)
        for bad in (None, -1, 2**70, "x", 1.5, object(), [1], b"\\x00"):
            for f in (lambda: r.read_vmcs64(bad, 0x6802), lambda: r.read_vmcs64(0, bad),
                      lambda: r.write_vmcs64(0, 0x6802, bad, 1), lambda: r.read_vmcs_batch(0, bad),
                      lambda: r.poll_vmcs(0, [0x6802], bad), lambda: h.tdcall(bad, 9),
                      lambda: h.mshv_vtl.tdx_accept_pages(bad), lambda: r.read_private_regs(bad),
                      lambda: r.snapshot(vmcs=bad), lambda: h.sim.map_host(bad, 0),
                      lambda: hcltdx.Hcl.replay(bad)):
                try:
                    f()
                except Exception:
                    pass
    """,
}


@pytest.mark.parametrize("name", list(CASES))
def test_no_crash(name):
    code = CALL_EVERYTHING + textwrap.dedent(CASES[name]) + "\nprint('survived')\n"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "survived" in res.stdout, (res.returncode, res.stderr[-2000:])
