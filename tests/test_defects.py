"""Defects a determined user finds through the public API and the command
line. Each case runs in its own subprocess under a timeout, so a crash
(SIGSEGV, SIGBUS), a hang or a traceback fails the test instead of the run."""

import os
import subprocess
import sys
import textwrap

import pytest

from conftest import device_unavailable_reason

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DEVICE_WHY = device_unavailable_reason()
needs_device = pytest.mark.skipif(_DEVICE_WHY is not None,
                                  reason=f"FUSE stand-in device unavailable: {_DEVICE_WHY}")


def run_py(code, timeout=60, args=()):
    """Runs ``code`` in a fresh interpreter; a hang is a failure, not a stuck run."""
    try:
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"timed out after {timeout} s (a hang); stderr: {exc.stderr!r}")


def check(res, *expect):
    assert res.returncode == 0, (res.returncode, res.stdout[-2000:], res.stderr[-3000:])
    for line in expect:
        assert line in res.stdout.splitlines(), (line, res.stdout[-2000:], res.stderr[-2000:])


def run_cli(*args, timeout=60):
    try:
        return subprocess.run([sys.executable, "-m", "hcltdx.simdev", *args],
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"hcltdx simdev {' '.join(args)} hung; stderr: {exc.stderr!r}")


# ---- a caller's VTL1 APIC page is held for the runner's life -----------------------------

@needs_device
@pytest.mark.parametrize("kind", ["mmap", "bytearray", "numpy"])
def test_caller_apic_page_cannot_be_released_under_the_runner(kind):
    res = run_py(f"""
        import mmap, gc
        import numpy as np
        import hcltdx
        from hcltdx import simdev
        with simdev.mount(vp_count=1) as dev:
            hcl = hcltdx.Hcl.open(dev.path, vp_count=1)
            kind = {kind!r}
            buf = {{"mmap": lambda: mmap.mmap(-1, 4096),
                    "bytearray": lambda: bytearray(4096),
                    "numpy": lambda: np.zeros(4096, np.uint8)}}[kind]()
            r = hcl.runner(0, vtl1_apic_page=(buf, 0x7000))
            # The owner tries to release or move the memory the runner reads.
            try:
                if kind == "mmap":
                    buf.close()
                elif kind == "bytearray":
                    buf.extend(bytes(1 << 22))
                else:
                    buf.resize(1 << 22)
                print("released")
            except (BufferError, ValueError):
                print("refused")
            page = r.tdx_apic_page(hcltdx.GuestVtl.VTL1)
            page["tpr"]["value"] = 0x42
            print("tpr", int(np.frombuffer(buf, np.uint8, 4, 0x80).view(np.uint32)[0]))
            page = None
            gc.collect()
            r.close()
            # Closed runner: the buffer is the owner's again.
            if kind == "mmap":
                buf.close()
            elif kind == "bytearray":
                buf.extend(b"x")
            else:
                del page
                buf.resize(8192)
            print("released after close")
            hcl.close()
    """)
    check(res, "refused", "tpr 66", "released after close")


@needs_device
def test_caller_apic_page_checked_before_the_runner_exists():
    res = run_py("""
        import numpy as np, hcltdx
        from hcltdx import simdev
        with simdev.mount(vp_count=1) as dev:
            h = hcltdx.Hcl.open(dev.path, vp_count=1)
            for buf in (bytes(4096), memoryview(bytearray(8192))[::2], np.zeros(1024, np.uint8),
                        object()):
                try:
                    h.runner(0, vtl1_apic_page=(buf, 0x1000))
                    print("accepted")
                except (TypeError, ValueError) as e:
                    print(type(e).__name__)
            # Refused before anything was written: proxy_irr_blocked (run page
            # offset 0x634, spec 3.1) still zero, not all ones.
            print("untouched", not dev.sim.run_page(0)[0x634:0x654].any())
            r = h.runner(0, vtl1_apic_page=(bytearray(4096), 0x1000))  # nothing was left open
            print("runner", r.closed)
            r.close(); h.close()
    """)
    check(res)
    assert res.stdout.splitlines() == ["ValueError", "ValueError", "ValueError", "TypeError",
                                       "untouched True", "runner False"], res.stdout + res.stderr[-2000:]


