/* Construction, shared pages, host controls, faults, counters and the log. */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sim_internal.h"

void hcltdx_sim_config_init(hcltdx_sim_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->vp_count = 1;
    cfg->memory_size = 64ull << 20;
    cfg->backing_fd = -1;
    cfg->host_map_all_2m = 1;
}

static uint8_t *map_window(int fd, uint64_t page_offset, size_t len)
{
    void *p;
    if (fd >= 0)
        p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                 (off_t)(page_offset * SIM_PAGE));
    else
        p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void reset_memory(hcltdx_sim *sim)
{
    uint8_t init = sim->cfg.host_map_all_2m   ? (uint8_t)(HCLTDX_SIM_PAGE_PENDING | PF_LEVEL_2M)
                   : sim->cfg.host_map_all_4k ? (uint8_t)HCLTDX_SIM_PAGE_PENDING
                                              : (uint8_t)HCLTDX_SIM_PAGE_NOT_ADDED;
    memset(sim->pflags, init, sim->npages);
    for (uint32_t vm = 0; vm < HCLTDX_SIM_NUM_L2_VMS; vm++)
        memset(sim->attrs[vm], 0, sim->npages * sizeof(uint16_t));
    memset(sim->counts, 0, sizeof(sim->counts));
    sim->counts[init & PF_STATE_MASK] = sim->npages;
}

static void free_faults(hcltdx_sim *sim)
{
    for (uint32_t s = 0; s < HCLTDX_SIM_NUM_SLOTS; s++) {
        free(sim->faults[s].queue);
        memset(&sim->faults[s], 0, sizeof(sim->faults[s]));
        atomic_store(&sim->fault_armed[s], 0);
    }
}

hcltdx_sim *hcltdx_sim_new(const hcltdx_sim_config *cfg, int *err)
{
    int e = 0;
    hcltdx_sim *sim = NULL;
    if (!cfg || cfg->vp_count < 1 || cfg->vp_count > HCLTDX_SIM_MAX_VPS ||
        cfg->memory_size == 0 || cfg->memory_size % HCLTDX_LARGE_PAGE_SIZE ||
        cfg->memory_size > SIM_MAX_MEMORY) {
        e = -EINVAL;
        goto fail;
    }
    sim = calloc(1, sizeof(*sim));
    if (!sim) {
        e = -ENOMEM;
        goto fail;
    }
    sim->cfg = *cfg;
    sim->npages = cfg->memory_size / SIM_PAGE;
    pthread_mutex_init(&sim->mem_lock, NULL);
    pthread_mutex_init(&sim->fault_lock, NULL);
    pthread_mutex_init(&sim->log_lock, NULL);

    sim->window_len = (size_t)cfg->vp_count * SIM_PAGE;
    if (cfg->backing_fd >= 0) {
        struct stat st;
        off_t need = (off_t)(((uint64_t)MSHV_APIC_PAGE_OFFSET | (cfg->vp_count - 1)) * SIM_PAGE +
                             SIM_PAGE);
        if (fstat(cfg->backing_fd, &st) || (st.st_size < need && ftruncate(cfg->backing_fd, need))) {
            e = -errno;
            goto fail;
        }
    }
    sim->run_window = map_window(cfg->backing_fd, HCL_RUN_PAGE_OFFSET, sim->window_len);
    sim->apic_window = map_window(cfg->backing_fd, MSHV_APIC_PAGE_OFFSET, sim->window_len);
    sim->vtl1_apic_block = map_window(-1, 0, sim->window_len);
    if (!sim->run_window || !sim->apic_window || !sim->vtl1_apic_block) {
        e = -errno;
        goto fail;
    }

    if (posix_memalign((void **)&sim->vps, 64, cfg->vp_count * sizeof(struct sim_vp))) {
        e = -ENOMEM;
        goto fail;
    }
    for (uint32_t i = 0; i < cfg->vp_count; i++) {
        atomic_init(&sim->vps[i].busy, 0);
        sim->vps[i].vtl1_apic = (hcltdx_apic_page *)(sim->vtl1_apic_block + (size_t)i * SIM_PAGE);
    }

    /* calloc of this size is backed by lazily zeroed pages. */
    sim->pflags = calloc(sim->npages, 1);
    sim->attrs[0] = calloc(sim->npages, sizeof(uint16_t));
    sim->attrs[1] = calloc(sim->npages, sizeof(uint16_t));
    if (!sim->pflags || !sim->attrs[0] || !sim->attrs[1]) {
        e = -ENOMEM;
        goto fail;
    }
    hcltdx_sim_reset(sim);
    return sim;

fail:
    if (err)
        *err = e ? e : -ENOMEM;
    hcltdx_sim_free(sim);
    return NULL;
}

