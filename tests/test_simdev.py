"""The stand-in /dev/mshv_vtl: real ioctl and mmap through FUSE, end to end."""

import contextlib
import ctypes
import errno
import fcntl
import mmap
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import pytest

import hcltdx
from hcltdx import simdev
from hcltdx.tdx import TdCallLeaf, vmcs_field_code
from hcltdx.vmx import VmcsField

OK, REASON = simdev.available()
pytestmark = [pytest.mark.skipif(not OK, reason=f"stand-in device unavailable: {REASON}"),
              pytest.mark.timeout(120)]

TDCALL = 0xC038B832
PAGE = 4096
APIC = 0x30000
VP_RD = int(TdCallLeaf.VP_RD)
VP_WR = int(TdCallLeaf.VP_WR)
RIP_VTL0 = int(vmcs_field_code(VmcsField.VMX_VMCS_GUEST_RIP, 0))
ALL_ONES = (1 << 64) - 1
HAVE_HCL = hasattr(hcltdx, "Hcl") and hasattr(hcltdx.Hcl, "open")
TWO_CPUS = len(os.sched_getaffinity(0)) >= 2


@contextlib.contextmanager
def pinned(cpu):
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


@contextlib.contextmanager
def opened(path):
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def raw_tdcall(fd, leaf, rcx=0, rdx=0, r8=0, r9=0):
    buf = bytearray(struct.pack("<7Q", leaf, rcx, rdx, r8, r9, 0, 0))
    assert fcntl.ioctl(fd, TDCALL, buf) == 0
    return struct.unpack("<7Q", buf)


def fuse_mounts():
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if "hcltdx-simdev" in line]


@pytest.fixture(autouse=True)
def no_mount_left_behind(tmp_path, monkeypatch):
    # Other test runs on the machine share the mount namespace: look only at
    # mounts under this test's own directory, where simdev.mount puts its
    # workdir (tempfile) and the CLI tests their mount points.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    yield
    mine = str(tmp_path.resolve()) + os.sep
    assert [line for line in fuse_mounts() if line.split()[4].startswith(mine)] == []


# ---- lifecycle ------------------------------------------------------------------

@pytest.mark.parametrize("in_process", [True, False], ids=["thread", "child"])
def test_mount_lifecycle(in_process):
    with simdev.mount(vp_count=2, in_process=in_process) as dev:
        assert simdev.is_mounted(dev.mountpoint)
        assert os.listdir(dev.mountpoint) == ["mshv_vtl"]
        st = os.stat(dev.path)
        assert st.st_size == (APIC | 1) * PAGE + PAGE
        assert dev.alive
        assert (dev.sim is not None) == in_process
        assert (dev.pid == os.getpid()) == in_process
        workdir = dev.workdir
    assert not simdev.is_mounted(dev.mountpoint)
    assert not os.path.exists(workdir)
    assert not dev.alive


def test_available_and_exception_type():
    assert simdev.available() == (True, "")
    assert issubclass(simdev.SimDevUnavailable, OSError)


@pytest.mark.parametrize("timeout", [0, -1, float("nan")])
def test_watchdog_refuses_a_timeout_that_is_not_positive(tmp_path, timeout):
    with pytest.raises(ValueError):
        simdev.Watchdog(tmp_path, timeout)


def test_umount_helper_on_a_plain_directory(tmp_path):
    assert simdev.umount(tmp_path) is False


# ---- ioctl --------------------------------------------------------------------

