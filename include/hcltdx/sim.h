/*
 * hcltdx simulator: a software model of what sits behind MSHV_VTL_TDCALL
 * (the mshv_vtl driver and the TDX module), as a plain C unit.
 *
 * No Python inside; every function is callable without the GIL and from
 * any thread. Link csrc/sim/ *.c (or libhcltdx_sim.so) from C, Rust or
 * ctypes. Behaviour follows docs/tdx-abi.md sections 2, 3, 7 and 10.
 *
 * Errors of the API itself (bad VP index, bad argument) are returned as
 * negative errno values; TDX statuses travel in mshv_tdcall.rax exactly as
 * the kernel returns them.
 */
#ifndef HCLTDX_SIM_H
#define HCLTDX_SIM_H

#include <stddef.h>
#include <stdint.h>

#include "hcltdx/abi.h"
#include "hcltdx/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HCLTDX_SIM_MAX_VPS 64u
#define HCLTDX_SIM_NUM_L2_VMS 2u /* VM1 = VTL0, VM2 = VTL1 */

/* Leaves the simulator counts (index into counter arrays). */
enum hcltdx_sim_leaf_slot {
    HCLTDX_SIM_SLOT_VP_INFO = 0,
    HCLTDX_SIM_SLOT_MEM_PAGE_ACCEPT,
    HCLTDX_SIM_SLOT_VM_RD,
    HCLTDX_SIM_SLOT_VM_WR,
    HCLTDX_SIM_SLOT_VP_RD,
    HCLTDX_SIM_SLOT_VP_WR,
    HCLTDX_SIM_SLOT_MEM_PAGE_ATTR_RD,
    HCLTDX_SIM_SLOT_MEM_PAGE_ATTR_WR,
    HCLTDX_SIM_SLOT_VP_INVGLA,
    HCLTDX_SIM_SLOT_OTHER, /* any other leaf value */
    HCLTDX_SIM_NUM_SLOTS
};

/* Per-page state of TD private memory. */
enum hcltdx_sim_page_state {
    HCLTDX_SIM_PAGE_NOT_ADDED = 0, /* the host never added it */
    HCLTDX_SIM_PAGE_PENDING = 1,   /* added by the host, not yet accepted */
    HCLTDX_SIM_PAGE_ACCEPTED = 2,
};

typedef struct hcltdx_sim_config {
    uint32_t vp_count;    /* 1..HCLTDX_SIM_MAX_VPS */
    uint64_t memory_size; /* bytes of TD private memory, multiple of 2 MiB */
    /*
     * Where the run pages and VTL0 APIC pages live. -1: anonymous memory.
     * Otherwise a file descriptor (memfd, /dev/shm file) the simulator
     * ftruncates and maps MAP_SHARED, placing each page at its mshv_vtl mmap
     * byte offset (run page of VP n at n*4096, VTL0 APIC page at
     * (0x30000|n)*4096), so a FUSE passthrough file can expose the same pages.
     */
    int backing_fd;
    /* Non-zero: the host initially maps all memory pending at 2 MiB. */
    int host_map_all_2m;
    /* Non-zero (and host_map_all_2m zero): all memory pending at 4 KiB. */
    int host_map_all_4k;
    /* Use the newer kernel run-page layout (L2 TSC-deadline block). */
    int tsc_deadline_layout;
    uint64_t seed; /* seeds fault injection */
} hcltdx_sim_config;

typedef struct hcltdx_sim hcltdx_sim;

void hcltdx_sim_config_init(hcltdx_sim_config *cfg);

/* Returns NULL and sets *err to a negative errno on failure. */
hcltdx_sim *hcltdx_sim_new(const hcltdx_sim_config *cfg, int *err);
void hcltdx_sim_free(hcltdx_sim *sim);

/* Back to the state right after hcltdx_sim_new (pages, VMCS, faults, counters, log). */
void hcltdx_sim_reset(hcltdx_sim *sim);

uint32_t hcltdx_sim_vp_count(const hcltdx_sim *sim);
uint64_t hcltdx_sim_memory_size(const hcltdx_sim *sim);
/* The configuration the model was created with. */
const hcltdx_sim_config *hcltdx_sim_config_of(const hcltdx_sim *sim);

