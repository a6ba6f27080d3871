"""Recording every tdcall of an :class:`hcltdx.Hcl` into a bounded ring.

::

    with hcl.trace(65536) as t:
        runner.read_vmcs64(GuestVtl.VTL0, VmcsField.VMX_VMCS_GUEST_CR3)
    t.calls          # structured array (TRACE_DTYPE), oldest first
    t.total - len(t.calls)   # calls dropped because the ring was full
    t.save("run.npz"); Hcl.replay("run.npz")

The ring lives in C inside the core; while no trace is on, the tdcall hot
path checks one NULL pointer. ``t.calls`` is available once the ``with``
block has ended.
"""

from __future__ import annotations

import json
import os
import time
import zipfile
from typing import Any, Optional

import numpy as np

from hcltdx import _core

__all__ = ["TRACE_DTYPE", "Trace"]

_REGS = ("rax", "rcx", "rdx", "r8", "r9", "r10", "r11")

# struct trace_entry: ts_ns u64, vp u32, err i32, then two struct mshv_tdcall
# (rax rcx rdx r8 r9 r10_out r11_out). in_r10/in_r11 always hold 0 (R10-R15
# enter the module as 0) but stay named: a dtype without gaps keeps every
# byte through copies and files.
TRACE_DTYPE = np.dtype(
    {
        "names": ["t_ns", "vp", "err"] + [f"in_{r}" for r in _REGS] + [f"out_{r}" for r in _REGS],
        "formats": ["<u8", "<u4", "<i4"] + ["<u8"] * (2 * len(_REGS)),
        "offsets": [0, 8, 12] + [16 + 8 * i for i in range(2 * len(_REGS))],
        "itemsize": 128,
    }
)
"""One recorded tdcall: timestamp (CLOCK_MONOTONIC ns), VP, errno of the
transport (0 = the call reached the module), inputs and outputs."""

assert TRACE_DTYPE.itemsize == _core.TRACE_ENTRY_SIZE, "TRACE_DTYPE does not match struct trace_entry"


class Trace:
    """A context manager recording every tdcall of ``hcl`` (all runners,
    all threads) into a ring of ``capacity`` entries; only the last
    ``capacity`` calls are kept. Stops on exit, also on an exception."""

    def __init__(self, hcl: Any, capacity: int = 65536) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int):
            raise TypeError(f"capacity must be an int, not {type(capacity).__name__}")
        self.hcl = hcl
        self.capacity = capacity
        self.total = 0
        self.metadata: dict[str, Any] = {}
        self._calls: Optional[np.ndarray] = None
        self._recording = False

    def __enter__(self) -> "Trace":
        if self._recording:
            raise RuntimeError("this trace is already recording")
        if self.hcl is None:
            raise RuntimeError("a loaded trace cannot record")
        self.hcl._start_trace(self.capacity)
        self._recording = True
        self._calls = None
        self.metadata = {
            "backend": self.hcl.backend,
            "vp_count": int(self.hcl.vp_count),
            "tsc_deadline_layout": bool(self.hcl.tsc_deadline_layout),
            "capacity": self.capacity,
            "started": time.time(),
        }
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop recording (idempotent); ``calls`` and ``total`` become valid."""
        if not self._recording:
            return
        total, raw = self.hcl._stop_trace()
        self._recording = False
        self.total = int(total)
        self._calls = np.frombuffer(bytearray(raw), dtype=TRACE_DTYPE)
        self.metadata["total"] = self.total
        self.metadata["stopped"] = time.time()

    @property
    def recording(self) -> bool:
        return self._recording

    @property
    def calls(self) -> np.ndarray:
        """The recorded calls, oldest first (the last ``capacity`` of ``total``)."""
        if self._recording:
            raise RuntimeError("the trace is still recording; read calls after the with block")
        if self._calls is None:
            return np.zeros(0, dtype=TRACE_DTYPE)
        return self._calls

    @property
    def dropped(self) -> int:
        """Calls that fell out of the ring."""
        return self.total - len(self.calls)

    def __len__(self) -> int:
        return len(self.calls)

    def leaf_names(self) -> list[str]:
        """The leaf of each call by name (``TdCallLeaf``), or its number."""
        from hcltdx.tdx import TdCallLeaf

        out = []
        for leaf in self.calls["in_rax"].tolist():
            name = TdCallLeaf(leaf).name
            out.append(name if name else f"{leaf:#x}")
        return out

    def save(self, path: "str | os.PathLike[str]", **metadata: Any) -> None:
        """Save calls and metadata to a ``.npz`` file (no pickles)."""
        import hcltdx

        meta = dict(self.metadata)
        meta.update(metadata)
        meta.update(kind="hcltdx.trace", hcltdx_version=hcltdx.__version__, total=self.total)
        np.savez(path, calls=self.calls, metadata=np.array(json.dumps(meta)))

    @classmethod
    def load(cls, path: "str | os.PathLike[str]") -> "Trace":
        """A (non-recording) Trace read from a file written by :meth:`save`.
        Any other file is a ValueError naming it (OSError when unreadable)."""
        where = repr(os.fspath(path))
        try:
            loaded = np.load(path, allow_pickle=False)
        except (ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{where} is not an hcltdx trace file ({exc})") from None
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError(f"{where} is not an hcltdx trace file (a single .npy array)")
        with loaded as f:
            if "calls" not in f.files or "metadata" not in f.files:
                raise ValueError(f"{where} is not an hcltdx trace file")
            try:
                calls = f["calls"]
                meta = json.loads(str(f["metadata"][()]))
            except ValueError as exc:
                raise ValueError(f"{where} is not an hcltdx trace file ({exc})") from None
        if not isinstance(meta, dict) or meta.get("kind") != "hcltdx.trace":
            raise ValueError(f"{where} is not an hcltdx trace file")
        if calls.dtype != TRACE_DTYPE or calls.ndim != 1:
            raise ValueError(f"{where} does not hold TRACE_DTYPE calls")
        t = cls.__new__(cls)
        t.hcl = None
        t.capacity = int(meta.get("capacity", len(calls)))
        t.total = int(meta.get("total", len(calls)))
        t.metadata = meta
        t._calls = calls
        t._recording = False
        return t

    def __repr__(self) -> str:
        state = "recording" if self._recording else f"{len(self.calls)} calls of {self.total}"
        return f"<hcltdx.Trace {state}>"