def test_raw_ioctl_vp_rd_acts_on_the_callers_cpu():
    with simdev.mount(vp_count=2) as dev, opened(dev.path) as fd:
        sim = dev.sim
        assert sim._tdcall(0, VP_WR, 0, RIP_VTL0, 0x1000, ALL_ONES)[0] == 0
        with pinned(0):
            rax, _, _, r8, *_ = raw_tdcall(fd, VP_RD, 0, RIP_VTL0)
        assert (rax, r8) == (0, 0x1000)
        # The same answer as the model's own entry point:
        with pinned(0):
            via_fuse = raw_tdcall(fd, VP_RD, 0, RIP_VTL0)
        assert via_fuse == sim._tdcall(0, VP_RD, 0, RIP_VTL0, 0, 0)
        if TWO_CPUS:
            sim._tdcall(1, VP_WR, 0, RIP_VTL0, 0x2000, ALL_ONES)
            with pinned(1):
                assert raw_tdcall(fd, VP_RD, 0, RIP_VTL0)[3] == 0x2000
            with pinned(0):  # re-pinned: the daemon follows
                assert raw_tdcall(fd, VP_RD, 0, RIP_VTL0)[3] == 0x1000


def test_tdx_failure_travels_in_rax_not_errno():
    with simdev.mount(vp_count=2) as dev, opened(dev.path) as fd, pinned(0):
        rax, *_ = raw_tdcall(fd, VP_RD, 1, RIP_VTL0)  # RCX must be 0
        assert rax == 0xC000010000000001  # OPERAND_INVALID naming RCX (10.4)
        assert dev.sim._tdcall(0, VP_RD, 1, RIP_VTL0, 0, 0)[0] == rax


@pytest.mark.skipif(not TWO_CPUS, reason="needs two CPUs")
def test_cpu_without_a_vp_is_einval():
    with simdev.mount(vp_count=1) as dev, opened(dev.path) as fd:
        with pinned(0):
            assert raw_tdcall(fd, VP_RD, 0, RIP_VTL0)[0] == 0
        with pinned(1), pytest.raises(OSError) as e:
            raw_tdcall(fd, VP_RD, 0, RIP_VTL0)
        assert e.value.errno == errno.EINVAL


def test_unpinned_caller_reaches_the_vp_it_runs_on():
    ncpu = os.cpu_count()
    with simdev.mount(vp_count=min(ncpu, 64)) as dev, opened(dev.path) as fd:
        for vp in range(min(ncpu, 64)):
            dev.sim._tdcall(vp, VP_WR, 0, RIP_VTL0, 0x100 + vp, ALL_ONES)
        for _ in range(50):
            r8 = raw_tdcall(fd, VP_RD, 0, RIP_VTL0)[3]
            assert 0x100 <= r8 < 0x100 + ncpu


@pytest.mark.parametrize("request_", [0x8008B833, 0x0000B827, 0xC030B81F, 0xC038B833,
                                      0x4038B832, 0x8038B832, 0x00005401])
def test_other_requests_are_enotty(request_):
    with simdev.mount(vp_count=2) as dev, opened(dev.path) as fd, pinned(0):
        size = (request_ >> 16) & 0x3FFF
        with pytest.raises(OSError) as e:
            fcntl.ioctl(fd, request_, bytearray(max(size, 8)))
        assert e.value.errno == errno.ENOTTY
        assert raw_tdcall(fd, VP_RD, 0, RIP_VTL0)[0] == 0  # still serving


def test_concurrent_callers_on_two_cpus():
    vps = [0, 1] if TWO_CPUS else [0]
    with simdev.mount(vp_count=2) as dev:
        for vp in vps:
            dev.sim._tdcall(vp, VP_WR, 0, RIP_VTL0, 0xA000 + vp, ALL_ONES)
        bad = []

        def worker(vp):
            with pinned(vp), opened(dev.path) as fd:
                for _ in range(300):
                    r8 = raw_tdcall(fd, VP_RD, 0, RIP_VTL0)[3]
                    if r8 != 0xA000 + vp:
                        bad.append((vp, r8))

        threads = [threading.Thread(target=worker, args=(vp,)) for vp in vps]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not bad


# ---- mmap -------------------------------------------------------------------------

