"""Snapshots of a VP's state as numpy records: save/load, diff, decoding.

A snapshot (``runner.snapshot(...)``) or a :class:`Recorder`'s ``records``
is a structured array: ``t_ns`` plus the parts chosen (``context``,
``apic_vtl0``/``apic_vtl1``, ``private_regs``, ``vmcs_vtl0``/``vmcs_vtl1``).
This module is plain Python over those arrays::

    rec = runner.recorder(1000, vmcs="all")
    rec.take(); ...
    save("run.npz", rec)                  # records + metadata
    records, meta = load("run.npz")
    for c in diff(records[0], records[1]):
        print(c.name, hex(c.old), "->", hex(c.new))
    print("\\n".join(describe(records[-1])))
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Iterator, NamedTuple

import numpy as np

from hcltdx._poll import PRIVATE_REGS_DTYPE, Recorder, RecorderFull, snapshot_dtype

__all__ = [
    "PRIVATE_REGS_DTYPE",
    "Recorder",
    "RecorderFull",
    "snapshot_dtype",
    "Loaded",
    "Change",
    "save",
    "load",
    "diff",
    "exit_reason_name",
    "decode_rflags",
    "decode_segment_attributes",
    "describe",
]


class Loaded(NamedTuple):
    """What :func:`load` returns: unpack it or use the attributes."""

    records: np.ndarray
    metadata: dict[str, Any]


class Change(NamedTuple):
    """One leaf field that differs between two snapshots."""

    name: str
    old: Any
    new: Any


def _vmcs_fields_of(dtype: np.dtype) -> dict[str, list[str]]:
    return {name: list(dtype[name].names or ()) for name in ("vmcs_vtl0", "vmcs_vtl1")
            if dtype.names and name in dtype.names}


def save(path: "str | os.PathLike[str]", records: Any, **metadata: Any) -> None:
    """Write snapshot records (an array, or a :class:`Recorder`) to a ``.npz``
    file with a JSON metadata entry: hcltdx version, layout variant, VMCS
    field names, VP (when known), time, dtype description and shape, plus
    any ``metadata`` keywords (JSON-serializable). No pickles."""
    import hcltdx

    meta: dict[str, Any] = {}
    if isinstance(records, Recorder):
        meta.update(records.metadata)
        records = records.records
    if not isinstance(records, np.ndarray) or records.dtype.names is None:
        raise TypeError("records must be a structured array of snapshots or a Recorder")
    names = records.dtype.names
    meta.setdefault("tsc_deadline_layout",
                    "context" in names and "l2_tsc_deadline" in (records.dtype["context"].names or ()))
    meta.update(metadata)
    meta.update(
        kind="hcltdx.snapshot",
        hcltdx_version=hcltdx.__version__,
        saved=time.time(),
        parts=[n for n in names if n != "t_ns"],
        vmcs_names=_vmcs_fields_of(records.dtype),
        dtype=repr(records.dtype.descr),
        shape=list(records.shape),
    )
    np.savez(path, records=records, metadata=np.array(json.dumps(meta)))


def load(path: "str | os.PathLike[str]") -> Loaded:
    """Read a file written by :func:`save`: ``(records, metadata)``."""
    with np.load(path, allow_pickle=False, max_header_size=_MAX_HEADER) as f:
        records = f["records"]
        meta = json.loads(str(f["metadata"][()]))
    if meta.get("kind") != "hcltdx.snapshot":
        raise ValueError(f"{os.fspath(path)!r} is not an hcltdx snapshot file")
    return Loaded(records, meta)


# A snapshot dtype spelled out in the .npy header (APIC pages, VMCS names)
# is larger than numpy's default limit; the header is parsed as a literal.
_MAX_HEADER = 1 << 22


# ---- diff --------------------------------------------------------------------------


def _record(x: Any) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.names is None:
        raise TypeError("diff compares snapshot records (structured)")
    if a.size != 1:
        raise ValueError(f"diff compares single records, got {a.size}; index the array")
    return a.reshape(())


def _leaves(prefix: str, a: np.ndarray, b: np.ndarray) -> Iterator[Change]:
    dt = a.dtype
    if a.shape:
        idxs: Iterator[tuple[Any, ...]]
        if dt.names:
            idxs = (i for i in np.ndindex(a.shape) if a[i].tobytes() != b[i].tobytes())
        else:
            idxs = zip(*np.nonzero(a != b))
        for idx in idxs:
            yield from _leaves(f"{prefix}[{','.join(str(int(i)) for i in idx)}]",
                               np.asarray(a[idx]), np.asarray(b[idx]))
        return
    if dt.names:
        for name in dt.names:
            x, y = a[name], b[name]
            if x.tobytes() != y.tobytes():
                yield from _leaves(f"{prefix}.{name}", x, y)
        return
    yield Change(prefix, a.item(), b.item())


def diff(a: Any, b: Any) -> list[Change]:
    """The leaf fields that differ between two snapshot records, by dotted
    name (``context.gpr_list.rip``, ``vmcs_vtl0.VMX_VMCS_GUEST_CR3``,
    ``context.gpr_list.gps[4]``), with old and new values. ``t_ns`` is left
    out. Both records must have the same dtype."""
    ra, rb = _record(a), _record(b)
    if ra.dtype != rb.dtype:
        raise ValueError("diff needs two records of the same snapshot configuration")
    out: list[Change] = []
    for name in ra.dtype.names or ():
        if name == "t_ns":
            continue
        x, y = ra[name], rb[name]
        if x.tobytes() != y.tobytes():
            out.extend(_leaves(name, x, y))
    return out


# ---- decoders -------------------------------------------------------------------------


def exit_reason_name(value: int) -> str:
    """Name of a VMX exit reason (``VmxExit``: basic reason plus flags)."""
    from hcltdx.vmx import VmxExit

    e = VmxExit(int(value) & 0xFFFFFFFF)
    basic = e.basic_reason
    name = basic.name or f"{int(basic):#x}"
    flags = [f for f in ("vm_enter_failed", "pending_mtf", "enclave_interruption",
                         "bus_lock_preempted") if getattr(e, f)]
    return f"{name} ({', '.join(flags)})" if flags else name


def decode_rflags(value: int) -> dict[str, Any]:
    """The RFLAGS bits of ``value`` by name (``RFlags``)."""
    from hcltdx.x86 import RFlags

    return RFlags(int(value)).fields()


def decode_segment_attributes(ar: int) -> dict[str, Any]:
    """Segment access rights of a VMCS ``*_AR`` field (``VmxSegmentAttributes``)."""
    from hcltdx.vmx import VmxSegmentAttributes

    return VmxSegmentAttributes(int(ar) & 0xFFFFFFFF).fields()


def _flags_str(d: dict[str, Any]) -> str:
    parts = []
    for k, v in d.items():
        if isinstance(v, bool):
            if v:
                parts.append(k)
        elif v:
            parts.append(f"{k}={int(v)}")
    return " ".join(parts) or "-"


def describe(record: Any) -> list[str]:
    """A human-readable summary of one snapshot record, as lines."""
    from hcltdx.tdx import TdCallResultCode, TdxGp

    r = _record(record)
    names = r.dtype.names or ()
    lines = [f"snapshot at t={int(r['t_ns'])} ns"]
    if "context" in names:
        c = r["context"]
        rax = int(c["exit_info"]["rax"])
        tdx = TdCallResultCode(rax >> 32)
        lines.append(f"exit: {exit_reason_name(rax)} (tdx {tdx.name or hex(int(tdx))}), "
                     f"qualification rcx={int(c['exit_info']['rcx']):#x}, "
                     f"instruction info r11={int(c['exit_info']['r11']):#x}")
        g = c["gpr_list"]
        lines.append(f"rip={int(g['rip']):#x} rflags={int(g['rflags']):#x} "
                     f"[{_flags_str(decode_rflags(int(g['rflags'])))}]")
        gps = g["gps"].tolist()
        for row in range(0, 16, 4):
            lines.append("  " + "  ".join(f"{TdxGp(i).name.lower():>3}={gps[i]:#018x}"
                                          for i in range(row, row + 4)))
        vs = c["vp_state"]
        lines.append(f"cr2={int(vs['cr2']):#x} vp_state.flags={int(vs['flags']):#x} "
                     f"entry_rcx={int(c['entry_rcx']):#x}")
        if "l2_tsc_deadline" in (c.dtype.names or ()):
            lines.append(f"l2 tsc deadline={int(c['l2_tsc_deadline']['deadline']):#x}")
    if "private_regs" in names:
        p = r["private_regs"]
        lines.append("private: " + " ".join(f"{k}={int(p[k]):#x}" for k in (p.dtype.names or ()) if k != "pad"))
    for vtl in (0, 1):
        key = f"apic_vtl{vtl}"
        if key in names:
            a = r[key]
            irr = [int(x) for x in a["irr"]["value"]]
            isr = [int(x) for x in a["isr"]["value"]]
            pending = [w * 32 + b for w in range(8) for b in range(32) if irr[w] >> b & 1]
            service = [w * 32 + b for w in range(8) for b in range(32) if isr[w] >> b & 1]
            lines.append(f"APIC VTL{vtl}: id={int(a['id']['value']):#x} tpr={int(a['tpr']['value']):#x} "
                         f"irr={pending or '-'} isr={service or '-'}")
    for vtl in (0, 1):
        key = f"vmcs_vtl{vtl}"
        if key in names and r[key].dtype.names:
            lines.append(f"VMCS VTL{vtl}:")
            v = r[key]
            for field in v.dtype.names or ():
                value = int(v[field])
                extra = ""
                if field.endswith("_AR"):
                    extra = f"  [{_flags_str(decode_segment_attributes(value))}]"
                elif field == "VMX_VMCS_GUEST_RFLAGS":
                    extra = f"  [{_flags_str(decode_rflags(value))}]"
                elif field == "VMX_VMCS_EXIT_REASON":
                    extra = f"  [{exit_reason_name(value)}]"
                short = field[len("VMX_VMCS_"):] if field.startswith("VMX_VMCS_") else field
                lines.append(f"  {short:<34} {value:#x}{extra}")
    return lines