void hcltdx_sim_free(hcltdx_sim *sim)
{
    if (!sim)
        return;
    if (sim->run_window)
        munmap(sim->run_window, sim->window_len);
    if (sim->apic_window)
        munmap(sim->apic_window, sim->window_len);
    if (sim->vtl1_apic_block)
        munmap(sim->vtl1_apic_block, sim->window_len);
    free(sim->vps);
    free(sim->pflags);
    free(sim->attrs[0]);
    free(sim->attrs[1]);
    free_faults(sim);
    free(sim->log);
    pthread_mutex_destroy(&sim->mem_lock);
    pthread_mutex_destroy(&sim->fault_lock);
    pthread_mutex_destroy(&sim->log_lock);
    free(sim);
}

void hcltdx_sim_reset(hcltdx_sim *sim)
{
    atomic_store(&sim->guest.enabled, 0); /* the synthetic guest is off after new */
    memset(sim->run_window, 0, sim->window_len);
    memset(sim->apic_window, 0, sim->window_len);
    memset(sim->vtl1_apic_block, 0, sim->window_len);
    for (uint32_t i = 0; i < sim->cfg.vp_count; i++) {
        sim_vp_lock(&sim->vps[i]);
        sim_vp_reset(sim, &sim->vps[i], i);
        memset(sim->vps[i].calls, 0, sizeof(sim->vps[i].calls));
        sim_vp_unlock(&sim->vps[i]);
    }
    pthread_mutex_lock(&sim->mem_lock);
    reset_memory(sim);
    pthread_mutex_unlock(&sim->mem_lock);
    hcltdx_sim_clear_faults(sim);
    hcltdx_sim_log_clear(sim);
}

uint32_t hcltdx_sim_vp_count(const hcltdx_sim *sim)
{
    return sim->cfg.vp_count;
}

uint64_t hcltdx_sim_memory_size(const hcltdx_sim *sim)
{
    return sim->cfg.memory_size;
}

const hcltdx_sim_config *hcltdx_sim_config_of(const hcltdx_sim *sim)
{
    return &sim->cfg;
}

/* ---- the ioctl --------------------------------------------------------- */

void sim_vp_lock_contended(struct sim_vp *v)
{
    for (unsigned spins = 0;; spins++) {
        if (!atomic_load_explicit(&v->busy, memory_order_relaxed) &&
            !atomic_exchange_explicit(&v->busy, 1, memory_order_acquire))
            return;
        if (spins < 64) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        } else
            sched_yield(); /* the holder may be descheduled */
    }
}

/* Any tdcall of a valid VP: the leaf's dispatch, the call log, the synthetic
 * guest, injected faults. Out of line, so that the VMCS fast path below
 * saves no registers for it. */
static __attribute__((noinline)) int sim_tdcall_general(hcltdx_sim *sim, uint32_t vp,
                                                        struct mshv_tdcall *io)
{
    /* Registers are read straight from the caller's struct; a copy of the
     * inputs is made only for the call log. The kernel copies RCX, RDX, R8,
     * R9 in; R10-R15 enter as 0. */
    uint64_t leaf = io->rax;
    uint32_t slot = leaf == LEAF_VP_RD   ? HCLTDX_SIM_SLOT_VP_RD
                    : leaf == LEAF_VP_WR ? HCLTDX_SIM_SLOT_VP_WR
                                         : sim_leaf_slot(leaf);
    struct sim_vp *v = &sim->vps[vp];
    int logging = atomic_load_explicit(&sim->log_cap, memory_order_relaxed) != 0;
    struct mshv_tdcall in;
    uint64_t rax;
    int injected = 0;

