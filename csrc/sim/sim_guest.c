/*
 * The synthetic guest: a deterministic stand-in for an L2 guest running in
 * VTL0 (L2 VM 1), so that polling and snapshots of the simulator see state
 * that changes over time.
 *
 * Off by default. When on, every tdcall issued for VP n first brings VP n's
 * guest state up to the guest clock: a few VM1 VMCS fields and the run page's
 * exit_info are overwritten with values that are a pure function of
 * (guest clock, seed, VP index, memory size). The formulas are in
 * docs/guest.md; tests/test_guest.py recomputes them independently.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "sim_internal.h"

#define NS_PER_US 1000ull
#define CR3_PERIOD_NS 10000000ull /* a CR3 switch every 10 ms */
#define EXIT_PERIOD_NS 100000ull  /* one VM exit every 100 us */
#define GOLDEN 0x9E3779B97F4A7C15ull

#define CODE_BASE 0xFFFFFFFF81000000ull /* canonical, kernel text */
#define CODE_SIZE 0x100000ull           /* 1 MiB code region */
#define STACK_BASE 0xFFFFC90000000000ull
#define STACK_STRIDE 0x10000ull /* one 16 KiB stack per VP, 64 KiB apart */
#define STACK_SIZE 0x4000ull
#define GLA_DIRECT_MAP 0xFFFF888000000000ull

/* VMX basic exit reasons (SDM Vol. 3 Appendix C; spec 5.11). */
#define EXIT_HW_INTERRUPT 1u
#define EXIT_CPUID 10u
#define EXIT_HLT 12u
#define EXIT_CR_ACCESS 28u
#define EXIT_IO 30u
#define EXIT_MSR_READ 31u
#define EXIT_MSR_WRITE 32u
#define EXIT_EPT_VIOLATION 48u
#define L2_EXIT_HOST_ROUTED_ASYNC 0x00001100ull

/* Encodings of the fields the guest owns (catalogue names in docs/guest.md). */
#define F_GUEST_RIP 0x681Eu
#define F_GUEST_RSP 0x681Cu
#define F_GUEST_CR3 0x6802u
#define F_PREEMPTION_TIMER 0x482Eu
#define F_EXIT_REASON 0x4402u
#define F_EXIT_QUALIFICATION 0x6400u
#define F_GUEST_PHYSICAL_ADDRESS 0x2400u
#define F_GUEST_LINEAR_ADDRESS 0x640Au
#define F_EXIT_INSTRUCTION_LENGTH 0x440Cu
#define F_EXIT_INTERRUPTION_INFO 0x4404u

static const uint64_t cr3_roots[4] = {0x00100000ull, 0x00300000ull, 0x00500000ull,
                                      0x00700000ull};
/* 16 buckets, weighted: 4 MSR_READ, 2 MSR_WRITE, 3 IO, 1 CPUID, 2 EPT, 1 HLT,
 * 1 CR_ACCESS, 2 HW_INTERRUPT. */
static const uint8_t exit_table[16] = {
    EXIT_MSR_READ,  EXIT_MSR_READ,      EXIT_MSR_READ,      EXIT_MSR_READ,
    EXIT_MSR_WRITE, EXIT_MSR_WRITE,     EXIT_IO,            EXIT_IO,
    EXIT_IO,        EXIT_CPUID,         EXIT_EPT_VIOLATION, EXIT_EPT_VIOLATION,
    EXIT_HLT,       EXIT_CR_ACCESS,     EXIT_HW_INTERRUPT,  EXIT_HW_INTERRUPT,
};
static const uint16_t io_ports[8] = {0x3F8, 0x60, 0x64, 0xCF8, 0xCFC, 0x70, 0x71, 0x80};

