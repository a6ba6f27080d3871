/*
 * The TDCALL leaves behind MSHV_VTL_TDCALL (docs/tdx-abi.md section 10).
 * r[] holds RCX, RDX, R8, R9, R10, R11 in and out; the return value is RAX.
 */
#include <string.h>

#include "sim_internal.h"

enum { R_RCX, R_RDX, R_R8, R_R9, R_R10, R_R11 };

#define SHARED_BIT (1ull << 47)
#define GPA_MASK 0x000FFFFFFFFFF000ull

uint32_t sim_leaf_slot(uint64_t leaf)
{
    switch (leaf) {
    case LEAF_VP_INFO: return HCLTDX_SIM_SLOT_VP_INFO;
    case LEAF_MEM_PAGE_ACCEPT: return HCLTDX_SIM_SLOT_MEM_PAGE_ACCEPT;
    case LEAF_VM_RD: return HCLTDX_SIM_SLOT_VM_RD;
    case LEAF_VM_WR: return HCLTDX_SIM_SLOT_VM_WR;
    case LEAF_VP_RD: return HCLTDX_SIM_SLOT_VP_RD;
    case LEAF_VP_WR: return HCLTDX_SIM_SLOT_VP_WR;
    case LEAF_MEM_PAGE_ATTR_RD: return HCLTDX_SIM_SLOT_MEM_PAGE_ATTR_RD;
    case LEAF_MEM_PAGE_ATTR_WR: return HCLTDX_SIM_SLOT_MEM_PAGE_ATTR_WR;
    case LEAF_VP_INVGLA: return HCLTDX_SIM_SLOT_VP_INVGLA;
    default: return HCLTDX_SIM_SLOT_OTHER;
    }
}

/* ---- per-VP state ------------------------------------------------------ */

#define ENC_LINK_POINTER 0x2800u
#define ENC_GUEST_RFLAGS 0x6820u
#define ENC_VIRTUAL_APIC_PAGE 0x2012u

void sim_vp_reset(hcltdx_sim *sim, struct sim_vp *v, uint32_t index)
{
    memset(v->vmcs, 0, sizeof(v->vmcs));
    for (uint32_t vm = 0; vm < HCLTDX_SIM_NUM_L2_VMS; vm++) {
        int i = hcltdx_vmcs_field_index(ENC_LINK_POINTER);
        if (i >= 0)
            v->vmcs[vm][i] = ~0ull; /* "no shadow VMCS", as VMX requires */
        i = hcltdx_vmcs_field_index(ENC_GUEST_RFLAGS);
        if (i >= 0)
            v->vmcs[vm][i] = 0x2; /* reserved bit 1 */
        for (uint32_t w = 0; w < SIM_MSR_BITMAP_WORDS; w++)
            v->msr_bitmap[vm][w] = ~0ull; /* intercept every MSR */
        v->l2_ctls[vm] = 0;
    }
    /* The kernel registers the VTL0 APIC page itself (section 2.6). */
    int i = hcltdx_vmcs_field_index(ENC_VIRTUAL_APIC_PAGE);
    if (i >= 0)
        v->vmcs[0][i] = sim->cfg.memory_size + (uint64_t)index * SIM_PAGE;
    v->invgla_count = 0;
}

/* ---- TDG.VP.RD / TDG.VP.WR ------------------------------------------- */

#define CLASS_MANAGEMENT 32u
#define CLASS_MSR_BITMAPS_1 37u
#define CLASS_MSR_BITMAPS_2 45u
#define CONTEXT_TD_VCPU 2u
#define L2_CTLS_FIELD_BASE 0x50u
#define NON_ARCH (1ull << 63)

/* Reserved bits 24-31, 47-49, 55, 62; last_element 34-37; last_field 38-46;
 * increment_size 50; write_mask_valid 51 (a metadata-list feature). */
#define FIELD_ID_MUST_BE_ZERO                                              \
    ((0xFFull << 24) | (0xFull << 34) | (0x1FFull << 38) | (7ull << 47) | \
     (1ull << 50) | (1ull << 51) | (1ull << 55) | (1ull << 62))

enum field_kind { FK_VMCS, FK_MSR_BITMAP, FK_L2_CTLS };

struct field_ref {
    enum field_kind kind;
    uint32_t vm;    /* 0-based */
    uint32_t index; /* catalogue index, bitmap word, or 0 */
    uint64_t rmask, wmask;
};

