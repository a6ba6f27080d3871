/* The simulator's C API from C: ioctl register rules, backend table, and
 * parallel VPs on pthreads. Exit status 0 = pass. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "hcltdx/sim.h"

#define CHECK(c)                                                   \
    do {                                                           \
        if (!(c)) {                                                \
            fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #c); \
            exit(1);                                               \
        }                                                          \
    } while (0)

#define RIP_VTL0 0x242000030000681Eull
#define NTHREADS 4
#define ITERS 200000

static hcltdx_sim *sim;

static void *worker(void *arg)
{
    uint32_t vp = (uint32_t)(uintptr_t)arg;
    for (uint64_t i = 0; i < ITERS; i++) {
        struct mshv_tdcall io = {.rax = 10, .rdx = RIP_VTL0, .r8 = (uint64_t)vp << 32 | i,
                                 .r9 = ~0ull};
        if (hcltdx_sim_tdcall(sim, vp, &io) || io.rax)
            return (void *)1;
        io = (struct mshv_tdcall){.rax = 9, .rdx = RIP_VTL0};
        if (hcltdx_sim_tdcall(sim, vp, &io) || io.rax || io.r8 != ((uint64_t)vp << 32 | i))
            return (void *)1;
    }
    return NULL;
}

int main(void)
{
    hcltdx_sim_config cfg;
    int err = 0;
    hcltdx_sim_config_init(&cfg);
    cfg.vp_count = NTHREADS;
    sim = hcltdx_sim_new(&cfg, &err);
    CHECK(sim);

    cfg.memory_size = 3u << 20;
    CHECK(hcltdx_sim_new(&cfg, &err) == NULL && err < 0);
    cfg.memory_size = 2u << 20;
    cfg.vp_count = 65;
    CHECK(hcltdx_sim_new(&cfg, &err) == NULL && err < 0);

    /* r10_out / r11_out are outputs only: whatever comes in is ignored. */
    struct mshv_tdcall io = {.rax = 9, .rdx = RIP_VTL0, .r10_out = 5, .r11_out = 6};
    CHECK(hcltdx_sim_tdcall(sim, 0, &io) == 0);
    CHECK(io.rax == 0 && io.r10_out == 0 && io.r11_out == 0);
    CHECK(hcltdx_sim_tdcall(sim, NTHREADS, &io) < 0);

    /* The backend table: tdcall, map_page at mmap offsets, VTL1 APIC page. */
    const hcltdx_backend_ops *ops = &hcltdx_sim_backend_ops;
    void *page = NULL;
    uint64_t gpa = 0;
    CHECK(ops->map_page(sim, 3, &page) == 0 && page == hcltdx_sim_run_page(sim, 3));
    CHECK(ops->map_page(sim, 0x30002, &page) == 0 && page == hcltdx_sim_apic_page(sim, 2, 0));
    CHECK(ops->map_page(sim, 0x10000, &page) != 0);
    CHECK(ops->map_page(sim, NTHREADS, &page) != 0);
    CHECK(ops->vtl1_apic_page(sim, 1, &page, &gpa) == 0);
    io = (struct mshv_tdcall){.rax = 10, .rdx = 0x2C20000300002012ull, .r8 = gpa, .r9 = ~0ull};
    CHECK(ops->tdcall(sim, 1, &io) == 0 && io.rax == 0);

    pthread_t t[NTHREADS];
    for (uintptr_t i = 0; i < NTHREADS; i++)
        CHECK(pthread_create(&t[i], NULL, worker, (void *)i) == 0);
    for (int i = 0; i < NTHREADS; i++) {
        void *rc;
        pthread_join(t[i], &rc);
        CHECK(rc == NULL);
    }
    uint64_t counts[HCLTDX_SIM_NUM_SLOTS];
    hcltdx_sim_counters(sim, counts);
    CHECK(counts[HCLTDX_SIM_SLOT_VP_WR] == (uint64_t)NTHREADS * ITERS + 1);
    hcltdx_sim_free(sim);
    puts("ok");
    return 0;
}
