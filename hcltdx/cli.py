"""The ``hcltdx`` command: the whole job from a shell.

    hcltdx info                              device, VPs, layout, simulator or not
    hcltdx vmcs list|read|write              the VMCS catalogue and its fields
    hcltdx record [FIELD ...] -o run.npz     poll fields of a VP into a file
    hcltdx snapshot [-n N] -o snap.npz       one snapshot or a series
    hcltdx accept RANGE / attrs RANGE        accept memory, set/read attributes
    hcltdx trace -o t.npz -- COMMAND ...     record the tdcalls of a command
    hcltdx report FILE                       text summary + PNG plots
    hcltdx simdev mount|umount PATH          the FUSE stand-in device
    hcltdx bench ...                         the benchmarks
    hcltdx demo                              the tour, then record + report

Every device command takes --device auto|sim|PATH (auto: /dev/mshv_vtl when
present, else the simulator; it says which) and --json. Field names: the
seed's (VMX_VMCS_GUEST_CR3), short (GUEST_CR3), any case, or an encoding
(0x6802). Ranges: START-END (end exclusive) or SIZE@START, e.g.
0x100000-0x40000000 or 1GiB@0x40000000. Exit status: 0 ok, 1 runtime
error, 2 bad usage; errors are one line on stderr. See docs/cli.md.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import socket
import sys
import time
from typing import Any, Callable, List, NoReturn, Optional, Sequence

DEFAULT_DEVICE_PATH = "/dev/mshv_vtl"
DEFAULT_FIELDS = ("GUEST_RIP", "GUEST_RSP", "GUEST_CR3", "PREEMPTION_TIMER_VALUE",
                  "EXIT_REASON", "EXIT_QUALIFICATION", "GUEST_PHYSICAL_ADDRESS")
_PREFIX = "VMX_VMCS_"


class UsageError(Exception):
    """Bad command-line input: exit status 2."""


# ---- parsing helpers ------------------------------------------------------------

def _catalogue() -> list[tuple[str, int, int, int]]:
    from hcltdx._cabi import vmcs_catalogue

    return vmcs_catalogue()


def field_width(encoding: int) -> int:
    """Bits of a VMCS field from encoding bits 13-14 (natural width = 64)."""
    return {0: 16, 1: 64, 2: 32, 3: 64}[(encoding >> 13) & 3]


def parse_field(text: str) -> tuple[str, int]:
    """A field name (seed or short form, any case) or 0xENCODING -> (name, encoding)."""
    cat = _catalogue()
    by_name = {n: e for n, e, _r, _w in cat}
    t = text.strip()
    if re.fullmatch(r"0[xX][0-9a-fA-F]+", t):
        enc = int(t, 16)
        for n, e, _r, _w in cat:
            if e == enc:
                return n, e
        raise UsageError(f"no VMCS field with encoding {enc:#x} in the catalogue "
                         "(`hcltdx vmcs list` shows them)")
    up = t.upper()
    for cand in (up, _PREFIX + up):
        if cand in by_name:
            return cand, by_name[cand]
    shorts = [n[len(_PREFIX):] for n in by_name]
    close = difflib.get_close_matches(up[len(_PREFIX):] if up.startswith(_PREFIX) else up,
                                      shorts, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `hcltdx vmcs list` shows them"
    raise UsageError(f"unknown VMCS field {text!r}{hint}")


_SIZE = re.compile(r"^\s*(0[xX][0-9a-fA-F]+|\d+)\s*([KMGT]i?B?|B)?\s*$", re.I)
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str, what: str = "size") -> int:
    """``4096``, ``0x1000``, ``64M``, ``1GiB``, ``2MB`` (binary units) -> bytes."""
    m = _SIZE.match(text)
    if not m:
        raise UsageError(f"malformed {what} {text!r}: use a number (0x.. or decimal) "
                         "with an optional K/M/G/T(iB) unit")
    n = int(m.group(1), 0)
    unit = (m.group(2) or "").upper()
    return n * _UNITS[unit[:1] if unit not in ("", "B") else unit]


def parse_range(text: str) -> tuple[int, int]:
    """``START-END`` (END exclusive) or ``SIZE@START`` -> (start, end), 4 KiB aligned."""
    t = text.strip()
    try:
        if "@" in t:
            size_s, start_s = t.split("@", 1)
            start = parse_size(start_s, "range start")
            end = start + parse_size(size_s, "range size")
        elif "-" in t:
            start_s, end_s = t.split("-", 1)
            start, end = parse_size(start_s, "range start"), parse_size(end_s, "range end")
        else:
            raise UsageError("")
    except UsageError as e:
        raise UsageError(f"malformed range {text!r}: use START-END or SIZE@START, e.g. "
                         "0x100000-0x40000000 or 1GiB@0x40000000"
                         + (f" ({e})" if str(e) else "")) from None
    if end <= start:
        raise UsageError(f"malformed range {text!r}: the end {end:#x} is not above the start {start:#x}")
    if start % 4096 or end % 4096:
        raise UsageError(f"range {text!r} is not 4 KiB aligned ({start:#x}-{end:#x})")
    return start, end


def parse_perms(text: str) -> tuple[bool, bool, bool, bool]:
    """``rwx``-style page permissions: r, w, x (kernel execute), u (user execute); ``none``."""
    t = text.strip().lower()
    if t in ("none", "-", ""):
        return (False, False, False, False)
    if not re.fullmatch(r"[rwxu]+", t) or len(set(t)) != len(t):
        raise UsageError(f"malformed permissions {text!r}: letters r, w, x (kernel execute), "
                         "u (user execute), or 'none'")
    return ("r" in t, "w" in t, "x" in t, "u" in t)


def _arg(fn: Callable[[str], Any]) -> Callable[[str], Any]:
    def conv(text: str) -> Any:
        try:
            return fn(text)
        except UsageError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    conv.__name__ = fn.__name__.replace("parse_", "")
    return conv


def _nonneg_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return v


def _pos_int(text: str) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text!r}")
    return v


def _u64(text: str) -> int:
    v = _pos_int(text)
    if v >> 64:
        raise argparse.ArgumentTypeError(f"does not fit in 64 bits: {text!r}")
    return v


# ---- output ---------------------------------------------------------------------

class Out:
    def __init__(self, json_mode: bool) -> None:
        self.json = json_mode

    def note(self, msg: str) -> None:
        print(f"hcltdx: {msg}", file=sys.stderr, flush=True)

    def text(self, msg: str = "") -> None:
        if not self.json:
            print(msg, flush=True)

    def result(self, data: Any, text: Optional[str] = None) -> None:
        if self.json:
            print(json.dumps(data, indent=2, default=_json_default), flush=True)
        elif text is not None:
            print(text, flush=True)


class _Capture(Out):
    """Keeps a command's JSON result (trace --json embeds it in its own)."""

    def __init__(self) -> None:
        super().__init__(True)
        self.data: Any = None

    def result(self, data: Any, text: Optional[str] = None) -> None:
        self.data = data


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, int):
        return int(o)
    return str(o)


