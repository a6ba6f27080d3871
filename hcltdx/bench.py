"""``hcltdx bench``: hcltdx next to the Rust way and the plain-Python way.

    python -m hcltdx.bench [--out DIR] [--quick] [--runs N] [--passes P] [--device/--no-device]
                           [--source DIR] [--max-spread F] [--cpu N]

Runs, on this machine and pinned the same way, three implementations of the
same operations over the same two backends (the in-process simulator, the
FUSE stand-in device):

* hcltdx, through the pytest-benchmark suite ``benchmarks/test_bench.py``;
* the plain-Python baseline (``benchmarks/plain.py``: ctypes, struct,
  fcntl.ioctl), through the same suite;
* the Rust crate ``benchmarks/rust`` (``cargo build --release``), which calls
  the same C simulator through FFI and the same device through ioctl.

Writes ``DIR/report.md`` (ns per unit, ratios hcltdx/Rust and
plain-Python/hcltdx, the targets), ``DIR/ratios.png``, ``DIR/results.json``
(every round) and the raw output of each pass (``pytest-sim-P.json``,
``pytest-device-P.json``, ``rust-P.json``). The simulator rows are timed in
thread CPU time by default (``--clock wall`` for wall time), the device rows
in wall time.

The benchmarks are not part of the installed package: they are read from a
source checkout, ``--source DIR`` or else ``$HCLTDX_SOURCE``, the current
directory or one of its parents, or the directory the imported ``hcltdx``
package sits in.

A "run" is one timed round: about 50 ms of back-to-back calls (the number of
iterations calibrated for each implementation), or one page sweep. Each
operation gets ``--runs`` rounds (default 15; 9 for page sweeps), split over
``--passes`` passes (default 3) of all three implementations in alternating
order, and the table shows the median over all rounds. The spread of a side
is (Q3 - Q1) / median over its rounds; a ratio is printed only when both
sides' spreads are at most ``--max-spread`` (default 0.25: on a shared
2-vCPU VM, neighbours give spreads of 10-25% routinely) and each side has at
least three rounds.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from typing import Any, Dict, List, Optional, Tuple

from hcltdx._cliutil import OneLineParser

IMPLS = ("hcltdx", "rust", "plain")
# Display order of the operations (the names every implementation uses).
OPS = [
    "read_vmcs64", "write_vmcs64", "read_vmcs_batch[1]", "read_vmcs_batch[8]",
    "read_vmcs_batch[64]", "poll_vmcs[8]", "private_regs", "snapshot", "vmcs_field_code",
    "tdx_accept_pages[1GiB@2MiB]", "tdx_accept_pages[64MiB@4KiB]",
    "tdx_set_page_attributes[1GiB@2MiB]", "tdx_set_page_attributes[64MiB@4KiB]",
    "read_vmcs64[int args]", "noop_cython",
]
BACKENDS = ("sim", "device")
MIN_ROUNDS = 3


class BenchError(Exception):
    pass


# ---- finding the checkout ----------------------------------------------------------

def _is_source(d: str) -> bool:
    return all(os.path.exists(os.path.join(d, p)) for p in
               ("benchmarks/test_bench.py", "benchmarks/rust/Cargo.toml", "csrc/sim", "include/hcltdx"))


def find_source(explicit: Optional[str]) -> str:
    if explicit:
        d = os.path.abspath(explicit)
        if not _is_source(d):
            raise BenchError(f"--source {explicit}: not an hcltdx checkout (needs benchmarks/test_bench.py, "
                             "benchmarks/rust/Cargo.toml, csrc/sim and include/hcltdx)")
        return d
    candidates = []
    if os.environ.get("HCLTDX_SOURCE"):
        candidates.append(os.environ["HCLTDX_SOURCE"])
    d = os.getcwd()
    while True:
        candidates.append(d)
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    import hcltdx

    candidates.append(os.path.dirname(os.path.dirname(os.path.abspath(hcltdx.__file__))))
    for c in candidates:
        if _is_source(c):
            return os.path.abspath(c)
    raise BenchError("hcltdx bench needs a source checkout of hcltdx (its benchmarks/ and csrc/ are not "
                     "installed with the package); run it from the checkout or pass --source DIR")


# ---- statistics ---------------------------------------------------------------------

def summarize(values: List[float]) -> Dict[str, Any]:
    med = statistics.median(values)
    if len(values) >= 2:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        q1 = q3 = values[0]
    spread = (q3 - q1) / med if med > 0 else float("inf")
    return {"median_ns": med, "spread": spread, "rounds": len(values), "q1_ns": q1, "q3_ns": q3}


def ratio(num: Optional[dict], den: Optional[dict], max_spread: float) -> Tuple[Optional[float], str]:
    """(value, why-not): value None when the rule refuses it."""
    if num is None or den is None:
        return None, "not measured"
    for side in (num, den):
        if side["rounds"] < MIN_ROUNDS:
            return None, f"{side['rounds']} round(s)"
        if side["spread"] > max_spread:
            return None, f"spread {side['spread']:.0%}"
    return num["median_ns"] / den["median_ns"], ""


# ---- collecting -----------------------------------------------------------------------

def load_pytest(path: str) -> Dict[Tuple[str, str, str], dict]:
    out = {}
    with open(path) as f:
        doc = json.load(f)
    for b in doc["benchmarks"]:
        info = b["extra_info"]
        per_unit = [t * 1e9 / info["units"] for t in b["stats"]["data"]]
        out[(info["op"], info["backend"], info["impl"])] = dict(summarize(per_unit), unit=info["unit"],
                                                                values=per_unit)
    return out


def load_rust(path: str) -> Dict[Tuple[str, str, str], dict]:
    out = {}
    with open(path) as f:
        doc = json.load(f)
    for r in doc["results"]:
        out[(r["op"], r["backend"], "rust")] = dict(summarize(r["rounds_ns"]), unit=r["unit"],
                                                    values=r["rounds_ns"])
    return out


# ---- the report --------------------------------------------------------------------

def _fmt_ns(s: Optional[dict]) -> str:
    if s is None:
        return "—"
    v = s["median_ns"]
    text = f"{v:,.0f}" if v >= 100 else f"{v:.1f}"
    return f"{text} ±{s['spread'] * 100:.0f}%"


def _fmt_ratio(value: Optional[float], why: str) -> str:
    return f"{value:.2f}" if value is not None else f"— ({why})"


def table_rows(data: dict, max_spread: float) -> List[dict]:
    rows = []
    for backend in BACKENDS:
        for op in OPS:
            sides = {impl: data.get((op, backend, impl)) for impl in IMPLS}
            if not any(sides.values()):
                continue
            unit = next(s["unit"] for s in sides.values() if s)
            hr = ratio(sides["hcltdx"], sides["rust"], max_spread)
            ph = ratio(sides["plain"], sides["hcltdx"], max_spread)
            rows.append(dict(op=op, backend=backend, unit=unit, sides=sides,
                             hcltdx_over_rust=hr, plain_over_hcltdx=ph))
    return rows


def quartile_bounds(num: Optional[dict], den: Optional[dict]) -> Optional[Tuple[float, float]]:
    """The ratio's range when each side may be anywhere between its quartiles:
    (num Q1 / den Q3, num Q3 / den Q1); None with fewer than MIN_ROUNDS rounds."""
    if num is None or den is None or min(num["rounds"], den["rounds"]) < MIN_ROUNDS:
        return None
    if den["q1_ns"] <= 0 or den["q3_ns"] <= 0:
        return None
    return num["q1_ns"] / den["q3_ns"], num["q3_ns"] / den["q1_ns"]


def targets(data: dict, max_spread: float) -> List[Tuple[str, Tuple[Optional[float], str], str, float,
                                                          Optional[Tuple[float, float]]]]:
    """(description, (ratio, why-not), comparison, bound, quartile bounds)."""
    g = lambda op, be, impl: data.get((op, be, impl))  # noqa: E731
    pairs = []
    for n in (1, 8, 64):
        op = f"read_vmcs_batch[{n}]"
        pairs.append((f"sim: {op} per field, hcltdx/Rust", g(op, "sim", "hcltdx"), g(op, "sim", "rust"),
                      "<=", 1.2))
    pairs.append(("sim: read_vmcs64 / no-op Cython method call", g("read_vmcs64", "sim", "hcltdx"),
                  g("noop_cython", "sim", "hcltdx"), "<=", 1.5))
    for op in ("read_vmcs64", "write_vmcs64"):
        pairs.append((f"device: {op}, hcltdx/Rust", g(op, "device", "hcltdx"), g(op, "device", "rust"),
                      "<=", 1.05))
    for op in ("read_vmcs64", "write_vmcs64"):
        pairs.append((f"sim: {op}, plain/hcltdx", g(op, "sim", "plain"), g(op, "sim", "hcltdx"), ">=", 5.0))
    for op in ("read_vmcs_batch[8]", "read_vmcs_batch[64]"):
        pairs.append((f"sim: {op} per field, plain/hcltdx", g(op, "sim", "plain"), g(op, "sim", "hcltdx"),
                      ">=", 20.0))
    return [(desc, ratio(num, den, max_spread), cmp, bound, quartile_bounds(num, den))
            for desc, num, den, cmp, bound in pairs]


def _verdict(r: Tuple[Optional[float], str], cmp: str, bound: float,
             bounds: Optional[Tuple[float, float]] = None) -> str:
    """A ratio refused for its spread is still judged when the whole range
    between the sides' quartiles is on one side of the bound."""
    value, why = r
    if value is None:
        if bounds is not None and why.startswith("spread"):
            lo, hi = bounds
            good = hi <= bound if cmp == "<=" else lo >= bound
            bad = lo > bound if cmp == "<=" else hi < bound
            if good:
                return f"met at every quartile pairing ({lo:.2f}–{hi:.2f})"
            if bad:
                off = lo / bound if cmp == "<=" else bound / hi
                return f"missed at every quartile pairing ({lo:.2f}–{hi:.2f}), by at least {(off - 1) * 100:.0f}%"
        return f"not judged ({why})"
    ok = value <= bound if cmp == "<=" else value >= bound
    if ok:
        return "met"
    off = value / bound if cmp == "<=" else bound / value
    return f"missed by {(off - 1) * 100:.0f}%"


