"""The numpy dtypes of hcltdx.abi against the compiled C header and against
the literal numbers of docs/tdx-abi.md (sections 2.2, 2.5, 3 and 8.5/8.6)."""

import numpy as np
import pytest

from hcltdx import _cabi, abi, protocol

C_TO_DTYPE = {
    "mshv_tdcall": abi.MSHV_TDCALL_DTYPE,
    "hcltdx_fxsave": abi.FXSAVE_DTYPE,
    "hcltdx_apic_register": abi.APIC_REGISTER_DTYPE,
    "hcltdx_apic_page": abi.APIC_PAGE_DTYPE,
    "tdx_tdg_vp_enter_exit_info": abi.EXIT_INFO_DTYPE,
    "tdx_vp_state": abi.VP_STATE_DTYPE,
    "tdx_l2_enter_guest_state": abi.ENTER_GUEST_STATE_DTYPE,
    "tdx_vp_context": abi.TDX_VP_CONTEXT_DTYPE,
    "tdx_l2_tsc_deadline_state": abi.TSC_DEADLINE_DTYPE,
    "tdx_vp_context_tsc_deadline": abi.TDX_VP_CONTEXT_TSC_DEADLINE_DTYPE,
    "hcl_run": abi.RUN_PAGE_DTYPE,
}

C_LAYOUT = _cabi.c_layout()


def test_every_c_struct_has_a_dtype():
    assert set(C_LAYOUT) == set(C_TO_DTYPE)


@pytest.mark.parametrize("cname", sorted(C_TO_DTYPE))
def test_dtype_matches_c_layout(cname):
    c = C_LAYOUT[cname]
    dt = C_TO_DTYPE[cname]
    assert dt.itemsize == c["__size__"]
    c_fields = {k: v for k, v in c.items() if k != "__size__"}
    assert set(dt.names) == set(c_fields)
    for name, (offset, size) in c_fields.items():
        fdt, foff = dt.fields[name][:2]
        assert (foff, fdt.itemsize) == (offset, size), name


@pytest.mark.parametrize(
    "dt",
    [abi.RUN_PAGE_DTYPE, abi.RUN_PAGE_TSC_DEADLINE_DTYPE],
)
def test_run_page_literal_offsets(dt):
    # Section 3.1, hex offsets as printed in the table.
    expected = {
        "cancel": (0x000, 4),
        "vtl_ret_action_size": (0x004, 4),
        "flags": (0x008, 4),
        "scan_proxy_irr": (0x00C, 1),
        "offload_flags": (0x00D, 1),
        "pad": (0x00E, 1),
        "mode": (0x00F, 1),
        "exit_message": (0x010, 256),
        "context": (0x110, 1024),
        "vtl_ret_actions": (0x510, 256),
        "proxy_irr": (0x610, 32),
        "target_vtl": (0x630, 1),
        "proxy_irr_blocked": (0x634, 32),
        "proxy_irr_exit": (0x654, 32),
    }
    assert dt.itemsize == 1652
    for name, (off, size) in expected.items():
        assert (dt.fields[name][1], dt.fields[name][0].itemsize) == (off, size), name


def _page_offset(dt, path):
    off = 0
    for name in path:
        sub, o = dt.fields[name][:2]
        off += o
        dt = sub
    return off


def test_run_page_nested_offsets_from_spec():
    dt = abi.RUN_PAGE_DTYPE
    # Sections 3.2-3.6 and 7.15 ("Page" columns).
    assert _page_offset(dt, ["context", "exit_info"]) == 272
    assert _page_offset(dt, ["context", "exit_info", "r13"]) == 352
    assert _page_offset(dt, ["context", "pad1"]) == 360
    assert _page_offset(dt, ["context", "vp_state"]) == 408
    assert _page_offset(dt, ["context", "vp_state", "cr2"]) == 448
    assert _page_offset(dt, ["context", "vp_state", "msr_tsc_aux"]) == 456
    assert _page_offset(dt, ["context", "vp_state", "flags"]) == 464
    assert _page_offset(dt, ["context", "pad2"]) == 472
    assert _page_offset(dt, ["context", "entry_rcx"]) == 504
    assert _page_offset(dt, ["context", "gpr_list"]) == 512
    assert _page_offset(dt, ["context", "gpr_list", "rflags"]) == 640
    assert _page_offset(dt, ["context", "gpr_list", "rip"]) == 648
    assert _page_offset(dt, ["context", "gpr_list", "ssp"]) == 656
    assert _page_offset(dt, ["context", "gpr_list", "rvi"]) == 664
    assert _page_offset(dt, ["context", "gpr_list", "svi"]) == 665
    assert _page_offset(dt, ["context", "pad3"]) == 672
    assert _page_offset(dt, ["context", "fx_state"]) == 768
    assert _page_offset(dt, ["context", "pad4"]) == 1280