def test_mmap_is_the_simulators_page_both_ways():
    with simdev.mount(vp_count=2) as dev, opened(dev.path) as fd:
        for page, view in ((0, dev.sim.run_page(0)), (1, dev.sim.run_page(1))):
            m = mmap.mmap(fd, PAGE, offset=page * PAGE)
            try:
                m[100:104] = b"\x01\x02\x03\x04"
                assert bytes(view[100:104]) == b"\x01\x02\x03\x04"
                view[200] = 0x5A
                assert m[200] == 0x5A
            finally:
                m.close()
        m = mmap.mmap(fd, PAGE, offset=(APIC | 1) * PAGE)
        try:
            m[0x80:0x84] = struct.pack("<I", 0xF0)  # TPR of VP 1's VTL0 APIC page
            with os.fdopen(os.dup(dev.sim.backing_fd), "rb") as f:
                f.seek((APIC | 1) * PAGE + 0x80)
                assert f.read(4) == struct.pack("<I", 0xF0)
        finally:
            m.close()


def test_mmap_survives_after_the_file_is_closed():
    with simdev.mount(vp_count=2) as dev:
        with opened(dev.path) as fd:
            m = mmap.mmap(fd, PAGE, offset=0)
        dev.sim.run_page(0)[7] = 0x77
        assert m[7] == 0x77
        m.close()


_TOUCH = textwrap.dedent("""
    import ctypes, mmap, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    fd = os.open(sys.argv[1], os.O_RDWR)
    p = libc.mmap(None, 4096, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd,
                  int(sys.argv[2], 0) * 4096)
    if p in (None, ctypes.c_void_p(-1).value):
        print("mmap failed", ctypes.get_errno()); sys.exit(3)
    print("value", ctypes.c_uint8.from_address(p).value, flush=True)
""")


