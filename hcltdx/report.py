"""``hcltdx report FILE``: a text summary and PNG plots of a recording.

:func:`summarize` computes the numbers (also what ``--json`` prints),
:func:`render_text` formats them, :func:`plot` writes three PNGs with
matplotlib: ``fields.png`` (each field over time), ``exit_reasons.png``
(histogram of the exits seen) and ``change_rates.png`` (changes per second
of each field).

Exits seen: a row starts a new exit when any exit-information column
present (``EXIT_REASON``, ``EXIT_QUALIFICATION``, ``GUEST_PHYSICAL_ADDRESS``,
``GUEST_LINEAR_ADDRESS``, ``EXIT_INSTRUCTION_LENGTH``,
``EXIT_INTERRUPTION_INFO``) differs from the row before; the first row counts
as one. Exits between two samples, and two identical exits in a row, are not
seen: sample faster than exits happen to count them all.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from hcltdx.record import Recording

__all__ = ["EXIT_INFO_FIELDS", "summarize", "render_text", "plot", "write"]

EXIT_INFO_FIELDS = tuple(f"VMX_VMCS_{n}" for n in (
    "EXIT_REASON", "EXIT_QUALIFICATION", "GUEST_PHYSICAL_ADDRESS", "GUEST_LINEAR_ADDRESS",
    "EXIT_INSTRUCTION_LENGTH", "EXIT_INTERRUPTION_INFO"))
_REASON = "VMX_VMCS_EXIT_REASON"


def _short(name: str) -> str:
    return name[len("VMX_VMCS_"):] if name.startswith("VMX_VMCS_") else name


def _changes(col: np.ndarray) -> int:
    return int(np.count_nonzero(col[1:] != col[:-1])) if len(col) > 1 else 0


def exit_rows(samples: np.ndarray) -> np.ndarray:
    """Indices of the rows that start a new exit (see the module doc)."""
    cols = [c for c in EXIT_INFO_FIELDS if c in (samples.dtype.names or ())]
    if not cols or len(samples) == 0:
        return np.zeros(0, dtype=np.intp)
    new = np.zeros(len(samples), dtype=bool)
    new[0] = True
    for c in cols:
        new[1:] |= samples[c][1:] != samples[c][:-1]
    return np.flatnonzero(new)


def summarize(rec: Recording, path: str = "") -> dict[str, Any]:
    from hcltdx.snapshot import exit_reason_name

    s = rec.samples
    n = len(s)
    t = s["t_ns"].astype(np.int64) if n else np.zeros(0, np.int64)
    duration = float(t[-1] - t[0]) / 1e9 if n > 1 else 0.0
    out: dict[str, Any] = {
        "file": path,
        "device": rec.metadata.get("device"),
        "host": rec.metadata.get("host"),
        "vp": rec.metadata.get("vp"),
        "vtl": rec.metadata.get("vtl"),
        "samples": n,
        "duration_s": duration,
        "rate_hz": (n - 1) / duration if duration > 0 else 0.0,
        "fields": {},
    }
    for name in rec.fields:
        col = s[name]
        ch = _changes(col)
        out["fields"][name] = {
            "first": int(col[0]) if n else None,
            "last": int(col[-1]) if n else None,
            "min": int(col.min()) if n else None,
            "max": int(col.max()) if n else None,
            "distinct": int(len(np.unique(col))),
            "changes": ch,
            "changes_per_s": ch / duration if duration > 0 else 0.0,
        }
    if _REASON in (s.dtype.names or ()):
        rows = exit_rows(s)
        reasons = s[_REASON][rows]
        values, counts = np.unique(reasons, return_counts=True)
        by = {exit_reason_name(int(v)): int(c) for v, c in zip(values, counts)}
        out["exits"] = {"seen": int(len(rows)),
                        "by_reason": dict(sorted(by.items(), key=lambda kv: -kv[1]))}
    return out


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:#x}"


def render_text(summary: dict[str, Any]) -> str:
    lines = [
        f"recording  {summary['file']}",
        f"device     {summary['device']}  host {summary['host']}  "
        f"VP {summary['vp']}  VTL{summary['vtl']}",
        f"samples    {summary['samples']} over {summary['duration_s']:.3f} s "
        f"({summary['rate_hz']:.0f} samples/s)",
        "",
        f"{'field':<28} {'changes':>8} {'per s':>10} {'distinct':>8}  {'min':>18} {'max':>18}",
    ]
    for name, f in summary["fields"].items():
        lines.append(f"{_short(name):<28} {f['changes']:>8} {f['changes_per_s']:>10.1f} "
                     f"{f['distinct']:>8}  {_fmt(f['min']):>18} {_fmt(f['max']):>18}")
    if "exits" in summary:
        ex = summary["exits"]
        lines += ["", f"exits seen {ex['seen']}"]
        for name, c in ex["by_reason"].items():
            share = 100.0 * c / ex["seen"] if ex["seen"] else 0.0
            lines.append(f"  {name:<24} {c:>8}  {share:5.1f} %")
    return "\n".join(lines) + "\n"


def plot(rec: Recording, summary: dict[str, Any], outdir: str) -> list[str]:
    """Write the PNGs into outdir; returns their paths."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("the report's plots need matplotlib: pip install 'hcltdx[cli]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    s = rec.samples
    title = (f"{summary['device']} on {summary['host'] or '?'}, VP {summary['vp']} "
             f"VTL{summary['vtl']}: {summary['samples']} samples, {summary['duration_s']:.2f} s")
    paths = []
    t = (s["t_ns"].astype(np.int64) - int(s["t_ns"][0])) / 1e9 if len(s) else np.zeros(0)
    fields = rec.fields[:10]
    hexfmt = FuncFormatter(lambda v, _pos: f"{int(v):#x}" if v >= 0 else "")

    fig, axes = plt.subplots(max(len(fields), 1), 1, sharex=True, squeeze=False,
                             figsize=(11, 1.7 * max(len(fields), 1) + 1.0))
    for ax, name in zip(axes[:, 0], fields):
        _plot_field(ax, t, s[name], name, summary["fields"][name], hexfmt)
    axes[-1, 0].set_xlabel("time since the first sample (s)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    p = os.path.join(outdir, "fields.png")
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    ex = summary.get("exits")
    if ex and ex["by_reason"]:
        names = list(ex["by_reason"])
        counts = [ex["by_reason"][n] for n in names]
        ax.barh(names[::-1], counts[::-1], color="tab:orange")
        for y, c in enumerate(counts[::-1]):
            ax.text(c, y, f" {c}", va="center", fontsize=8)
        ax.set_xlabel(f"exits seen (of {ex['seen']})")
    else:
        ax.text(0.5, 0.5, "no EXIT_REASON column in this recording", ha="center",
                va="center", transform=ax.transAxes)
        ax.set_axis_off()
    ax.set_title("VM exits by basic reason\n" + title, fontsize=9)
    fig.tight_layout()
    p = os.path.join(outdir, "exit_reasons.png")
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)

    fig, ax = plt.subplots(figsize=(8, 0.35 * max(len(rec.fields), 1) + 1.8))
    names = list(summary["fields"])
    rates = [summary["fields"][n]["changes_per_s"] for n in names]
    ax.barh([_short(n) for n in names][::-1], rates[::-1], color="tab:blue")
    for y, r in enumerate(rates[::-1]):
        ax.text(r, y, f" {r:.1f}", va="center", fontsize=8)
    if any(r > 0 for r in rates):
        ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("changes per second")
    ax.set_title("Change rate of each field\n" + title, fontsize=9)
    ax.tick_params(labelsize=8)
    fig.tight_layout()
    p = os.path.join(outdir, "change_rates.png")
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    return paths


