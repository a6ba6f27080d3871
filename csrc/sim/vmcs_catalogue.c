/* The VMCS field catalogue as a sorted-by-declaration table with masks. */
#include <string.h>

#include "hcltdx/sim.h"
#include "sim_internal.h"

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

_Static_assert(sizeof(catalogue) / sizeof(catalogue[0]) < SIM_MAX_FIELDS,
               "catalogue fits the per-VM VMCS store");

/* Encodings used by the catalogue are below 0x8000 and even (bit 0 is the
 * access type), so a byte per even encoding finds a field in O(1). */
#define INDEX_SLOTS 0x4000u
static uint8_t index_of[INDEX_SLOTS];
/* For each catalogue index, the next index whose field is readable (the
 * enumeration VP.RD returns in RDX), or the catalogue size. */
static uint8_t next_readable[sizeof(catalogue) / sizeof(catalogue[0])];
/* Built when the library loads: the lookup sits on every VP.RD/WR. */
__attribute__((constructor)) static void build_index(void)
{
    size_t n = sizeof(catalogue) / sizeof(catalogue[0]);
    memset(index_of, 0xFF, sizeof(index_of));
    for (size_t i = 0; i < n; i++)
        index_of[catalogue[i].encoding >> 1] = (uint8_t)i;
    uint8_t next = (uint8_t)n;
    for (size_t i = n; i-- > 0;) {
        next_readable[i] = next;
        if (catalogue[i].read_mask)
            next = (uint8_t)i;
    }
}

size_t hcltdx_vmcs_field_count(void)
{
    return sizeof(catalogue) / sizeof(catalogue[0]);
}

const hcltdx_vmcs_field_desc *hcltdx_vmcs_field_at(size_t i)
{
    return i < hcltdx_vmcs_field_count() ? &catalogue[i] : NULL;
}

int hcltdx_vmcs_field_index(uint32_t encoding)
{
    if (encoding & 1u || encoding >= 2u * INDEX_SLOTS)
        return -1;
    uint8_t i = index_of[encoding >> 1];
    return i == 0xFF ? -1 : (int)i;
}

int hcltdx_vmcs_next_readable(size_t i)
{
    size_t n = sizeof(catalogue) / sizeof(catalogue[0]);
    return i < n && next_readable[i] < n ? (int)next_readable[i] : -1;
}

const hcltdx_vmcs_field_desc *hcltdx_vmcs_field_find(uint32_t encoding)
{
    int i = hcltdx_vmcs_field_index(encoding);
    return i < 0 ? NULL : &catalogue[i];
}

uint64_t hcltdx_vmcs_width_mask(uint32_t encoding)
{
    return WIDTH_MASK(encoding);
}