@pytest.mark.parametrize("page", ["0x0", "0x1", "0x30000", "0x30001"])
def test_valid_offsets_map(page):
    with simdev.mount(vp_count=2) as dev:
        r = subprocess.run([sys.executable, "-c", _TOUCH, dev.path, page],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "value 0"


@pytest.mark.parametrize("page", [
    "0x2",        # the run page of a VP that does not exist
    "0xffff",
    "0x10000",    # register page: not a TDX page kind
    "0x20000",    # SNP VMSA
    "0x30002",    # VTL0 APIC page of a VP that does not exist (past the end)
    "0x40000",    # SNP guest-VSM VMSA
    "0x50000",    # unknown kind
])
def test_refused_offsets_fault_with_sigbus(page):
    with simdev.mount(vp_count=2) as dev:
        if "memfd" in dev.backing:
            pytest.skip(dev.backing)
        r = subprocess.run([sys.executable, "-c", _TOUCH, dev.path, page],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == -signal.SIGBUS, (r.returncode, r.stdout, r.stderr)
        assert "value" not in r.stdout


# ---- the GIL, proven by the in-process daemon --------------------------------------

def test_core_releases_the_gil_around_the_ioctl():
    """The daemon is a thread of this process that needs the GIL to answer:
    a tdcall issued with the GIL held would hang; the watchdog then aborts
    the connection, and the test fails instead of hanging."""
    with simdev.mount(vp_count=2) as dev:
        dev.sim._tdcall(0, VP_WR, 0, RIP_VTL0, 0x1234, ALL_ONES)
        counter = [0]
        stop = threading.Event()

        def count():
            while not stop.is_set():
                counter[0] += 1

        ticker = threading.Thread(target=count)
        results = []
        with pinned(0), simdev.Watchdog(dev.mountpoint, 30) as dog:
            if HAVE_HCL:
                hcl = hcltdx.Hcl.open(dev.path, vp_count=2)
                call = lambda: hcl.tdcall(0, VP_RD, 0, RIP_VTL0).r8  # noqa: E731
            else:
                fd = os.open(dev.path, os.O_RDWR)
                call = lambda: raw_tdcall(fd, VP_RD, 0, RIP_VTL0)[3]  # noqa: E731
            try:
                ticker.start()
                start = counter[0]
                for _ in range(2000):
                    results.append(call())
                advanced = counter[0] - start
            finally:
                stop.set()
                ticker.join()
                if HAVE_HCL:
                    hcl.close()
                else:
                    os.close(fd)
            assert not dog.disarm(), "the watchdog had to abort the connection"
        assert results == [0x1234] * 2000
        assert advanced > 0


def test_watchdog_aborts_an_ioctl_issued_with_the_gil_held():
    """The regression the GIL test guards against, produced on purpose:
    ctypes.PyDLL keeps the GIL across the ioctl, so the daemon thread cannot
    answer; only the watchdog's forced unmount ends the call."""
    holds_gil = ctypes.PyDLL(None, use_errno=True)
    holds_gil.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_char_p]
    buf = ctypes.create_string_buffer(struct.pack("<7Q", VP_RD, 0, RIP_VTL0, 0, 0, 0, 0), 56)
    with simdev.mount(vp_count=2) as dev, opened(dev.path) as fd, pinned(0):
        with simdev.Watchdog(dev.mountpoint, 1.0) as dog:
            rc = holds_gil.ioctl(fd, TDCALL, buf)
            err = ctypes.get_errno()
            assert dog.disarm()
        assert rc == -1 and err in (errno.ECONNABORTED, errno.ENOTCONN)
        # The daemon thread needs the GIL to see the abort and stop: let it run.
        deadline = time.monotonic() + 30
        while dev.alive and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not dev.alive


# ---- a daemon that dies ------------------------------------------------------------

def test_killed_daemon_fails_the_next_call_and_is_cleaned_up():
    with simdev.mount(vp_count=2, in_process=False) as dev:
        assert dev.sim is None
        with pinned(0), simdev.Watchdog(dev.mountpoint, 20) as dog:
            if HAVE_HCL:
                hcl = hcltdx.Hcl.open(dev.path, vp_count=2)
                call = lambda: hcl.tdcall(0, VP_RD, 0, RIP_VTL0)  # noqa: E731
                close = hcl.close
            else:
                fd = os.open(dev.path, os.O_RDWR)
                call = lambda: raw_tdcall(fd, VP_RD, 0, RIP_VTL0)  # noqa: E731
                close = lambda: os.close(fd)  # noqa: E731
            try:
                call()
                dev.kill()
                assert not dev.alive
                # It fails rather than hangs: the watchdog below must not fire.
                with pytest.raises(OSError) as e:
                    call()
                assert e.value.errno in (errno.ECONNABORTED, errno.ENOTCONN)
            finally:
                close()
            assert not dog.disarm()
        assert simdev.is_mounted(dev.mountpoint)  # dead, until the context exits
    assert not simdev.is_mounted(dev.mountpoint)


def test_child_daemon_serves_the_same_model():
    with simdev.mount(vp_count=2, in_process=False) as dev, opened(dev.path) as fd, pinned(0):
        assert raw_tdcall(fd, VP_WR, 0, RIP_VTL0, 0x4444, ALL_ONES)[0] == 0
        assert raw_tdcall(fd, VP_RD, 0, RIP_VTL0)[3] == 0x4444
        m = mmap.mmap(fd, PAGE, offset=0)
        m[0:4] = b"abcd"
        m.close()
        m = mmap.mmap(fd, PAGE, offset=0)
        assert m[0:4] == b"abcd"
        m.close()


# ---- command line -----------------------------------------------------------------

def _wait_for(path, proc, timeout=30):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the daemon did not come up"
        time.sleep(0.05)


def test_cli_mount_serves_until_sigterm(tmp_path):
    mnt = tmp_path / "dev"
    proc = subprocess.Popen([sys.executable, "-m", "hcltdx.simdev", "mount", str(mnt),
                             "--vp-count", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(mnt / "mshv_vtl", proc)
        with opened(mnt / "mshv_vtl") as fd, pinned(0):
            assert raw_tdcall(fd, VP_RD, 0, RIP_VTL0)[0] == 0
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert b"serving" in out
        assert not simdev.is_mounted(mnt)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        simdev.umount(mnt, force=True)


def test_cli_umount_clears_a_dead_mount(tmp_path):
    mnt = tmp_path / "dev"
    proc = subprocess.Popen([sys.executable, "-m", "hcltdx.simdev", "mount", str(mnt), "--quiet"])
    try:
        _wait_for(mnt / "mshv_vtl", proc)
        proc.kill()
        proc.wait()
        assert simdev.is_mounted(mnt)
        with pytest.raises(OSError) as e:
            os.close(os.open(mnt / "mshv_vtl", os.O_RDWR))
        assert e.value.errno in (errno.ECONNABORTED, errno.ENOTCONN)
        assert simdev.main(["umount", str(mnt)]) == 0
        assert not simdev.is_mounted(mnt)
        assert simdev.main(["umount", str(mnt)]) == 1
    finally:
        simdev.umount(mnt, force=True)


# ---- nothing outlives its owner ---------------------------------------------------

def _mounted_after(script, timeout=20):
    """Run ``script`` (it prints a mount point), then report whether that
    mount point is still mounted once things have settled."""
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(script)],
                       capture_output=True, text=True, timeout=60)
    mnt = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else None
    assert mnt, (r.returncode, r.stderr)
    deadline = time.monotonic() + timeout
    try:
        while simdev.is_mounted(mnt) and time.monotonic() < deadline:
            time.sleep(0.05)
        return simdev.is_mounted(mnt)
    finally:
        simdev.umount(mnt, force=True)
        shutil.rmtree(os.path.dirname(mnt), ignore_errors=True)  # its owner died


def test_child_daemon_unmounts_when_its_parent_is_killed():
    assert not _mounted_after("""
        import os, signal
        from hcltdx import simdev
        cm = simdev.mount(vp_count=1, in_process=False)
        dev = cm.__enter__()
        assert simdev.is_mounted(dev.mountpoint)
        print(dev.mountpoint, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)


def test_thread_daemon_mount_is_removed_at_interpreter_exit():
    assert not _mounted_after("""
        from hcltdx import simdev
        cm = simdev.mount(vp_count=1)
        dev = cm.__enter__()
        fd = open(dev.path, "rb")  # still open at exit: a busy mount
        print(dev.mountpoint, flush=True)
    """, timeout=0)


# ---- refusing clearly where it cannot work ----------------------------------------

_REFUSE = textwrap.dedent("""
    from hcltdx import simdev
    ok, why = simdev.available()
    print("available", ok, why)
    for in_process in (True, False):
        try:
            with simdev.mount(vp_count=1, in_process=in_process):
                print("mounted")
        except simdev.SimDevUnavailable as exc:
            print("refused", exc.errno, exc.strerror)
""")


@pytest.mark.parametrize("flags, missing", [
    (["-U", "-r", "-m"], "FUSE_DEV_IOC_BACKING_OPEN"),   # may mount, may not register a backing file
    (["-U", "-r"], "CAP_SYS_ADMIN"),                     # may not even mount
], ids=["userns-with-mountns", "userns"])
def test_refuses_with_the_reason_in_a_user_namespace(flags, missing):
    if not shutil.which("unshare"):
        pytest.skip("no unshare(1)")
    probe = subprocess.run(["unshare", *flags, "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("user namespaces are not available")
    r = subprocess.run(["unshare", *flags, sys.executable, "-c", _REFUSE],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("available False") and missing in lines[0]
    assert lines[1:] == [f"refused {errno.EPERM} {lines[1].split(' ', 2)[2]}"] * 2
    assert missing in lines[1]