def test_tsc_deadline_variant_from_spec():
    # Section 10.3: block at context 400 / page 672, pad3 shrinks to 80.
    dt = abi.TDX_VP_CONTEXT_TSC_DEADLINE_DTYPE
    assert dt.itemsize == 1024
    assert dt.fields["l2_tsc_deadline"][1] == 400
    assert dt.fields["l2_tsc_deadline"][0].itemsize == 16
    assert dt.fields["pad3"][1] == 416
    assert dt.fields["pad3"][0].itemsize == 80
    assert dt.fields["fx_state"][1] == 496
    assert _page_offset(abi.RUN_PAGE_TSC_DEADLINE_DTYPE, ["context", "l2_tsc_deadline"]) == 672
    t = abi.TSC_DEADLINE_DTYPE
    assert (t.fields["deadline"][1], t.fields["update_deadline"][1]) == (0, 8)
    assert abi.run_page_dtype(True) is abi.RUN_PAGE_TSC_DEADLINE_DTYPE
    assert abi.run_page_dtype(False) is abi.RUN_PAGE_DTYPE
    with pytest.raises(TypeError):
        abi.run_page_dtype(1)


def test_struct_sizes_from_spec():
    assert abi.MSHV_TDCALL_DTYPE.itemsize == 56
    assert abi.FXSAVE_DTYPE.itemsize == 512
    assert abi.APIC_REGISTER_DTYPE.itemsize == 16
    assert abi.APIC_PAGE_DTYPE.itemsize == 4096
    assert abi.EXIT_INFO_DTYPE.itemsize == 88
    assert abi.VP_STATE_DTYPE.itemsize == 64
    assert abi.ENTER_GUEST_STATE_DTYPE.itemsize == 160
    assert abi.TDX_VP_CONTEXT_DTYPE.itemsize == 1024
    assert abi.HV_MESSAGE_DTYPE.itemsize == 256


def test_fxsave_offsets_from_spec():
    dt = abi.FXSAVE_DTYPE
    expected = {
        "fcw": 0, "fsw": 2, "ftw": 4, "reserved": 5, "fop": 6, "fip": 8,
        "fdp": 16, "mxcsr": 24, "mxcsr_mask": 28, "st": 32, "xmm": 160,
        "reserved2": 416, "unused": 464,
    }
    assert {n: dt.fields[n][1] for n in dt.names} == expected
    assert dt.fields["st"][0].shape == (8, 16)
    assert dt.fields["xmm"][0].shape == (16, 16)


def test_apic_page_offsets_from_spec():
    dt = abi.APIC_PAGE_DTYPE
    # Section 3.8: (first byte offset, slot count).
    expected = {
        "reserved_0": (0x000, 2), "id": (0x020, 1), "version": (0x030, 1),
        "reserved_4": (0x040, 4), "tpr": (0x080, 1), "apr": (0x090, 1),
        "ppr": (0x0A0, 1), "eoi": (0x0B0, 1), "rrd": (0x0C0, 1),
        "ldr": (0x0D0, 1), "dfr": (0x0E0, 1), "svr": (0x0F0, 1),
        "isr": (0x100, 8), "tmr": (0x180, 8), "irr": (0x200, 8),
        "esr": (0x280, 1), "reserved_29": (0x290, 6), "lvt_cmci": (0x2F0, 1),
        "icr": (0x300, 2), "lvt_timer": (0x320, 1), "lvt_thermal": (0x330, 1),
        "lvt_pmc": (0x340, 1), "lvt_lint0": (0x350, 1), "lvt_lint1": (0x360, 1),
        "lvt_error": (0x370, 1), "timer_icr": (0x380, 1), "timer_ccr": (0x390, 1),
        "reserved_3a": (0x3A0, 4), "timer_dcr": (0x3E0, 1),
        "reserved_3f": (0x3F0, 1), "reserved_40": (0x400, 192),
    }
    assert set(dt.names) == set(expected)
    for name, (off, count) in expected.items():
        fdt, foff = dt.fields[name][:2]
        assert (foff, fdt.itemsize) == (off, 16 * count), name


def test_apic_page_view_places_registers():
    page = np.zeros(1, abi.APIC_PAGE_DTYPE)
    page["icr"][0, 1]["value"] = 0x11223344
    page["isr"][0, 3]["value"] = 0xAABBCCDD
    raw = page.tobytes()
    assert raw[0x310:0x314] == bytes.fromhex("44332211")
    assert raw[0x130:0x134] == bytes.fromhex("ddccbbaa")


