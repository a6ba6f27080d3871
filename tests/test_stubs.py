"""The .pyi stubs match the runtime.

stubtest compares every stub of the imported package (an installed wheel or
an in-place build) with what the modules hold at run time, so API added to
the Cython modules or the bit-field tables without a matching stub fails
here. The remaining exceptions, each with its reason, are in
stubtest_allowlist.txt. The stubs of the pure-Python definition modules are
generated (scripts/gen_stubs.py); the second test regenerates them and
compares.
"""

import os
import subprocess
import sys

import pytest

import hcltdx

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _env():
    env = dict(os.environ)
    parent = os.path.dirname(os.path.dirname(os.path.abspath(hcltdx.__file__)))
    if "site-packages" not in parent:  # an in-place build: point mypy at it
        env["MYPYPATH"] = parent
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [parent, env.get("PYTHONPATH")]))
    return env


def test_stubtest_clean(tmp_path):
    pytest.importorskip("mypy")
    res = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "hcltdx", "--concise",
         "--allowlist", os.path.join(HERE, "stubtest_allowlist.txt")],
        capture_output=True, text=True, cwd=str(tmp_path), env=_env())
    assert res.returncode == 0, res.stdout + res.stderr


def test_generated_stubs_are_current(tmp_path):
    pytest.importorskip("mypy")
    script = os.path.join(ROOT, "scripts", "gen_stubs.py")
    res = subprocess.run([sys.executable, script, "--check"], capture_output=True, text=True,
                         cwd=str(tmp_path), env=_env())
    assert res.returncode == 0, res.stdout + res.stderr


def test_stubs_describe_generated_members():
    """The generated stubs hold what _bitfield makes at class creation, as
    the spec's RFLAGS layout (section 0) gives it: ZF is bit 6, IOPL bits
    12-13, and VmcsField names a catalogue entry (GUEST_CR3 = 0x6802)."""
    path = os.path.join(os.path.dirname(hcltdx.__file__), "x86.pyi")
    with open(path, encoding="utf-8") as f:
        x86 = f.read()
    assert "    @property\n    def zero(self) -> bool:\n        \"\"\"Bit 6.\"\"\"" in x86
    assert "def with_zero(self, value: SupportsIndex) -> Self:" in x86
    assert "def io_privilege_level(self) -> int:\n        \"\"\"Bits 12-13.\"\"\"" in x86
    with open(os.path.join(os.path.dirname(hcltdx.__file__), "vmx.pyi"), encoding="utf-8") as f:
        vmx = f.read()
    assert "VMX_VMCS_GUEST_CR3: ClassVar[VmcsField]" in vmx
    assert hcltdx.VmcsField.VMX_VMCS_GUEST_CR3 == 0x6802
