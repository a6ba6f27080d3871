/* The VMCS field catalogue as a sorted-by-declaration table with masks. */
#include <pthread.h>
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
static pthread_once_t index_once = PTHREAD_ONCE_INIT;

static void build_index(void)
{
    memset(index_of, 0xFF, sizeof(index_of));
    for (size_t i = 0; i < sizeof(catalogue) / sizeof(catalogue[0]); i++)
        index_of[catalogue[i].encoding >> 1] = (uint8_t)i;
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
    pthread_once(&index_once, build_index);
    uint8_t i = index_of[encoding >> 1];
    return i == 0xFF ? -1 : (int)i;
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
