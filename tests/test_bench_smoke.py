"""The comparison benchmarks cannot rot: the Rust crate builds, the three
implementations run (a few iterations, quick mode) and the report is written.
Structure only: no timing is asserted anywhere here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from hcltdx.bench import native_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRATE = os.path.join(ROOT, "benchmarks", "rust")
HAVE_CHECKOUT = os.path.exists(os.path.join(ROOT, "benchmarks", "test_bench.py"))

pytestmark = pytest.mark.skipif(not HAVE_CHECKOUT, reason="needs the source checkout's benchmarks/")

SINGLE_OPS = ["read_vmcs64", "write_vmcs64", "read_vmcs_batch[1]", "read_vmcs_batch[8]",
              "read_vmcs_batch[64]", "poll_vmcs[8]", "private_regs", "snapshot"]
SWEEP_OPS = ["tdx_accept_pages[1GiB@2MiB]", "tdx_accept_pages[64MiB@4KiB]",
             "tdx_set_page_attributes[1GiB@2MiB]", "tdx_set_page_attributes[64MiB@4KiB]"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _need(module: str) -> None:
    pytest.importorskip(module, reason=f"{module} is not installed (pip install 'hcltdx[bench]')")


@pytest.fixture(scope="module")
def cargo_built():
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.skip("cargo is not installed: the Rust crate is not built")
    subprocess.run([cargo, "build", "--release", "-j", "1", "--quiet", "--manifest-path",
                    os.path.join(CRATE, "Cargo.toml")], check=True, timeout=600, env=native_env())
    binary = os.path.join(CRATE, "target", "release", "hcltdx-bench-rust")
    assert os.access(binary, os.X_OK)
    return binary


def test_rust_binary_reports_the_suite_operation_names(cargo_built, tmp_path):
    out = tmp_path / "rust.json"
    subprocess.run([cargo_built, "--out", str(out), "--backend", "sim", "--quick"], check=True,
                   timeout=120, env=native_env())
    doc = json.loads(out.read_text())
    assert doc["impl"] == "rust"
    ops = {r["op"] for r in doc["results"] if r["backend"] == "sim"}
    assert ops == set(SINGLE_OPS + SWEEP_OPS + ["vmcs_field_code"])
    assert all(len(r["rounds_ns"]) >= 1 and all(v > 0 for v in r["rounds_ns"]) for r in doc["results"])


def test_rust_binary_refuses_bad_arguments(cargo_built):
    r = subprocess.run([cargo_built, "--backend", "sim"], capture_output=True, text=True, timeout=60,
                       env=native_env())
    assert r.returncode == 2 and "--out" in r.stderr
    r = subprocess.run([cargo_built, "--out", "/dev/null", "--backend", "device"],
                       capture_output=True, text=True, timeout=60, env=native_env())
    assert r.returncode == 2 and "--devices" in r.stderr


def test_bench_quick_writes_the_report(cargo_built, tmp_path):
    _need("pytest_benchmark")
    _need("matplotlib")
    from hcltdx import simdev

    device = simdev.available()[0]
    out = tmp_path / "report"
    cmd = [sys.executable, "-m", "hcltdx.bench", "--quick", "--source", ROOT,
           "--out", str(out)] + ([] if device else ["--no-device"])
    # A sanitizer build runs everything several times slower (scripts/sanitize).
    slowdown = float(os.environ.get("HCLTDX_TEST_SLOWDOWN", "1"))
    subprocess.run(cmd, check=True, timeout=300 * slowdown)
    report = (out / "report.md").read_text()
    png = (out / "ratios.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 1000

    # The three implementations measured the same operations under the same names.
    results = json.loads((out / "results.json").read_text())["results"]
    backends = ["sim"] + (["device"] if device else [])
    for backend in backends:
        by_impl = {}
        for r in results:
            if r["backend"] == backend:
                by_impl.setdefault(r["impl"], set()).add(r["op"])
        expected = set(SINGLE_OPS + SWEEP_OPS) | ({"vmcs_field_code"} if backend == "sim" else set())
        assert by_impl["rust"] == expected
        assert by_impl["plain"] == expected
        extra = {"noop_cython", "read_vmcs64[int args]"} if backend == "sim" else set()
        assert by_impl["hcltdx"] == expected | extra

    # One table row per (operation, backend), and the targets section.
    rows = [line for line in report.splitlines()
            if line.startswith("| ") and (" | sim | " in line or " | device | " in line)]
    for backend in backends:
        for op in SINGLE_OPS + SWEEP_OPS:
            assert any(line.startswith(f"| {op} | {backend} |") for line in rows), (op, backend)
    assert "## Targets" in report and "CPU" in report and "Spread rule" in report
    # Quick mode has too few rounds: no ratio may be printed from it.
    assert "— (2 round(s))" in report and "not judged" in report


def test_bench_refuses_a_directory_that_is_not_a_checkout(tmp_path):
    r = subprocess.run([sys.executable, "-m", "hcltdx.bench", "--source", str(tmp_path), "--out",
                        str(tmp_path / "o")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not an hcltdx checkout" in r.stderr


# ---- the spread rule and the verdicts, on numbers chosen here ------------------------

def test_spread_rule_refuses_noisy_or_short_sides():
    from hcltdx import bench

    steady = bench.summarize([100.0, 101.0, 99.0, 100.0, 100.0])
    noisy = bench.summarize([100.0, 150.0, 60.0, 100.0, 200.0])
    assert steady["median_ns"] == 100.0 and steady["spread"] < 0.05
    assert noisy["spread"] > 0.10
    value, why = bench.ratio(bench.summarize([200.0] * 5), steady, 0.10)
    assert value == pytest.approx(2.0) and why == ""
    assert bench.ratio(noisy, steady, 0.10) == (None, f"spread {noisy['spread']:.0%}")
    assert bench.ratio(steady, bench.summarize([50.0, 50.0]), 0.10) == (None, "2 round(s)")
    assert bench.ratio(steady, None, 0.10) == (None, "not measured")


def test_target_verdicts():
    from hcltdx import bench

    assert bench._verdict((1.1, ""), "<=", 1.2) == "met"
    assert bench._verdict((1.8, ""), "<=", 1.2) == "missed by 50%"
    assert bench._verdict((4.0, ""), ">=", 5.0) == "missed by 25%"
    assert bench._verdict((None, "spread 30%"), ">=", 5.0) == "not judged (spread 30%)"


def test_noisy_ratio_judged_only_when_every_quartile_pairing_agrees():
    from hcltdx import bench

    fast = bench.summarize([100.0, 100.0, 100.0, 100.0, 100.0])
    slow_noisy = bench.summarize([2000.0, 3000.0, 4000.0, 2500.0, 3500.0])   # Q1 2500, Q3 3500: spread 33%
    r = bench.ratio(slow_noisy, fast, 0.25)
    assert r[0] is None
    qb = bench.quartile_bounds(slow_noisy, fast)
    assert qb == pytest.approx((25.0, 35.0))
    assert bench._verdict(r, ">=", 20.0, qb).startswith("met at every quartile pairing")
    assert bench._verdict(r, ">=", 30.0, qb) == "not judged (spread 33%)"
    assert bench._verdict(r, ">=", 50.0, qb).startswith("missed at every quartile pairing")
    assert "by at least 43%" in bench._verdict(r, ">=", 50.0, qb)
