/* The compiled layout of every ABI struct, for layout tests. */
#ifndef HCLTDX_ABI_PROBE_H
#define HCLTDX_ABI_PROBE_H
#include <stddef.h>

typedef struct hcltdx_abi_probe_entry {
    const char *type;
    const char *field; /* NULL: the entry gives the struct's size */
    size_t offset;
    size_t size;
} hcltdx_abi_probe_entry;

size_t hcltdx_abi_probe_count(void);
const hcltdx_abi_probe_entry *hcltdx_abi_probe_at(size_t i);
#endif
