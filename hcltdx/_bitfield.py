"""Generic machinery for packed-integer ("bitfield") types and enumerations.

Every value defined with it is an ``int`` subclass, so it compares equal to
plain integers and crosses into C at integer speed.

Bit-field types
---------------
A subclass of :class:`BitField` declares ``_bits_`` (8, 16, 32 or 64) and a
``_layout_`` table of ``(name, lo_bit, width[, type])`` rows that tiles the
storage exactly, lowest bits first. ``type`` is ``bool`` (1-bit fields; the
default for width 1), ``int`` (the default otherwise), an enumeration or
another :class:`BitField` type. Fields named with a leading underscore are
reserved: they cannot be set by keyword, but a raw value with reserved bits
set is accepted, because the hardware may hand such values back and they
must round-trip unchanged.

``T(raw)`` wraps a raw value, ``T(**fields)`` builds one from zero,
``T(base, **fields)`` starts from ``base`` and overrides the given fields.
Each public field ``f`` gets a read property and a ``with_f(value)`` method
returning a new value. A value that does not fit its field raises
``ValueError`` (never truncates); a non-integer raises ``TypeError``.
Reading a field typed with a closed enumeration whose bit pattern has no
enumerator raises ``ValueError``.

Enumerations
------------
:class:`ClosedEnum` is an ``IntEnum`` that only admits its members.
:class:`OpenEnum` plus the :func:`open_enum` decorator gives an ``IntEnum``
that also represents any other value of its storage width (``.name`` is
``None`` for those), mirroring the thin integer wrappers of the original.
"""

from __future__ import annotations

import enum
import operator
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, TypeVar

__all__ = [
    "BitField",
    "ClosedEnum",
    "OpenEnum",
    "open_enum",
]

_E = TypeVar("_E", bound="OpenEnum")
_B = TypeVar("_B", bound="BitField")


def _index(value: object, what: str) -> int:
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"{what}: expected an integer, got {type(value).__name__} {value!r}"
        ) from None


class _EnumMeta(enum.EnumType):
    """Rejects non-integers (``1.0`` would otherwise find member 1)."""

    def __call__(cls, value: Any, *args: Any, **kwargs: Any) -> Any:
        if not args and not kwargs:
            if type(value) is int:
                member = cls._value2member_map_.get(value)
                if member is not None:
                    return member
            elif not isinstance(value, cls):
                value = _index(value, cls.__name__)
        return super().__call__(value, *args, **kwargs)


def _member_loads_as_attribute_loads(meta: type) -> None:
    """Python 3.11's ``EnumType`` defines ``__getattr__`` (kept there for
    members that the class dictionary might not hold; 3.12 removed it). Any
    ``__getattr__`` on a metaclass routes every attribute load on its classes
    through a Python-level hook: ``GuestVtl.VTL0`` cost ~170 ns instead of an
    attribute load. Every member of an ``EnumType`` class is in the class
    dictionary (as itself, or as an ``enum.property`` redirect that returns
    it), so the hook never finds anything the plain lookup misses; the
    metaclass is given type's own lookup back. tests/test_defs.py checks that
    every member of every enumeration still loads as itself."""
    if "__getattr__" not in vars(enum.EnumType):
        return  # nothing to undo (Python >= 3.12)
    from hcltdx import _cabi

    _cabi._plain_class_getattr(meta)


_member_loads_as_attribute_loads(_EnumMeta)