/*
 * One TDCALL as the ioctl carries it, issued on the CPU running VP `vp`.
 * Returns 0 (the TDX status is in io->rax) or -EINVAL if vp is out of range.
 */
int hcltdx_sim_tdcall(hcltdx_sim *sim, uint32_t vp, struct mshv_tdcall *io);

/* ---- the kernel side of the shared pages ----------------------------- */

hcl_run *hcltdx_sim_run_page(hcltdx_sim *sim, uint32_t vp);
/* vtl 0: the page the kernel maps at MSHV_APIC_PAGE_OFFSET|vp;
 * vtl 1: a private page the model provides as VTL1's APIC page. */
hcltdx_apic_page *hcltdx_sim_apic_page(hcltdx_sim *sim, uint32_t vp, uint32_t vtl);
/* Guest-physical address the model assigns to VP vp's VTL1 APIC page. */
uint64_t hcltdx_sim_vtl1_apic_page_gpa(const hcltdx_sim *sim, uint32_t vp);
/* The page at an mshv_vtl mmap page offset, or NULL where the kernel
 * would refuse (VP out of range, a page kind TDX does not have). */
void *hcltdx_sim_page_at_offset(hcltdx_sim *sim, uint64_t page_offset);

/* ---- the host side of memory -------------------------------------------- */

/* Host adds [gpa, gpa+len) as pending pages mapped at `level` (0 = 4 KiB,
 * 1 = 2 MiB). 2 MiB needs a 2 MiB-aligned range. Returns 0 or -errno. */
int hcltdx_sim_map_host(hcltdx_sim *sim, uint64_t gpa, uint64_t len, uint32_t level);
/* Host removes the pages: they become NOT_ADDED, attributes cleared. */
int hcltdx_sim_unmap_host(hcltdx_sim *sim, uint64_t gpa, uint64_t len);

typedef struct hcltdx_sim_page_info {
    uint32_t state; /* enum hcltdx_sim_page_state */
    uint32_t level; /* level the host mapped it at */
    uint64_t attrs; /* TdgMemPageGpaAttr as stored */
    uint32_t pending_attrs; /* attributes written while pending */
} hcltdx_sim_page_info;

int hcltdx_sim_get_page_info(hcltdx_sim *sim, uint64_t gpa, hcltdx_sim_page_info *out);
/* Number of pages in each state, out[3] indexed by enum hcltdx_sim_page_state. */
void hcltdx_sim_page_counts(hcltdx_sim *sim, uint64_t out[3]);
/* Bytes of host memory the model itself uses (for the memory benchmark). */
size_t hcltdx_sim_footprint(const hcltdx_sim *sim);

/* ---- VMCS and other per-VP state, seen from the host ------------------- */

/* vm: 1 or 2 (L2 VM index). Encoding: raw Intel VMCS field encoding.
 * Reads bypass read masks; writes bypass write masks. 0 or -errno. */
int hcltdx_sim_vmcs_peek(hcltdx_sim *sim, uint32_t vp, uint32_t vm, uint32_t encoding,
                         uint64_t *value);
int hcltdx_sim_vmcs_poke(hcltdx_sim *sim, uint32_t vp, uint32_t vm, uint32_t encoding,
                         uint64_t value);
int hcltdx_sim_msr_bitmap_peek(hcltdx_sim *sim, uint32_t vp, uint32_t vm, uint32_t index,
                               uint64_t *value);
int hcltdx_sim_l2_ctls_peek(hcltdx_sim *sim, uint32_t vp, uint32_t vm, uint64_t *value);
/* Number of GLAs invalidated by VP.INVGLA on this VP so far. */
uint64_t hcltdx_sim_invgla_count(hcltdx_sim *sim, uint32_t vp);

/* ---- VMCS field catalogue (what the model knows) ------------------------ */

typedef struct hcltdx_vmcs_field_desc {
    const char *name;   /* e.g. "VMX_VMCS_GUEST_CR3" */
    uint32_t encoding;  /* Intel encoding */
    uint64_t read_mask;
    uint64_t write_mask; /* 0: read-only for the L1 VMM */
} hcltdx_vmcs_field_desc;