# ---- the device -------------------------------------------------------------------

def open_device(args: argparse.Namespace, out: Out) -> tuple[Any, dict[str, Any]]:
    """The Hcl chosen by --device, and a description for info and metadata."""
    import hcltdx

    dev = getattr(args, "device", "auto")
    if dev == "auto":
        if os.path.exists(DEFAULT_DEVICE_PATH):
            out.note(f"device: {DEFAULT_DEVICE_PATH} (found; --device sim for the simulator)")
            dev = DEFAULT_DEVICE_PATH
        else:
            out.note(f"device: the simulator (no {DEFAULT_DEVICE_PATH} here; "
                     "--device PATH for a device)")
            dev = "sim"
    if dev == "sim":
        hcl = hcltdx.Hcl.simulated(vp_count=args.vp_count, memory_size=args.memory,
                                   tsc_deadline_layout=args.tsc_deadline_layout)
        guest = not args.no_guest
        if guest:
            hcl.sim.guest(True, seed=args.seed, clock="wall")
        return hcl, {"device": "sim", "simulator": True, "guest": guest,
                     "seed": args.seed if guest else None}
    if os.path.isdir(dev):
        raise RuntimeError(f"{dev} is a directory, not a device")
    hcl = hcltdx.Hcl.open(dev, vp_count=args.vp_count_device,
                          tsc_deadline_layout=args.tsc_deadline_layout)
    return hcl, {"device": dev, "simulator": False, "guest": False, "seed": None}


