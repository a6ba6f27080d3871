"""Exceptions raised by hcltdx.

Where the Rust original panics (a failing VMCS access, a page accepted twice,
a failed read-back check), hcltdx raises one of these instead; nothing is
lost and the process keeps running.
"""

from __future__ import annotations

import errno as _errno
from typing import Any, NamedTuple, Optional

__all__ = [
    "HclError",
    "TdCallError",
    "VmcsAccessError",
    "AcceptPagesError",
    "AcceptPagesBusy",
    "AcceptPagesInvalid",
    "AcceptPagesAttributes",
    "AcceptPagesUnknown",
    "PageAlreadyAcceptedError",
    "SetPageAttributesError",
    "PageAttributesVerifyError",
    "BatchError",
    "PollInterrupted",
    "BatchInterrupted",
    "RecorderFull",
    "ReplayDivergence",
    "TdcallOutput",
]


class TdcallOutput(NamedTuple):
    """Registers after one TDCALL, as the seed's ``TdcallOutput``."""

    rax: Any  # TdCallResult
    rcx: int
    rdx: int
    r8: int
    r10: int
    r11: int


def _rebuild(cls, args, state):
    """Unpickles an hcltdx exception: built without its ``__init__`` (whose
    keyword-only arguments the pickled ``args`` do not carry), then given the
    built-in base's arguments (errno and strerror of an OSError) and every
    attribute it had."""
    obj = cls.__new__(cls, *args)
    for base in cls.__mro__:
        if base.__module__ == "builtins":
            base.__init__(obj, *args)
            break
    obj.__dict__.update(state)
    return obj


class _Picklable:
    # The default reduction calls cls(*self.args), which these classes'
    # signatures do not take: unpickling (a multiprocessing worker's
    # exception) and copy.copy would raise TypeError instead.
    def __reduce__(self):
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


class HclError(_Picklable, Exception):
    """Base class of hcltdx's own errors. Every hcltdx exception can be
    pickled and copied with all its attributes."""


def _leaf_name(leaf: int) -> str:
    from hcltdx.tdx import TdCallLeaf

    name = TdCallLeaf(leaf).name
    return name if name else f"leaf {leaf:#x}"


class TdCallError(HclError):
    """The TDX module answered a TDCALL with a failing status.

    ``result`` is the whole RAX (a ``TdCallResult``); ``code`` and ``details``
    are its halves. ``leaf``, ``vp``, ``field`` and ``vtl`` say what was asked.
    """

    def __init__(
        self,
        result: int,
        leaf: int,
        *,
        vp: Optional[int] = None,
        field: Any = None,
        vtl: Optional[int] = None,
        what: Optional[str] = None,
    ) -> None:
        from hcltdx.tdx import TdCallLeaf, TdCallResult

        self.result = TdCallResult(result)
        self.code = self.result.code
        self.details = self.result.details
        self.leaf = TdCallLeaf(leaf)
        self.vp = vp
        self.field = field
        self.vtl = vtl
        self.what = what
        super().__init__(self._message())

    def _message(self) -> str:
        code = self.code
        name = code.name or "unknown status"
        parts = [f"{_leaf_name(self.leaf)} failed: {name} ({int(code):#010x}), details {self.details:#x}"]
        if self.what:
            parts.insert(0, f"{self.what}:")
        ctx = []
        if self.field is not None:
            fname = getattr(self.field, "name", None)
            ctx.append(f"field {fname}" if fname else f"field {int(self.field):#x}")
        if self.vtl is not None:
            ctx.append(f"vtl {int(self.vtl)}")
        if self.vp is not None:
            ctx.append(f"vp {self.vp}")
        if ctx:
            parts.append("(" + ", ".join(ctx) + ")")
        return " ".join(parts)


class VmcsAccessError(TdCallError):
    """A VP.RD/VP.WR of a VMCS field, MSR bitmap word or L2 control failed
    (the seed panics with "fatal vmcs access failure")."""


class AcceptPagesError(TdCallError):
    """``tdx_accept_pages`` stopped at a page.

    ``range`` is the requested range, ``gpa`` the page (or 2 MiB chunk) that
    failed, ``level`` the level tried, and ``accepted`` the prefix of the range
    that was accepted before the failure: resuming at ``accepted.end`` never
    meets a page accepted twice. ``attributes_set`` (None when no attributes
    were asked for) is the prefix whose attributes were also written; it
    falls short of ``accepted`` by the chunk at ``gpa`` when only the
    attribute step of that chunk failed (:class:`AcceptPagesAttributes`).

    The other failures of ``tdx_accept_pages`` (an ``OSError`` of the
    transport, a :class:`PageAttributesVerifyError`, an exception raised by a
    signal handler) carry the same ``range``, ``accepted`` and
    ``attributes_set`` attributes.
    """

    def __init__(self, result: int, leaf: int, *, range: Any, gpa: int, level: int,
                 accepted: Any, attributes_set: Any = None, what: Optional[str] = None) -> None:
        self.range = range
        self.gpa = gpa
        self.level = level
        self.accepted = accepted
        self.attributes_set = attributes_set
        super().__init__(result, leaf, what=what)

    def _message(self) -> str:
        size = "2 MiB" if self.level == 1 else "4 KiB"
        msg = (f"{super()._message()} at gpa {self.gpa:#x} ({size}) while accepting {self.range}; "
               f"accepted so far: {self.accepted}")
        if self.attributes_set is not None and self.attributes_set != self.accepted:
            msg += f" (attributes set on {self.attributes_set})"
        return msg


