/* Private state of the simulator; shared by the csrc/sim/ units only. */
#ifndef HCLTDX_SIM_INTERNAL_H
#define HCLTDX_SIM_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "hcltdx/sim.h"

#define SIM_MAX_FIELDS 256u
#define SIM_MSR_BITMAP_WORDS 512u
#define SIM_PAGE 4096u
#define SIM_PAGES_PER_2M 512u
#define SIM_MAX_MEMORY (1ull << 40)

/* Per 4 KiB page flag byte. */
#define PF_STATE_MASK 0x3u  /* enum hcltdx_sim_page_state */
#define PF_LEVEL_2M 0x4u    /* host mapped it as part of a 2 MiB page */
#define PF_ATTR_PENDING 0x8u /* L2 attributes written while pending */

/* TDCALL leaves (docs/tdx-abi.md section 5). */
#define LEAF_VP_INFO 1u
#define LEAF_MEM_PAGE_ACCEPT 6u
#define LEAF_VM_RD 7u
#define LEAF_VM_WR 8u
#define LEAF_VP_RD 9u
#define LEAF_VP_WR 10u
#define LEAF_MEM_PAGE_ATTR_RD 23u
#define LEAF_MEM_PAGE_ATTR_WR 24u
#define LEAF_VP_INVGLA 27u

/* TDX status codes the model returns (code << 32). */
#define ST(code) ((uint64_t)(code) << 32)
#define TDX_SUCCESS 0ull
#define TDX_OPERAND_INVALID ST(0xC0000100u)
#define TDX_EPT_WALK_FAILED ST(0xC0000B00u)
#define TDX_PAGE_ALREADY_ACCEPTED ST(0x00000B0Au)
#define TDX_PAGE_SIZE_MISMATCH ST(0xC0000B0Bu)
#define TDX_PAGE_ATTR_INVALID ST(0xC0000B11u)
#define TDX_METADATA_FIELD_ID_INCORRECT ST(0xC0000C00u)
#define TDX_METADATA_FIELD_NOT_WRITABLE ST(0xC0000C01u)
#define TDX_METADATA_FIELD_NOT_READABLE ST(0xC0000C02u)
#define TDX_METADATA_FIELD_VALUE_NOT_VALID ST(0xC0000C03u)
#define TDX_METADATA_FIRST_FIELD_ID_IN_CONTEXT ST(0x00000C0Bu)
#define TDX_GLA_NOT_CANONICAL ST(0xC0001160u)

/* Operand ids placed in `details` (the module's register numbering). */
#define OPND_RAX 0u
#define OPND_RCX 1u
#define OPND_RDX 2u
#define OPND_R8 8u
#define OPND_R9 9u

/*
 * One VP's state. A VP runs on one CPU at a time, so its state has one
 * thread working on it at a time in normal use (the runner's owner); other
 * threads (a raw hcl.tdcall from a second thread, the FUSE daemon's workers,
 * the host-side peek/poke) are rare. The VP is therefore guarded by a lock
 * word of its own, taken with a single atomic exchange on the VP's own cache
 * line and released with a plain release store: uncontended, that is one
 * locked instruction per call on a line no other VP touches. Contended, the
 * loser spins briefly and then yields (critical sections are short and never
 * sleep). The per-leaf call counters live in the same line, updated under
 * the lock, so no shared cache line is written on the call path.
 */
struct sim_vp {
    _Atomic uint32_t busy; /* 0 free, 1 held; see sim_vp_lock() */
    uint64_t calls[HCLTDX_SIM_NUM_SLOTS]; /* per leaf slot, under `busy` */
    uint64_t vmcs[HCLTDX_SIM_NUM_L2_VMS][SIM_MAX_FIELDS];
    uint64_t msr_bitmap[HCLTDX_SIM_NUM_L2_VMS][SIM_MSR_BITMAP_WORDS];
    uint64_t l2_ctls[HCLTDX_SIM_NUM_L2_VMS];
    uint64_t invgla_count;
    hcltdx_apic_page *vtl1_apic;
} __attribute__((aligned(64)));

struct sim_fault_entry {
    uint64_t status;
    uint32_t remaining;
};

struct sim_fault_slot {
    struct sim_fault_entry *queue;
    size_t head, len, cap;
    uint32_t num, den;
    uint64_t rate_status;
    uint64_t rng;
};

struct sim_guest {
    _Atomic int enabled;
    int wall_clock;
    uint64_t seed;
    uint64_t wall_origin;
    _Atomic uint64_t clock_ns;
};

struct hcltdx_sim {
    hcltdx_sim_config cfg;
    uint64_t npages;

    struct sim_vp *vps;
    /* Run pages and VTL0 APIC pages: windows of the backing file, or
     * anonymous memory. */
    uint8_t *run_window;
    uint8_t *apic_window;
    size_t window_len;
    uint8_t *vtl1_apic_block;

    pthread_mutex_t mem_lock;
    uint8_t *pflags;     /* per page */
    uint16_t *attrs[HCLTDX_SIM_NUM_L2_VMS];
    uint64_t counts[3];  /* pages per state */

    pthread_mutex_t fault_lock;
    _Atomic int fault_armed[HCLTDX_SIM_NUM_SLOTS];
    struct sim_fault_slot faults[HCLTDX_SIM_NUM_SLOTS];

