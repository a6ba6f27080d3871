# cython: language_level=3
"""Facts read from the compiled C headers: struct layouts, request numbers,
the VMCS field catalogue. No Python-level dependencies (imported first)."""

from libc.stdint cimport uint32_t, uint64_t

from hcltdx.includes.sim cimport (
    hcltdx_vmcs_field_count, hcltdx_vmcs_field_at, hcltdx_vmcs_field_desc)

cdef extern from "hcltdx/abi.h" nogil:
    const uint32_t MSHV_VTL_TDCALL
    const uint32_t MSHV_CREATE_VTL
    const uint32_t MSHV_CHECK_EXTENSION
    const uint32_t MSHV_VTL_RETURN_TO_LOWER_VTL
    const uint32_t MSHV_VTL_READ_VMX_CR4_FIXED1
    const uint32_t MSHV_GET_VP_REGISTERS
    const uint32_t MSHV_SET_VP_REGISTERS
    const uint32_t MSHV_HVCALL_SETUP
    const uint32_t MSHV_HVCALL
    const uint32_t MSHV_VTL_ADD_VTL0_MEMORY
    const uint32_t MSHV_VTL_SET_POLL_FILE
    const uint32_t MSHV_VTL_PVALIDATE
    const uint32_t MSHV_VTL_RMPADJUST
    const uint32_t MSHV_VTL_GUEST_VSM_VMSA_PFN
    const uint32_t MSHV_VTL_RMPQUERY
    const uint32_t MSHV_INVLPGB
    const uint32_t MSHV_TLBSYNC
    const uint32_t HCL_REG_PAGE_OFFSET
    const uint32_t HCL_VMSA_PAGE_OFFSET
    const uint32_t MSHV_APIC_PAGE_OFFSET
    const uint32_t HCL_VMSA_GUEST_VSM_PAGE_OFFSET

cdef extern from "hcltdx/abi_probe.h" nogil:
    ctypedef struct hcltdx_abi_probe_entry:
        const char *type
        const char *field
        size_t offset
        size_t size
    size_t hcltdx_abi_probe_count()
    const hcltdx_abi_probe_entry *hcltdx_abi_probe_at(size_t i)

REQUESTS = {
    "MSHV_CHECK_EXTENSION": MSHV_CHECK_EXTENSION,
    "MSHV_GET_VP_REGISTERS": MSHV_GET_VP_REGISTERS,
    "MSHV_SET_VP_REGISTERS": MSHV_SET_VP_REGISTERS,
    "MSHV_CREATE_VTL": MSHV_CREATE_VTL,
    "MSHV_HVCALL_SETUP": MSHV_HVCALL_SETUP,
    "MSHV_HVCALL": MSHV_HVCALL,
    "MSHV_VTL_ADD_VTL0_MEMORY": MSHV_VTL_ADD_VTL0_MEMORY,
    "MSHV_VTL_SET_POLL_FILE": MSHV_VTL_SET_POLL_FILE,
    "MSHV_VTL_RETURN_TO_LOWER_VTL": MSHV_VTL_RETURN_TO_LOWER_VTL,
    "MSHV_VTL_PVALIDATE": MSHV_VTL_PVALIDATE,
    "MSHV_VTL_RMPADJUST": MSHV_VTL_RMPADJUST,
    "MSHV_VTL_TDCALL": MSHV_VTL_TDCALL,
    "MSHV_VTL_READ_VMX_CR4_FIXED1": MSHV_VTL_READ_VMX_CR4_FIXED1,
    "MSHV_VTL_GUEST_VSM_VMSA_PFN": MSHV_VTL_GUEST_VSM_VMSA_PFN,
    "MSHV_VTL_RMPQUERY": MSHV_VTL_RMPQUERY,
    "MSHV_INVLPGB": MSHV_INVLPGB,
    "MSHV_TLBSYNC": MSHV_TLBSYNC,
}

PAGE_OFFSETS = {
    "HCL_REG_PAGE_OFFSET": HCL_REG_PAGE_OFFSET,
    "HCL_VMSA_PAGE_OFFSET": HCL_VMSA_PAGE_OFFSET,
    "MSHV_APIC_PAGE_OFFSET": MSHV_APIC_PAGE_OFFSET,
    "HCL_VMSA_GUEST_VSM_PAGE_OFFSET": HCL_VMSA_GUEST_VSM_PAGE_OFFSET,
}


def c_layout():
    """{struct: {"__size__": n, field: (offset, size), ...}} as compiled."""
    cdef size_t i
    cdef const hcltdx_abi_probe_entry *e
    out = {}
    for i in range(hcltdx_abi_probe_count()):
        e = hcltdx_abi_probe_at(i)
        d = out.setdefault(e.type.decode(), {})
        if e.field == NULL:
            d["__size__"] = e.size
        else:
            d[e.field.decode()] = (e.offset, e.size)
    return out


def vmcs_catalogue():
    """[(name, encoding, read_mask, write_mask), ...] in catalogue order."""
    cdef size_t i
    cdef const hcltdx_vmcs_field_desc *d
    out = []
    for i in range(hcltdx_vmcs_field_count()):
        d = hcltdx_vmcs_field_at(i)
        out.append((d.name.decode(), d.encoding, d.read_mask, d.write_mask))
    return out


cdef extern from *:
    """
    /* Class attribute loads of the classes of metaclass `meta` done as plain
     * `type` does them (type_getattro), not through a Python-level hook. */
    static int hcltdx_plain_type_getattro(PyObject *meta)
    {
        if (!PyType_Check(meta) || !PyType_IsSubtype((PyTypeObject *)meta, &PyType_Type) ||
            !(((PyTypeObject *)meta)->tp_flags & Py_TPFLAGS_HEAPTYPE)) {
            PyErr_SetString(PyExc_TypeError, "expected a metaclass defined in Python");
            return -1;
        }
        ((PyTypeObject *)meta)->tp_getattro = PyType_Type.tp_getattro;
        return 0;
    }
    """
    int hcltdx_plain_type_getattro(object meta) except -1


def _plain_class_getattr(meta):
    """Make attribute loads on the classes of metaclass ``meta`` (for example
    ``GuestVtl.VTL0``) take type's own lookup instead of the ``__getattr__``
    hook ``meta`` inherits. Only for a metaclass whose ``__getattr__`` finds
    nothing the class dictionaries do not already hold (see hcltdx._bitfield)."""
    hcltdx_plain_type_getattro(meta)