static uint64_t mix64(uint64_t x)
{
    x += GOLDEN;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static uint64_t monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int hcltdx_sim_guest_set(hcltdx_sim *sim, int enable, uint64_t seed, int wall_clock,
                         uint64_t start_ns)
{
    if (!sim)
        return -EINVAL;
    struct sim_guest *g = &sim->guest;
    atomic_store(&g->enabled, 0);
    g->seed = seed;
    g->wall_clock = wall_clock ? 1 : 0;
    g->wall_origin = monotonic_ns();
    atomic_store(&g->clock_ns, start_ns);
    atomic_store(&g->enabled, enable ? 1 : 0);
    return 0;
}

int hcltdx_sim_guest_enabled(const hcltdx_sim *sim)
{
    return sim ? atomic_load(&sim->guest.enabled) : 0;
}

int hcltdx_sim_guest_advance(hcltdx_sim *sim, uint64_t ns)
{
    if (!sim || sim->guest.wall_clock)
        return -EINVAL;
    atomic_fetch_add(&sim->guest.clock_ns, ns);
    return 0;
}

uint64_t hcltdx_sim_guest_clock(hcltdx_sim *sim)
{
    if (!sim)
        return 0;
    uint64_t t = atomic_load(&sim->guest.clock_ns);
    if (sim->guest.wall_clock)
        t += monotonic_ns() - sim->guest.wall_origin;
    return t;
}

int hcltdx_sim_guest_state(const hcltdx_sim *sim, uint32_t vp, uint64_t t,
                           hcltdx_sim_guest_values *out)
{
    if (!sim || !out || vp >= sim->cfg.vp_count)
        return -EINVAL;
    const uint64_t s = sim->guest.seed;
    const uint64_t h = mix64(s ^ ((uint64_t)vp * GOLDEN));
    const uint64_t us = t / NS_PER_US;
    memset(out, 0, sizeof(*out));

    out->rip = CODE_BASE + (((h & 0xFFFF0ull) + 16u * us) % CODE_SIZE);
    uint64_t d = us % 2048u;
    uint64_t depth = d < 1024u ? d : 2048u - d;
    out->rsp = STACK_BASE + vp * STACK_STRIDE + STACK_SIZE - 8u - 8u * depth;
    out->cr3 = cr3_roots[mix64(h + t / CR3_PERIOD_NS) & 3u];
    /* A 3 GHz TSC, and the VMX preemption timer counting down at TSC / 32. */
    out->tsc = 3u * t;
    out->preemption_timer = 0xFFFFFFFFull - ((out->tsc >> 5) & 0xFFFFFFFFull);

    const uint64_t n = t / EXIT_PERIOD_NS;
    const uint64_t x = mix64(h ^ (n * GOLDEN));
    const uint32_t reason = exit_table[x >> 60];
    uint64_t npages = sim->cfg.memory_size / SIM_PAGE;
    out->exit_index = n;
    out->exit_reason = reason;
    switch (reason) {
    case EXIT_MSR_READ:
    case EXIT_MSR_WRITE:
    case EXIT_CPUID:
        out->instr_len = 2;
        break;
    case EXIT_HLT:
        out->instr_len = 1;
        break;
    case EXIT_IO: {
        uint64_t size = ((x >> 4) & 1u) ? 3u : 0u; /* 32-bit or 8-bit */
        uint64_t in = (x >> 3) & 1u;
        out->qualification = (uint64_t)io_ports[x & 7u] << 16 | in << 3 | size;
        out->instr_len = 1;
        break;
    }
    case EXIT_CR_ACCESS: /* MOV to CR3 from a GPR */
        out->qualification = 3u | ((x >> 8) & 0xFu) << 8;
        out->instr_len = 3;
        break;
    case EXIT_EPT_VIOLATION:
        out->gpa = ((x >> 16) % npages) * SIM_PAGE + ((x >> 4) & 0xFF8u);
        out->gla = GLA_DIRECT_MAP + out->gpa;
        /* read or write access, GLA valid, caused by the access to the GPA */
        out->qualification = (((x >> 3) & 1u) ? 2u : 1u) | 0x80u | 0x100u;
        break;
    case EXIT_HW_INTERRUPT: /* external interrupt, valid, vector 0x20..0x3F */
        out->interruption_info = 0x80000000u | (0x20u + (x & 0x1Fu));
        break;
    }
    out->exit_rax = (reason == EXIT_HW_INTERRUPT ? L2_EXIT_HOST_ROUTED_ASYNC << 32 : 0) | reason;
    return 0;
}

static void put(struct sim_vp *v, uint32_t encoding, uint64_t value)
{
    int i = hcltdx_vmcs_field_index(encoding);
    if (i >= 0)
        v->vmcs[0][i] = value & hcltdx_vmcs_width_mask(encoding);
}

void sim_guest_sync(hcltdx_sim *sim, uint32_t vp)
{
    hcltdx_sim_guest_values g;
    if (hcltdx_sim_guest_state(sim, vp, hcltdx_sim_guest_clock(sim), &g))
        return;
    struct sim_vp *v = &sim->vps[vp]; /* the caller holds its lock */
    put(v, F_GUEST_RIP, g.rip);
    put(v, F_GUEST_RSP, g.rsp);
    put(v, F_GUEST_CR3, g.cr3);
    put(v, F_PREEMPTION_TIMER, g.preemption_timer);
    put(v, F_EXIT_REASON, g.exit_reason);
    put(v, F_EXIT_QUALIFICATION, g.qualification);
    put(v, F_GUEST_PHYSICAL_ADDRESS, g.gpa);
    put(v, F_GUEST_LINEAR_ADDRESS, g.gla);
    put(v, F_EXIT_INSTRUCTION_LENGTH, g.instr_len);
    put(v, F_EXIT_INTERRUPTION_INFO, g.interruption_info);

    /* TDG.VP.ENTER's output registers for that exit (spec 3.3; the register
     * roles follow the TDX module ABI of VP.ENTER). */
    tdx_tdg_vp_enter_exit_info e;
    memset(&e, 0, sizeof(e));
    e.rax = g.exit_rax;
    e.rcx = g.qualification;
    e.rdx = g.gla;
    e.r8 = g.gpa;
    e.r9 = g.interruption_info;
    e.r11 = g.instr_len << 32;
    memcpy(hcltdx_sim_run_page(sim, vp)->context, &e, sizeof(e));
}
