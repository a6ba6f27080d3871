"""The raw fuzzer of the simulator's tdcall entry (csrc/fuzz/fuzz_tdcall.c),
built here with AddressSanitizer and UBSan and run for a few seeds: no
crash, no sanitizer report, no broken invariant. HCLTDX_FUZZ_LONG=1 runs it
for minutes (see docs/hardening.md)."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FUZZ = ROOT / "csrc" / "fuzz"
LONG = os.environ.get("HCLTDX_FUZZ_LONG", "") not in ("", "0")
CC = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")

pytestmark = pytest.mark.skipif(CC is None or not (FUZZ / "fuzz_tdcall.c").exists(),
                                reason="needs a C compiler and the source tree")


def _build(tmp, sanitize):
    exe = tmp / ("fuzz_tdcall_san" if sanitize else "fuzz_tdcall")
    flags = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
             "-fno-sanitize-recover=undefined"] if sanitize else ["-O2"]
    srcs = [str(FUZZ / "fuzz_tdcall.c"), *sorted(str(p) for p in (ROOT / "csrc" / "sim").glob("*.c"))]
    res = subprocess.run([CC, *flags, "-std=gnu11", "-pthread", "-Wall", "-I", str(ROOT / "include"),
                          "-I", str(ROOT / "csrc" / "sim"),
                          "-o", str(exe), *srcs], capture_output=True, text=True)
    if res.returncode != 0 and sanitize and "sanitize" in res.stderr:
        pytest.skip(f"the compiler has no ASan/UBSan runtime: {res.stderr[-300:]}")
    assert res.returncode == 0, res.stderr
    return exe


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("fuzz"), sanitize=True)


@pytest.mark.parametrize("seed", [1, 2, 3] if not LONG else [11])
def test_raw_fuzzer_finds_nothing(fuzzer, seed):
    args = ["-t", os.environ.get("HCLTDX_FUZZ_SECONDS", "240")] if LONG else ["-n", "150000"]
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    res = subprocess.run([str(fuzzer), "-s", str(seed), *args], capture_output=True, text=True,
                         timeout=900 if LONG else 120, env=env)
    assert res.returncode == 0, (res.stdout, res.stderr[-3000:])
    assert "runtime error" not in res.stderr and "Sanitizer" not in res.stderr, res.stderr[-3000:]
    m = re.search(r"executions=(\d+) seconds=([\d.]+) ok=(\d+) tdx_failures=(\d+) refused=(\d+) "
                  r"accepts=(\d+) vmcs_writes=(\d+) diff_checked=(\d+)", res.stdout)
    assert m, res.stdout
    executions, _, ok, failures, refused, accepts, writes, diffed = (float(x) for x in m.groups())
    # Every execution is accounted for, and the interesting paths were reached.
    assert executions > 0 and ok + failures + refused <= executions
    assert ok > 0 and failures > 0 and refused > 0 and accepts > 0 and writes > 0 and diffed > 0
    print(res.stdout.strip())