    pthread_mutex_t log_lock;
    _Atomic size_t log_cap; /* 0: disabled */
    hcltdx_sim_log_entry *log;
    size_t log_head, log_len;
    uint64_t log_seq, log_dropped;

    struct sim_guest guest; /* csrc/sim/sim_guest.c; zero = off */
};

/* csrc/sim/sim_core.c: the VP lock (see struct sim_vp). */
void sim_vp_lock_contended(struct sim_vp *v);

static inline void sim_vp_lock(struct sim_vp *v)
{
    if (__builtin_expect(!atomic_exchange_explicit(&v->busy, 1, memory_order_acquire), 1))
        return;
    sim_vp_lock_contended(v);
}

static inline void sim_vp_unlock(struct sim_vp *v)
{
    atomic_store_explicit(&v->busy, 0, memory_order_release);
}

/* csrc/sim/vmcs_catalogue.c */
int hcltdx_vmcs_field_index(uint32_t encoding); /* -1: not in the catalogue */
int hcltdx_vmcs_next_readable(size_t i);    /* -1: no readable field after i */
uint64_t hcltdx_vmcs_width_mask(uint32_t encoding);

/* csrc/sim/sim_leaves.c */
uint64_t sim_dispatch(hcltdx_sim *sim, uint32_t vp, uint64_t leaf, uint64_t r[6]);
uint32_t sim_leaf_slot(uint64_t leaf);
void sim_vp_reset(hcltdx_sim *sim, struct sim_vp *v, uint32_t index);

/* csrc/sim/sim_guest.c: bring VP vp's guest state up to the guest clock;
 * the caller holds the VP's lock. */
void sim_guest_sync(hcltdx_sim *sim, uint32_t vp);

/* csrc/sim/sim_leaves.c: per catalogue index, bits 0-55 of the field's
 * VP.RD/WR id (code, size, context; the reserved bits among them 0), the
 * next readable field's whole id in each L2 VM's VMCS class (~0 at the end
 * of the class), and the field's read and write masks. Built at load from
 * the catalogue. */
#define CLASS_VMCS_1 36u
#define CLASS_VMCS_2 44u
#define ID_LOW_BITS ((1ull << 56) - 1)
/* Hidden: internal to the model's shared object, so its code reaches them
 * without a load from the GOT. */
#define SIM_HIDDEN __attribute__((visibility("hidden")))
extern SIM_HIDDEN uint64_t sim_vmcs_id_low[SIM_MAX_FIELDS];
extern SIM_HIDDEN uint64_t sim_vmcs_next_id[HCLTDX_SIM_NUM_L2_VMS][SIM_MAX_FIELDS];
extern SIM_HIDDEN uint64_t sim_vmcs_rmask[SIM_MAX_FIELDS], sim_vmcs_wmask[SIM_MAX_FIELDS];

/* The common call, a VP.RD or VP.WR of a VMCS field that succeeds, in one
 * pass over the caller's registers: the same decode and rules as
 * decode_field() and vp_rd_wr() (RCX 0, a VMCS class, bits 0-55 exactly the
 * field's id, readable / writable under the mask, the value's bits outside
 * the writable ones unchanged), with the outputs vp_rd_wr() gives. Anything
 * else (another class, a refusal, an enumeration start) returns 0 having
 * changed nothing, and the general path handles it. The caller holds the
 * VP's lock. */
static inline int sim_vmcs_fast(struct sim_vp *v, int write, struct mshv_tdcall *io)
{
    uint64_t id = io->rdx;
    uint64_t top = id >> 56;
    uint32_t vm;
    if (top == CLASS_VMCS_1)
        vm = 0;
    else if (top == CLASS_VMCS_2)
        vm = 1;
    else
        return 0;
    if (io->rcx != 0)
        return 0;
    int i = hcltdx_vmcs_field_index((uint32_t)(id & 0xFFFFFFu));
    if (i < 0 || (id & ID_LOW_BITS) != sim_vmcs_id_low[i])
        return 0;
    uint64_t *slot = &v->vmcs[vm][i];
    uint64_t old = *slot, rmask = sim_vmcs_rmask[i];
    if (!write) {
        if (rmask == 0)
            return 0;
        io->rdx = sim_vmcs_next_id[vm][i];
    } else {
        uint64_t value = io->r8, req = io->r9, wmask = sim_vmcs_wmask[i];
        uint64_t m = wmask & req;
        if (m == 0 || ((req & ~wmask) & (value ^ old)))
            return 0;
        *slot = (old & ~m) | (value & m);
    }
    io->rax = TDX_SUCCESS;
    io->r8 = old & rmask;
    io->r10_out = 0;
    io->r11_out = 0;
    return 1;
}

/* csrc/sim/sim_core.c */
int sim_backend_tdcall(void *ctx, uint32_t vp, struct mshv_tdcall *io); /* positive errno */
int sim_fault_take(hcltdx_sim *sim, uint32_t slot, uint64_t *status);
void sim_log_append(hcltdx_sim *sim, uint32_t vp, int injected,
                    const struct mshv_tdcall *in, const struct mshv_tdcall *out);

#endif
