"""Fixtures of the comparison suites (benchmarks/test_bench.py).

Set by ``hcltdx bench`` (``python -m hcltdx.bench``), or by hand:

* ``HCLTDX_BENCH_QUICK=1``: a few iterations (the CI smoke);
* ``HCLTDX_BENCH_ROUNDS=N``: rounds per operation (``HCLTDX_BENCH_SWEEP_ROUNDS``
  for the page sweeps, else the same);
* ``HCLTDX_BENCH_DEVICES``: the spec line of benchmarks/devserver.py, or
  ``none`` to skip the stand-in device; unset: this session starts its own
  device server when FUSE is usable;
* ``HCLTDX_BENCH_SIMLIB``: the simulator library for the plain baseline
  (default ``csrc/build/libhcltdx_sim.so``, built with make when missing).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)


def pytest_configure(config):
    config.addinivalue_line("markers", "device: needs the FUSE stand-in device")


def quick() -> bool:
    return os.environ.get("HCLTDX_BENCH_QUICK", "") not in ("", "0")


def rounds(sweep: bool) -> int:
    if sweep and os.environ.get("HCLTDX_BENCH_SWEEP_ROUNDS"):
        return int(os.environ["HCLTDX_BENCH_SWEEP_ROUNDS"])
    if os.environ.get("HCLTDX_BENCH_ROUNDS"):
        return int(os.environ["HCLTDX_BENCH_ROUNDS"])
    if quick():
        return 1 if sweep else 2
    return 9 if sweep else 15


def round_seconds() -> float:
    """Length of one timed round (the Rust binary uses the same)."""
    return 0.001 if quick() else 0.05


def parse_spec(spec: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in spec.split(","))


def start_devserver(cpu: int | None):
    """(process, spec) of a fresh benchmarks/devserver.py, or (None, reason)."""
    import hcltdx
    from hcltdx.bench import start_devserver as start

    # The server must import the very hcltdx this session measures.
    env = dict(os.environ)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(hcltdx.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [pkg_parent, env.get("PYTHONPATH")]))
    return start(os.path.dirname(HERE), env, cpu)


@pytest.fixture(scope="session")
def devices():
    spec = os.environ.get("HCLTDX_BENCH_DEVICES")
    proc = None
    if spec == "none":
        pytest.skip("stand-in device disabled (HCLTDX_BENCH_DEVICES=none)")
    if not spec:
        cpus = sorted(os.sched_getaffinity(0))
        proc, spec = start_devserver(cpus[0])
        if proc is None:
            pytest.skip(f"stand-in device unavailable: {spec}")
    import socket

    paths = parse_spec(spec)
    ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ctl.connect(paths.pop("ctl"))
    f = ctl.makefile("rwb", buffering=0)

    def reset(config: str) -> None:
        f.write(f"reset {config}\n".encode())
        answer = f.readline().strip()
        if answer != b"ok":
            raise RuntimeError(f"device reset of {config}: {answer!r}")

    yield paths, reset
    f.close()
    ctl.close()
    if proc is not None:
        proc.stdin.close()
        proc.wait(30)


@pytest.fixture(scope="session")
def simlib():
    path = os.environ.get("HCLTDX_BENCH_SIMLIB") or os.path.join(ROOT, "csrc", "build",
                                                                 "libhcltdx_sim.so")
    if not os.path.exists(path):
        subprocess.run(["make", "-C", os.path.join(ROOT, "csrc"), "build/libhcltdx_sim.so"],
                       check=True, stdout=subprocess.DEVNULL)
    import plain

    return plain.load_library(path)