    if (__builtin_expect(logging, 0))
        in = *io;
    sim_vp_lock(v);
    if (__builtin_expect(atomic_load_explicit(&sim->guest.enabled, memory_order_relaxed), 0))
        sim_guest_sync(sim, vp); /* the synthetic guest, off by default */
    v->calls[slot]++;
    if (__builtin_expect(atomic_load_explicit(&sim->fault_armed[slot], memory_order_relaxed), 0) &&
        sim_fault_take(sim, slot, &rax)) {
        injected = 1;
        io->rax = rax; /* the inputs stay; R10/R11 out are 0 */
        io->r10_out = 0;
        io->r11_out = 0;
    } else if (__builtin_expect(slot == HCLTDX_SIM_SLOT_VP_RD || slot == HCLTDX_SIM_SLOT_VP_WR, 1) &&
               __builtin_expect(sim_vmcs_fast(v, slot == HCLTDX_SIM_SLOT_VP_WR, io), 1)) {
        /* done: a VMCS field read or written */
    } else {
        uint64_t r[6] = {io->rcx, io->rdx, io->r8, io->r9, 0, 0};
        io->rax = sim_dispatch(sim, vp, leaf, r);
        io->rcx = r[0];
        io->rdx = r[1];
        io->r8 = r[2];
        io->r9 = r[3];
        io->r10_out = r[4];
        io->r11_out = r[5];
    }
    /* Appended under the VP's lock: the log's order of one VP's calls is the
     * order they changed its state in. */
    if (__builtin_expect(logging, 0))
        sim_log_append(sim, vp, injected, &in, io);
    sim_vp_unlock(v);
    return 0;
}


/* The body of hcltdx_sim_tdcall, inlined into it and into the backend
 * table's entry (sim_backend_tdcall below), which returns a positive errno.
 * A VP.RD or VP.WR with no call log, no synthetic guest and no fault armed
 * for its leaf is run here, in one pass under the VP's lock; anything else,
 * and any access the one-pass path does not take (a refusal, the start of an
 * enumeration), goes to sim_tdcall_general, which decides it from scratch
 * (sim_vmcs_fast changes nothing when it declines). */
static inline __attribute__((always_inline)) int sim_tdcall_body(hcltdx_sim *sim, uint32_t vp,
                                                                 struct mshv_tdcall *io)
{
    if (!sim || !io || vp >= sim->cfg.vp_count)
        return EINVAL;
    uint64_t leaf = io->rax;
    if (__builtin_expect(leaf == LEAF_VP_RD || leaf == LEAF_VP_WR, 1)) {
        int write = leaf == LEAF_VP_WR;
        uint32_t slot = write ? HCLTDX_SIM_SLOT_VP_WR : HCLTDX_SIM_SLOT_VP_RD;
        if (__builtin_expect(
                (atomic_load_explicit(&sim->log_cap, memory_order_relaxed) |
                 (size_t)atomic_load_explicit(&sim->guest.enabled, memory_order_relaxed) |
                 (size_t)atomic_load_explicit(&sim->fault_armed[slot], memory_order_relaxed)) == 0,
                1)) {
            struct sim_vp *v = &sim->vps[vp];
            /* Only an uncontended lock is taken here (a held one is waited
             * for on the general path): the fast path makes no call, so it
             * keeps everything in scratch registers. */
            if (__builtin_expect(!atomic_exchange_explicit(&v->busy, 1, memory_order_acquire), 1)) {
                int done = sim_vmcs_fast(v, write, io);
                v->calls[slot] += (uint64_t)done;
                sim_vp_unlock(v);
                if (__builtin_expect(done, 1))
                    return 0;
            }
        }
    }
    return sim_tdcall_general(sim, vp, io);
}

int hcltdx_sim_tdcall(hcltdx_sim *sim, uint32_t vp, struct mshv_tdcall *io)
{
    return -sim_tdcall_body(sim, vp, io);
}

int sim_backend_tdcall(void *ctx, uint32_t vp, struct mshv_tdcall *io)
{
    return sim_tdcall_body((hcltdx_sim *)ctx, vp, io);
}

/* ---- shared pages ------------------------------------------------------- */

