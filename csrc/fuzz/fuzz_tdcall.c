/*
 * A seeded fuzzer of the simulator's tdcall entry: arbitrary register values
 * (biased towards the encodings the model decodes) go to hcltdx_sim_tdcall,
 * mixed with host map/unmap, fault injection and resets. After every call it
 * checks what must hold whatever the input:
 *
 *   - the call returns 0 or a negative errno, and counts exactly one call
 *     (the leaf's counter) when it returns 0, none otherwise;
 *   - pages are conserved (not added + pending + accepted = memory / 4 KiB),
 *     and no call but host unmap or reset lowers the accepted count;
 *   - a successful MEM.PAGE.ACCEPT found every page it accepts pending (no
 *     page accepted twice) and leaves them accepted;
 *   - a successful VP.RD of a VMCS field returns no bit outside its read
 *     mask; a successful VP.WR changes only bits inside write mask & R9,
 *     and those to R8's; a failed VP.WR changes nothing;
 *   - every VP.RD / VP.WR (no fault armed) gives the registers and leaves
 *     the VP's state exactly as the general decode-and-dispatch path does on
 *     the same state (the entry takes a shorter path for VMCS fields: this
 *     checks it against the rules it shortcuts).
 *
 * Usage: fuzz_tdcall [-s seed] [-n iterations] [-t seconds] [-v vp_count]
 * Prints one line of figures; exit status 1 on the first violation (with the
 * iteration and the registers), 0 otherwise.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hcltdx/sim.h"
#include "sim_internal.h" /* the general path, for the differential check */

#define MEM_SIZE (8ull << 20) /* 4 x 2 MiB: small enough to hit the same pages */
#define PAGES (MEM_SIZE / 4096)

static uint64_t rng_state;