def test_vtl1_apic_page_on_the_simulator_is_refused_before_any_write():
    import hcltdx

    h = hcltdx.Hcl.simulated(vp_count=1)
    with pytest.raises(ValueError, match="only for device backends"):
        h.runner(0, vtl1_apic_page=(bytearray(4096), 0x1000))
    assert not h.sim.run_page(0)[0x634:0x654].any()
    assert sum(h.sim.counters().values()) == 0
    with h.runner(0) as r:
        assert r.tdx_apic_page(hcltdx.GuestVtl.VTL1) is not None


# ---- only a VTL device is opened; a VP the device lacks is an exception, not SIGBUS ----

def test_open_refuses_files_that_are_not_a_vtl_device(tmp_path):
    res = run_py("""
        import os, sys, hcltdx
        tmp = sys.argv[1]
        path = os.path.join(tmp, "not-a-device")
        content = bytes(range(256)) * 64          # 16 KiB: run page and more
        with open(path, "wb") as f:
            f.write(content)
        fifo = os.path.join(tmp, "fifo")
        os.mkfifo(fifo)
        rd, wr = os.pipe()
        cases = [("regular file", lambda: hcltdx.Hcl.open(path, vp_count=1)),
                 ("directory", lambda: hcltdx.Hcl.open(tmp, vp_count=1)),
                 ("/dev/null", lambda: hcltdx.Hcl.open("/dev/null", vp_count=1)),
                 ("fifo", lambda: hcltdx.Hcl.open(fifo, vp_count=1)),
                 ("pipe", lambda: hcltdx.Hcl.from_fd(rd, vp_count=1)),
                 ("/dev/mshv regular", lambda: hcltdx.Hcl.create_vtl(path, vp_count=1))]
        for name, f in cases:
            try:
                h = f()
            except (ValueError, IsADirectoryError) as e:
                print(name, "refused", type(e).__name__)
                continue
            print(name, "opened")
            try:
                h.runner(0)
            except Exception as e:
                pass
        with open(path, "rb") as f:
            print("file unchanged", f.read() == content)
    """, args=(str(tmp_path),))
    check(res, "regular file refused ValueError", "/dev/null refused ValueError",
          "fifo refused ValueError", "pipe refused ValueError",
          "/dev/mshv regular refused ValueError", "file unchanged True")
    assert ("directory refused ValueError" in res.stdout
            or "directory refused IsADirectoryError" in res.stdout), res.stdout


def test_open_refusal_names_the_file_and_the_rule(tmp_path):
    import hcltdx

    for bad in (True, -1, 1.0):               # True would be stdout
        with pytest.raises(ValueError, match="fd must be"):
            hcltdx.Hcl.from_fd(bad, vp_count=1)
    with pytest.raises(ValueError, match="vp_count"):
        hcltdx.Hcl.open("/dev/null", vp_count=True)

    path = tmp_path / "plain"
    path.write_bytes(b"\0" * 8192)
    with pytest.raises(ValueError, match="not an mshv_vtl device: it is a regular file"):
        hcltdx.Hcl.open(path, vp_count=1)
    with pytest.raises(ValueError, match="MSHV_VTL_TDCALL answered ENOTTY"):
        hcltdx.Hcl.open("/dev/null", vp_count=1)
    assert path.read_bytes() == b"\0" * 8192


@needs_device
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs (VP 1 runs on CPU 1)")
def test_runner_for_a_vp_the_device_lacks_raises():
    # The README's Hcl.open(path) without vp_count: the default (one VP per
    # CPU) may exceed what the device has. Touching that VP's page is SIGBUS.
    res = run_py("""
        import hcltdx
        from hcltdx import simdev
        with simdev.mount(vp_count=1) as dev:
            hcl = hcltdx.Hcl.open(dev.path)             # vp_count: one per CPU, >= 2
            try:
                hcl.runner(1)
                print("runner made")
            except ValueError as e:
                print("refused", "VP 1 does not exist" in str(e))
            with hcl.runner(0) as r:                   # the VP it has still works
                r.tdx_enter_guest_gps()[0] = 5
                print("vp 0 ok", dev.sim.run_page(0)[512])
            hcl.close()
    """)
    check(res, "refused True", "vp 0 ok 5")