hcl_run *hcltdx_sim_run_page(hcltdx_sim *sim, uint32_t vp)
{
    if (!sim || vp >= sim->cfg.vp_count)
        return NULL;
    return (hcl_run *)(void *)(sim->run_window + (size_t)vp * SIM_PAGE);
}

hcltdx_apic_page *hcltdx_sim_apic_page(hcltdx_sim *sim, uint32_t vp, uint32_t vtl)
{
    if (!sim || vp >= sim->cfg.vp_count || vtl > 1)
        return NULL;
    if (vtl == 1)
        return sim->vps[vp].vtl1_apic;
    return (hcltdx_apic_page *)(void *)(sim->apic_window + (size_t)vp * SIM_PAGE);
}

/* Just above TD memory: VTL0 APIC pages at memory_size + vp * 4096, VTL1
 * APIC pages at memory_size + (64 + vp) * 4096; never accept-able. */
uint64_t hcltdx_sim_vtl1_apic_page_gpa(const hcltdx_sim *sim, uint32_t vp)
{
    return sim->cfg.memory_size + ((uint64_t)HCLTDX_SIM_MAX_VPS + vp) * SIM_PAGE;
}

void *hcltdx_sim_page_at_offset(hcltdx_sim *sim, uint64_t page_offset)
{
    uint64_t kind = page_offset >> 16;
    uint32_t vp = (uint32_t)(page_offset & HCL_PAGE_OFFSET_VP_MASK);
    if (!sim || vp >= sim->cfg.vp_count)
        return NULL;
    if (kind == 0)
        return hcltdx_sim_run_page(sim, vp);
    if (kind == (MSHV_APIC_PAGE_OFFSET >> 16))
        return hcltdx_sim_apic_page(sim, vp, 0);
    return NULL;
}

/* ---- host side of memory ----------------------------------------------- */

static int host_range(const hcltdx_sim *sim, uint64_t gpa, uint64_t len, uint64_t align)
{
    if (!sim || len == 0 || gpa % align || len % align || gpa >= sim->cfg.memory_size ||
        sim->cfg.memory_size - gpa < len)
        return -EINVAL;
    return 0;
}

int hcltdx_sim_map_host(hcltdx_sim *sim, uint64_t gpa, uint64_t len, uint32_t level)
{
    if (level > 1)
        return -EINVAL;
    int rc = host_range(sim, gpa, len, level ? HCLTDX_LARGE_PAGE_SIZE : SIM_PAGE);
    if (rc)
        return rc;
    uint64_t p0 = gpa / SIM_PAGE, n = len / SIM_PAGE;
    pthread_mutex_lock(&sim->mem_lock);
    for (uint64_t p = p0; p < p0 + n; p++)
        if ((sim->pflags[p] & PF_STATE_MASK) != HCLTDX_SIM_PAGE_NOT_ADDED) {
            rc = -EEXIST;
            goto out;
        }
    for (uint64_t p = p0; p < p0 + n; p++) {
        sim->pflags[p] = (uint8_t)(HCLTDX_SIM_PAGE_PENDING | (level ? PF_LEVEL_2M : 0));
        sim->attrs[0][p] = sim->attrs[1][p] = 0;
    }
    sim->counts[HCLTDX_SIM_PAGE_NOT_ADDED] -= n;
    sim->counts[HCLTDX_SIM_PAGE_PENDING] += n;
out:
    pthread_mutex_unlock(&sim->mem_lock);
    return rc;
}

int hcltdx_sim_unmap_host(hcltdx_sim *sim, uint64_t gpa, uint64_t len)
{
    int rc = host_range(sim, gpa, len, SIM_PAGE);
    if (rc)
        return rc;
    uint64_t p0 = gpa / SIM_PAGE, n = len / SIM_PAGE;
    pthread_mutex_lock(&sim->mem_lock);
    /* What remains of a partly removed 2 MiB mapping is demoted to 4 KiB. */
    uint64_t lo = p0 & ~(uint64_t)(SIM_PAGES_PER_2M - 1);
    uint64_t hi = (p0 + n + SIM_PAGES_PER_2M - 1) & ~(uint64_t)(SIM_PAGES_PER_2M - 1);
    for (uint64_t c = lo; c < hi; c += SIM_PAGES_PER_2M) {
        int whole = p0 <= c && p0 + n >= c + SIM_PAGES_PER_2M;
        for (uint64_t p = c; p < c + SIM_PAGES_PER_2M; p++) {
            if (p >= p0 && p < p0 + n) {
                sim->counts[sim->pflags[p] & PF_STATE_MASK]--;
                sim->counts[HCLTDX_SIM_PAGE_NOT_ADDED]++;
                sim->pflags[p] = HCLTDX_SIM_PAGE_NOT_ADDED;
                sim->attrs[0][p] = sim->attrs[1][p] = 0;
            } else if (!whole) {
                sim->pflags[p] &= (uint8_t)~PF_LEVEL_2M;
            }
        }
    }
    pthread_mutex_unlock(&sim->mem_lock);
    return 0;
}