static uint64_t next64(void)
{
    /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t below(uint64_t n) { return n ? next64() % n : 0; }

static const uint64_t LEAVES[] = {1, 6, 7, 8, 9, 10, 23, 24, 27, 0, 2, 25, 26, 0xFFFF, ~0ull};
static const uint32_t CLASSES[] = {32, 36, 37, 44, 45};

static uint64_t field_size_of(uint32_t enc)
{
    switch ((enc >> 13) & 3u) {
    case 0: return 1;
    case 2: return 2;
    default: return 3;
    }
}

/* A field id the model decodes (most of the time), sometimes bent. */
static uint64_t field_id(void)
{
    uint64_t id;
    size_t n = hcltdx_vmcs_field_count();
    uint32_t cls = CLASSES[below(5)];
    if (cls == 36 || cls == 44 || below(4) == 0) {
        const hcltdx_vmcs_field_desc *d = hcltdx_vmcs_field_at(below(n));
        cls = below(2) ? 36 : 44;
        id = d->encoding | (field_size_of(d->encoding) << 32) | (2ull << 52) | ((uint64_t)cls << 56);
    } else if (cls == 32) {
        id = (0x50 + below(4)) | (3ull << 32) | (2ull << 52) | (32ull << 56) | (1ull << 63);
    } else {
        id = below(600) | (3ull << 32) | (2ull << 52) | ((uint64_t)cls << 56);
    }
    if (below(8) == 0)
        id ^= 1ull << below(64);
    return id;
}

static uint64_t gpa_arg(void)
{
    uint64_t page = below(PAGES + 8);
    uint64_t lvl = below(8) < 6 ? below(2) : below(8);
    uint64_t gpa = page << 12;
    if (lvl == 1 && below(4))
        gpa &= ~0x1FFFFFull;
    uint64_t v = gpa | lvl;
    if (below(16) == 0)
        v ^= 1ull << below(64);
    return v;
}

static uint64_t reg_value(void)
{
    switch (below(6)) {
    case 0: return 0;
    case 1: return ~0ull;
    case 2: return below(256);
    case 3: return 1ull << below(64);
    default: return next64();
    }
}

static uint64_t total_calls(hcltdx_sim *sim)
{
    uint64_t c[HCLTDX_SIM_NUM_SLOTS], t = 0;
    hcltdx_sim_counters(sim, c);
    for (int i = 0; i < HCLTDX_SIM_NUM_SLOTS; i++)
        t += c[i];
    return t;
}

static uint32_t page_state(hcltdx_sim *sim, uint64_t page)
{
    hcltdx_sim_page_info info;
    if (hcltdx_sim_get_page_info(sim, page << 12, &info) != 0)
        return 99;
    return info.state;
}

static uint64_t iteration;

#define FAIL(...)                                                                 \
    do {                                                                          \
        fprintf(stderr, "violation at iteration %" PRIu64 ": ", iteration);       \
        fprintf(stderr, __VA_ARGS__);                                             \
        fprintf(stderr, "\n  in: rax %#" PRIx64 " rcx %#" PRIx64 " rdx %#" PRIx64 \
                " r8 %#" PRIx64 " r9 %#" PRIx64 " vp %u\n",                       \
                in.rax, in.rcx, in.rdx, in.r8, in.r9, vp);                        \
        return 1;                                                                 \
    } while (0)

int main(int argc, char **argv)
{
    uint64_t seed = 1, iterations = 100000;
    double seconds = 0;
    uint32_t vp_count = 2;
    int opt;
    while ((opt = getopt(argc, argv, "s:n:t:v:")) != -1) {
        switch (opt) {
        case 's': seed = strtoull(optarg, NULL, 0); break;
        case 'n': iterations = strtoull(optarg, NULL, 0); break;
        case 't': seconds = strtod(optarg, NULL); iterations = UINT64_MAX; break;
        case 'v': vp_count = (uint32_t)strtoul(optarg, NULL, 0); break;
        default:
            fprintf(stderr, "usage: %s [-s seed] [-n iterations] [-t seconds] [-v vp_count]\n",
                    argv[0]);
            return 2;
        }
    }
    rng_state = seed;

    hcltdx_sim_config cfg;
    hcltdx_sim_config_init(&cfg);
    cfg.vp_count = vp_count;
    cfg.memory_size = MEM_SIZE;
    cfg.host_map_all_2m = 1;
    cfg.seed = seed;
    int err = 0;
    hcltdx_sim *sim = hcltdx_sim_new(&cfg, &err);
    if (!sim) {
        fprintf(stderr, "hcltdx_sim_new failed: %d\n", err);
        return 2;
    }

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t ok_calls = 0, tdx_fail = 0, api_fail = 0, accepts_ok = 0, writes_ok = 0, diff_checked = 0;
    uint64_t before_pages[3], after_pages[3];
    hcltdx_sim_page_counts(sim, before_pages);

    for (iteration = 0; iteration < iterations; iteration++) {
        if (seconds > 0 && (iteration & 1023) == 0) {
            clock_gettime(CLOCK_MONOTONIC, &t1);
            if ((double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9 >= seconds)
                break;
        }
        struct mshv_tdcall in = {0};
        uint32_t vp = below(16) == 0 ? (uint32_t)below(70) : (uint32_t)below(vp_count);

        /* Host and control-panel operations now and then. */
        uint64_t pick = below(1000);
        if (pick < 3) {
            uint64_t g = below(PAGES) << 12, len = (below(600) + 1) << 12;
            hcltdx_sim_unmap_host(sim, g, len);
            hcltdx_sim_page_counts(sim, before_pages);
            continue;
        } else if (pick < 8) {
            uint64_t lvl = below(2), g = below(PAGES) << 12;
            uint64_t len = lvl ? 0x200000 : (below(600) + 1) << 12;
            if (lvl)
                g &= ~0x1FFFFFull;
            hcltdx_sim_map_host(sim, g, len, (uint32_t)lvl);
            hcltdx_sim_page_counts(sim, before_pages);
            continue;
        } else if (pick < 10) {
            hcltdx_sim_inject(sim, LEAVES[below(9)], (uint32_t)below(3),
                              (next64() & ~0xFFFFFFFFull) | (1ull << 63));
        } else if (pick < 11) {
            hcltdx_sim_inject_rate(sim, LEAVES[below(9)], (uint32_t)below(16), 64,
                                   (0x80000200ull << 32), next64());
        } else if (pick < 12) {
            hcltdx_sim_clear_faults(sim);
        } else if (pick == 12) {
            hcltdx_sim_reset(sim);
            hcltdx_sim_page_counts(sim, before_pages);
            continue;
        }

        in.rax = below(8) ? LEAVES[below(9)] : LEAVES[below(sizeof LEAVES / sizeof LEAVES[0])];
        switch (in.rax) {
        case 6: case 23: case 24:
            in.rcx = below(8) ? gpa_arg() : reg_value();
            in.rdx = reg_value();
            in.r8 = reg_value();
            break;
        case 9: case 10:
            in.rcx = below(16) ? 0 : reg_value();
            in.rdx = below(16) ? field_id() : reg_value();
            in.r8 = reg_value();
            in.r9 = below(2) ? ~0ull : reg_value();
            break;
        default:
            in.rcx = reg_value();
            in.rdx = reg_value();
            in.r8 = reg_value();
            in.r9 = reg_value();
        }

        /* What the checks need from before the call. */
        uint64_t acc_gpa = in.rcx & 0x000FFFFFFFFFF000ull, acc_lvl = in.rcx & 7;
        uint64_t acc_first = acc_gpa >> 12, acc_n = acc_lvl == 1 ? 512 : 1;
        int was_accepted = 0;
        if (in.rax == 6 && acc_lvl <= 1 && acc_first + acc_n <= PAGES)
            for (uint64_t p = acc_first; p < acc_first + acc_n; p++)
                was_accepted |= page_state(sim, p) == HCLTDX_SIM_PAGE_ACCEPTED;
        const hcltdx_vmcs_field_desc *desc = NULL;
        uint32_t cls = (uint32_t)((in.rdx >> 56) & 0x3F), vm = cls == 44 ? 2 : 1;
        uint64_t old = 0;
        if ((in.rax == 9 || in.rax == 10) && (cls == 36 || cls == 44) && vp < vp_count) {
            desc = hcltdx_vmcs_field_find((uint32_t)(in.rdx & 0xFFFFFF));
            if (desc && hcltdx_sim_vmcs_peek(sim, vp, vm, desc->encoding, &old) != 0)
                desc = NULL;
        }
        /* The general path's answer on the same state, for the differential
         * check; then the state is put back for the real call. */
        int diff = 0;
        uint64_t gen_rax = 0, gen_r[6] = {0};
        static struct sim_vp saved, gen_state;
        if ((in.rax == 9 || in.rax == 10) && vp < vp_count &&
            !atomic_load(&sim->fault_armed[in.rax == 9 ? HCLTDX_SIM_SLOT_VP_RD : HCLTDX_SIM_SLOT_VP_WR])) {
            diff = 1;
            memcpy(&saved, &sim->vps[vp], sizeof saved);
            uint64_t r[6] = {in.rcx, in.rdx, in.r8, in.r9, 0, 0};
            gen_rax = sim_dispatch(sim, vp, in.rax, r);
            memcpy(gen_r, r, sizeof gen_r);
            memcpy(&gen_state, &sim->vps[vp], sizeof gen_state);
            memcpy(&sim->vps[vp], &saved, sizeof saved);
        }
        uint64_t calls_before = total_calls(sim);

        struct mshv_tdcall io = in;
        int rc = hcltdx_sim_tdcall(sim, vp, &io);

        uint64_t calls_after = total_calls(sim);
        if (rc != 0 && (rc > 0 || rc < -4095))
            FAIL("returned %d: neither 0 nor a negative errno", rc);
        if (rc == 0 && calls_after != calls_before + 1)
            FAIL("a call counted %" PRIu64 " times", calls_after - calls_before);
        if (rc != 0 && calls_after != calls_before)
            FAIL("a refused call (%d) was counted", rc);
        if (rc != 0) {
            if (vp < vp_count)
                FAIL("refused (%d) for a VP that exists", rc);
            api_fail++;
            continue;
        }
        hcltdx_sim_page_counts(sim, after_pages);
        if (after_pages[0] + after_pages[1] + after_pages[2] != PAGES)
            FAIL("pages not conserved: %" PRIu64 " + %" PRIu64 " + %" PRIu64, after_pages[0],
                 after_pages[1], after_pages[2]);
        if (after_pages[2] < before_pages[2])
            FAIL("a tdcall un-accepted pages (%" PRIu64 " -> %" PRIu64 ")", before_pages[2],
                 after_pages[2]);
        memcpy(before_pages, after_pages, sizeof before_pages);

        if (diff) {
            const uint64_t got[7] = {io.rax, io.rcx, io.rdx, io.r8, io.r9, io.r10_out, io.r11_out};
            const uint64_t want[7] = {gen_rax, gen_r[0], gen_r[1], gen_r[2], gen_r[3], gen_r[4], gen_r[5]};
            for (int k = 0; k < 7; k++)
                if (got[k] != want[k])
                    FAIL("register %d out is %#" PRIx64 ", the general path gives %#" PRIx64, k,
                         got[k], want[k]);
            struct sim_vp *now_vp = &sim->vps[vp];
            if (memcmp(now_vp->vmcs, gen_state.vmcs, sizeof gen_state.vmcs) ||
                memcmp(now_vp->msr_bitmap, gen_state.msr_bitmap, sizeof gen_state.msr_bitmap) ||
                memcmp(now_vp->l2_ctls, gen_state.l2_ctls, sizeof gen_state.l2_ctls))
                FAIL("the VP's state differs from the general path's");
            diff_checked++;
        }
        uint32_t code = (uint32_t)(io.rax >> 32);
        if (code == 0)
            ok_calls++;
        else
            tdx_fail++;
        if (in.rax == 6 && code == 0) {
            accepts_ok++;
            if (acc_lvl > 1 || acc_first + acc_n > PAGES)
                FAIL("ACCEPT succeeded for level %" PRIu64 " at page %" PRIu64, acc_lvl, acc_first);
            if (was_accepted)
                FAIL("ACCEPT succeeded on a page already accepted");
            for (uint64_t p = acc_first; p < acc_first + acc_n; p++)
                if (page_state(sim, p) != HCLTDX_SIM_PAGE_ACCEPTED)
                    FAIL("ACCEPT succeeded but page %" PRIu64 " is not accepted", p);
        }
        if (desc) {
            uint64_t now = 0;
            hcltdx_sim_vmcs_peek(sim, vp, vm, desc->encoding, &now);
            if (in.rax == 9) {
                if (code == 0 && (io.r8 & ~desc->read_mask))
                    FAIL("VP.RD returned bits %#" PRIx64 " outside the read mask %#" PRIx64,
                         io.r8 & ~desc->read_mask, desc->read_mask);
                if (now != old)
                    FAIL("VP.RD changed the field");
            } else if (code == 0) {
                writes_ok++;
                uint64_t m = desc->write_mask & in.r9;
                if ((now ^ old) & ~m)
                    FAIL("VP.WR changed bits %#" PRIx64 " outside write mask & R9 %#" PRIx64,
                         (now ^ old) & ~m, m);
                if ((now ^ in.r8) & m)
                    FAIL("VP.WR left bits %#" PRIx64 " not as written", (now ^ in.r8) & m);
            } else if (now != old) {
                FAIL("a failed VP.WR (status %#x) changed the field", code);
            }
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double el = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("fuzz_tdcall seed=%" PRIu64 " executions=%" PRIu64 " seconds=%.2f ok=%" PRIu64
           " tdx_failures=%" PRIu64 " refused=%" PRIu64 " accepts=%" PRIu64 " vmcs_writes=%" PRIu64
           " diff_checked=%" PRIu64 " violations=0\n",
           seed, iteration, el, ok_calls, tdx_fail, api_fail, accepts_ok, writes_ok, diff_checked);
    hcltdx_sim_free(sim);
    return 0;
}