static uint64_t field_size_of(uint32_t enc)
{
    switch ((enc >> 13) & 3u) {
    case 0: return 1; /* 16-bit */
    case 2: return 2; /* 32-bit */
    default: return 3; /* 64-bit, natural */
    }
}

static uint64_t make_id(uint32_t class_code, uint64_t size, uint32_t code, int non_arch)
{
    return (uint64_t)code | (size << 32) | ((uint64_t)CONTEXT_TD_VCPU << 52) |
           ((uint64_t)class_code << 56) | (non_arch ? NON_ARCH : 0);
}

/* The VMCS fields' id, next id and masks by catalogue index (see
 * sim_internal.h): a VMCS access, the common one, then decodes with one
 * compare and enumerates with one load. */
uint64_t sim_vmcs_id_low[SIM_MAX_FIELDS];
uint64_t sim_vmcs_next_id[HCLTDX_SIM_NUM_L2_VMS][SIM_MAX_FIELDS];
uint64_t sim_vmcs_rmask[SIM_MAX_FIELDS], sim_vmcs_wmask[SIM_MAX_FIELDS];

__attribute__((constructor)) static void build_vmcs_ids(void)
{
    /* Only the constant catalogue is read: constructors of other files
     * (the catalogue's index) may not have run yet. */
    size_t n = hcltdx_vmcs_field_count();
    uint64_t next = 0;
    for (size_t i = n; i-- > 0;) {
        const hcltdx_vmcs_field_desc *d = hcltdx_vmcs_field_at(i);
        uint64_t low = make_id(0, field_size_of(d->encoding), d->encoding, 0);
        sim_vmcs_id_low[i] = low;
        sim_vmcs_next_id[0][i] = next ? next | ((uint64_t)CLASS_VMCS_1 << 56) : ~0ull;
        sim_vmcs_next_id[1][i] = next ? next | ((uint64_t)CLASS_VMCS_2 << 56) : ~0ull;
        sim_vmcs_rmask[i] = d->read_mask;
        sim_vmcs_wmask[i] = d->write_mask;
        if (d->read_mask)
            next = low;
    }
}

static uint64_t decode_field(uint64_t id, struct field_ref *f)
{
    /* VMCS classes: bits 56-63 are the class alone (bit 62 reserved, bit 63
     * non-arch, both 0); bits 0-55 must be exactly the field's id. This
     * accepts and refuses what the general checks below do. */
    uint64_t top = id >> 56;
    if (__builtin_expect(top == CLASS_VMCS_1 || top == CLASS_VMCS_2, 1)) {
        int i = hcltdx_vmcs_field_index((uint32_t)(id & 0xFFFFFFu));
        if (i < 0 || (id & ID_LOW_BITS) != sim_vmcs_id_low[i])
            return TDX_METADATA_FIELD_ID_INCORRECT;
        const hcltdx_vmcs_field_desc *d = hcltdx_vmcs_field_at((size_t)i);
        f->kind = FK_VMCS;
        f->vm = top == CLASS_VMCS_1 ? 0 : 1;
        f->index = (uint32_t)i;
        f->rmask = d->read_mask;
        f->wmask = d->write_mask;
        return 0;
    }
    if (id & FIELD_ID_MUST_BE_ZERO)
        return TDX_METADATA_FIELD_ID_INCORRECT;
    if (((id >> 52) & 7u) != CONTEXT_TD_VCPU)
        return TDX_METADATA_FIELD_ID_INCORRECT;
    uint32_t code = (uint32_t)(id & 0xFFFFFFu);
    uint64_t size = (id >> 32) & 3u;
    uint32_t class_code = (uint32_t)((id >> 56) & 0x3Fu);
    int non_arch = (id & NON_ARCH) != 0;

    switch (class_code) {
    case CLASS_VMCS_1:
    case CLASS_VMCS_2: {
        int i = hcltdx_vmcs_field_index(code);
        if (non_arch || i < 0 || size != field_size_of(code))
            return TDX_METADATA_FIELD_ID_INCORRECT;
        const hcltdx_vmcs_field_desc *d = hcltdx_vmcs_field_at((size_t)i);
        f->kind = FK_VMCS;
        f->vm = class_code == CLASS_VMCS_1 ? 0 : 1;
        f->index = (uint32_t)i;
        f->rmask = d->read_mask;
        f->wmask = d->write_mask;
        return 0;
    }
    case CLASS_MSR_BITMAPS_1:
    case CLASS_MSR_BITMAPS_2:
        if (non_arch || code >= SIM_MSR_BITMAP_WORDS || size != 3)
            return TDX_METADATA_FIELD_ID_INCORRECT;
        f->kind = FK_MSR_BITMAP;
        f->vm = class_code == CLASS_MSR_BITMAPS_1 ? 0 : 1;
        f->index = code;
        f->rmask = f->wmask = ~0ull;
        return 0;
    case CLASS_MANAGEMENT:
        if (!non_arch || size != 3 || code <= L2_CTLS_FIELD_BASE ||
            code > L2_CTLS_FIELD_BASE + HCLTDX_SIM_NUM_L2_VMS)
            return TDX_METADATA_FIELD_ID_INCORRECT;
        f->kind = FK_L2_CTLS;
        f->vm = code - L2_CTLS_FIELD_BASE - 1;
        f->index = 0;
        f->rmask = ~0ull;
        f->wmask = 0x3; /* enable_shared_ept, enable_tdvmcall */
        return 0;
    default:
        return TDX_METADATA_FIELD_ID_INCORRECT;
    }
}