class AcceptPagesBusy(AcceptPagesError):
    """OPERAND_BUSY: the secure EPT was contended; retrying may succeed."""


class AcceptPagesInvalid(AcceptPagesError):
    """OPERAND_INVALID: the range is not private TD memory the module accepts."""


class AcceptPagesAttributes(AcceptPagesError):
    """Accepting succeeded but setting the page attributes afterwards failed:
    the chunk at ``gpa`` is accepted (inside ``accepted``) without its
    attributes (outside ``attributes_set``)."""


class AcceptPagesUnknown(AcceptPagesError):
    """Any other failing status (including PAGE_SIZE_MISMATCH at 4 KiB)."""


class PageAlreadyAcceptedError(AcceptPagesError):
    """PAGE_ALREADY_ACCEPTED: a page in the range was accepted before (the
    seed panics: accepting twice means the caller lost track of memory)."""


class SetPageAttributesError(TdCallError):
    """``tdx_set_page_attributes`` stopped at a page; ``done`` is the prefix of
    the range whose attributes were written."""

    def __init__(self, result: int, leaf: int, *, range: Any, gpa: int, level: int,
                 done: Any, what: Optional[str] = None) -> None:
        self.range = range
        self.gpa = gpa
        self.level = level
        self.done = done
        super().__init__(result, leaf, what=what)

    def _message(self) -> str:
        size = "2 MiB" if self.level == 1 else "4 KiB"
        return (
            f"{super()._message()} at gpa {self.gpa:#x} ({size}) while setting attributes of "
            f"{self.range}; done so far: {self.done}"
        )


class PageAttributesVerifyError(HclError):
    """The read-back after ATTR.WR (``verify=True``) did not match what was
    written (the seed asserts this in debug builds). ``range`` and
    ``accepted`` (accept) or ``done`` (set-attributes) say how far the loop
    got."""


class BatchError(VmcsAccessError):
    """A VP.RD/VP.WR of a batch failed part-way. ``index`` is the position of
    the failing field in the batch, ``field`` the field, ``values`` the values
    read (or, for a write, the previous values) of the fields before it. For
    a write, the fields before ``index`` were written."""

    def __init__(self, result: int, leaf: int, *, index: int, values: Any, vp: Optional[int] = None,
                 field: Any = None, vtl: Optional[int] = None, total: Optional[int] = None,
                 what: Optional[str] = None) -> None:
        self.index = index
        self.values = values
        self.total = total
        super().__init__(result, leaf, vp=vp, field=field, vtl=vtl, what=what)

    def _message(self):
        of = f" of {self.total}" if self.total is not None else ""
        return f"{super()._message()} at batch index {self.index}{of}"


class PollInterrupted(_Picklable, KeyboardInterrupt):
    """Ctrl-C (or another KeyboardInterrupt from a signal handler) stopped
    :func:`poll_vmcs`. ``samples`` holds the rows recorded before it,
    ``taken`` the number of samples taken."""

    def __init__(self, samples, taken):
        self.samples = samples
        self.taken = taken
        super().__init__(f"poll interrupted after {taken} samples ({len(samples)} rows kept)")


class BatchInterrupted(_Picklable, KeyboardInterrupt):
    """Ctrl-C (or another KeyboardInterrupt from a signal handler) stopped
    ``read_vmcs_batch``/``write_vmcs_batch`` part-way. ``index`` fields were
    done (for a write: written), ``values`` holds their values read (or, for
    a write, their previous values), ``total`` the batch's length."""

    def __init__(self, index, values, total):
        self.index = index
        self.values = values
        self.total = total
        super().__init__(f"batch interrupted after {index} of {total} fields")


class RecorderFull(HclError):
    """:meth:`Recorder.take` was called with every slot filled."""


class ReplayDivergence(HclError, OSError):
    """A replayed Hcl received a call the recording does not have at that
    position (or more calls than were recorded). An ``OSError`` with errno
    ``EPROTO``; ``position`` is the index of the recorded call expected,
    ``expected`` that record (None past the end), ``got`` the call made."""

    def __init__(self, position, expected, got, message):
        OSError.__init__(self, _errno.EPROTO, message)
        self.position = position
        self.expected = expected
        self.got = got

    def __str__(self):
        return self.strerror
