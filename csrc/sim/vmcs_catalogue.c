/* The VMCS field catalogue as a sorted-by-declaration table with masks. */
#include "hcltdx/sim.h"

#define ALL (~(uint64_t)0)
#define NONE ((uint64_t)0)

/* Bits a field of this encoding's width can hold (bits 13-14: 0 = 16-bit,
 * 1 = 64-bit, 2 = 32-bit, 3 = natural). */
#define WIDTH_MASK(enc)                                        \
    ((((enc) >> 13) & 3) == 0   ? (uint64_t)0xFFFF             \
     : (((enc) >> 13) & 3) == 2 ? (uint64_t)0xFFFFFFFF         \
                                : ~(uint64_t)0)

static const hcltdx_vmcs_field_desc catalogue[] = {
#define HCLTDX_VMCS_FIELD(name, enc, r, w) \
    {#name, (enc), (uint64_t)(r) & WIDTH_MASK(enc), (uint64_t)(w) & WIDTH_MASK(enc)},
#include "hcltdx/vmcs_fields.def"
#undef HCLTDX_VMCS_FIELD
};

size_t hcltdx_vmcs_field_count(void)
{
    return sizeof(catalogue) / sizeof(catalogue[0]);
}

const hcltdx_vmcs_field_desc *hcltdx_vmcs_field_at(size_t i)
{
    return i < hcltdx_vmcs_field_count() ? &catalogue[i] : NULL;
}

const hcltdx_vmcs_field_desc *hcltdx_vmcs_field_find(uint32_t encoding)
{
    for (size_t i = 0; i < hcltdx_vmcs_field_count(); i++)
        if (catalogue[i].encoding == encoding)
            return &catalogue[i];
    return NULL;
}