def test_hv_message_header_from_spec():
    dt = abi.HV_MESSAGE_DTYPE
    got = {n: (dt.fields[n][1], dt.fields[n][0].itemsize) for n in dt.names}
    assert got == {
        "typ": (0, 4), "len": (4, 1), "flags": (5, 1), "rsvd": (6, 2),
        "id": (8, 8), "payload": (16, 240),
    }


def test_mshv_tdcall_bytes_section_8_5():
    rec = np.zeros(1, abi.MSHV_TDCALL_DTYPE)
    rec["rax"] = 10
    rec["rdx"] = 0x2C20000300002012
    rec["r8"] = 0x12345000
    rec["r9"] = 0xFFFFFFFFFFFFFFFF
    expected = bytes.fromhex(
        "0a00000000000000" "0000000000000000" "122000000300202c" "0050341200000000"
        "ffffffffffffffff" "0000000000000000" "0000000000000000"
    )
    assert rec.tobytes() == expected


# Section 2.2, every row.
REQUESTS = {
    "MSHV_CHECK_EXTENSION": 0x4004B800,
    "MSHV_GET_VP_REGISTERS": 0xC010B805,
    "MSHV_SET_VP_REGISTERS": 0x4010B806,
    "MSHV_CREATE_VTL": 0x8001B81D,
    "MSHV_HVCALL_SETUP": 0x4010B81E,
    "MSHV_HVCALL": 0xC030B81F,
    "MSHV_VTL_ADD_VTL0_MEMORY": 0x4010B821,
    "MSHV_VTL_SET_POLL_FILE": 0x4008B825,
    "MSHV_VTL_RETURN_TO_LOWER_VTL": 0x0000B827,
    "MSHV_VTL_PVALIDATE": 0x4014B828,
    "MSHV_VTL_RMPADJUST": 0x4020B829,
    "MSHV_VTL_TDCALL": 0xC038B832,
    "MSHV_VTL_READ_VMX_CR4_FIXED1": 0x8008B833,
    "MSHV_VTL_GUEST_VSM_VMSA_PFN": 0xC008B834,
    "MSHV_VTL_RMPQUERY": 0x4030B835,
    "MSHV_INVLPGB": 0x4018B836,
    "MSHV_TLBSYNC": 0x0000B837,
}


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_request_numbers_section_2_2(name):
    assert getattr(protocol, name) == REQUESTS[name]
    assert _cabi.REQUESTS[name] == REQUESTS[name]


def test_request_table_is_complete():
    assert set(_cabi.REQUESTS) == set(REQUESTS)
    assert abi.MSHV_VTL_TDCALL == 0xC038B832
    assert protocol.MSHV_IOCTL == 0xB8


def test_page_offsets_section_2_5():
    assert protocol.HCL_RUN_PAGE_OFFSET == 0
    assert protocol.HCL_REG_PAGE_OFFSET == 0x10000
    assert protocol.HCL_VMSA_PAGE_OFFSET == 0x20000
    assert protocol.MSHV_APIC_PAGE_OFFSET == 0x30000
    assert protocol.HCL_VMSA_GUEST_VSM_PAGE_OFFSET == 0x40000


@pytest.mark.parametrize(
    "vp, run, apic",
    [(0, 0x0, 0x30000000), (3, 0x3000, 0x30003000)],
)
def test_mmap_offsets_section_8_6(vp, run, apic):
    assert protocol.run_page_mmap_offset(vp) == run
    assert protocol.apic_page_mmap_offset(vp) == apic


@pytest.mark.parametrize("vp", [-1, 0x10000])
def test_mmap_offset_rejects_out_of_range_vp(vp):
    with pytest.raises(ValueError, match="vp index"):
        protocol.run_page_mmap_offset(vp)
    with pytest.raises(ValueError, match="vp index"):
        protocol.apic_page_mmap_offset(vp)


def test_mmap_offset_rejects_non_integer_vp():
    with pytest.raises(TypeError, match="vp index"):
        protocol.apic_page_mmap_offset(1.0)


def test_dtypes_are_little_endian():
    def leaves(dt):
        if dt.subdtype is not None:
            yield from leaves(dt.base)
            return
        if dt.fields is None:
            yield dt
            return
        for name in dt.names:
            yield from leaves(dt.fields[name][0])

    for dt in C_TO_DTYPE.values():
        for leaf in leaves(dt):
            assert leaf.byteorder in ("<", "|", "="), leaf
            if leaf.itemsize > 1:
                assert leaf.str.startswith("<"), leaf