def machine_info(source: str, client_cpu: int, daemon_cpu: Optional[int]) -> Dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    commit = ""
    try:
        commit = subprocess.run(["git", "-C", source, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    rustc = ""
    if shutil.which("rustc"):
        rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True,
                               env=native_env()).stdout.strip()
    return dict(host=platform.node(), cpu=model, cpus=os.cpu_count(), kernel=platform.release(),
                python=platform.python_version(), rustc=rustc, commit=commit,
                client_cpu=client_cpu, daemon_cpu=daemon_cpu,
                date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                loadavg=os.getloadavg())


def write_chart(rows: List[dict], path: str) -> List[str]:
    """A PNG bar chart of the printed ratios; returns the labels left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, hr, ph, left_out = [], [], [], []
    for r in rows:
        a, b = r["hcltdx_over_rust"][0], r["plain_over_hcltdx"][0]
        label = f"{r['backend']}: {r['op']}"
        if a is None and b is None:
            left_out.append(label)
            continue
        labels.append(label)
        hr.append(a)
        ph.append(b)
    height = max(3.0, 0.42 * len(labels) + 1.5)
    fig, ax = plt.subplots(figsize=(9, height))
    ys = range(len(labels))
    w = 0.4
    # Bars grow from 1 (parity) towards the ratio, so < 1 and > 1 read alike.
    for offset, values, label, color in ((-w / 2, hr, "hcltdx / Rust (lower is better)", "#4c72b0"),
                                         (w / 2, ph, "plain Python / hcltdx (higher is better)", "#dd8452")):
        pts = [(y + offset, v) for y, v in zip(ys, values) if v is not None]
        ax.barh([p[0] for p in pts], [p[1] - 1.0 for p in pts], left=1.0, height=w, label=label, color=color)
        for y, v in pts:
            ax.text(v, y, f" {v:.2f}" if v >= 1 else f"{v:.2f} ", va="center",
                    ha="left" if v >= 1 else "right", fontsize=6)
    ax.set_yticks(list(ys))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("ratio of median ns per unit (log scale)")
    ax.set_title("hcltdx next to Rust and plain Python (one run on this machine)", fontsize=10)
    if not labels:
        ax.text(0.5, 0.5, "no ratio passed the spread rule", transform=ax.transAxes, ha="center")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return left_out


def write_report(data: dict, out: str, info: Dict[str, Any], args: argparse.Namespace,
                 notes: List[str]) -> str:
    rows = table_rows(data, args.max_spread)
    sim_clock = "the client thread's CPU time" if args.clock == "cpu" else "wall time"
    png = os.path.join(out, "ratios.png")
    left_out = write_chart(rows, png)
    lines = [
        "# hcltdx benchmarks: hcltdx, Rust, plain Python",
        "",
        f"One run on `{info['host']}`, {info['date']} (commit `{info['commit'] or 'unknown'}`).",
        f"Machine: {info['cpu'] or 'unknown CPU'}, {info['cpus']} CPUs, Linux {info['kernel']}, "
        f"Python {info['python']}, {info['rustc'] or 'no rustc'}.",
        f"Pinning: every client (hcltdx, plain Python, Rust) runs pinned to CPU {info['client_cpu']}; "
        f"the stand-in device's daemon threads run pinned to CPU {info['daemon_cpu']}, in a process of "
        "their own (benchmarks/devserver.py) shared by the three clients.",
        f"Runs: {info['passes']} pass(es) over all three implementations, alternating their order "
        f"({info['rounds_per_pass'][0]} rounds per operation per pass, "
        f"{info['rounds_per_pass'][1]} for page sweeps). "
        f"In all: {info['passes'] * info['rounds_per_pass'][0]} timed rounds per operation, each "
        f"about {'1' if args.quick else '50'} ms of back-to-back calls (iterations calibrated per "
        f"implementation); page sweeps: {info['passes'] * info['rounds_per_pass'][1]} rounds of one "
        "sweep each, the state reset (untimed) before each accept sweep. The table shows the median "
        "ns per unit over the rounds and, after ±, the spread (Q3 − Q1) / median.",
        f"Spread rule: a ratio is printed only when both sides have at least {MIN_ROUNDS} rounds and "
        f"a spread of at most {args.max_spread:.0%}.",
        f"Load average at start: {info['loadavg'][0]:.2f}, {info['loadavg'][1]:.2f}, "
        f"{info['loadavg'][2]:.2f}; at end: {', '.join(f'{v:.2f}' for v in os.getloadavg())} "
        "(other work on the machine disturbs the numbers).",
        *(["", "**Quick mode**: a few iterations and page sweeps over the first 4 MiB only; "
            "the numbers check that everything runs, they are not measurements."] if args.quick else []),
        "",
        f"Clock: simulator rows in {sim_clock}"
        " (a call into the in-process simulator is pure CPU work; CPU time leaves out the time other "
        "processes of this shared machine hold the CPU); stand-in device rows in wall time (the work "
        "happens in the daemon).",
        "",
        "Units: `call` one call; `field` one field of a batch; `sample` one poll row "
        "(timestamp + 8 fields); `read+write` one read_private_regs plus one write_private_regs; "
        "`snapshot` one record (context, both APIC pages, private registers, 8 fields × 2 VTLs); "
        "`sweep` one whole tdx_accept_pages / tdx_set_page_attributes over the range.",
        "",
        "| operation | backend | unit | hcltdx ns | Rust ns | plain Python ns | hcltdx/Rust | plain/hcltdx |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        s = r["sides"]
        lines.append(f"| {r['op']} | {r['backend']} | {r['unit']} | {_fmt_ns(s['hcltdx'])} | "
                     f"{_fmt_ns(s['rust'])} | {_fmt_ns(s['plain'])} | {_fmt_ratio(*r['hcltdx_over_rust'])} | "
                     f"{_fmt_ratio(*r['plain_over_hcltdx'])} |")
    lines += ["", "## Targets", "", "| target | ratio | bound | verdict |", "|---|---:|---:|---|"]
    for desc, rt, cmp, bound, qb in targets(data, args.max_spread):
        lines.append(f"| {desc} | {_fmt_ratio(*rt)} | {cmp} {bound} | {_verdict(rt, cmp, bound, qb)} |")
    lines += ["", "A ratio refused by the spread rule is still judged against its target when the "
              "ratio stays on one side of the bound for every pairing of the two sides' quartiles "
              "(Q1/Q3 to Q3/Q1)."]
    lines += ["", f"Chart of the printed ratios: `{os.path.basename(png)}`."]
    if left_out:
        lines.append("Left out of the chart (no ratio printed): " + ", ".join(left_out) + ".")
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    path = os.path.join(out, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


# ---- running -------------------------------------------------------------------------

def _pinned(cpu: int):
    return lambda: os.sched_setaffinity(0, {cpu})


def _log(msg: str) -> None:
    print(f"hcltdx bench: {msg}", file=sys.stderr, flush=True)


def native_env() -> Dict[str, str]:
    """The environment for the toolchain and the Rust binary: without an
    LD_PRELOAD meant for this Python process (scripts/sanitize preloads libasan,
    under which rustc itself crashes); neither is code hcltdx's sanitizer run
    examines."""
    return {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}


def build(source: str, quiet: bool) -> Tuple[Optional[str], List[str]]:
    """Builds the simulator library and the Rust binary; (rust binary or None, notes)."""
    notes = []
    out = subprocess.DEVNULL if quiet else None
    subprocess.run(["make", "-C", os.path.join(source, "csrc"), "build/libhcltdx_sim.so"], check=True,
                   stdout=out, env=native_env())
    cargo = shutil.which("cargo")
    if cargo is None:
        notes.append("cargo not found: the Rust column is empty.")
        return None, notes
    crate = os.path.join(source, "benchmarks", "rust")
    subprocess.run([cargo, "build", "--release", "-j", "1", "--manifest-path",
                    os.path.join(crate, "Cargo.toml")], check=True, stdout=out,
                   stderr=subprocess.DEVNULL if quiet else None, env=native_env())
    return os.path.join(crate, "target", "release", "hcltdx-bench-rust"), notes


def start_devserver(source: str, env: dict, daemon_cpu: Optional[int]):
    cmd = [sys.executable, os.path.join(source, "benchmarks", "devserver.py")]
    if daemon_cpu is not None:
        cmd += ["--cpu", str(daemon_cpu)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stdin is not None
    line = proc.stdout.readline()
    msg = json.loads(line) if line else {"ok": False, "error": "the device server did not start"}
    if not msg["ok"]:
        proc.stdin.close()
        proc.wait()
        return None, msg["error"]
    return proc, msg["spec"]


def main(argv: Optional[List[str]] = None) -> int:
    ap = OneLineParser(prog="hcltdx bench", description=__doc__.splitlines()[0],
                       epilog="See the module docstring (python -m pydoc hcltdx.bench).")
    ap.add_argument("--out", default="bench-report", help="directory for report.md, ratios.png, JSON")
    ap.add_argument("--quick", action="store_true", help="a few iterations (smoke; ratios not judged)")
    ap.add_argument("--runs", type=int, default=None, help="timed rounds per operation (default 15, sweeps 9)")
    ap.add_argument("--passes", type=int, default=3,
                    help="split the rounds over this many passes of all implementations, alternating "
                         "their order (default 3)")
    ap.add_argument("--device", action=argparse.BooleanOptionalAction, default=True,
                    help="also measure over the FUSE stand-in device (needs root and /dev/fuse)")
    ap.add_argument("--source", default=None, help="the hcltdx checkout holding benchmarks/")
    ap.add_argument("--max-spread", type=float, default=0.25, help="largest spread a ratio may rest on")
    ap.add_argument("--cpu", type=int, default=None, help="CPU the clients are pinned to")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                    help="clock of the simulator rows: the thread's CPU time (default; leaves out the "
                         "time other processes hold the CPU) or wall time; device rows are always wall time")
    ap.add_argument("--no-build", action="store_true", help="use the built library and binary as they are")
    args = ap.parse_args(argv)
    if args.runs is not None and args.runs < 1:
        ap.error("--runs must be at least 1")
    if args.passes < 1:
        ap.error("--passes must be at least 1")
    try:
        return _run(args)
    except BenchError as exc:
        print(f"hcltdx bench: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    source = find_source(args.source)
    try:
        import pytest_benchmark  # noqa: F401
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise BenchError(f"{exc.name} is missing: pip install 'hcltdx[bench]'") from None
    cpus = sorted(os.sched_getaffinity(0))
    client = args.cpu if args.cpu is not None else cpus[0]
    if client not in cpus:
        raise BenchError(f"--cpu {client}: not one of the CPUs this process may use {cpus}")
    # The daemon shares the client's CPU: a FUSE round trip across CPUs costs
    # a cross-CPU wake-up (about 10x the same-CPU cost here, docs/simdev.md).
    daemon_cpu = client
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    info = machine_info(source, client, daemon_cpu)

    import hcltdx

    env = dict(os.environ)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(hcltdx.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [pkg_parent, env.get("PYTHONPATH")]))
    env["HCLTDX_BENCH_SIMLIB"] = os.path.join(source, "csrc", "build", "libhcltdx_sim.so")
    if args.quick:
        env["HCLTDX_BENCH_QUICK"] = "1"
    env["HCLTDX_BENCH_SIM_CLOCK"] = args.clock
    passes = 1 if args.quick else args.passes
    total = (2, 1) if args.quick else (args.runs or 15, args.runs or 9)
    per_pass = tuple(max(1, -(-n // passes)) for n in total)   # rounds, sweep rounds per pass
    notes: List[str] = []
    rust_bin: Optional[str]
    if args.no_build:
        built = os.path.join(source, "benchmarks", "rust", "target", "release", "hcltdx-bench-rust")
        rust_bin = built if os.path.exists(built) else None
    else:
        _log("building the simulator library and the Rust binary")
        rust_bin, notes = build(source, quiet=True)
    if rust_bin is None and not any("cargo" in n for n in notes):
        notes.append("no Rust binary (--no-build and none built): the Rust column is empty.")

    server, spec = None, "none"
    if args.device:
        server, spec = start_devserver(source, env, daemon_cpu)
        if server is None:
            notes.append(f"stand-in device not measured: {spec}")
            spec = "none"
    else:
        notes.append("stand-in device not measured (--no-device)")
    env["HCLTDX_BENCH_DEVICES"] = spec
    if not args.quick:
        env["HCLTDX_BENCH_ROUNDS"], env["HCLTDX_BENCH_SWEEP_ROUNDS"] = (str(n) for n in per_pass)
    raw: Dict[Tuple[str, str, str], dict] = {}

    def merge(part: Dict[Tuple[str, str, str], dict]) -> None:
        for key, v in part.items():
            if key in raw:
                raw[key]["values"].extend(v["values"])
            else:
                raw[key] = {"unit": v["unit"], "values": list(v["values"])}

    def python_side(p: int) -> None:
        # Two sessions: the simulator rows on the chosen clock, the device rows on wall time.
        sessions = [("sim", "not device", "time.thread_time" if args.clock == "cpu" else "time.perf_counter")]
        if spec != "none":
            sessions.append(("device", "device", "time.perf_counter"))
        for name, marker, timer in sessions:
            _log(f"pass {p + 1}/{passes}: hcltdx and plain Python over the {name} (pytest-benchmark)")
            pj = os.path.join(out, f"pytest-{name}-{p + 1}.json")
            cmd = [sys.executable, "-m", "pytest", os.path.join(source, "benchmarks", "test_bench.py"),
                   "-p", "no:cacheprovider", "-q", "-o", "addopts=", "-m", marker, "--benchmark-json", pj,
                   "--benchmark-timer", timer, "--benchmark-disable-gc",
                   "--rootdir", os.path.join(source, "benchmarks")]
            rc = subprocess.run(cmd, env=env, preexec_fn=_pinned(client), cwd=out,
                                stdout=subprocess.DEVNULL).returncode
            if rc != 0:
                raise BenchError(f"the pytest-benchmark suite failed (exit status {rc}): {' '.join(cmd)}")
            merge(load_pytest(pj))

    def rust_side(p: int) -> None:
        if rust_bin is None:
            return
        _log(f"pass {p + 1}/{passes}: Rust")
        rj = os.path.join(out, f"rust-{p + 1}.json")
        cmd = [rust_bin, "--out", rj, "--backend", "both" if spec != "none" else "sim",
               "--sim-clock", args.clock]
        if spec != "none":
            cmd += ["--devices", spec]
        if args.quick:
            cmd.append("--quick")
        else:
            cmd += ["--rounds", str(per_pass[0]), "--sweep-rounds", str(per_pass[1])]
        rc = subprocess.run(cmd, preexec_fn=_pinned(client), env=native_env()).returncode
        if rc != 0:
            raise BenchError(f"the Rust binary failed (exit status {rc}): {' '.join(cmd)}")
        merge(load_rust(rj))

    try:
        # Passes alternate the order, so a change of load on the machine falls
        # on every implementation rather than on whichever ran last.
        for p in range(passes):
            for side in ((python_side, rust_side) if p % 2 == 0 else (rust_side, python_side)):
                side(p)
    finally:
        if server is not None:
            assert server.stdin is not None
            server.stdin.close()
            server.wait(60)
    data = {k: dict(summarize(v["values"]), unit=v["unit"], values=v["values"]) for k, v in raw.items()}
    info["passes"] = passes
    info["rounds_per_pass"] = per_pass
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"machine": info, "max_spread": args.max_spread,
                   "results": [dict(op=k[0], backend=k[1], impl=k[2], **v) for k, v in sorted(data.items())]},
                  f, indent=1)
    report = write_report(data, out, info, args, notes)
    _log(f"wrote {report} and {os.path.join(out, 'ratios.png')}")
    if not args.quick:
        with open(report) as f:
            print(f.read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
