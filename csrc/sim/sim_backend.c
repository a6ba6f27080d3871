/* The simulator seen through the backend table. */
#include <errno.h>

#include "hcltdx/sim.h"
#include "sim_internal.h"

static int sim_map_page(void *ctx, uint64_t page_offset, void **page)
{
    void *p = hcltdx_sim_page_at_offset((hcltdx_sim *)ctx, page_offset);
    if (!p)
        return ENXIO;
    *page = p;
    return 0;
}

static void sim_unmap_page(void *ctx, void *page)
{
    (void)ctx;
    (void)page;
}

static int sim_vtl1_apic_page(void *ctx, uint32_t vp, void **page, uint64_t *gpa)
{
    hcltdx_sim *sim = (hcltdx_sim *)ctx;
    if (vp >= hcltdx_sim_vp_count(sim))
        return EINVAL;
    *page = hcltdx_sim_apic_page(sim, vp, 1);
    *gpa = hcltdx_sim_vtl1_apic_page_gpa(sim, vp);
    return *page ? 0 : ENXIO;
}

const hcltdx_backend_ops hcltdx_sim_backend_ops = {
    .name = "simulator",
    .may_block = 0,
    .tdcall = sim_backend_tdcall,
    .map_page = sim_map_page,
    .unmap_page = sim_unmap_page,
    .vtl1_apic_page = sim_vtl1_apic_page,
};