# ---- the page loops report what they did, on every failure path ---------------------------

ACCEPT, ATTR_WR, ATTR_RD = 6, 24, 23
# TdgMemPageGpaAttr with l2_vm1 = 0x800F and TdgMemPageAttrWriteR8 with l2_vm1 =
# ALL_CHANGED (spec 4.2), the values test_runner.py uses
ATTRS = (0x800F << 16, 0xF << 16)


def recording(*calls):
    """A trace array of (leaf, rcx, err, out_rax) calls on VP 0."""
    from hcltdx.trace import TRACE_DTYPE
    import numpy as np

    a = np.zeros(len(calls), TRACE_DTYPE)
    for i, (leaf, rcx, err, rax) in enumerate(calls):
        a[i]["in_rax"], a[i]["in_rcx"], a[i]["err"], a[i]["out_rax"] = leaf, rcx, err, rax
    return a


def test_accept_attribute_failure_counts_the_accepted_chunk_and_resumes(backend):
    import hcltdx
    from hcltdx import MemoryRange
    from hcltdx.tdx import TdCallLeaf

    hcl, sim = backend.open(), backend.sim
    attrs = ATTRS
    for start, level_size in ((0x600000, 0x200000), (0xC01000, 0x1000)):
        end = start + 2 * level_size
        sim.inject(TdCallLeaf.MEM_PAGE_ATTR_WR, 0xC000010000000000)  # OPERAND_INVALID
        with pytest.raises(hcltdx.AcceptPagesAttributes) as ei:
            hcl.mshv_vtl.tdx_accept_pages(MemoryRange(start, end), attrs)
        e = ei.value
        assert e.gpa == start and e.accepted == MemoryRange(start, start + level_size)
        assert e.attributes_set == MemoryRange(start, start)
        assert sim.page_state(start).state == "accepted"
        assert sim.page_state(start + level_size).state == "pending"
        # Resuming where it stopped meets no page accepted twice.
        hcl.mshv_vtl.tdx_accept_pages(MemoryRange(e.accepted.end, end), attrs)
        hcl.mshv_vtl.tdx_set_page_attributes(MemoryRange(start, e.accepted.end), *attrs)
        assert sim.page_state(end - 0x1000).state == "accepted"


def test_accept_transport_failure_reports_progress():
    import errno
    import hcltdx
    from hcltdx import MemoryRange

    rec = recording((ACCEPT, 0x0, 0, 0), (ACCEPT, 0x1000, 0, 0), (ACCEPT, 0x2000, errno.EIO, 0))
    hcl = hcltdx.Hcl.replay(rec)
    with pytest.raises(OSError) as ei:
        hcl.mshv_vtl.tdx_accept_pages(MemoryRange(0, 0x4000))
    assert ei.value.errno == errno.EIO
    assert ei.value.accepted == MemoryRange(0, 0x2000) and ei.value.range == MemoryRange(0, 0x4000)
    assert ei.value.attributes_set is None
    # An attribute write failing at the transport: the page was accepted.
    rec = recording((ACCEPT, 0x0, 0, 0), (ATTR_WR, 0x0, errno.EIO, 0))
    hcl = hcltdx.Hcl.replay(rec)
    with pytest.raises(OSError) as ei:
        hcl.mshv_vtl.tdx_accept_pages(MemoryRange(0, 0x2000), (0, 0))
    assert ei.value.accepted == MemoryRange(0, 0x1000)
    assert ei.value.attributes_set == MemoryRange(0, 0)
    rec = recording((ATTR_WR, 0x0, 0, 0), (ATTR_WR, 0x1000, errno.EIO, 0))
    hcl = hcltdx.Hcl.replay(rec)
    with pytest.raises(OSError) as ei:
        hcl.mshv_vtl.tdx_set_page_attributes(MemoryRange(0, 0x2000), 0, 0)
    assert ei.value.done == MemoryRange(0, 0x1000)