class ClosedEnum(enum.IntEnum, metaclass=_EnumMeta):
    """An integer enumeration that admits only its listed values."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}.{self._name_}"

    __str__ = __repr__


class OpenEnum(enum.IntEnum, metaclass=_EnumMeta):
    """An integer enumeration that also represents unnamed values.

    Subclasses must be decorated with :func:`open_enum` to set their storage
    width. Unnamed values have ``name`` None and repr ``Cls(0x...)``.
    """

    __bits__: ClassVar[int] = 0

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if not isinstance(value, int):
            return None
        bits = cls.__bits__
        if bits == 0:
            raise TypeError(f"{cls.__name__} lacks the @open_enum(bits) decorator")
        if value < 0 or value >> bits:
            raise ValueError(f"{cls.__name__}: {value} does not fit in {bits} bits")
        obj = int.__new__(cls, value)
        obj._name_ = None  # type: ignore[assignment]
        obj._value_ = value
        return obj

    def __repr__(self) -> str:
        if self._name_ is None:
            return f"{type(self).__name__}({int(self):#x})"
        return f"{type(self).__name__}.{self._name_}"

    __str__ = __repr__

    @classmethod
    def names(cls) -> dict[str, int]:
        """Name -> value of every named member, in declaration order."""
        return {m.name: int(m) for m in cls}

    @property
    def is_named(self) -> bool:
        return self._name_ is not None


def open_enum(bits: int) -> Callable[[type[_E]], type[_E]]:
    """Class decorator fixing an :class:`OpenEnum`'s storage width."""

    def apply(cls: type[_E]) -> type[_E]:
        for m in cls:
            if int(m) >> bits:
                raise TypeError(f"{cls.__name__}.{m.name} does not fit in {bits} bits")
        type.__setattr__(cls, "__bits__", bits)
        return cls

    return apply


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or isinstance(value, (enum.Enum, BitField)):
        return repr(value)
    return str(value) if value < 10 else hex(value)


