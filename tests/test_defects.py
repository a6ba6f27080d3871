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
            r = h.runner(0, vtl1_apic_page=(bytearray(4096), 0x1000))  # nothing was left open
            print("runner", r.closed)
            r.close(); h.close()
    """)
    check(res)
    assert res.stdout.splitlines() == ["ValueError", "ValueError", "ValueError", "TypeError",
                                       "runner False"], res.stdout + res.stderr[-2000:]


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