static uint64_t first_field_id(void)
{
    const hcltdx_vmcs_field_desc *d = hcltdx_vmcs_field_at(0);
    return make_id(CLASS_VMCS_1, field_size_of(d->encoding), d->encoding, 0);
}

/* Enumeration order: catalogue order inside a class (readable fields);
 * -1 ends the class. */
static uint64_t next_field_id(const struct field_ref *f)
{
    switch (f->kind) {
    case FK_VMCS: {
        /* enumeration lists readable fields only */
        return sim_vmcs_next_id[f->vm][f->index];
    }
    case FK_MSR_BITMAP:
        if (f->index + 1u >= SIM_MSR_BITMAP_WORDS)
            return ~0ull;
        return make_id(f->vm ? CLASS_MSR_BITMAPS_2 : CLASS_MSR_BITMAPS_1, 3, f->index + 1u, 0);
    case FK_L2_CTLS:
    default:
        if (f->vm + 1u >= HCLTDX_SIM_NUM_L2_VMS)
            return ~0ull;
        return make_id(CLASS_MANAGEMENT, 3, L2_CTLS_FIELD_BASE + f->vm + 2u, 1);
    }
}

static uint64_t *field_slot(struct sim_vp *v, const struct field_ref *f)
{
    switch (f->kind) {
    case FK_VMCS: return &v->vmcs[f->vm][f->index];
    case FK_MSR_BITMAP: return &v->msr_bitmap[f->vm][f->index];
    case FK_L2_CTLS:
    default: return &v->l2_ctls[f->vm];
    }
}

static uint64_t vp_rd_wr(hcltdx_sim *sim, uint32_t vp, int write, uint64_t r[6])
{
    struct field_ref f;
    uint64_t st;

    if (r[R_RCX] != 0) {
        r[R_R8] = 0;
        return TDX_OPERAND_INVALID | OPND_RCX;
    }
    if (!write && r[R_RDX] == ~0ull) {
        r[R_RDX] = first_field_id();
        r[R_R8] = 0;
        return TDX_METADATA_FIRST_FIELD_ID_IN_CONTEXT;
    }
    st = decode_field(r[R_RDX], &f);
    if (st) {
        r[R_R8] = 0;
        return st;
    }

    /* The caller (hcltdx_sim_tdcall) holds the VP's lock. */
    struct sim_vp *v = &sim->vps[vp];
    uint64_t *slot = field_slot(v, &f);
    uint64_t old = *slot;
    if (!write) {
        if (f.rmask == 0) {
            st = TDX_METADATA_FIELD_NOT_READABLE;
            r[R_R8] = 0;
        } else {
            r[R_R8] = old & f.rmask;
            r[R_RDX] = next_field_id(&f);
        }
    } else {
        uint64_t value = r[R_R8], req = r[R_R9];
        uint64_t m = f.wmask & req;
        if (m == 0) {
            st = TDX_METADATA_FIELD_NOT_WRITABLE;
            r[R_R8] = 0;
        } else if ((req & ~f.wmask) & (value ^ old)) {
            st = TDX_METADATA_FIELD_VALUE_NOT_VALID;
            r[R_R8] = 0;
        } else {
            *slot = (old & ~m) | (value & m);
            r[R_R8] = old & f.rmask;
        }
    }
    return st;
}

