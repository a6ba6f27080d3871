from os import PathLike
from typing import Any, Callable, Iterable, Mapping, Sequence, SupportsIndex, final

import numpy as np
import numpy.typing as npt
from typing_extensions import disjoint_base

from hcltdx._core import Hcl, TdxRunner
from hcltdx.errors import BatchError as BatchError
from hcltdx.errors import BatchInterrupted as BatchInterrupted
from hcltdx.errors import PollInterrupted as PollInterrupted
from hcltdx.errors import RecorderFull as RecorderFull
from hcltdx.errors import ReplayDivergence as ReplayDivergence

_Fields = Sequence[SupportsIndex] | npt.NDArray[np.integer[Any]]
_Vmcs = None | str | _Fields | Mapping[SupportsIndex, _Fields | str]

__all__ = [
    "BatchError",
    "BatchInterrupted",
    "PollInterrupted",
    "RecorderFull",
    "ReplayDivergence",
    "Recorder",
    "ReplayState",
    "PRIVATE_REGS_DTYPE",
    "poll_dtype",
    "snapshot_dtype",
    "read_vmcs_batch",
    "write_vmcs_batch",
    "poll_vmcs",
    "snapshot",
    "recorder",
    "replay",
    "field_label",
]

PRIVATE_REGS_DTYPE: np.dtype[np.void]

@final
class Recorder:
    def take(self) -> int: ...
    @property
    def records(self) -> npt.NDArray[np.void]: ...
    @property
    def capacity(self) -> int: ...
    @property
    def dtype(self) -> np.dtype[np.void]: ...
    @property
    def full(self) -> bool: ...
    @property
    def metadata(self) -> dict[str, Any]: ...
    def clear(self) -> None: ...
    def __len__(self) -> int: ...

@final
class ReplayState:
    def explain_error(self, err: int) -> ReplayDivergence | None: ...
    @property
    def calls(self) -> npt.NDArray[np.void]: ...
    @property
    def vp_count(self) -> int: ...
    @property
    def position(self) -> int: ...
    @property
    def total(self) -> int: ...
    @property
    def remaining(self) -> int: ...
    @property
    def skipped(self) -> int: ...
    @property
    def strict(self) -> bool: ...
    @property
    def diverged(self) -> bool: ...
    @property
    def expected(self) -> np.void | None: ...
    @property
    def got(self) -> dict[str, Any] | None: ...
    def check(self) -> None: ...
    def assert_complete(self) -> None: ...
    def rewind(self) -> None: ...

def field_label(raw: SupportsIndex) -> str: ...
def poll_dtype(fields: _Fields) -> np.dtype[np.void]: ...
def snapshot_dtype(
    *,
    context: bool = True,
    apic: bool = True,
    private_regs: bool = True,
    vmcs: _Vmcs = None,
    tsc_deadline_layout: bool = False,
) -> np.dtype[np.void]: ...
def read_vmcs_batch(
    runner: TdxRunner, vtl: SupportsIndex, fields: _Fields, out: npt.NDArray[np.uint64] | None = None
) -> npt.NDArray[np.uint64]: ...
def write_vmcs_batch(
    runner: TdxRunner,
    vtl: SupportsIndex,
    fields: _Fields,
    masks: Iterable[SupportsIndex] | npt.NDArray[np.integer[Any]],
    values: Iterable[SupportsIndex] | npt.NDArray[np.integer[Any]],
) -> npt.NDArray[np.uint64]: ...
def poll_vmcs(
    runner: TdxRunner,
    vtl: SupportsIndex,
    fields: _Fields,
    samples: SupportsIndex,
    interval_ns: SupportsIndex = 0,
    out: npt.NDArray[np.void] | None = None,
    *,
    progress: Callable[[int, int], object] | None = None,
    changes_only: bool = False,
) -> npt.NDArray[np.void]: ...
def snapshot(
    runner: TdxRunner, *, context: bool = True, apic: bool = True, private_regs: bool = True, vmcs: _Vmcs = None
) -> npt.NDArray[np.void]: ...
def recorder(runner: TdxRunner, capacity: SupportsIndex, **snapshot_kwargs: Any) -> Recorder: ...
def replay(
    source: Any,
    *,
    strict: bool = True,
    vp_count: SupportsIndex | None = None,
    tsc_deadline_layout: bool | None = None,
) -> Hcl: ...
