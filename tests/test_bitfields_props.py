"""Property tests over every bit-field type the definitions layer exports."""

import enum

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hcltdx import protocol, tdx, vmx, x86
from hcltdx._bitfield import BitField, OpenEnum


def _all_bitfield_types():
    found = {}
    for mod in (tdx, vmx, x86, protocol):
        for name in mod.__all__:
            obj = getattr(mod, name)
            if isinstance(obj, type) and issubclass(obj, BitField) and obj is not BitField:
                found[obj.__name__] = obj
    return [found[k] for k in sorted(found)]


TYPES = _all_bitfield_types()


def _is_closed(typ):
    return isinstance(typ, type) and issubclass(typ, enum.Enum) and not issubclass(typ, OpenEnum)


def test_enumeration_found_the_types():
    names = {t.__name__ for t in TYPES}
    for expected in (
        "TdCallResult", "TdxExtendedFieldCode", "GpaVmAttributes", "GpaVmAttributesMask",
        "TdgMemPageGpaAttr", "TdgMemPageAcceptRcx", "TdgMemPageAttrWriteRcx",
        "TdgMemPageAttrWriteR8", "TdgMemPageAttrGpaMappingReadRcxResult", "TdxL2Ctls",
        "TdxVmFlags", "TdGlaVmAndFlags", "TdxGlaListInfo", "TdxVpEnterRaxResult",
        "TdxInstructionInfo", "TdxExtendedExitQualification", "VmcsField", "VmxExit",
        "VmxSegmentAttributes", "ExitQualificationIo", "VmxEptExitQualification",
        "CrAccessQualification", "InterruptionInformation", "Interruptibility",
        "ProcessorControls", "SecondaryProcessorControls", "RFlags", "TdxVpStateFlags",
        "HclIntrOffloadFlags", "EnterModes", "HvInputVtl",
    ):
        assert expected in names


def _field_value(cls, name):
    """Strategy for a valid value of one field."""
    lo, width = cls.FIELDS[name]
    typ = cls.FIELD_TYPES[name]
    if _is_closed(typ):
        return st.sampled_from([int(m) for m in typ])
    return st.integers(0, (1 << width) - 1)


def _raw_value(cls):
    """Strategy for a raw value whose closed-enum fields hold valid patterns."""
    closed = [n for n in cls.FIELDS if _is_closed(cls.FIELD_TYPES[n])]

    @st.composite
    def build(draw):
        raw = draw(st.integers(0, (1 << cls.BITS) - 1))
        for name in closed:
            lo, width = cls.FIELDS[name]
            v = draw(_field_value(cls, name))
            raw = (raw & ~(((1 << width) - 1) << lo)) | (v << lo)
        return raw

    return build()


@pytest.mark.parametrize("cls", TYPES, ids=lambda t: t.__name__)
def test_layout_tiles_storage(cls):
    covered = 0
    for name, (lo, width) in cls.FIELDS.items():
        mask = ((1 << width) - 1) << lo
        assert covered & mask == 0, name
        covered |= mask
    assert covered == (1 << cls.BITS) - 1


@pytest.mark.parametrize("cls", TYPES, ids=lambda t: t.__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_raw_round_trips_through_fields(cls, data):
    raw = data.draw(_raw_value(cls))
    v = cls(raw)
    assert v == raw
    for name, (lo, width) in cls.FIELDS.items():
        assert int(getattr(v, name)) == (raw >> lo) & ((1 << width) - 1), name
    fields = v.fields()
    assert set(fields) == set(cls.PUBLIC_FIELDS)
    assert cls(raw & cls.RESERVED_MASK, **fields) == raw
    assert cls(**fields) == raw & ~cls.RESERVED_MASK
    assert int(cls(raw)) == raw and type(cls(raw)) is cls


@pytest.mark.parametrize("cls", TYPES, ids=lambda t: t.__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_with_chain_reads_back(cls, data):
    names = data.draw(st.permutations(cls.PUBLIC_FIELDS))
    chosen = {n: data.draw(_field_value(cls, n)) for n in names}
    v = cls()
    for n in names:
        v = getattr(v, f"with_{n}")(chosen[n])
        assert type(v) is cls
    for n, value in chosen.items():
        assert int(getattr(v, n)) == value, n
    assert v == cls(**chosen)
    assert v & cls.RESERVED_MASK == 0


@pytest.mark.parametrize("cls", TYPES, ids=lambda t: t.__name__)
def test_value_one_bit_too_wide_is_rejected(cls):
    for name in cls.PUBLIC_FIELDS:
        lo, width = cls.FIELDS[name]
        too_big = 1 << width
        with pytest.raises(ValueError, match=f"{cls.__name__}.{name}"):
            cls(**{name: too_big})
        with pytest.raises(ValueError, match=f"{cls.__name__}.{name}"):
            getattr(cls(), f"with_{name}")(too_big)
    with pytest.raises(ValueError):
        cls(1 << cls.BITS)


@pytest.mark.parametrize(
    "layout, annotations",
    [
        ((("a", 0, 4),), {"a": int}),  # covers 4 of 8 bits
        ((("a", 0, 4), ("b", 5, 3)), {"a": int, "b": int}),  # gap at bit 4
        ((("a", 0, 8),), {}),  # public field without annotation
        ((("real", 0, 8),), {"real": int}),  # shadows an int attribute
        ((("a", 0, 2, bool), ("_r", 2, 6)), {"a": bool}),  # 2-bit bool
    ],
)
def test_bad_layouts_are_refused_at_definition(layout, annotations):
    with pytest.raises(TypeError):
        type("Bad", (BitField,), {"_bits_": 8, "_layout_": layout, "__annotations__": annotations})