def _vtl(args: argparse.Namespace) -> Any:
    from hcltdx import GuestVtl

    return GuestVtl.VTL0 if args.vtl == 0 else GuestVtl.VTL1


def _check_vp(hcl: Any, vp: int) -> None:
    if not 0 <= vp < hcl.vp_count:
        raise UsageError(f"--vp {vp} is out of range: the device has {hcl.vp_count} VP(s)")


def _read(runner: Any, vtl: Any, enc: int) -> int:
    w = field_width(enc)
    if w == 16:
        return int(runner.read_vmcs16(vtl, enc))
    if w == 32:
        return int(runner.read_vmcs32(vtl, enc))
    return int(runner.read_vmcs64(vtl, enc))


# ---- commands ---------------------------------------------------------------------

def cmd_info(args: argparse.Namespace, hcl: Any, desc: dict[str, Any], out: Out) -> int:
    info: dict[str, Any] = {
        "device": desc["device"],
        "simulator": desc["simulator"],
        "backend": hcl.backend,
        "path": hcl.path,
        "vp_count": hcl.vp_count,
        "layout": "tsc-deadline (newer kernels)" if hcl.tsc_deadline_layout else "seed (older kernels)",
    }
    if hcl.sim is not None:
        info["memory_size"] = hcl.sim.memory_size
        info["pages"] = hcl.sim.page_counts()
        info["guest"] = hcl.sim.guest_enabled
        info["seed"] = desc["seed"]
    text = [f"device      {info['device']} ({'simulator' if info['simulator'] else 'mshv_vtl device'}, "
            f"backend {info['backend']})",
            f"VPs         {info['vp_count']}",
            f"layout      {info['layout']}"]
    if hcl.sim is not None:
        pages = info["pages"]
        text += [f"memory      {info['memory_size'] >> 20} MiB private: "
                 + ", ".join(f"{k} {v} pages" for k, v in pages.items()),
                 f"guest       {'synthetic guest on (seed %d, wall clock)' % args.seed if info['guest'] else 'off'}"]
    out.result(info, "\n".join(text))
    return 0


def cmd_vmcs_list(args: argparse.Namespace, out: Out) -> int:
    rows: list[dict[str, Any]] = []
    pat = (args.filter or "").upper()
    for name, enc, rmask, wmask in _catalogue():
        if pat and pat not in name:
            continue
        rows.append({"name": name, "short": name[len(_PREFIX):], "encoding": enc,
                     "width": field_width(enc), "read_mask": rmask, "write_mask": wmask})
    text = [f"{'name':<40} {'enc':>6} {'bits':>4}  {'readable':<8} {'writable':<8}"]
    for r in rows:
        wm, full = int(r["write_mask"]), (1 << int(r["width"])) - 1
        writable = "no" if not wm else "all" if wm == full else hex(wm)
        text.append(f"{r['name']:<40} {r['encoding']:#06x} {r['width']:>4}  "
                    f"{'yes' if r['read_mask'] else 'no':<8} {writable:<8}")
    text.append(f"{len(rows)} fields")
    out.result(rows, "\n".join(text))
    return 0


def cmd_vmcs_read(args: argparse.Namespace, hcl: Any, desc: dict[str, Any], out: Out) -> int:
    _check_vp(hcl, args.vp)
    vtl = _vtl(args)
    vals = {}
    with hcl.runner(args.vp) as runner:
        for name, enc in args.fields:
            vals[name] = _read(runner, vtl, enc)
    out.result({"vp": args.vp, "vtl": args.vtl, "values": vals},
               "\n".join(f"{n[len(_PREFIX):]:<32} {v:#018x}" for n, v in vals.items()))
    return 0


