"""mypy over the public API: the stubs and annotations must type-check a
program written the way users write one."""

import os
import subprocess
import sys

import pytest

import hcltdx

HERE = os.path.dirname(os.path.abspath(__file__))


def test_public_api_type_checks(tmp_path):
    pytest.importorskip("mypy")
    example = os.path.join(HERE, "typing_example.py")
    env = dict(os.environ)
    parent = os.path.dirname(os.path.dirname(os.path.abspath(hcltdx.__file__)))
    if "site-packages" not in parent:  # an in-place build: point mypy at it
        env["MYPYPATH"] = parent
    res = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir", str(tmp_path),
         "--python-version", f"{sys.version_info[0]}.{sys.version_info[1]}",
         "--follow-imports=silent", example],
        capture_output=True, text=True, cwd=str(tmp_path), env=env)
    assert res.returncode == 0, res.stdout + res.stderr