class BitField(int):
    """Base of the packed-integer types (see the module docstring)."""

    __slots__ = ()

    _bits_: ClassVar[int] = 0
    _layout_: ClassVar[tuple[tuple[Any, ...], ...]] = ()

    BITS: ClassVar[int]
    """Storage width in bits."""
    FIELDS: ClassVar[Mapping[str, tuple[int, int]]]
    """Every field, reserved ones included: name -> (lo_bit, width)."""
    FIELD_TYPES: ClassVar[Mapping[str, type]]
    """Every field: name -> the type a read returns."""
    PUBLIC_FIELDS: ClassVar[tuple[str, ...]]
    """Names settable by keyword and ``with_*``, in bit order."""
    RESERVED_MASK: ClassVar[int]
    """Bits covered by reserved (underscore) fields."""

    _max: ClassVar[int]
    _setters: ClassVar[dict[str, tuple[int, int, Callable[[Any], int]]]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_layout_" not in cls.__dict__:
            return
        bits = cls._bits_
        if bits not in (8, 16, 32, 64):
            raise TypeError(f"{cls.__name__}: storage width {bits} is not 8/16/32/64")
        annotations = cls.__dict__.get("__annotations__", {})
        fields: dict[str, tuple[int, int]] = {}
        types: dict[str, type] = {}
        setters: dict[str, tuple[int, int, Callable[[Any], int]]] = {}
        public: list[str] = []
        reserved_mask = 0
        next_bit = 0
        for row in cls._layout_:
            name, lo, width = row[0], row[1], row[2]
            typ = row[3] if len(row) > 3 else (bool if width == 1 else int)
            if lo != next_bit or width <= 0:
                raise TypeError(f"{cls.__name__}.{name}: layout must tile bits in order")
            next_bit = lo + width
            if typ is bool and width != 1:
                raise TypeError(f"{cls.__name__}.{name}: bool fields are 1 bit wide")
            if name in _RESERVED_NAMES or name in fields:
                raise TypeError(f"{cls.__name__}.{name}: name clashes with an existing attribute")
            fields[name] = (lo, width)
            types[name] = typ
            mask = (1 << width) - 1
            setattr(cls, name, property(_make_getter(cls, name, lo, mask, typ)))
            if name.startswith("_"):
                reserved_mask |= mask << lo
                continue
            if name not in annotations:
                raise TypeError(f"{cls.__name__}.{name}: public field needs an annotation")
            conv = _make_converter(cls, name, width, typ)
            setters[name] = (lo, mask, conv)
            public.append(name)
            setattr(cls, f"with_{name}", _make_with(name, lo, mask, conv))
        if next_bit != bits:
            raise TypeError(f"{cls.__name__}: layout covers {next_bit} of {bits} bits")
        cls.BITS = bits
        cls.FIELDS = fields
        cls.FIELD_TYPES = types
        cls.PUBLIC_FIELDS = tuple(public)
        cls.RESERVED_MASK = reserved_mask
        cls._max = (1 << bits) - 1
        cls._setters = setters

    def __new__(cls: type[_B], raw: Any = 0, /, **fields: Any) -> _B:
        if not hasattr(cls, "_max"):
            raise TypeError(f"{cls.__name__} declares no layout")
        if type(raw) is not int:
            raw = _index(raw, f"{cls.__name__} raw value")
        if raw < 0 or raw > cls._max:
            raise ValueError(
                f"{cls.__name__}: raw value {raw:#x} does not fit in {cls._bits_} bits"
                if raw >= 0
                else f"{cls.__name__}: raw value {raw} is negative"
            )
        if fields:
            setters = cls._setters
            for key, value in fields.items():
                s = setters.get(key)
                if s is None:
                    if key in cls.FIELDS:
                        raise TypeError(f"{cls.__name__}: field {key!r} is reserved")
                    raise TypeError(f"{cls.__name__} has no field {key!r}")
                lo, mask, conv = s
                raw = (raw & ~(mask << lo)) | (conv(value) << lo)
        return int.__new__(cls, raw)

    def replace(self: _B, **fields: Any) -> _B:
        """A copy with the given public fields changed."""
        return type(self)(int(self), **fields)

    def fields(self) -> dict[str, Any]:
        """The public fields as a dict (the keywords that rebuild the value,
        together with the reserved bits)."""
        return {name: getattr(self, name) for name in self.PUBLIC_FIELDS}

    def __repr__(self) -> str:
        cls = type(self)
        parts = []
        reserved = self & cls.RESERVED_MASK
        if reserved:
            parts.append(hex(reserved))
        for name in cls.PUBLIC_FIELDS:
            lo, width = cls.FIELDS[name]
            raw = (self >> lo) & ((1 << width) - 1)
            if not raw:
                continue
            try:
                value = getattr(self, name)
            except ValueError:
                value = raw
            parts.append(f"{name}={_fmt(value)}")
        return f"{cls.__name__}({', '.join(parts)})"

    __str__ = __repr__

    if TYPE_CHECKING:
        # with_<field>() methods are generated per class.
        def __getattr__(self: _B, name: str) -> Callable[[Any], _B]: ...


def _make_getter(cls: type, name: str, lo: int, mask: int, typ: Any) -> Callable[[Any], Any]:
    if typ is bool:
        def get_bool(self: int) -> bool:
            return bool((self >> lo) & 1)
        return get_bool
    if typ is int:
        def get_int(self: int) -> int:
            return (self >> lo) & mask
        return get_int
    if issubclass(typ, enum.Enum) and not issubclass(typ, OpenEnum):
        where = f"{cls.__name__}.{name}"

        members = typ._value2member_map_

        def get_closed(self: int) -> Any:
            v = (self >> lo) & mask
            member = members.get(v)
            if member is None:
                raise ValueError(f"{where}: {v} is not a valid {typ.__name__}")
            return member
        return get_closed

    def get_typed(self: int) -> Any:
        return typ((self >> lo) & mask)
    return get_typed


def _make_converter(cls: type, name: str, width: int, typ: Any) -> Callable[[Any], int]:
    where = f"{cls.__name__}.{name}"
    mask = (1 << width) - 1
    unit = "bit" if width == 1 else "bits"
    closed = issubclass(typ, enum.Enum) and not issubclass(typ, OpenEnum)
    members = typ._value2member_map_ if closed else {}

    def conv(value: Any) -> int:
        v: int = value if type(value) is int else _index(value, where)
        if v < 0:
            raise ValueError(f"{where}: {v} is negative")
        if v > mask:
            raise ValueError(f"{where}: {v} does not fit in {width} {unit}")
        if closed and v not in members:
            raise ValueError(f"{where}: {v} is not a valid {typ.__name__}")
        return v

    return conv


def _make_with(name: str, lo: int, mask: int, conv: Callable[[Any], int]) -> Callable[..., Any]:
    clear = ~(mask << lo)

    def with_field(self: BitField, value: Any) -> Any:
        return int.__new__(type(self), (self & clear) | (conv(value) << lo))

    with_field.__name__ = f"with_{name}"
    with_field.__doc__ = f"A copy with {name} set to value."
    return with_field


_RESERVED_NAMES = frozenset(dir(int)) | frozenset(vars(BitField))