def test_accept_verify_failure_reports_progress(backend):
    import hcltdx
    from hcltdx import MemoryRange
    from hcltdx.tdx import TdCallLeaf

    hcl, sim = backend.open(), backend.sim
    attrs = ATTRS
    sim.inject(TdCallLeaf.MEM_PAGE_ATTR_RD, 0xC000010000000000)
    with pytest.raises(hcltdx.PageAttributesVerifyError) as ei:
        hcl.mshv_vtl.tdx_accept_pages(MemoryRange(0x600000, 0x800000), attrs, verify=True)
    assert ei.value.accepted == MemoryRange(0x600000, 0x800000)
    assert ei.value.attributes_set == MemoryRange(0x600000, 0x600000)


def test_page_numbers_beyond_40_bits_are_refused_before_any_call(backend):
    from hcltdx import MemoryRange

    hcl, sim = backend.open(), backend.sim
    before = sim.counters()
    top = 1 << 52
    for rng in (MemoryRange(top, top + 0x1000), MemoryRange(top - 0x1000, top + 0x1000),
                MemoryRange(0, 1 << 63), (top, top + 0x200000)):
        with pytest.raises(ValueError, match="40-bit"):
            hcl.mshv_vtl.tdx_accept_pages(rng)
        with pytest.raises(ValueError, match="40-bit"):
            hcl.mshv_vtl.tdx_set_page_attributes(rng, 0, 0)
    assert sim.counters() == before
    # The last page below 2**52 is a legal operand: the module answers
    # (OPERAND_INVALID: outside this TD), no ValueError.
    import hcltdx
    with pytest.raises(hcltdx.AcceptPagesInvalid):
        hcl.mshv_vtl.tdx_accept_pages(MemoryRange(top - 0x1000, top))


# ---- every exception type pickles and copies -----------------------------------------------

def _raised_exceptions():
    """One instance of every hcltdx exception type, each from a real failure."""
    import errno
    import numpy as np
    import hcltdx
    from hcltdx import GuestVtl, MemoryRange, VmcsField, errors
    from hcltdx.tdx import TdCallLeaf

    out = []

    def grab(f):
        try:
            f()
        except BaseException as e:  # noqa: BLE001 - collected for the test
            out.append(e)
        else:
            raise AssertionError("expected a failure")

    h = hcltdx.Hcl.simulated(vp_count=1)
    sim = h.sim
    r = h.runner(0)
    grab(lambda: r.read_vmcs64(GuestVtl.VTL1, VmcsField.VMX_VMCS_HOST_RIP))  # VmcsAccessError
    grab(lambda: h.mshv_vtl.tdx_accept_pages(MemoryRange(1 << 40, (1 << 40) + 4096)))  # Invalid
    sim.inject(TdCallLeaf.MEM_PAGE_ACCEPT, 0x8000020000000000)
    grab(lambda: h.mshv_vtl.tdx_accept_pages(MemoryRange(0, 4096)))                 # Busy
    h.mshv_vtl.tdx_accept_pages(MemoryRange(0, 4096))
    grab(lambda: h.mshv_vtl.tdx_accept_pages(MemoryRange(0, 8192)))                 # Already
    sim.inject(TdCallLeaf.MEM_PAGE_ACCEPT, 0xC0000B0B00000000)
    grab(lambda: h.mshv_vtl.tdx_accept_pages(MemoryRange(0x1000, 0x2000)))          # Unknown
    sim.inject(TdCallLeaf.MEM_PAGE_ATTR_WR, 0xC000010000000000)
    grab(lambda: h.mshv_vtl.tdx_accept_pages(MemoryRange(0x2000, 0x3000), ATTRS))   # Attributes
    sim.inject(TdCallLeaf.MEM_PAGE_ATTR_WR, 0xC000010000000000)
    grab(lambda: h.mshv_vtl.tdx_set_page_attributes(MemoryRange(0, 0x1000), *ATTRS))
    sim.inject(TdCallLeaf.MEM_PAGE_ATTR_RD, 0xC000010000000000)
    grab(lambda: h.mshv_vtl.tdx_set_page_attributes(MemoryRange(0, 0x1000), *ATTRS, verify=True))
    grab(lambda: r.read_vmcs_batch(GuestVtl.VTL0, [VmcsField.VMX_VMCS_GUEST_CR3,
                                                   VmcsField.VMX_VMCS_HOST_RIP]))  # BatchError
    grab(lambda: h.tdcall(0, 1 << 70))                                               # ValueError
    rec = r.recorder(1)
    rec.take()
    grab(rec.take)                                                                   # RecorderFull
    rp = hcltdx.Hcl.replay(recording((ACCEPT, 0, 0, 0)))
    grab(lambda: rp.mshv_vtl.tdx_accept_pages(MemoryRange(0x1000, 0x2000)))        # Divergence
    rp2 = hcltdx.Hcl.replay(recording((ACCEPT, 0, errno.EIO, 0)))
    grab(lambda: rp2.mshv_vtl.tdx_accept_pages(MemoryRange(0, 0x1000)))             # OSError
    out.append(errors.PollInterrupted(np.zeros(3, [("t_ns", "<u8")]), 3))
    out.append(errors.BatchInterrupted(2, np.array([7, 9], np.uint64), 5))
    from hcltdx.simdev import SimDevUnavailable
    out.append(SimDevUnavailable(errno.EPERM, "mounting FUSE needs CAP_SYS_ADMIN"))
    r.close()
    h.close()
    return out