size_t hcltdx_vmcs_field_count(void);
const hcltdx_vmcs_field_desc *hcltdx_vmcs_field_at(size_t i);
const hcltdx_vmcs_field_desc *hcltdx_vmcs_field_find(uint32_t encoding);

/* ---- fault injection ------------------------------------------------------ */

/* Queue `count` forced results for `leaf`: the next calls return rax =
 * `status` (full 64-bit RAX) without touching any state. Queues append. */
int hcltdx_sim_inject(hcltdx_sim *sim, uint64_t leaf, uint32_t count, uint64_t status);
/* With probability num/den (deterministic PRNG, seeded) a call of `leaf`
 * returns `status`. den == 0 disables. */
int hcltdx_sim_inject_rate(hcltdx_sim *sim, uint64_t leaf, uint32_t num, uint32_t den,
                           uint64_t status, uint64_t seed);
void hcltdx_sim_clear_faults(hcltdx_sim *sim);

/* ---- counters and the call log ------------------------------------------- */

void hcltdx_sim_counters(hcltdx_sim *sim, uint64_t out[HCLTDX_SIM_NUM_SLOTS]);
const char *hcltdx_sim_slot_name(uint32_t slot); /* "MEM_PAGE_ACCEPT", ... */

typedef struct hcltdx_sim_log_entry {
    uint64_t seq;
    uint32_t vp;
    uint32_t injected; /* 1 when the status came from fault injection */
    struct mshv_tdcall in;
    struct mshv_tdcall out;
} hcltdx_sim_log_entry;

/* capacity 0 disables logging; entries beyond capacity drop the oldest. */
int hcltdx_sim_log_enable(hcltdx_sim *sim, size_t capacity);
/* Copies up to max entries, oldest first; returns how many were copied. */
size_t hcltdx_sim_log_read(hcltdx_sim *sim, hcltdx_sim_log_entry *out, size_t max);
size_t hcltdx_sim_log_len(hcltdx_sim *sim);
uint64_t hcltdx_sim_log_dropped(hcltdx_sim *sim);
void hcltdx_sim_log_clear(hcltdx_sim *sim);

/* ---- the synthetic guest (csrc/sim/sim_guest.c, docs/guest.md) --------- */

/* Guest state at one clock point, as the formulas of docs/guest.md give it. */
typedef struct hcltdx_sim_guest_values {
    uint64_t rip, rsp, cr3, tsc, preemption_timer;
    uint64_t exit_index; /* number of the latest exit: clock / 100 us */
    uint64_t exit_reason, qualification, gpa, gla, instr_len, interruption_info;
    uint64_t exit_rax; /* exit_info.rax: TDX status in 63..32, VMX exit in 31..0 */
} hcltdx_sim_guest_values;

/* Turn the guest on or off (off: the model is exactly as without it).
 * wall_clock 0: the clock only moves by hcltdx_sim_guest_advance; 1: it also
 * follows CLOCK_MONOTONIC from this call. The clock starts at start_ns. */
int hcltdx_sim_guest_set(hcltdx_sim *sim, int enable, uint64_t seed, int wall_clock,
                         uint64_t start_ns);
int hcltdx_sim_guest_enabled(const hcltdx_sim *sim);
/* Manual clock only (-EINVAL in wall-clock mode). */
int hcltdx_sim_guest_advance(hcltdx_sim *sim, uint64_t ns);
uint64_t hcltdx_sim_guest_clock(hcltdx_sim *sim);
/* The state the guest has at clock t (pure; does not touch the model). */
int hcltdx_sim_guest_state(const hcltdx_sim *sim, uint32_t vp, uint64_t t,
                           hcltdx_sim_guest_values *out);

/* ---- the simulator as a tdcall backend ------------------------------------ */

/* ctx = the hcltdx_sim *. tdcall forwards to hcltdx_sim_tdcall; map_page
 * returns the model's own page for an mshv_vtl mmap page offset (ENXIO where
 * the kernel would refuse); unmap_page does nothing. */
extern const hcltdx_backend_ops hcltdx_sim_backend_ops;

#ifdef __cplusplus
}
#endif

#endif /* HCLTDX_SIM_H */
