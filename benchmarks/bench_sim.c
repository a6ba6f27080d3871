/* Cost of one TDG.VP.RD through hcltdx_sim_tdcall, and the model's footprint. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "hcltdx/sim.h"

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    long iters = argc > 1 ? atol(argv[1]) : 10000000L;
    hcltdx_sim_config cfg;
    int err = 0;

    hcltdx_sim_config_init(&cfg);
    cfg.vp_count = 2;
    hcltdx_sim *sim = hcltdx_sim_new(&cfg, &err);
    if (!sim) {
        fprintf(stderr, "hcltdx_sim_new: %d\n", err);
        return 1;
    }
    /* GUEST_RIP of VTL0 (section 8.1). */
    struct mshv_tdcall io;
    uint64_t sink = 0;
    double t0 = now_ns();
    for (long i = 0; i < iters; i++) {
        io = (struct mshv_tdcall){.rax = 9, .rdx = 0x242000030000681Eull};
        hcltdx_sim_tdcall(sim, 0, &io);
        sink += io.rax | io.r8;
    }
    double t1 = now_ns();
    printf("vp_rd_ns_per_call %.1f (%ld calls, status sum %llu)\n", (t1 - t0) / (double)iters,
           iters, (unsigned long long)sink);
    hcltdx_sim_free(sim);

    cfg.memory_size = 4ull << 30;
    sim = hcltdx_sim_new(&cfg, &err);
    if (!sim) {
        fprintf(stderr, "hcltdx_sim_new(4 GiB): %d\n", err);
        return 1;
    }
    printf("footprint_bytes_4GiB %zu\n", hcltdx_sim_footprint(sim));
    hcltdx_sim_free(sim);
    return 0;
}
