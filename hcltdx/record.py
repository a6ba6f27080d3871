"""Recordings of polled VMCS fields: ``hcltdx record`` writes them, ``hcltdx
report`` reads them.

A recording is the structured array ``poll_vmcs`` returns (``t_ns`` plus one
``uint64`` column per field) and a metadata dict. Two file formats:

* ``.npz`` (default): ``samples`` (the array) and ``metadata`` (JSON text).
  No pickles.
* ``.parquet`` (``pip install hcltdx[parquet]``): one row per sample, columns
  ``t_ns`` and one ``uint64`` column per field, plus the constant columns
  ``host``, ``vp`` and ``vtl`` so the files of a fleet can be concatenated
  and grouped by any tool that reads Parquet (pandas, polars, DuckDB,
  Spark). The metadata also sits in the schema's key-value metadata under
  ``hcltdx``.
"""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

import numpy as np

__all__ = ["Recording", "save", "load", "from_snapshots", "FORMATS"]

FORMATS = ("npz", "parquet")
KIND = "hcltdx.recording"


class Recording(NamedTuple):
    samples: np.ndarray
    metadata: dict[str, Any]

    @property
    def fields(self) -> list[str]:
        return [n for n in (self.samples.dtype.names or ()) if n != "t_ns"]


def _pyarrow() -> Any:
    try:
        import pyarrow  # type: ignore[import-untyped]  # no stubs or py.typed
        import pyarrow.parquet  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        raise RuntimeError("Parquet needs pyarrow: pip install 'hcltdx[parquet]'") from None
    return pyarrow


def save(path: "str | os.PathLike[str]", samples: np.ndarray, metadata: dict[str, Any],
         format: str = "npz") -> None:
    """Write a recording. ``format``: "npz" or "parquet"."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if samples.dtype.names is None or "t_ns" not in samples.dtype.names:
        raise TypeError("samples must be a poll_vmcs array (t_ns + one column per field)")
    meta = dict(metadata, kind=KIND, fields=[n for n in samples.dtype.names if n != "t_ns"])
    if format == "npz":
        with open(path, "wb") as f:
            np.savez(f, samples=samples, metadata=np.array(json.dumps(meta)))
        return
    pa = _pyarrow()
    n = len(samples)
    cols = {name: pa.array(np.ascontiguousarray(samples[name]), type=pa.uint64())
            for name in samples.dtype.names}
    cols["host"] = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)),
                                                  pa.array([str(meta.get("host", ""))]))
    cols["vp"] = pa.array(np.full(n, int(meta.get("vp", 0)), np.uint32))
    cols["vtl"] = pa.array(np.full(n, int(meta.get("vtl", 0)), np.uint8))
    table = pa.table(cols).replace_schema_metadata({"hcltdx": json.dumps(meta)})
    pa.parquet.write_table(table, os.fspath(path))


def load(path: "str | os.PathLike[str]") -> Recording:
    """Read a recording written by :func:`save` (either format)."""
    p = os.fspath(path)
    with open(p, "rb") as f:
        magic = f.read(4)
    if magic == b"PAR1":
        pa = _pyarrow()
        table = pa.parquet.read_table(p)
        raw = (table.schema.metadata or {}).get(b"hcltdx")
        if raw is None:
            raise ValueError(f"{p!r} is a Parquet file but not an hcltdx recording")
        meta = json.loads(raw)
        names = ["t_ns", *meta["fields"]]
        samples = np.zeros(table.num_rows, dtype=[(n, "<u8") for n in names])
        for n in names:
            samples[n] = table.column(n).to_numpy()
        return Recording(samples, meta)
    if magic[:2] != b"PK":
        raise ValueError(f"{p!r} is not an hcltdx recording (.npz or .parquet)")
    with np.load(p, allow_pickle=False) as z:
        is_snap = "records" in z and "metadata" in z
        if not is_snap and ("samples" not in z or "metadata" not in z):
            raise ValueError(f"{p!r} is not an hcltdx recording")
    if is_snap:
        return from_snapshots(p)
    with np.load(p, allow_pickle=False) as z:
        samples = z["samples"]
        meta = json.loads(str(z["metadata"][()]))
    if meta.get("kind") != KIND:
        raise ValueError(f"{p!r} is not an hcltdx recording (kind {meta.get('kind')!r})")
    return Recording(samples, meta)


def from_snapshots(path: "str | os.PathLike[str]", vtl: int = 0) -> Recording:
    """A recording made of a saved snapshot series (``hcltdx snapshot -n N``):
    ``t_ns`` and the VMCS fields of one VTL, one row per snapshot."""
    from hcltdx import snapshot

    records, meta = snapshot.load(path)
    records = np.atleast_1d(records)
    part = f"vmcs_vtl{vtl}"
    if part not in (records.dtype.names or ()):
        raise ValueError(f"{os.fspath(path)!r}: the snapshots hold no VTL{vtl} VMCS fields")
    names = list(records.dtype[part].names or ())
    samples = np.zeros(len(records), dtype=[("t_ns", "<u8")] + [(n, "<u8") for n in names])
    samples["t_ns"] = records["t_ns"]
    for n in names:
        samples[n] = records[part][n]
    meta = dict(meta, vtl=vtl, kind=KIND, fields=names, source="hcltdx.snapshot")
    return Recording(samples, meta)
