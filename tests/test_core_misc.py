"""The demo, the command line, and agreement between the core's C field
codes and the definitions layer."""

import subprocess
import sys


import hcltdx
from hcltdx import GuestVtl, VmcsField
from hcltdx._core import _vmcs_field_code_c


def test_c_field_codes_agree_with_definitions_and_spec():
    for field in VmcsField.catalogue():
        if field & 1:
            continue
        for vtl in (GuestVtl.VTL0, GuestVtl.VTL1):
            assert _vmcs_field_code_c(field, vtl) == int(hcltdx.vmcs_field_code(field, vtl))
    # Section 8.1 vectors.
    assert _vmcs_field_code_c(0x681E, 0) == 0x242000030000681E
    assert _vmcs_field_code_c(0x681E, 1) == 0x2C2000030000681E
    assert _vmcs_field_code_c(VmcsField.VMX_VMCS_PROCESSOR_CONTROLS, 0) == 0x2420000200004002
    assert _vmcs_field_code_c(VmcsField.VMX_VMCS_GUEST_CS_SELECTOR, 1) == 0x2C20000100000802


def test_demo_runs_on_the_simulator():
    lines = []
    result = hcltdx.demo.run(vp_count=1, memory_size=64 << 20, out=lines.append)
    assert result["accept_calls"] == 32  # 64 MiB in 2 MiB chunks
    assert result["cr3"] == 0x1000
    assert any("read_vmcs64" in line for line in lines)


def test_cli_demo_subprocess(tmp_path):
    res = subprocess.run([sys.executable, "-m", "hcltdx", "demo", "--vp-count", "1",
                          "--memory-mib", "64", "--seconds", "0.2"], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "32 ACCEPT" in res.stdout


def test_cli_rejects_unknown_command():
    res = subprocess.run([sys.executable, "-m", "hcltdx", "frobnicate"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "invalid choice" in res.stderr


def test_objects_left_open_at_exit_do_not_crash():
    code = (
        "import hcltdx\n"
        "h = hcltdx.Hcl.simulated()\n"
        "r = h.runner(0)\n"
        "g = r.tdx_enter_guest_gps()\n"
        "g[0] = 1\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