def _same(a, b):
    import numpy as np

    assert type(a) is type(b) and str(a) == str(b) and a.args == b.args
    assert getattr(a, "errno", None) == getattr(b, "errno", None)
    assert set(vars(a)) == set(vars(b))
    for k, v in vars(a).items():
        w = vars(b)[k]
        if isinstance(v, np.ndarray) or isinstance(v, np.void):
            assert np.array_equal(np.asarray(v), np.asarray(w)), k
        else:
            assert v == w and type(v) is type(w), k


def test_every_exception_type_pickles_and_copies():
    import copy
    import pickle

    from hcltdx import errors

    excs = _raised_exceptions()
    kinds = {type(e).__name__ for e in excs}
    expected = {n for n in errors.__all__ if n != "TdcallOutput" and n not in (
        "HclError", "TdCallError", "AcceptPagesError")}  # the bases are never raised as such
    assert expected <= kinds, expected - kinds
    for e in excs:
        for dup in (pickle.loads(pickle.dumps(e)), copy.copy(e), copy.deepcopy(e)):
            _same(e, dup)


def test_exception_returned_through_a_process_pool_does_not_hang():
    res = run_py("""
        import multiprocessing as mp
        import hcltdx
        from hcltdx import MemoryRange

        def work(n):
            h = hcltdx.Hcl.simulated(vp_count=1)
            h.mshv_vtl.tdx_accept_pages(MemoryRange(0, 4096))
            try:
                h.mshv_vtl.tdx_accept_pages(MemoryRange(0, 8192))
            except hcltdx.PageAlreadyAcceptedError as e:
                return e

        def fail(n):
            h = hcltdx.Hcl.simulated(vp_count=1)
            with h.runner(0) as r:
                r.read_vmcs64(1, hcltdx.VmcsField.VMX_VMCS_HOST_RIP)

        if __name__ == "__main__":
            with mp.get_context("fork").Pool(2) as pool:
                e = pool.map(work, range(2), chunksize=1)[0]
                print(type(e).__name__, e.accepted, int(e.code))
                try:
                    pool.apply(fail, (0,))
                except hcltdx.VmcsAccessError as e:
                    print("raised", type(e).__name__, e.vp, int(e.field))
    """, timeout=60)
    # 2826 = 0xB0A PAGE_ALREADY_ACCEPTED; 27670 = 0x6C16 HOST_RIP (SDM encoding)
    check(res, "PageAlreadyAcceptedError 0x0-0x0 2826", "raised VmcsAccessError 0 27670")


# ---- a lenient replay never loops on an EINTR record --------------------------------------