int hcltdx_sim_get_page_info(hcltdx_sim *sim, uint64_t gpa, hcltdx_sim_page_info *out)
{
    if (!sim || !out || gpa >= sim->cfg.memory_size)
        return -EINVAL;
    uint64_t p = gpa / SIM_PAGE;
    pthread_mutex_lock(&sim->mem_lock);
    uint8_t f = sim->pflags[p];
    out->state = f & PF_STATE_MASK;
    out->level = (f & PF_LEVEL_2M) ? 1 : 0;
    out->attrs = ((uint64_t)sim->attrs[0][p] << 16) | ((uint64_t)sim->attrs[1][p] << 32);
    out->pending_attrs = (f & PF_ATTR_PENDING) ? 1 : 0;
    pthread_mutex_unlock(&sim->mem_lock);
    return 0;
}

void hcltdx_sim_page_counts(hcltdx_sim *sim, uint64_t out[3])
{
    pthread_mutex_lock(&sim->mem_lock);
    memcpy(out, sim->counts, sizeof(sim->counts));
    pthread_mutex_unlock(&sim->mem_lock);
}

size_t hcltdx_sim_footprint(const hcltdx_sim *sim)
{
    size_t n = sizeof(*sim);
    n += sim->cfg.vp_count * sizeof(struct sim_vp);
    n += 3 * sim->window_len; /* run, VTL0 APIC, VTL1 APIC pages */
    n += sim->npages * (1 + HCLTDX_SIM_NUM_L2_VMS * sizeof(uint16_t));
    n += atomic_load(&((hcltdx_sim *)sim)->log_cap) * sizeof(hcltdx_sim_log_entry);
    return n;
}

/* ---- VMCS and per-VP state from the host ------------------------------ */

static struct sim_vp *vp_of(hcltdx_sim *sim, uint32_t vp, uint32_t vm)
{
    if (!sim || vp >= sim->cfg.vp_count || vm < 1 || vm > HCLTDX_SIM_NUM_L2_VMS)
        return NULL;
    return &sim->vps[vp];
}

int hcltdx_sim_vmcs_peek(hcltdx_sim *sim, uint32_t vp, uint32_t vm, uint32_t encoding,
                         uint64_t *value)
{
    struct sim_vp *v = vp_of(sim, vp, vm);
    int i = hcltdx_vmcs_field_index(encoding);
    if (!v || !value)
        return -EINVAL;
    if (i < 0)
        return -ENOENT;
    sim_vp_lock(v);
    *value = v->vmcs[vm - 1][i];
    sim_vp_unlock(v);
    return 0;
}

int hcltdx_sim_vmcs_poke(hcltdx_sim *sim, uint32_t vp, uint32_t vm, uint32_t encoding,
                         uint64_t value)
{
    struct sim_vp *v = vp_of(sim, vp, vm);
    int i = hcltdx_vmcs_field_index(encoding);
    if (!v)
        return -EINVAL;
    if (i < 0)
        return -ENOENT;
    sim_vp_lock(v);
    v->vmcs[vm - 1][i] = value & hcltdx_vmcs_width_mask(encoding);
    sim_vp_unlock(v);
    return 0;
}

int hcltdx_sim_msr_bitmap_peek(hcltdx_sim *sim, uint32_t vp, uint32_t vm, uint32_t index,
                               uint64_t *value)
{
    struct sim_vp *v = vp_of(sim, vp, vm);
    if (!v || !value || index >= SIM_MSR_BITMAP_WORDS)
        return -EINVAL;
    sim_vp_lock(v);
    *value = v->msr_bitmap[vm - 1][index];
    sim_vp_unlock(v);
    return 0;
}