def cmd_vmcs_write(args: argparse.Namespace, hcl: Any, desc: dict[str, Any], out: Out) -> int:
    _check_vp(hcl, args.vp)
    name, enc = args.field
    w = field_width(enc)
    full = (1 << w) - 1
    mask = full if args.mask is None else args.mask
    if args.value > full or mask > full:
        raise UsageError(f"{name} is {w} bits wide: value {args.value:#x} / mask {mask:#x} do not fit")
    vtl = _vtl(args)
    with hcl.runner(args.vp) as runner:
        write = {16: runner.write_vmcs16, 32: runner.write_vmcs32, 64: runner.write_vmcs64}[w]
        old = int(write(vtl, enc, mask, args.value))
        new = _read(runner, vtl, enc)
    out.result({"field": name, "old": old, "new": new, "mask": mask},
               f"{name[len(_PREFIX):]}: {old:#x} -> {new:#x} (mask {mask:#x})")
    return 0


def _metadata(args: argparse.Namespace, hcl: Any, desc: dict[str, Any]) -> dict[str, Any]:
    import hcltdx

    return {"device": desc["device"], "simulator": desc["simulator"], "guest": desc["guest"],
            "seed": desc["seed"], "host": getattr(args, "host", None) or socket.gethostname(),
            "vp": args.vp, "vtl": getattr(args, "vtl", None),
            "tsc_deadline_layout": bool(hcl.tsc_deadline_layout),
            "hcltdx_version": hcltdx.__version__, "started": time.time()}


