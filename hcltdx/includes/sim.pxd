# Declarations of include/hcltdx/sim.h (the simulator's C API).
from libc.stdint cimport uint32_t, uint64_t

from hcltdx.includes.abi cimport mshv_tdcall, hcl_run, hcltdx_apic_page

cdef extern from "hcltdx/sim.h" nogil:
    const uint32_t HCLTDX_SIM_MAX_VPS
    const uint32_t HCLTDX_SIM_NUM_SLOTS

    ctypedef struct hcltdx_sim_config:
        uint32_t vp_count
        uint64_t memory_size
        int backing_fd
        int host_map_all_2m
        int host_map_all_4k
        int tsc_deadline_layout
        uint64_t seed

    ctypedef struct hcltdx_sim:
        pass

    void hcltdx_sim_config_init(hcltdx_sim_config *cfg)
    hcltdx_sim *hcltdx_sim_new(const hcltdx_sim_config *cfg, int *err)
    void hcltdx_sim_free(hcltdx_sim *sim)
    void hcltdx_sim_reset(hcltdx_sim *sim)
    uint32_t hcltdx_sim_vp_count(const hcltdx_sim *sim)
    uint64_t hcltdx_sim_memory_size(const hcltdx_sim *sim)
    const hcltdx_sim_config *hcltdx_sim_config_of(const hcltdx_sim *sim)
    int hcltdx_sim_tdcall(hcltdx_sim *sim, uint32_t vp, mshv_tdcall *io)

    hcl_run *hcltdx_sim_run_page(hcltdx_sim *sim, uint32_t vp)
    hcltdx_apic_page *hcltdx_sim_apic_page(hcltdx_sim *sim, uint32_t vp, uint32_t vtl)
    uint64_t hcltdx_sim_vtl1_apic_page_gpa(const hcltdx_sim *sim, uint32_t vp)
    void *hcltdx_sim_page_at_offset(hcltdx_sim *sim, uint64_t page_offset)

    int hcltdx_sim_map_host(hcltdx_sim *sim, uint64_t gpa, uint64_t len, uint32_t level)
    int hcltdx_sim_unmap_host(hcltdx_sim *sim, uint64_t gpa, uint64_t len)

    ctypedef struct hcltdx_sim_page_info:
        uint32_t state
        uint32_t level
        uint64_t attrs
        uint32_t pending_attrs

    int hcltdx_sim_get_page_info(hcltdx_sim *sim, uint64_t gpa, hcltdx_sim_page_info *out)
    void hcltdx_sim_page_counts(hcltdx_sim *sim, uint64_t out[3])
    size_t hcltdx_sim_footprint(const hcltdx_sim *sim)

    int hcltdx_sim_vmcs_peek(hcltdx_sim *sim, uint32_t vp, uint32_t vm, uint32_t encoding,
                             uint64_t *value)
    int hcltdx_sim_vmcs_poke(hcltdx_sim *sim, uint32_t vp, uint32_t vm, uint32_t encoding,
                             uint64_t value)
    int hcltdx_sim_msr_bitmap_peek(hcltdx_sim *sim, uint32_t vp, uint32_t vm, uint32_t index,
                                   uint64_t *value)
    int hcltdx_sim_l2_ctls_peek(hcltdx_sim *sim, uint32_t vp, uint32_t vm, uint64_t *value)
    uint64_t hcltdx_sim_invgla_count(hcltdx_sim *sim, uint32_t vp)

    ctypedef struct hcltdx_vmcs_field_desc:
        const char *name
        uint32_t encoding
        uint64_t read_mask
        uint64_t write_mask

    size_t hcltdx_vmcs_field_count()
    const hcltdx_vmcs_field_desc *hcltdx_vmcs_field_at(size_t i)
    const hcltdx_vmcs_field_desc *hcltdx_vmcs_field_find(uint32_t encoding)

    int hcltdx_sim_inject(hcltdx_sim *sim, uint64_t leaf, uint32_t count, uint64_t status)
    int hcltdx_sim_inject_rate(hcltdx_sim *sim, uint64_t leaf, uint32_t num, uint32_t den,
                               uint64_t status, uint64_t seed)
    void hcltdx_sim_clear_faults(hcltdx_sim *sim)

    void hcltdx_sim_counters(hcltdx_sim *sim, uint64_t *out)
    const char *hcltdx_sim_slot_name(uint32_t slot)

    ctypedef struct hcltdx_sim_log_entry:
        uint64_t seq
        uint32_t vp
        uint32_t injected
        mshv_tdcall ins "in"
        mshv_tdcall out

    int hcltdx_sim_log_enable(hcltdx_sim *sim, size_t capacity)
    size_t hcltdx_sim_log_read(hcltdx_sim *sim, hcltdx_sim_log_entry *out, size_t max)
    size_t hcltdx_sim_log_len(hcltdx_sim *sim)
    uint64_t hcltdx_sim_log_dropped(hcltdx_sim *sim)
    void hcltdx_sim_log_clear(hcltdx_sim *sim)

from hcltdx.includes.backend cimport hcltdx_backend_ops

cdef extern from "hcltdx/sim.h" nogil:
    const hcltdx_backend_ops hcltdx_sim_backend_ops

cdef extern from "hcltdx/sim.h" nogil:
    ctypedef struct hcltdx_sim_guest_values:
        uint64_t rip, rsp, cr3, tsc, preemption_timer
        uint64_t exit_index
        uint64_t exit_reason, qualification, gpa, gla, instr_len, interruption_info
        uint64_t exit_rax

    int hcltdx_sim_guest_set(hcltdx_sim *sim, int enable, uint64_t seed, int wall_clock,
                             uint64_t start_ns)
    int hcltdx_sim_guest_enabled(const hcltdx_sim *sim)
    int hcltdx_sim_guest_advance(hcltdx_sim *sim, uint64_t ns)
    uint64_t hcltdx_sim_guest_clock(hcltdx_sim *sim)
    int hcltdx_sim_guest_state(const hcltdx_sim *sim, uint32_t vp, uint64_t t,
                               hcltdx_sim_guest_values *out)