int hcltdx_sim_l2_ctls_peek(hcltdx_sim *sim, uint32_t vp, uint32_t vm, uint64_t *value)
{
    struct sim_vp *v = vp_of(sim, vp, vm);
    if (!v || !value)
        return -EINVAL;
    sim_vp_lock(v);
    *value = v->l2_ctls[vm - 1];
    sim_vp_unlock(v);
    return 0;
}

uint64_t hcltdx_sim_invgla_count(hcltdx_sim *sim, uint32_t vp)
{
    if (!sim || vp >= sim->cfg.vp_count)
        return 0;
    sim_vp_lock(&sim->vps[vp]);
    uint64_t n = sim->vps[vp].invgla_count;
    sim_vp_unlock(&sim->vps[vp]);
    return n;
}

/* ---- fault injection ------------------------------------------------------ */

static int inject_slot(uint64_t leaf, uint32_t *slot)
{
    *slot = sim_leaf_slot(leaf);
    return *slot == HCLTDX_SIM_SLOT_OTHER ? -EINVAL : 0;
}

static void rearm(hcltdx_sim *sim, uint32_t slot)
{
    struct sim_fault_slot *f = &sim->faults[slot];
    atomic_store(&sim->fault_armed[slot], f->len > 0 || f->den > 0);
}

int hcltdx_sim_inject(hcltdx_sim *sim, uint64_t leaf, uint32_t count, uint64_t status)
{
    uint32_t slot;
    if (!sim || inject_slot(leaf, &slot))
        return -EINVAL;
    if (count == 0)
        return 0;
    int rc = 0;
    pthread_mutex_lock(&sim->fault_lock);
    struct sim_fault_slot *f = &sim->faults[slot];
    if (f->head + f->len == f->cap) {
        if (f->head) {
            memmove(f->queue, f->queue + f->head, f->len * sizeof(*f->queue));
            f->head = 0;
        } else {
            size_t cap = f->cap ? f->cap * 2 : 8;
            void *q = realloc(f->queue, cap * sizeof(*f->queue));
            if (!q) {
                rc = -ENOMEM;
                goto out;
            }
            f->queue = q;
            f->cap = cap;
        }
    }
    f->queue[f->head + f->len++] = (struct sim_fault_entry){status, count};
    rearm(sim, slot);
out:
    pthread_mutex_unlock(&sim->fault_lock);
    return rc;
}

int hcltdx_sim_inject_rate(hcltdx_sim *sim, uint64_t leaf, uint32_t num, uint32_t den,
                           uint64_t status, uint64_t seed)
{
    uint32_t slot;
    if (!sim || inject_slot(leaf, &slot) || (den && num > den))
        return -EINVAL;
    pthread_mutex_lock(&sim->fault_lock);
    struct sim_fault_slot *f = &sim->faults[slot];
    f->num = num;
    f->den = den;
    f->rate_status = status;
    f->rng = seed ^ sim->cfg.seed;
    rearm(sim, slot);
    pthread_mutex_unlock(&sim->fault_lock);
    return 0;
}

void hcltdx_sim_clear_faults(hcltdx_sim *sim)
{
    pthread_mutex_lock(&sim->fault_lock);
    free_faults(sim);
    pthread_mutex_unlock(&sim->fault_lock);
}

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int sim_fault_take(hcltdx_sim *sim, uint32_t slot, uint64_t *status)
{
    int hit = 0;
    pthread_mutex_lock(&sim->fault_lock);
    struct sim_fault_slot *f = &sim->faults[slot];
    if (f->len) {
        struct sim_fault_entry *e = &f->queue[f->head];
        *status = e->status;
        hit = 1;
        if (--e->remaining == 0) {
            f->head++;
            if (--f->len == 0)
                f->head = 0;
        }
    } else if (f->den) {
        if (splitmix64(&f->rng) % f->den < f->num) {
            *status = f->rate_status;
            hit = 1;
        }
    }
    rearm(sim, slot);
    pthread_mutex_unlock(&sim->fault_lock);
    return hit;
}