/* ---- memory: TDG.MEM.PAGE.ACCEPT, ATTR.RD, ATTR.WR --------------------- */

static inline uint32_t pstate(const hcltdx_sim *sim, uint64_t p)
{
    return sim->pflags[p] & PF_STATE_MASK;
}

static void set_state(hcltdx_sim *sim, uint64_t p, uint32_t st)
{
    sim->counts[sim->pflags[p] & PF_STATE_MASK]--;
    sim->counts[st]++;
    sim->pflags[p] = (uint8_t)((sim->pflags[p] & ~PF_STATE_MASK & ~PF_ATTR_PENDING) | st);
}

/* Validates an ACCEPT / ATTR.WR RCX (level up to max_level, reserved bits,
 * alignment, range, shared bit). On success *gpa and *level are set. */
static int decode_mapping_rcx(const hcltdx_sim *sim, uint64_t rcx, uint32_t max_level,
                              uint64_t *gpa, uint32_t *level)
{
    uint32_t lvl = (uint32_t)(rcx & 7u);
    if (lvl > max_level)
        return -1;
    if (rcx & 0xFF8ull || rcx >> 52)
        return -1;
    uint64_t a = rcx & GPA_MASK;
    uint64_t size = SIM_PAGE << (9 * lvl);
    /* Memory is a whole number of 2 MiB pages: an aligned 4 KiB or 2 MiB
     * page that starts inside it ends inside it. */
    if (a & SHARED_BIT || a & (size - 1) || a >= sim->cfg.memory_size)
        return -1;
    *gpa = a;
    *level = lvl;
    return 0;
}

/* The host splits the 2 MiB mapping holding page p into 512 4 KiB ones. */
static void demote(hcltdx_sim *sim, uint64_t p)
{
    uint64_t base = p & ~(uint64_t)(SIM_PAGES_PER_2M - 1);
    for (uint64_t q = base; q < base + SIM_PAGES_PER_2M; q++)
        sim->pflags[q] &= (uint8_t)~PF_LEVEL_2M;
}

static uint64_t mem_page_accept(hcltdx_sim *sim, uint64_t r[6])
{
    uint64_t gpa;
    uint32_t level;
    /* 1 GiB is rejected by the module versions the seed targets. */
    if (decode_mapping_rcx(sim, r[R_RCX], 1, &gpa, &level))
        return TDX_OPERAND_INVALID | OPND_RCX;

    uint64_t p = gpa / SIM_PAGE, st = TDX_SUCCESS;
    pthread_mutex_lock(&sim->mem_lock);
    if (level == 0) {
        switch (pstate(sim, p)) {
        case HCLTDX_SIM_PAGE_NOT_ADDED:
            st = TDX_EPT_WALK_FAILED;
            break;
        case HCLTDX_SIM_PAGE_ACCEPTED:
            st = TDX_PAGE_ALREADY_ACCEPTED | ((sim->pflags[p] & PF_LEVEL_2M) ? 1u : 0u);
            break;
        default:
            /* On hardware this is an EPT-violation exit; the host demotes
             * and the guest's retry succeeds. */
            if (sim->pflags[p] & PF_LEVEL_2M)
                demote(sim, p);
            set_state(sim, p, HCLTDX_SIM_PAGE_ACCEPTED);
        }
    } else if (sim->pflags[p] & PF_LEVEL_2M) {
        switch (pstate(sim, p)) {
        case HCLTDX_SIM_PAGE_ACCEPTED:
            st = TDX_PAGE_ALREADY_ACCEPTED | 1u;
            break;
        case HCLTDX_SIM_PAGE_PENDING:
            for (uint64_t q = p; q < p + SIM_PAGES_PER_2M; q++)
                set_state(sim, q, HCLTDX_SIM_PAGE_ACCEPTED);
            break;
        default:
            st = TDX_EPT_WALK_FAILED;
        }
    } else {
        /* 4 KiB mappings below a 2 MiB request: a size mismatch whatever
         * their state (ALREADY_ACCEPTED is only for a request at or below
         * an accepted mapping's level). */
        st = TDX_EPT_WALK_FAILED;
        for (uint64_t q = p; q < p + SIM_PAGES_PER_2M; q++)
            if (pstate(sim, q) != HCLTDX_SIM_PAGE_NOT_ADDED) {
                st = TDX_PAGE_SIZE_MISMATCH;
                break;
            }
    }
    pthread_mutex_unlock(&sim->mem_lock);
    return st;
}

