"""Property tests: the simulator against tiny reference models."""

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from hcltdx._cabi import vmcs_catalogue
from hcltdx._sim import Sim

U64 = (1 << 64) - 1
VP_RD, VP_WR, ACCEPT = 9, 10, 6
SUCCESS = 0
NOT_READABLE = 0xC0000C0200000000
NOT_WRITABLE = 0xC0000C0100000000
VALUE_NOT_VALID = 0xC0000C0300000000
ALREADY_ACCEPTED = 0x00000B0A
SIZE_MISMATCH = 0xC0000B0B
EPT_WALK_FAILED = 0xC0000B00

CATALOGUE = vmcs_catalogue()
RESET = {0x2800: U64, 0x6820: 0x2}  # link pointer, RFLAGS (docs/simulator.md)
SIZE = {0: 1, 1: 3, 2: 2, 3: 3}


def code(enc, vtl):
    return enc | SIZE[(enc >> 13) & 3] << 32 | 2 << 52 | (36, 44)[vtl] << 56


op = st.tuples(
    st.sampled_from(["rd", "wr"]),
    st.integers(0, len(CATALOGUE) - 1),
    st.integers(0, 1),
    st.integers(0, U64),
    st.one_of(st.just(U64), st.integers(0, U64), st.integers(0, 0xFFFF)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(op, max_size=60))
def test_vp_rd_wr_agree_with_reference(ops):
    sim = Sim(vp_count=1, memory_size=2 << 20)
    ref = {}
    for kind, i, vtl, value, mask in ops:
        _name, enc, rmask, wmask = CATALOGUE[i]
        # The kernel registers VTL0's APIC page itself (section 2.6): the model
        # presets VM1's VIRTUAL_APIC_PAGE to that page's GPA (memory_size + vp*4096).
        reset = (2 << 20) if (vtl, enc) == (0, 0x2012) else RESET.get(enc, 0)
        old = ref.get((vtl, enc), reset)
        if kind == "rd":
            out = sim._tdcall(0, VP_RD, 0, code(enc, vtl))
            if rmask == 0:
                assert out[0] == NOT_READABLE
            else:
                assert out[0] == SUCCESS and out[3] == old & rmask
            continue
        out = sim._tdcall(0, VP_WR, 0, code(enc, vtl), value, mask)
        m = wmask & mask
        if m == 0:
            assert out[0] == NOT_WRITABLE
        elif (mask & ~wmask) & (value ^ old):
            assert out[0] == VALUE_NOT_VALID
        else:
            assert out[0] == SUCCESS and out[3] == old & rmask
            ref[(vtl, enc)] = (old & ~m) | (value & m)
    for (vtl, enc), v in ref.items():
        assert sim.vmcs(0, vtl, enc) == v


MEM = 16 << 20
PAGES = MEM // 4096
CHUNKS = MEM // (2 << 20)

host_op = st.tuples(st.integers(0, CHUNKS - 1), st.sampled_from([None, 0, 1]))
accept_op = st.tuples(st.booleans(), st.integers(0, PAGES - 1))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(host_op, min_size=1, max_size=CHUNKS), st.lists(accept_op, max_size=80))
def test_accepts_never_twice_never_lost(host, accepts):
    sim = Sim(vp_count=1, memory_size=MEM, host_map=None)
    level_of = {}
    for chunk, level in host:
        if level is None or chunk in level_of:
            continue
        sim.map_host((chunk << 21, (chunk + 1) << 21), level)
        level_of[chunk] = level

    accepted = set()
    for large, page in accepts:
        if large:
            page &= ~511
        rax = sim._tdcall(0, ACCEPT, page << 12 | int(large))[0]
        pages = set(range(page, page + 512)) if large else {page}
        chunk = page >> 9
        if rax == SUCCESS:
            assert not pages & accepted
            accepted |= pages
            if not large:
                level_of[chunk] = 0  # the host demoted a 2 MiB mapping first
        elif rax >> 32 == ALREADY_ACCEPTED:
            # Section 10.5: only at or below the accepted mapping's level.
            assert pages & accepted and (not large or level_of[chunk] == 1)
        elif rax >> 32 == SIZE_MISMATCH:
            # Section 10.5: 2 MiB where the host mapped 4 KiB pages.
            assert large and level_of.get(chunk) == 0
        else:
            assert rax >> 32 == EPT_WALK_FAILED and chunk not in level_of

    # A second accept of anything accepted is a warning, never a success.
    for page in sorted(accepted)[:20]:
        assert sim._tdcall(0, ACCEPT, page << 12)[0] >> 32 == ALREADY_ACCEPTED
    states = {p: sim.page_state(p << 12).state for p in range(0, PAGES, 97)}
    for p, s in states.items():
        assert (s == "accepted") == (p in accepted)
    added = 512 * len(level_of)
    assert sim.page_counts() == {
        "accepted": len(accepted),
        "pending": added - len(accepted),
        "not_added": PAGES - added,
    }