/* ---- counters and the log -------------------------------------------------- */

void hcltdx_sim_counters(hcltdx_sim *sim, uint64_t out[HCLTDX_SIM_NUM_SLOTS])
{
    /* Each VP's counts under its lock: exact, and consistent with the VP's
     * state at the moment its lock was held. */
    memset(out, 0, HCLTDX_SIM_NUM_SLOTS * sizeof(out[0]));
    for (uint32_t i = 0; i < sim->cfg.vp_count; i++) {
        struct sim_vp *v = &sim->vps[i];
        sim_vp_lock(v);
        for (uint32_t s = 0; s < HCLTDX_SIM_NUM_SLOTS; s++)
            out[s] += v->calls[s];
        sim_vp_unlock(v);
    }
}

const char *hcltdx_sim_slot_name(uint32_t slot)
{
    static const char *const names[HCLTDX_SIM_NUM_SLOTS] = {
        "VP_INFO", "MEM_PAGE_ACCEPT", "VM_RD", "VM_WR", "VP_RD",
        "VP_WR", "MEM_PAGE_ATTR_RD", "MEM_PAGE_ATTR_WR", "VP_INVGLA", "OTHER",
    };
    return slot < HCLTDX_SIM_NUM_SLOTS ? names[slot] : NULL;
}

int hcltdx_sim_log_enable(hcltdx_sim *sim, size_t capacity)
{
    hcltdx_sim_log_entry *buf = NULL;
    if (!sim)
        return -EINVAL;
    if (capacity) {
        if (capacity > ((size_t)1 << 26))
            return -EINVAL;
        buf = calloc(capacity, sizeof(*buf));
        if (!buf)
            return -ENOMEM;
    }
    pthread_mutex_lock(&sim->log_lock);
    free(sim->log);
    sim->log = buf;
    sim->log_head = sim->log_len = 0;
    sim->log_dropped = 0;
    atomic_store(&sim->log_cap, capacity);
    pthread_mutex_unlock(&sim->log_lock);
    return 0;
}

void sim_log_append(hcltdx_sim *sim, uint32_t vp, int injected,
                    const struct mshv_tdcall *in, const struct mshv_tdcall *out)
{
    pthread_mutex_lock(&sim->log_lock);
    size_t cap = atomic_load_explicit(&sim->log_cap, memory_order_relaxed);
    if (cap && sim->log) {
        size_t at;
        if (sim->log_len == cap) {
            at = sim->log_head;
            sim->log_head = (sim->log_head + 1) % cap;
            sim->log_dropped++;
        } else {
            at = (sim->log_head + sim->log_len++) % cap;
        }
        hcltdx_sim_log_entry *e = &sim->log[at];
        e->seq = sim->log_seq++;
        e->vp = vp;
        e->injected = (uint32_t)injected;
        e->in = *in;
        e->out = *out;
    }
    pthread_mutex_unlock(&sim->log_lock);
}

size_t hcltdx_sim_log_read(hcltdx_sim *sim, hcltdx_sim_log_entry *out, size_t max)
{
    pthread_mutex_lock(&sim->log_lock);
    size_t cap = atomic_load(&sim->log_cap), n = sim->log_len < max ? sim->log_len : max;
    for (size_t i = 0; i < n; i++)
        out[i] = sim->log[(sim->log_head + i) % cap];
    pthread_mutex_unlock(&sim->log_lock);
    return n;
}

size_t hcltdx_sim_log_len(hcltdx_sim *sim)
{
    pthread_mutex_lock(&sim->log_lock);
    size_t n = sim->log_len;
    pthread_mutex_unlock(&sim->log_lock);
    return n;
}

uint64_t hcltdx_sim_log_dropped(hcltdx_sim *sim)
{
    pthread_mutex_lock(&sim->log_lock);
    uint64_t n = sim->log_dropped;
    pthread_mutex_unlock(&sim->log_lock);
    return n;
}

void hcltdx_sim_log_clear(hcltdx_sim *sim)
{
    pthread_mutex_lock(&sim->log_lock);
    sim->log_head = sim->log_len = 0;
    sim->log_dropped = 0;
    sim->log_seq = 0;
    pthread_mutex_unlock(&sim->log_lock);
}