def _plot_field(ax: Any, t: np.ndarray, raw: np.ndarray, name: str, stats: dict[str, Any],
                hexfmt: Any) -> None:
    """One field over time. Values are drawn relative to the field's minimum
    (float64 cannot resolve small steps of a 64-bit address); fields with few
    distinct values get one tick per value (exit reasons by name); fields that
    change at most samples are drawn as dots, the others as steps."""
    from hcltdx.snapshot import exit_reason_name

    import math

    from matplotlib.ticker import MultipleLocator

    label = _short(name)
    if 0 < stats["distinct"] <= 16:
        # Few values: one evenly spaced row per value, labelled with it.
        vals = np.unique(raw)
        y = np.searchsorted(vals, raw).astype(np.float64)
        ax.set_yticks(np.arange(len(vals), dtype=np.float64))
        ax.set_yticklabels([exit_reason_name(int(v)) if name == _REASON else f"{int(v):#x}"
                            for v in vals])
        hi = float(len(vals) - 1)
    else:
        base = int(raw.min()) if len(raw) else 0
        y = (raw - np.uint64(base)).astype(np.float64)
        if base:
            label += f"\n− {base:#x}"
        hi = float(y.max()) if len(y) else 1.0
        if hi > 0:
            ax.yaxis.set_major_locator(MultipleLocator(2.0 ** math.ceil(math.log2(hi / 6))))
        ax.yaxis.set_major_formatter(hexfmt)
    if stats["changes"] > len(raw) // 20:
        ax.plot(t, y, ".", markersize=1.5)
    else:
        ax.step(t, y, where="post", linewidth=0.9)
    ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.3)
    pad = 0.08 * hi if hi > 0 else 0.5
    ax.set_ylim(-pad, hi + pad)


def write(rec: Recording, path: str, outdir: str) -> tuple[dict[str, Any], list[str]]:
    """summary.txt + the PNGs in outdir; returns (summary, paths written)."""
    os.makedirs(outdir, exist_ok=True)
    summary = summarize(rec, path)
    txt = os.path.join(outdir, "summary.txt")
    with open(txt, "w") as f:
        f.write(render_text(summary))
    return summary, [txt, *plot(rec, summary, outdir)]