@pytest.mark.parametrize("how", ["accept", "batch", "tdcall"])
def test_lenient_replay_of_an_eintr_record_ends(how):
    res = run_py(f"""
        import errno
        import numpy as np
        import hcltdx
        from hcltdx import MemoryRange
        from hcltdx.trace import TRACE_DTYPE
        from hcltdx.tdx import vmcs_field_code
        from hcltdx.vmx import VmcsField

        rip = int(vmcs_field_code(VmcsField.VMX_VMCS_GUEST_RIP, 0))
        a = np.zeros(3, TRACE_DTYPE)
        # An interrupted ACCEPT of page 0, then its retry that succeeded; the
        # same for a VP.RD of guest RIP (which returned 0x1234).
        a["in_rax"] = [6, 6, 9]
        a["err"] = [errno.EINTR, 0, errno.EINTR]
        a["in_rdx"][2] = rip
        how = {how!r}
        if how == "batch":
            # A real recording: runner set-up, then two reads of RIP, the
            # first of them interrupted once (its retry is the next record).
            sim_hcl = hcltdx.Hcl.simulated(vp_count=1)
            with sim_hcl.trace() as t:
                with sim_hcl.runner(0) as sr:
                    sr.write_vmcs64(0, VmcsField.VMX_VMCS_GUEST_RIP, 0x1234, (1 << 64) - 1)
                    sr.read_vmcs_batch(0, [VmcsField.VMX_VMCS_GUEST_RIP])
                    sr.read_vmcs_batch(0, [VmcsField.VMX_VMCS_GUEST_RIP])
            a = t.calls.copy()
            reads = np.flatnonzero((a["in_rax"] == 9) & (a["in_rdx"] == rip))
            assert len(reads) == 2
            a["err"][reads[0]] = errno.EINTR
        hcl = hcltdx.Hcl.replay(a, strict=False)
        if how == "batch":
            r = hcl.runner(0)
        for attempt in range(2):
            try:
                if how == "accept":
                    hcl.mshv_vtl.tdx_accept_pages(MemoryRange(0, 4096))
                elif how == "batch":
                    print(attempt, hex(r.read_vmcs_batch(0, [VmcsField.VMX_VMCS_GUEST_RIP])[0]))
                else:
                    hcl.tdcall(0, 9, rdx=rip)
                print(attempt, "ok")
            except OSError as e:
                print(attempt, errno.errorcode.get(e.errno, e.errno))
    """, timeout=30)
    assert res.returncode == 0, (res.returncode, res.stdout, res.stderr[-2000:])
    out = res.stdout.splitlines()
    if how == "accept":
        # The recorded EINTR is served once, its recorded retry answers;
        # the second accept finds the successful record again.
        assert out == ["0 ok", "1 ok"], out
    elif how == "tdcall":
        assert out == ["0 EINTR", "1 EPROTO"], out
    else:
        assert out == ["0 0x1234", "0 ok", "1 0x1234", "1 ok"], out


# ---- a forked child does not own its parent's stand-in ---------------------------------------

@needs_device
@pytest.mark.parametrize("in_process", [True, False])
@pytest.mark.parametrize("exit_how", ["atexit", "with", "close"])
def test_forked_child_leaves_the_parents_device_alone(in_process, exit_how):
    res = run_py(f"""
        import os, sys, hcltdx
        from hcltdx import simdev
        how = {exit_how!r}
        cm = simdev.mount(vp_count=1, in_process={in_process!r})
        dev = cm.__enter__()          # no `with`: only atexit would close it
        pid = os.fork()
        if pid == 0:
            if how == "with":
                with dev:              # the child's exit unwinds a `with` of the device
                    sys.exit(0)
            if how == "close":
                dev.close()
            sys.exit(0)                # interpreter exit: atexit runs
        _, status = os.waitpid(pid, 0)
        print("child exit", os.waitstatus_to_exitcode(status))
        print("still mounted", simdev.is_mounted(dev.mountpoint))
        with hcltdx.Hcl.open(dev.path, vp_count=1) as h, h.runner(0) as r:
            r.tdx_enter_guest_gps()[1] = 7
            print("serves", int(r.tdx_enter_guest_gps()[1]))
        cm.__exit__(None, None, None)
        print("unmounted after", not simdev.is_mounted(dev.mountpoint)
              and not os.path.exists(dev.mountpoint))
    """, timeout=60)
    check(res, "child exit 0", "still mounted True", "serves 7", "unmounted after True")


# ---- `hcltdx simdev` reports bad arguments in one line and leaves nothing behind ----------