class _Progress:
    """poll_vmcs's progress callback, shown with tqdm (samples and samples/s)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs shipped
            except ImportError:  # no progress bar without the `cli` extra
                return

            self.bar = tqdm(total=total, unit=" samples", unit_scale=True, file=sys.stderr,
                            dynamic_ncols=True, desc="recording", mininterval=0.2)
        self.done = 0

    def __call__(self, done: int, total: int) -> None:
        if self.bar is not None and done > self.done:
            self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_record(args: argparse.Namespace, hcl: Any, desc: dict[str, Any], out: Out) -> int:
    from hcltdx import record
    from hcltdx.errors import PollInterrupted

    _check_vp(hcl, args.vp)
    fields = args.fields or [parse_field(f) for f in DEFAULT_FIELDS]
    names = [n for n, _ in fields]
    if len(set(names)) != len(names):
        raise UsageError("a field is listed twice")
    if args.format == "parquet":
        record._pyarrow()
    samples = args.samples if args.samples is not None else max(1, int(args.duration * args.rate))
    interval = int(1e9 / args.rate)
    outfile = args.output or ("recording.parquet" if args.format == "parquet" else "recording.npz")
    meta = _metadata(args, hcl, desc)
    meta.update(interval_ns=interval, requested_samples=samples, changes_only=args.changes_only)
    show = not args.no_progress and not out.json
    prog = _Progress(samples, show)
    interrupted = False
    t0 = time.perf_counter()
    with hcl.runner(args.vp) as runner:
        try:
            rows = runner.poll_vmcs(_vtl(args), [e for _, e in fields], samples,
                                    interval_ns=interval, progress=prog,
                                    changes_only=args.changes_only)
        except PollInterrupted as e:
            rows, interrupted = e.samples, True
        finally:
            prog.close()
    elapsed = time.perf_counter() - t0
    record.save(outfile, rows, meta, format=args.format)
    res = {"file": os.path.abspath(outfile), "rows": len(rows), "fields": names,
           "seconds": elapsed, "rate_hz": (prog.done or len(rows)) / elapsed if elapsed else 0.0,
           "interrupted": interrupted}
    out.result(res, f"{'interrupted: ' if interrupted else ''}recorded {len(rows)} rows of "
               f"{len(names)} fields from VP {args.vp} VTL{args.vtl} in {elapsed:.2f} s "
               f"({res['rate_hz']:.0f} samples/s) -> {res['file']}")
    return 130 if interrupted else 0


def cmd_snapshot(args: argparse.Namespace, hcl: Any, desc: dict[str, Any], out: Out) -> int:
    from hcltdx import snapshot

    _check_vp(hcl, args.vp)
    vmcs: Any = "all" if args.vmcs is None else [e for _, e in args.vmcs]
    outfile = args.output or "snapshot.npz"
    with hcl.runner(args.vp) as runner:
        rec = runner.recorder(args.count, vmcs=vmcs)
        for i in range(args.count):
            if i:
                time.sleep(args.interval)
            rec.take()
        meta = _metadata(args, hcl, desc)
        snapshot.save(outfile, rec, vp=args.vp, device=desc["device"], host=meta["host"])
    last = rec.records[-1]
    res = {"file": os.path.abspath(outfile), "count": args.count}
    text = f"{args.count} snapshot(s) of VP {args.vp} -> {res['file']}"
    if not out.json and args.count >= 1:
        lines = snapshot.describe(last)
        text = "\n".join(lines[: args.lines]) + ("\n..." if len(lines) > args.lines else "") + "\n" + text
        if args.count > 1:
            ch = snapshot.diff(rec.records[0], rec.records[-1])
            text += f"\n{len(ch)} leaf fields changed between the first and the last"
    out.result(res, text)
    return 0


def _attr_pair(args: argparse.Namespace) -> Optional[tuple[Any, Any]]:
    from hcltdx import GpaVmAttributes, GpaVmAttributesMask, TdgMemPageAttrWriteR8, TdgMemPageGpaAttr

    attrs: dict[str, Any] = {}
    masks: dict[str, Any] = {}
    for key, perms in (("l2_vm1", args.vtl0), ("l2_vm2", args.vtl1)):
        if perms is None:
            continue
        r, w, x, u = perms
        attrs[key] = GpaVmAttributes(read=r, write=w, kernel_execute=x, user_execute=u, valid=True)
        masks[key] = GpaVmAttributesMask(read=True, write=True, kernel_execute=True, user_execute=True)
    if not attrs:
        return None
    return TdgMemPageGpaAttr(**attrs), TdgMemPageAttrWriteR8(**masks)


def cmd_accept(args: argparse.Namespace, hcl: Any, desc: dict[str, Any], out: Out) -> int:
    from hcltdx import MemoryRange

    start, end = args.range
    pair = _attr_pair(args)
    before = hcl.sim.counters() if hcl.sim is not None else None
    t0 = time.perf_counter()
    hcl.mshv_vtl.tdx_accept_pages(MemoryRange(start, end), pair)
    dt = time.perf_counter() - t0
    res: dict[str, Any] = {"start": start, "end": end, "bytes": end - start, "seconds": dt,
                           "attributes": int(pair[0]) if pair else None}
    if before is not None:
        after = hcl.sim.counters()
        res["calls"] = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    out.result(res, f"accepted {start:#x}-{end:#x} ({(end - start) >> 20} MiB) in {dt * 1e3:.1f} ms"
               + (f"; tdcalls: " + ", ".join(f"{k}={v}" for k, v in res["calls"].items())
                  if "calls" in res else ""))
    return 0


def cmd_attrs(args: argparse.Namespace, hcl: Any, desc: dict[str, Any], out: Out) -> int:
    from hcltdx import MemoryRange, TdgMemPageGpaAttr
    from hcltdx.errors import TdCallError  # noqa: F401  (raised through)

    start, end = args.range
    pair = _attr_pair(args)
    if pair is not None:
        hcl.mshv_vtl.tdx_set_page_attributes(MemoryRange(start, end), int(pair[0]), int(pair[1]))
    # Read back the first page with TDG.MEM.PAGE.ATTR.RD (leaf 23).
    o = hcl.tdcall(0, 23, rcx=start)
    if o.rax != 0:
        from hcltdx import TdCallResult

        raise RuntimeError(f"MEM.PAGE.ATTR.RD of {start:#x} failed: {TdCallResult(o.rax)!r}")
    a = TdgMemPageGpaAttr(o.rdx)

    def perms(x: Any) -> str:
        if not x.valid:
            return "not valid"
        return "".join(c if f else "-" for c, f in zip("rwxu", (x.read, x.write, x.kernel_execute,
                                                                 x.user_execute)))
    res = {"start": start, "end": end, "set": pair is not None, "gpa_attr": int(a),
           "vtl0": perms(a.l2_vm1), "vtl1": perms(a.l2_vm2), "pending": bool(o.rcx >> 62 & 1)}
    out.result(res, f"{'set ' if pair else ''}{start:#x}-{end:#x}: first page VTL0 {res['vtl0']}, "
               f"VTL1 {res['vtl1']}{' (pending)' if res['pending'] else ''}")
    return 0


_TRACEABLE = ("info", "vmcs", "record", "snapshot", "accept", "attrs")


def cmd_trace(args: argparse.Namespace, hcl: Any, desc: dict[str, Any], out: Out,
              parser: argparse.ArgumentParser) -> int:
    rest = list(args.command_argv)
    if rest[:1] == ["--"]:
        rest = rest[1:]
    if not rest:
        raise UsageError("trace needs a command to run, e.g. hcltdx trace -o t.npz -- vmcs read GUEST_CR3")
    if rest[0] not in _TRACEABLE:
        raise UsageError(f"trace runs one of {', '.join(_TRACEABLE)}, not {rest[0]!r}")
    for opt in ("--device", "--json", "--vp-count", "--memory", "--seed", "--no-guest"):
        if any(a == opt or a.startswith(opt + "=") for a in rest):
            raise UsageError(f"give {opt} to trace, before --, not to the traced command")
    inner = parser.parse_args(rest)
    for k in ("device", "vp_count", "memory", "seed", "no_guest", "tsc_deadline_layout", "json",
              "vp_count_device"):
        setattr(inner, k, getattr(args, k))
    inner.no_progress = True
    outfile = args.output or "trace.npz"
    inner_out = _Capture() if out.json else out
    with hcl.trace(args.capacity) as t:
        rc = _run_with_device(inner, hcl, desc, inner_out, parser)
    t.save(outfile, command=rest)
    calls = t.calls
    by_leaf: dict[str, int] = {}
    for name in t.leaf_names():
        by_leaf[name] = by_leaf.get(name, 0) + 1
    res = {"file": os.path.abspath(outfile), "calls": len(calls), "dropped": t.dropped,
           "by_leaf": by_leaf, "exit_status": rc}
    if isinstance(inner_out, _Capture):
        res["output"] = inner_out.data
    out.result(res, f"traced {len(calls)} tdcalls ("
               + ", ".join(f"{k} {v}" for k, v in sorted(by_leaf.items(), key=lambda kv: -kv[1]))
               + (f", {t.dropped} dropped" if t.dropped else "") + f") -> {res['file']}")
    return rc


def cmd_report(args: argparse.Namespace, out: Out) -> int:
    from hcltdx import record, report

    path = args.file
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    rec = record.load(path)
    outdir = args.output or (os.path.splitext(path)[0] + "_report")
    summary, files = report.write(rec, path, outdir)
    summary["files"] = [os.path.abspath(f) for f in files]
    out.result(summary, report.render_text(summary) + "\nwritten:\n"
               + "\n".join(f"  {f}" for f in summary["files"]))
    return 0


def cmd_demo(args: argparse.Namespace, out: Out) -> int:
    from hcltdx import demo

    return demo.main_job(vp_count=args.vp_count, memory_size=args.memory,
                         seconds=args.seconds, outdir=args.output, out=out.text,
                         tour=not args.no_tour, seed=args.seed)


# ---- dispatch ---------------------------------------------------------------------

def _run_with_device(args: argparse.Namespace, hcl: Any, desc: dict[str, Any], out: Out,
                     parser: argparse.ArgumentParser) -> int:
    if args.command == "info":
        return cmd_info(args, hcl, desc, out)
    if args.command == "vmcs":
        return {"read": cmd_vmcs_read, "write": cmd_vmcs_write}[args.vmcs_command](args, hcl, desc, out)
    if args.command == "record":
        return cmd_record(args, hcl, desc, out)
    if args.command == "snapshot":
        return cmd_snapshot(args, hcl, desc, out)
    if args.command == "accept":
        return cmd_accept(args, hcl, desc, out)
    if args.command == "attrs":
        return cmd_attrs(args, hcl, desc, out)
    if args.command == "trace":
        return cmd_trace(args, hcl, desc, out, parser)
    raise AssertionError(args.command)  # pragma: no cover


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _common(p: argparse.ArgumentParser, device: bool) -> None:
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="machine-readable output on stdout")
    if not device:
        return
    g = p.add_argument_group("device")
    g.add_argument("--device", default=argparse.SUPPRESS, metavar="auto|sim|PATH",
                   help=f"auto (default): {DEFAULT_DEVICE_PATH} when present, else the simulator; "
                        "sim; or the path of a device (e.g. an `hcltdx simdev mount` stand-in)")
    g.add_argument("--vp-count", type=_pos_int, default=argparse.SUPPRESS,
                   help="simulator: number of VPs (default 2); device: VPs to assume")
    g.add_argument("--memory", type=_arg(parse_size), default=argparse.SUPPRESS,
                   help="simulator: private memory (default 1GiB)")
    g.add_argument("--seed", type=_u64, default=argparse.SUPPRESS,
                   help="simulator: seed of the synthetic guest (default 1)")
    g.add_argument("--no-guest", action="store_true", default=argparse.SUPPRESS,
                   help="simulator: no synthetic guest (the VMCS only changes when written)")
    g.add_argument("--tsc-deadline-layout", action="store_true", default=argparse.SUPPRESS,
                   help="the newer kernels' run-page layout")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hcltdx", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(json=False, device="auto", vp_count=None, memory=1 << 30, seed=1,
                        no_guest=False, tsc_deadline_layout=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)

    p = sub.add_parser("info", help="the device: VPs, layout variant, simulator or not")
    _common(p, True)

    p = sub.add_parser("vmcs", help="VMCS fields: list, read, write")
    vs = p.add_subparsers(dest="vmcs_command", required=True, metavar="list|read|write",
                          parser_class=_Parser)
    q = vs.add_parser("list", help="the full catalogue (names, encodings, widths, access)")
    q.add_argument("filter", nargs="?", help="only names containing this text")
    _common(q, False)
    q = vs.add_parser("read", help="read fields of a VP")
    q.add_argument("fields", nargs="+", type=_arg(parse_field), metavar="FIELD")
    q.add_argument("--vp", type=_pos_int, default=0)
    q.add_argument("--vtl", type=int, choices=(0, 1), default=0)
    _common(q, True)
    q = vs.add_parser("write", help="write a field of a VP (on a fresh simulator it lasts for this command only)")
    q.add_argument("field", type=_arg(parse_field), metavar="FIELD")
    q.add_argument("value", type=_u64)
    q.add_argument("--mask", type=_u64, default=None, help="bits to change (default: all)")
    q.add_argument("--vp", type=_pos_int, default=0)
    q.add_argument("--vtl", type=int, choices=(0, 1), default=0)
    _common(q, True)

    p = sub.add_parser("record", help="poll fields of a VP into a file (.npz or .parquet)")
    p.add_argument("fields", nargs="*", type=_arg(parse_field), metavar="FIELD",
                   help="fields to poll (default: " + " ".join(DEFAULT_FIELDS) + ")")
    p.add_argument("-o", "--output", help="file to write (default recording.npz / .parquet)")
    p.add_argument("--format", choices=("npz", "parquet"), default="npz")
    p.add_argument("--duration", type=_nonneg_float, default=3.0, help="seconds (default 3)")
    p.add_argument("--rate", type=_nonneg_float, default=10_000.0, help="samples per second (default 10000)")
    p.add_argument("--samples", type=_pos_int, default=None, help="number of samples (instead of --duration)")
    p.add_argument("--changes-only", action="store_true", help="keep only rows where a field changed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--host", help="host name stored with the recording (default: this machine's)")
    p.add_argument("--vp", type=_pos_int, default=0)
    p.add_argument("--vtl", type=int, choices=(0, 1), default=0)
    _common(p, True)

    p = sub.add_parser("snapshot", help="one snapshot or a series, to .npz")
    p.add_argument("-o", "--output", help="file to write (default snapshot.npz)")
    p.add_argument("-n", "--count", type=_pos_int, default=1)
    p.add_argument("--interval", type=_nonneg_float, default=0.1, help="seconds between snapshots")
    p.add_argument("--vmcs", nargs="+", type=_arg(parse_field), metavar="FIELD",
                   help="VMCS fields to include (default: every readable field)")
    p.add_argument("--lines", type=_pos_int, default=25, help="lines of the description to print")
    p.add_argument("--vp", type=_pos_int, default=0)
    _common(p, True)

    for name, hlp in (("accept", "accept a range of private memory (2 MiB first, 4 KiB on mismatch)"),
                      ("attrs", "set the VTL0/VTL1 attributes of a range; read the first page's")):
        p = sub.add_parser(name, help=hlp)
        p.add_argument("range", type=_arg(parse_range), metavar="RANGE",
                       help="START-END or SIZE@START, e.g. 0x100000-0x40000000 or 1GiB@0x40000000")
        p.add_argument("--vtl0", type=_arg(parse_perms), metavar="PERMS",
                       help="VTL0 (L2 VM1) permissions: r w x u letters or none")
        p.add_argument("--vtl1", type=_arg(parse_perms), metavar="PERMS",
                       help="VTL1 (L2 VM2) permissions")
        _common(p, True)

    p = sub.add_parser("trace", help="record the tdcalls of a command: trace -o t.npz -- vmcs read GUEST_CR3")
    p.add_argument("-o", "--output", help="file to write (default trace.npz)")
    p.add_argument("--capacity", type=_pos_int, default=1 << 20, help="ring entries")
    p.add_argument("command_argv", nargs=argparse.REMAINDER, metavar="-- COMMAND ...")
    _common(p, True)

    p = sub.add_parser("report", help="text summary + PNG plots of a recording")
    p.add_argument("file", metavar="FILE")
    p.add_argument("-o", "--output", help="directory for summary.txt and the PNGs "
                                          "(default FILE without extension + _report)")
    _common(p, False)

    p = sub.add_parser("demo", help="the main job on the simulator: a tour, a recording, a report")
    p.add_argument("--seconds", type=_nonneg_float, default=3.0)
    p.add_argument("-o", "--output", default="hcltdx-demo", help="directory (default ./hcltdx-demo)")
    p.add_argument("--no-tour", action="store_true", help="skip the API tour")
    p.add_argument("--vp-count", type=_pos_int, default=argparse.SUPPRESS)
    p.add_argument("--memory", type=_arg(parse_size), default=argparse.SUPPRESS)
    p.add_argument("--memory-mib", type=_pos_int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=_u64, default=argparse.SUPPRESS)
    _common(p, False)

    sub.add_parser("simdev", help="the FUSE stand-in device (see `hcltdx simdev -h`)", add_help=False)
    sub.add_parser("bench", help="the benchmarks (see `hcltdx bench -h`)", add_help=False)
    return parser


def _bench(argv: List[str]) -> int:
    import importlib

    try:
        bench = importlib.import_module("hcltdx.bench")
    except ModuleNotFoundError as e:
        if e.name != "hcltdx.bench":
            raise
        raise RuntimeError("`hcltdx bench` is not available in this installation "
                           "(no module hcltdx.bench)") from None
    return int(bench.main(argv) or 0)


def _dispatch(argv: List[str]) -> int:
    if argv[:1] == ["simdev"]:
        from hcltdx import simdev

        return int(simdev.main(argv[1:]) or 0)
    if argv[:1] == ["bench"]:
        return _bench(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "trace":
        rest = [a for a in args.command_argv if a != "--"][:1]
        if rest and rest[0] not in _TRACEABLE:
            raise UsageError(f"trace runs one of {', '.join(_TRACEABLE)}, not {rest[0]!r}")
    out = Out(args.json)
    if args.vp_count is not None and args.vp_count < 1:
        raise UsageError("--vp-count must be at least 1")
    args.vp_count_device = args.vp_count
    if args.vp_count is None:
        args.vp_count = 2
    if args.command == "report":
        return cmd_report(args, out)
    if args.command == "demo":
        if args.memory_mib is not None:  # the older spelling of --memory
            args.memory = args.memory_mib << 20
        return cmd_demo(args, out)
    if args.command == "vmcs" and args.vmcs_command == "list":
        return cmd_vmcs_list(args, out)
    hcl, desc = open_device(args, out)
    with hcl:
        return _run_with_device(args, hcl, desc, out, parser)


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, OSError) and e.strerror:
        msg = e.strerror
        if e.filename is not None and str(e.filename) not in msg:
            msg = f"{e.filename}: {msg}"
    return msg


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = bool(os.environ.get("HCLTDX_TRACEBACK"))
    try:
        return _dispatch(argv)
    except UsageError as e:
        msg = str(e)
        print(msg if msg.startswith("hcltdx") else f"hcltdx: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hcltdx: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as e:  # one line, never a traceback (HCLTDX_TRACEBACK=1 shows it)
        if debug:
            raise
        kind = type(e).__name__
        print(f"hcltdx: error: {_one_line(e)} ({kind})", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