static uint64_t page_attrs(const hcltdx_sim *sim, uint64_t p)
{
    /* The L1 slot reads as 0: ATTR.WR requires it to be 0, and the seed's
     * debug read-back demands that what was written reads back equal. */
    return ((uint64_t)sim->attrs[0][p] << 16) | ((uint64_t)sim->attrs[1][p] << 32);
}

static uint64_t page_mapping(const hcltdx_sim *sim, uint64_t p)
{
    uint64_t level = (sim->pflags[p] & PF_LEVEL_2M) ? 1 : 0;
    uint64_t base = level ? (p & ~(uint64_t)(SIM_PAGES_PER_2M - 1)) : p;
    uint64_t pending = pstate(sim, p) == HCLTDX_SIM_PAGE_PENDING ? 1ull << 62 : 0;
    return level | (base << 12) | pending;
}

static uint64_t mem_page_attr_rd(hcltdx_sim *sim, uint64_t r[6])
{
    uint64_t gpa = r[R_RCX];
    if (gpa & 0xFFFu || gpa & SHARED_BIT || gpa >= sim->cfg.memory_size) {
        r[R_RDX] = 0;
        return TDX_OPERAND_INVALID | OPND_RCX;
    }
    uint64_t p = gpa / SIM_PAGE, st = TDX_SUCCESS;
    pthread_mutex_lock(&sim->mem_lock);
    if (pstate(sim, p) == HCLTDX_SIM_PAGE_NOT_ADDED) {
        st = TDX_EPT_WALK_FAILED;
        r[R_RDX] = 0;
    } else {
        r[R_RCX] = page_mapping(sim, p);
        r[R_RDX] = page_attrs(sim, p);
    }
    pthread_mutex_unlock(&sim->mem_lock);
    return st;
}

#define ATTR_R 0x1u
#define ATTR_W 0x2u
#define ATTR_VALID 0x8000u
#define ATTR_BITS 0x008Fu  /* R, W, Xs, Xu, SVE */
#define MASK_BITS 0x808Fu  /* + inv_ept */

static uint64_t mem_page_attr_wr(hcltdx_sim *sim, uint64_t r[6])
{
    uint64_t gpa;
    uint32_t level;
    /* Level 2 (1 GiB) is a valid request; the model never maps 1 GiB, so it
     * ends as PAGE_SIZE_MISMATCH below. */
    if (decode_mapping_rcx(sim, r[R_RCX], 2, &gpa, &level))
        return TDX_OPERAND_INVALID | OPND_RCX;

    uint64_t attr = r[R_RDX], mask = r[R_R8];
    if ((attr & 0xFFFFu) || (attr >> 48))
        return TDX_OPERAND_INVALID | OPND_RDX; /* L1 slot, VM3 slot */
    if ((mask & 0xFFFFu) || (mask >> 48))
        return TDX_OPERAND_INVALID | OPND_R8;
    uint16_t a[2], m[2];
    for (int vm = 0; vm < 2; vm++) {
        a[vm] = (uint16_t)(attr >> (16 * (vm + 1)));
        m[vm] = (uint16_t)(mask >> (16 * (vm + 1)));
        if (a[vm] & ~(ATTR_BITS | ATTR_VALID) || (!(a[vm] & ATTR_VALID) && a[vm]))
            return TDX_OPERAND_INVALID | OPND_RDX;
        if (m[vm] & ~MASK_BITS)
            return TDX_OPERAND_INVALID | OPND_R8;
    }

    uint64_t p = gpa / SIM_PAGE, st = TDX_SUCCESS;
    pthread_mutex_lock(&sim->mem_lock);
    uint32_t host_level = (sim->pflags[p] & PF_LEVEL_2M) ? 1u : 0u;
    if (pstate(sim, p) == HCLTDX_SIM_PAGE_NOT_ADDED) {
        st = TDX_EPT_WALK_FAILED;
    } else if (host_level != level) {
        st = TDX_PAGE_SIZE_MISMATCH | host_level;
    } else {
        uint16_t nv[2];
        int bad = 0;
        for (int vm = 0; vm < 2; vm++) {
            uint16_t cur = sim->attrs[vm][p];
            uint16_t mm = m[vm] & ATTR_BITS;
            nv[vm] = cur;
            /* A slot with VALID clear leaves that VM's attributes alone. */
            if ((a[vm] & ATTR_VALID) && mm)
                nv[vm] = (uint16_t)(((cur & ~mm) | (a[vm] & mm)) | ATTR_VALID);
            if ((nv[vm] & ATTR_W) && !(nv[vm] & ATTR_R))
                bad = 1; /* EPT forbids write without read */
        }
        if (bad) {
            st = TDX_PAGE_ATTR_INVALID;
            r[R_RDX] = page_attrs(sim, p);
        } else {
            uint64_t n = level ? SIM_PAGES_PER_2M : 1;
            int pending = pstate(sim, p) == HCLTDX_SIM_PAGE_PENDING;
            for (uint64_t q = p; q < p + n; q++) {
                sim->attrs[0][q] = nv[0];
                sim->attrs[1][q] = nv[1];
                if (pending)
                    sim->pflags[q] |= PF_ATTR_PENDING;
            }
            r[R_RCX] = page_mapping(sim, p);
            r[R_RDX] = page_attrs(sim, p);
        }
    }
    pthread_mutex_unlock(&sim->mem_lock);
    return st;
}