@needs_device
@pytest.mark.parametrize("args,status", [
    (["--vp-count", "0"], 2), (["--vp-count", "x"], 2), (["--vp-count", "100000"], 2),
    (["--memory-size", "3"], 2), (["--memory-size", "lots"], 2), (["--cpu", "4096"], 2),
    (["--sim-kwargs", "{"], 2), (["--sim-kwargs", '{"no_such_option": 1}'], 2),
    (["--sim-kwargs", '{"memory_size": 3}'], 2), (["--ready-fd", "999"], 2),
])
def test_simdev_mount_bad_arguments(tmp_path, args, status):
    target = tmp_path / "a" / "b" / "mnt"
    res = run_cli("mount", str(target), "--quiet", *args)
    assert res.returncode == status, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr and res.stderr.strip(), res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr  # one line that says what is wrong, no usage dump
    assert lines[0].startswith(("hcltdx simdev mount: argument", "hcltdx simdev: cannot serve")), lines
    assert not (tmp_path / "a").exists()  # no directory left behind


@needs_device
def test_simdev_mount_on_a_file_or_unmountable_place(tmp_path):
    f = tmp_path / "file"
    f.write_text("keep me")
    for target in (f, f / "sub"):
        res = run_cli("mount", str(target), "--quiet")
        assert res.returncode == 1, (res.returncode, res.stderr)
        assert "Traceback" not in res.stderr and "cannot serve" in res.stderr, res.stderr
    assert f.read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == ["file"]


@needs_device
def test_simdev_umount_errors_are_one_line(tmp_path):
    for target in (tmp_path / "missing", tmp_path, "/proc/self/nonexistent/x"):
        res = run_cli("umount", str(target))
        assert res.returncode == 1, (res.returncode, res.stderr)
        assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


@needs_device
def test_simdev_mount_removes_the_directory_it_created(tmp_path):
    import signal
    import time

    from hcltdx import simdev

    target = tmp_path / "new" / "mnt"
    proc = subprocess.Popen([sys.executable, "-m", "hcltdx.simdev", "mount", str(target), "--quiet"],
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not (target / "mshv_vtl").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert not simdev.is_mounted(target) and not (tmp_path / "new").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        simdev.umount(target, force=True)
    # An existing directory is the caller's: it stays.
    keep = tmp_path / "keep"
    keep.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "hcltdx.simdev", "mount", str(keep), "--quiet"])
    try:
        deadline = time.monotonic() + 30
        while not (keep / "mshv_vtl").exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert keep.is_dir() and not simdev.is_mounted(keep)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        simdev.umount(keep, force=True)


def test_simdev_mount_function_checks_its_arguments_first():
    from hcltdx import simdev

    for bad in (0, 65, "2", True, 1.0):
        with pytest.raises(ValueError, match="vp_count"):
            with simdev.mount(vp_count=bad):
                pass
    with pytest.raises(ValueError, match="daemon_cpu"):
        with simdev.mount(vp_count=1, daemon_cpu=4096):
            pass


def test_forked_child_does_not_disarm_the_parents_watchdog(tmp_path):
    res = run_py("""
        import os, sys, time
        from hcltdx import simdev
        with simdev.Watchdog(sys.argv[1], 1.0) as dog:
            pid = os.fork()
            if pid == 0:
                dog.disarm()         # the child's copy: must not reach the parent's thread
                sys.exit(0)          # and unwinding the `with` neither
            _, status = os.waitpid(pid, 0)
            print("child exit", os.waitstatus_to_exitcode(status))
            deadline = time.monotonic() + 20
            while not dog.fired and time.monotonic() < deadline:
                time.sleep(0.05)
            print("fired", dog.fired)
    """, timeout=60, args=(str(tmp_path),))
    check(res, "child exit 0", "fired True")


def test_trace_load_refuses_other_files_with_valueerror(tmp_path):
    import numpy as np
    from hcltdx.trace import Trace

    np.save(tmp_path / "a.npy", np.zeros(3))
    (tmp_path / "b.txt").write_text("hello")
    (tmp_path / "c.npz").write_bytes(b"PK\x03\x04" + b"\0" * 40)   # a broken zip
    np.savez(tmp_path / "d.npz", calls=np.zeros(3), metadata=np.array("not json"))
    np.savez(tmp_path / "e.npz", calls=np.zeros(3), metadata=np.array("[1]"))
    for name in ("a.npy", "b.txt", "c.npz", "d.npz", "e.npz"):
        with pytest.raises(ValueError, match="not an hcltdx trace file"):
            Trace.load(tmp_path / name)
