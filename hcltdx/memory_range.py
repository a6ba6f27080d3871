"""``MemoryRange``: a 4 KiB-aligned guest-physical byte range [start, end)."""

from __future__ import annotations

from typing import Any, ClassVar, Iterator

from hcltdx._bitfield import _index

__all__ = ["MemoryRange", "PAGE_SIZE"]

PAGE_SIZE = 4096
_PAGE_MASK = PAGE_SIZE - 1
_LIMIT = 1 << 64


def _address(value: Any, what: str) -> int:
    v = _index(value, f"MemoryRange {what}")
    if v < 0:
        raise ValueError(f"MemoryRange {what} {v} is negative")
    if v >= _LIMIT:
        raise ValueError(f"MemoryRange {what} {v:#x} does not fit in 64 bits")
    if v & _PAGE_MASK:
        raise ValueError(f"MemoryRange {what} {v:#x} is not 4 KiB aligned")
    return v


class MemoryRange:
    """An immutable, hashable, page-aligned byte range [start, end).

    Both ends are multiples of 4096, below 2**64, and start <= end.
    Displays as ``0x<start>-0x<end>`` in lowercase hex. There is no
    ``__len__`` (a range may exceed ``sys.maxsize``); use :attr:`len`.
    """

    __slots__ = ("_start", "_end")

    EMPTY: ClassVar[MemoryRange]

    _start: int
    _end: int

    def __init__(self, start: int, end: int) -> None:
        s = _address(start, "start")
        e = _address(end, "end")
        if e < s:
            raise ValueError(f"MemoryRange end {e:#x} is below start {s:#x}")
        object.__setattr__(self, "_start", s)
        object.__setattr__(self, "_end", e)

    @classmethod
    def from_4k_gpn_range(cls, start_gpn: int, end_gpn: int) -> MemoryRange:
        """The range covering 4 KiB pages [start_gpn, end_gpn)."""
        s = _index(start_gpn, "MemoryRange start_gpn")
        e = _index(end_gpn, "MemoryRange end_gpn")
        if s < 0 or e < 0:
            raise ValueError(f"MemoryRange page numbers must be non-negative: {s}, {e}")
        return cls(s * PAGE_SIZE, e * PAGE_SIZE)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("MemoryRange is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("MemoryRange is immutable")

    def __reduce__(self) -> tuple[Any, ...]:
        return (MemoryRange, (self._start, self._end))

    @property
    def start(self) -> int:
        return self._start

    @property
    def end(self) -> int:
        return self._end

    @property
    def len(self) -> int:
        """Length in bytes."""
        return self._end - self._start

    @property
    def is_empty(self) -> bool:
        return self._start == self._end

    @property
    def start_4k_gpn(self) -> int:
        return self._start // PAGE_SIZE

    @property
    def end_4k_gpn(self) -> int:
        return self._end // PAGE_SIZE

    @property
    def page_count(self) -> int:
        """Number of 4 KiB pages."""
        return (self._end - self._start) // PAGE_SIZE

    def contains(self, other: MemoryRange) -> bool:
        """Whether ``other`` lies entirely inside this range."""
        if not isinstance(other, MemoryRange):
            raise TypeError(f"expected a MemoryRange, got {type(other).__name__}")
        return self._start <= other._start and other._end <= self._end

    def contains_addr(self, addr: int) -> bool:
        """Whether byte address ``addr`` lies in [start, end)."""
        a = _index(addr, "address")
        return self._start <= a < self._end

    def overlaps(self, other: MemoryRange) -> bool:
        """Whether the two ranges share at least one byte."""
        if not isinstance(other, MemoryRange):
            raise TypeError(f"expected a MemoryRange, got {type(other).__name__}")
        return self._start < other._end and other._start < self._end

    def iter_4k_gpns(self) -> Iterator[int]:
        """The 4 KiB page numbers of the range, in order."""
        return iter(range(self.start_4k_gpn, self.end_4k_gpn))

    def _key(self) -> tuple[int, int]:
        return (self._start, self._end)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MemoryRange):
            return NotImplemented
        return self._key() == other._key()

    def __lt__(self, other: MemoryRange) -> bool:
        if not isinstance(other, MemoryRange):
            return NotImplemented
        return self._key() < other._key()

    def __le__(self, other: MemoryRange) -> bool:
        if not isinstance(other, MemoryRange):
            return NotImplemented
        return self._key() <= other._key()

    def __gt__(self, other: MemoryRange) -> bool:
        if not isinstance(other, MemoryRange):
            return NotImplemented
        return self._key() > other._key()

    def __ge__(self, other: MemoryRange) -> bool:
        if not isinstance(other, MemoryRange):
            return NotImplemented
        return self._key() >= other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        return f"{self._start:#x}-{self._end:#x}"

    # Same text as str(), like the Debug output of the Rust type.
    __repr__ = __str__


MemoryRange.EMPTY = MemoryRange(0, 0)