/* ---- leaf 27: TDG.VP.INVGLA ------------------------------------------ */

static int canonical48(uint64_t a)
{
    uint64_t top = a >> 47; /* bits 63..47 */
    return top == 0 || top == 0x1FFFFull;
}

static uint64_t vp_invgla(hcltdx_sim *sim, uint32_t vp, uint64_t r[6])
{
    uint64_t flags = r[R_RCX], info = r[R_RDX];
    uint32_t vm = (uint32_t)((flags >> 52) & 3u);
    if ((flags & ~(1ull | (3ull << 52))) || vm == 0 || vm > HCLTDX_SIM_NUM_L2_VMS)
        return TDX_OPERAND_INVALID | OPND_RCX;

    uint64_t n;
    if (flags & 1u) {
        uint64_t first = info & 0x1FFu;
        uint64_t list_gpa = info & GPA_MASK;
        uint64_t count = (info >> 52) & 0x3FFu;
        if (info & (7ull << 9) || info >> 62 || first + count > 512 ||
            list_gpa & SHARED_BIT || list_gpa >= sim->cfg.memory_size)
            return TDX_OPERAND_INVALID | OPND_RDX;
        n = count; /* the list page itself is not modelled */
    } else {
        /* Entry: GLA page in bits 12-63, bits 0-11 = additional pages. */
        uint64_t first = info & ~0xFFFull;
        uint64_t extra = info & 0xFFFu;
        uint64_t last = first + extra * SIM_PAGE;
        if (!canonical48(first) || !canonical48(last) || last < first)
            return TDX_GLA_NOT_CANONICAL;
        n = extra + 1;
    }
    sim->vps[vp].invgla_count += n; /* under the VP's lock (the caller's) */
    return TDX_SUCCESS;
}

/* ---- TDG.VP.INFO -------------------------------------------------------- */

static uint64_t vp_info(hcltdx_sim *sim, uint32_t vp, uint64_t r[6])
{
    r[R_RCX] = 48;   /* GPAW; shared bit = 47 */
    r[R_RDX] = 0;    /* TD attributes */
    r[R_R8] = (uint64_t)sim->cfg.vp_count | ((uint64_t)HCLTDX_SIM_MAX_VPS << 32);
    r[R_R9] = vp;    /* VCPU index */
    r[R_R10] = 0;
    r[R_R11] = 0;
    return TDX_SUCCESS;
}

uint64_t sim_dispatch(hcltdx_sim *sim, uint32_t vp, uint64_t leaf, uint64_t r[6])
{
    switch (leaf) {
    case LEAF_VP_RD: return vp_rd_wr(sim, vp, 0, r);
    case LEAF_VP_WR: return vp_rd_wr(sim, vp, 1, r);
    case LEAF_MEM_PAGE_ACCEPT: return mem_page_accept(sim, r);
    case LEAF_MEM_PAGE_ATTR_RD: return mem_page_attr_rd(sim, r);
    case LEAF_MEM_PAGE_ATTR_WR: return mem_page_attr_wr(sim, r);
    case LEAF_VP_INVGLA: return vp_invgla(sim, vp, r);
    case LEAF_VP_INFO: return vp_info(sim, vp, r);
    default:
        /* VM.RD/WR (TD-wide metadata) are not modelled; VMCALL and ENTER
         * never reach the module through this path. */
        return TDX_OPERAND_INVALID | OPND_RAX;
    }
}
