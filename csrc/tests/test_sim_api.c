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

/* Threads sharing VP 0 (a raw tdcall from several threads, a FUSE daemon's
 * workers): each owns 8 bits of GUEST_CR3 (VTL0) and sets then clears them
 * with masked VP.WRs (read-modify-write inside the model). A lost update
 * would leave a bit wrong; the counters and the call log must count every
 * call. */
#define CR3_VTL0 0x2420000300006802ull
#define SHARED_ITERS 50000

static void *shared_worker(void *arg)
{
    uint64_t shift = 8 * (uint64_t)(uintptr_t)arg;
    for (uint64_t i = 0; i < SHARED_ITERS; i++) {
        uint64_t bit = 1ull << (shift + i % 8);
        struct mshv_tdcall io = {.rax = 10, .rdx = CR3_VTL0, .r8 = bit, .r9 = bit};
        if (hcltdx_sim_tdcall(sim, 0, &io) || io.rax)
            return (void *)1;
        io = (struct mshv_tdcall){.rax = 10, .rdx = CR3_VTL0, .r8 = 0, .r9 = bit};
        if (hcltdx_sim_tdcall(sim, 0, &io) || io.rax || !(io.r8 & bit))
            return (void *)1; /* the previous value must hold our bit */
    }
    struct mshv_tdcall io = {.rax = 10, .rdx = CR3_VTL0, .r8 = 0xFFull << shift,
                             .r9 = 0xFFull << shift};
    if (hcltdx_sim_tdcall(sim, 0, &io) || io.rax)
        return (void *)1;
    return NULL;
}

static void test_threads_sharing_one_vp(void)
{
    hcltdx_sim_config cfg;
    int err = 0;
    hcltdx_sim_config_init(&cfg);
    cfg.vp_count = 1;
    sim = hcltdx_sim_new(&cfg, &err);
    CHECK(sim);
    CHECK(hcltdx_sim_log_enable(sim, 1024) == 0);
    pthread_t t[NTHREADS];
    for (uintptr_t i = 0; i < NTHREADS; i++)
        CHECK(pthread_create(&t[i], NULL, shared_worker, (void *)i) == 0);
    for (int i = 0; i < NTHREADS; i++) {
        void *rc;
        pthread_join(t[i], &rc);
        CHECK(rc == NULL);
    }
    uint64_t value = 0;
    CHECK(hcltdx_sim_vmcs_peek(sim, 0, 1, 0x6802, &value) == 0);
    CHECK(value == 0xFFFFFFFFull); /* 4 threads x 8 bits, none lost */
    uint64_t counts[HCLTDX_SIM_NUM_SLOTS];
    hcltdx_sim_counters(sim, counts);
    uint64_t calls = (uint64_t)NTHREADS * (2 * SHARED_ITERS + 1);
    CHECK(counts[HCLTDX_SIM_SLOT_VP_WR] == calls);
    CHECK(hcltdx_sim_log_len(sim) == 1024);
    CHECK(hcltdx_sim_log_dropped(sim) == calls - 1024);
    /* The log's sequence numbers are consecutive. */
    hcltdx_sim_log_entry e[1024];
    CHECK(hcltdx_sim_log_read(sim, e, 1024) == 1024);
    for (int i = 1; i < 1024; i++)
        CHECK(e[i].seq == e[i - 1].seq + 1);
    CHECK(e[1023].seq == calls - 1);
    hcltdx_sim_free(sim);
    sim = NULL;
}

int main(void)
{
    test_threads_sharing_one_vp();

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
