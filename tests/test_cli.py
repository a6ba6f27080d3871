"""The ``hcltdx`` command, run as a subprocess: every subcommand's happy path on
the simulator, and bad input -> one line on stderr, exit status 2 (usage) or
1 (runtime), never a traceback."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import hcltdx
from hcltdx import record, snapshot
from hcltdx._cabi import vmcs_catalogue
from hcltdx.trace import Trace

SIM = ["--device", "sim"]
# The subprocess imports the same hcltdx as this test (in place or installed).
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(
    [os.path.dirname(os.path.dirname(os.path.abspath(hcltdx.__file__)))]
    + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))


def run(*args, cwd=None, prefix=(), timeout=120):
    p = subprocess.run([*prefix, sys.executable, "-m", "hcltdx", *map(str, args)],
                       capture_output=True, text=True, cwd=cwd, timeout=timeout, env=ENV)
    assert "Traceback" not in p.stderr, p.stderr
    return p


def ok(*args, **kw):
    p = run(*args, **kw)
    assert p.returncode == 0, (args, p.stderr)
    return p


def ok_json(*args, **kw):
    args = list(args)
    at = args.index("--") if "--" in args else len(args)
    return json.loads(ok(*args[:at], "--json", *args[at:], **kw).stdout)


def fails(code, *args, **kw):
    p = run(*args, **kw)
    assert p.returncode == code, (args, p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    return lines[0]


# ---- happy paths ------------------------------------------------------------------

def test_info_on_the_simulator():
    info = ok_json("info", *SIM, "--vp-count", 3, "--memory", "256MiB")
    assert info["simulator"] is True and info["vp_count"] == 3
    assert info["memory_size"] == 256 << 20
    # host_map="2M": all memory pending, 4 KiB pages counted.
    assert info["pages"] == {"not_added": 0, "pending": (256 << 20) // 4096, "accepted": 0}
    assert info["layout"].startswith("seed")
    assert ok_json("info", *SIM, "--tsc-deadline-layout")["layout"].startswith("tsc-deadline")
    assert "VPs" in ok("info", *SIM).stdout


@pytest.mark.skipif(os.path.exists("/dev/mshv_vtl"), reason="a real device is present")
def test_auto_says_it_uses_the_simulator():
    p = ok("info")
    assert "simulator" in p.stderr and "/dev/mshv_vtl" in p.stderr
    assert "simulator" in p.stdout


def test_vmcs_list_is_the_catalogue():
    rows = ok_json("vmcs", "list")
    cat = vmcs_catalogue()
    assert [(r["name"], r["encoding"], r["read_mask"], r["write_mask"]) for r in rows] == \
        [tuple(c) for c in cat]
    cr3 = next(r for r in rows if r["short"] == "GUEST_CR3")
    assert cr3["encoding"] == 0x6802 and cr3["width"] == 64
    assert {r["name"] for r in ok_json("vmcs", "list", "cr3")} >= {"VMX_VMCS_GUEST_CR3"}


def test_vmcs_read_and_write():
    # Guest off: the reset values of docs/simulator.md.
    vals = ok_json("vmcs", "read", "guest_cr3", "VMX_VMCS_GUEST_RFLAGS", "0x2800", *SIM,
                   "--no-guest")["values"]
    assert vals == {"VMX_VMCS_GUEST_CR3": 0, "VMX_VMCS_GUEST_RFLAGS": 0x2,
                    "VMX_VMCS_LINK_POINTER": (1 << 64) - 1}
    # Guest on: RIP walks the code region of docs/guest.md.
    rip = ok_json("vmcs", "read", "GUEST_RIP", *SIM)["values"]["VMX_VMCS_GUEST_RIP"]
    assert 0xFFFFFFFF81000000 <= rip < 0xFFFFFFFF81100000
    w = ok_json("vmcs", "write", "Guest_Cr0", "0x80000031", "--mask", "0xFFFFFFFF", *SIM)
    assert (w["old"], w["new"], w["mask"]) == (0, 0x80000031, 0xFFFFFFFF)
    w = ok_json("vmcs", "write", "ENTRY_CONTROLS", "0x200", "--vtl", 1, "--vp", 1, *SIM)
    assert w["new"] == 0x200


def test_record_npz_and_report_match_the_data(tmp_path):
    f = tmp_path / "run.npz"
    res = ok_json("record", "--samples", 600, "--rate", 20000, "-o", f, *SIM, "--seed", 5)
    assert res["rows"] == 600 and res["file"] == str(f)
    rec = record.load(f)
    s = rec.samples
    assert len(s) == 600 and rec.metadata["device"] == "sim" and rec.metadata["vp"] == 0
    assert rec.fields == ["VMX_VMCS_GUEST_RIP", "VMX_VMCS_GUEST_RSP", "VMX_VMCS_GUEST_CR3",
                          "VMX_VMCS_PREEMPTION_TIMER_VALUE", "VMX_VMCS_EXIT_REASON",
                          "VMX_VMCS_EXIT_QUALIFICATION", "VMX_VMCS_GUEST_PHYSICAL_ADDRESS"]
    assert np.all(np.diff(s["t_ns"].astype(np.int64)) > 0)
    assert len(np.unique(s["VMX_VMCS_GUEST_RIP"])) > 100  # the guest moves

    out = tmp_path / "rep"
    summ = ok_json("report", f, "-o", out)
    # Recompute the summary from the file, without hcltdx.report.
    t = s["t_ns"].astype(np.int64)
    dur = (t[-1] - t[0]) / 1e9
    assert summ["samples"] == 600
    assert summ["duration_s"] == pytest.approx(dur)
    for name in rec.fields:
        col = s[name]
        changes = int(np.sum(col[1:] != col[:-1]))
        got = summ["fields"][name]
        assert got["changes"] == changes
        assert got["changes_per_s"] == pytest.approx(changes / dur)
        assert (got["min"], got["max"], got["first"], got["last"]) == \
            (int(col.min()), int(col.max()), int(col[0]), int(col[-1]))
        assert got["distinct"] == len(set(col.tolist()))
    exit_cols = ["VMX_VMCS_EXIT_REASON", "VMX_VMCS_EXIT_QUALIFICATION",
                 "VMX_VMCS_GUEST_PHYSICAL_ADDRESS"]
    new = [0] + [i for i in range(1, 600) if any(s[c][i] != s[c][i - 1] for c in exit_cols)]
    names = {1: "HW_INTERRUPT", 10: "CPUID", 12: "HLT_INSTRUCTION", 28: "CR_ACCESS",
             30: "IO_INSTRUCTION", 31: "MSR_READ", 32: "MSR_WRITE", 48: "EPT_VIOLATION"}
    hist = {}
    for i in new:
        k = names[int(s["VMX_VMCS_EXIT_REASON"][i])]
        hist[k] = hist.get(k, 0) + 1
    assert summ["exits"] == {"seen": len(new), "by_reason": summ["exits"]["by_reason"]}
    assert summ["exits"]["by_reason"] == hist
    assert (out / "summary.txt").read_text().count("\n") > 10
    assert f"samples    600 over" in (out / "summary.txt").read_text()

    import matplotlib.image

    for png in ("fields.png", "exit_reasons.png", "change_rates.png"):
        p = out / png
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        img = matplotlib.image.imread(p)
        assert img.shape[0] > 300 and img.shape[1] > 600
        assert img[..., :3].std() > 0.05  # not a blank canvas
    assert set(summ["files"]) == {str(out / n) for n in
                                  ("summary.txt", "fields.png", "exit_reasons.png", "change_rates.png")}


def test_record_text_output_and_fields(tmp_path):
    p = ok("record", "gUeSt_cr3", "EXIT_REASON", "--duration", "0.05", "--rate", 2000,
           "--changes-only", *SIM, cwd=tmp_path)
    assert "recorded" in p.stdout and str(tmp_path / "recording.npz") in p.stdout
    rec = record.load(tmp_path / "recording.npz")
    assert rec.fields == ["VMX_VMCS_GUEST_CR3", "VMX_VMCS_EXIT_REASON"]
    s = rec.samples
    # changes_only: consecutive kept rows always differ somewhere.
    assert all((s[i]["VMX_VMCS_GUEST_CR3"], s[i]["VMX_VMCS_EXIT_REASON"]) !=
               (s[i - 1]["VMX_VMCS_GUEST_CR3"], s[i - 1]["VMX_VMCS_EXIT_REASON"])
               for i in range(1, len(s)))
    assert "recording" in p.stderr  # the progress bar


def test_record_parquet(tmp_path):
    pa_parquet = pytest.importorskip("pyarrow.parquet")
    f = tmp_path / "run.parquet"
    ok("record", "GUEST_RIP", "EXIT_REASON", "--samples", 300, "--rate", 10000, "--format",
       "parquet", "-o", f, "--vp", 1, *SIM)
    table = pa_parquet.read_table(f)
    assert table.num_rows == 300
    assert table.column_names == ["t_ns", "VMX_VMCS_GUEST_RIP", "VMX_VMCS_EXIT_REASON",
                                  "host", "vp", "vtl"]
    assert set(table.column("vp").to_pylist()) == {1}
    assert str(table.schema.field("VMX_VMCS_GUEST_RIP").type) == "uint64"
    rec = record.load(f)
    assert np.array_equal(rec.samples["VMX_VMCS_GUEST_RIP"],
                          table.column("VMX_VMCS_GUEST_RIP").to_numpy())
    assert ok_json("report", f, "-o", tmp_path / "r")["samples"] == 300


def test_snapshot_series(tmp_path):
    f = tmp_path / "s.npz"
    res = ok_json("snapshot", "-n", 3, "--interval", "0.01", "-o", f, *SIM)
    assert res["count"] == 3
    recs, meta = snapshot.load(f)
    assert len(recs) == 3 and meta["vp"] == 0 and meta["device"] == "sim"
    rips = recs["vmcs_vtl0"]["VMX_VMCS_GUEST_RIP"]
    assert len(set(rips.tolist())) == 3  # the guest moved between snapshots
    p = ok("snapshot", "--vmcs", "GUEST_CR3", "-o", tmp_path / "one.npz", *SIM)
    assert "snapshot" in p.stdout
    # A series can be reported like a recording: one row per snapshot.
    summ = ok_json("report", f, "-o", tmp_path / "rep")
    assert summ["samples"] == 3
    assert summ["fields"]["VMX_VMCS_GUEST_RIP"]["distinct"] == 3
    assert summ["fields"]["VMX_VMCS_GUEST_RIP"]["min"] == int(rips.min())
    one, _ = snapshot.load(tmp_path / "one.npz")
    assert one["vmcs_vtl0"].dtype.names == ("VMX_VMCS_GUEST_CR3",)


def test_accept_and_attrs():
    # Spec 7.12: 1 GiB, 2 MiB aligned, host mapping 2 MiB -> 512 ACCEPT calls.
    res = ok_json("accept", "1GiB@0", *SIM)
    assert res["calls"] == {"MEM_PAGE_ACCEPT": 512} and res["bytes"] == 1 << 30
    res = ok_json("accept", "0x200000-0x600000", "--vtl0", "rwx", *SIM)
    assert res["calls"] == {"MEM_PAGE_ACCEPT": 2, "MEM_PAGE_ATTR_WR": 2}
    a = ok_json("attrs", "2MiB@0x200000", "--vtl0", "rw", "--vtl1", "r", *SIM)
    assert (a["vtl0"], a["vtl1"], a["pending"]) == ("rw--", "r---", True)
    # GPA_ATTR layout (spec 4.2): VM1 at bits 16-31, VM2 at 32-47, VALID = bit 15.
    assert a["gpa_attr"] == (0x8003 << 16) | (0x8001 << 32)
    assert ok_json("attrs", "4096@0", *SIM)["vtl0"] == "not valid"


def test_trace_records_the_command(tmp_path):
    f = tmp_path / "t.npz"
    res = ok_json("trace", "-o", f, *SIM, "--", "vmcs", "read", "GUEST_CR3")
    assert res["exit_status"] == 0
    assert set(res["output"]["values"]) == {"VMX_VMCS_GUEST_CR3"}
    t = Trace.load(f)
    assert len(t.calls) == res["calls"] >= 1
    # Spec 8.1: VP.RD of GUEST_CR3 for VTL0 carries field code 0x2420000300006802.
    rd = t.calls[(t.calls["in_rax"] == 9) & (t.calls["in_rdx"] == 0x2420000300006802)]
    assert len(rd) == 1


def test_demo_writes_the_report(tmp_path):
    p = ok("demo", "--seconds", "0.3", "-o", tmp_path / "d", timeout=300)
    for name in ("recording.npz", "report/summary.txt", "report/fields.png",
                 "report/exit_reasons.png", "report/change_rates.png"):
        assert (tmp_path / "d" / name).is_file(), name
        assert str(tmp_path / "d" / name) in p.stdout
    assert "accepted 1024 MiB" in p.stdout  # the tour ran


def test_help_and_dispatch():
    assert "record" in ok("--help").stdout
    assert "mount" in ok("simdev", "-h").stdout


def test_bench_dispatch():
    # `hcltdx bench` hands its arguments to hcltdx.bench.main: its own options
    # appear in the help, and its own argument errors exit 2 with one line.
    assert "--max-spread" in ok("bench", "--help").stdout
    assert "--runs" in fails(2, "bench", "--runs", "many")


# ---- bad input ----------------------------------------------------------------------

@pytest.mark.parametrize("args, needle", [
    (["vmcs", "read", "GUEST_CR9", *SIM], "GUEST_CR3"),
    (["vmcs", "read", "0x1234", *SIM], "0x1234"),
    (["vmcs", "write", "GUEST_CR0", "zz", *SIM], "zz"),
    (["vmcs", "write", "EXIT_REASON_X", "1", *SIM], "EXIT_REASON"),
    (["vmcs", "write", "GUEST_ES_SELECTOR", "0x10000", *SIM], "16 bits"),
    (["record", "GUEST_RIPP", *SIM], "GUEST_RIP"),
    (["record", "--rate", "0", *SIM], "positive"),
    (["record", "--vp", "7", *SIM], "out of range"),
    (["record", "GUEST_RIP", "guest_rip", *SIM], "twice"),
    (["accept", "0x100000-0x4000", *SIM], "not above"),
    (["accept", "12@0", *SIM], "aligned"),
    (["accept", "lots", *SIM], "malformed range"),
    (["accept", "1XB@0", *SIM], "malformed"),
    (["attrs", "4096@0", "--vtl0", "rwq", *SIM], "permissions"),
    (["info", "--vp-count", "-1", *SIM], "negative"),
    (["nosuchcommand"], "invalid choice"),
    ([], "required"),
    (["demo", "--seconds", "abc"], "abc"),
    (["demo", "--vp-count", "x"], "x"),
    (["trace", *SIM], "needs a command"),
    (["trace", *SIM, "--", "report", "x.npz"], "report"),
    (["trace", *SIM, "--", "info", "--device", "sim"], "--device"),
])
def test_usage_errors_exit_2(args, needle):
    line = fails(2, *args)
    assert needle in line and line.startswith("hcltdx")


def test_runtime_errors_exit_1(tmp_path):
    assert "no such file" in fails(1, "report", tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_text("not a recording")
    assert "not an hcltdx recording" in fails(1, "report", junk)
    assert "/nonexistent/dev" in fails(1, "info", "--device", "/nonexistent/dev")
    assert "directory" in fails(1, "info", "--device", tmp_path)
    # 1 GiB simulated: a range above it cannot be accepted.
    assert "accept" in fails(1, "accept", "1GiB@0x40000000", *SIM).lower()


def test_no_permission_on_the_device(tmp_path):
    dev = tmp_path / "mshv_vtl"
    dev.write_bytes(b"")
    dev.chmod(0)
    prefix = ()
    if os.geteuid() == 0:  # root ignores file modes unless it drops CAP_DAC_OVERRIDE
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot lose the permission")
        prefix = (setpriv, "--bounding-set=-dac_override,-dac_read_search", "--")
    line = fails(1, "info", "--device", dev, prefix=prefix)
    assert "permission" in line.lower() and str(dev) in line


def test_fleet_example_reads_parquet_without_hcltdx(tmp_path):
    pytest.importorskip("duckdb")
    pytest.importorskip("pyarrow")
    example = os.path.join(os.path.dirname(__file__), "..", "docs", "examples", "fleet.py")
    if not os.path.exists(example):
        pytest.skip("docs/examples not shipped with this installation")
    d = tmp_path / "fleet"
    d.mkdir()
    changes = {}
    for i, host in enumerate(("host-a", "host-b")):
        f = d / f"{host}.parquet"
        ok("record", "GUEST_CR3", "--samples", 400, "--rate", 4000, "--format", "parquet",
           "-o", f, "--host", host, "--seed", i, "--no-progress", *SIM)
        col = record.load(f).samples["VMX_VMCS_GUEST_CR3"]
        changes[host] = int(np.sum(col[1:] != col[:-1]))
    p = subprocess.run([sys.executable, example, d, "VMX_VMCS_GUEST_CR3", "-o", tmp_path / "f.png"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = {ln.split()[0]: ln for ln in p.stdout.splitlines() if ln.startswith("host-")}
    for host, n in changes.items():
        assert lines[host].startswith(f"{host:<16} VP 0: 400 samples over")
        assert lines[host].endswith(f"VMX_VMCS_GUEST_CR3 changed {n} times")
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"


def test_simdev_mount_then_commands_on_the_device(tmp_path):
    from conftest import device_unavailable_reason

    why = device_unavailable_reason()
    if why:
        pytest.skip(f"FUSE stand-in device unavailable: {why}")
    import time

    mnt = tmp_path / "mnt"
    dev = mnt / "mshv_vtl"
    daemon = subprocess.Popen([sys.executable, "-m", "hcltdx", "simdev", "mount", str(mnt),
                               "--quiet"], env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not dev.exists():
            assert daemon.poll() is None, daemon.communicate()
            assert time.monotonic() < deadline, "the stand-in device did not appear"
            time.sleep(0.1)
        D = ["--device", dev, "--vp-count", 2]
        info = ok_json("info", *D)
        assert info["simulator"] is False and info["backend"] == "device"
        assert info["vp_count"] == 2 and info["path"] == str(dev)
        # One model across commands: a write is seen by the next command.
        assert ok_json("vmcs", "write", "GUEST_CR3", "0x5000", *D)["new"] == 0x5000
        assert ok_json("vmcs", "read", "GUEST_CR3", *D)["values"] == {"VMX_VMCS_GUEST_CR3": 0x5000}
        assert ok_json("record", "GUEST_CR3", "--samples", 50, "-o", tmp_path / "d.npz",
                       *D)["rows"] == 50
        rec = record.load(tmp_path / "d.npz")
        assert rec.metadata["device"] == str(dev) and set(rec.samples["VMX_VMCS_GUEST_CR3"]) == {0x5000}
    finally:
        run("simdev", "umount", mnt)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
    assert not dev.exists()
