"""Hypothesis state machines over the public API, on the simulator and on the
stand-in device: open Hcls, runners, VMCS reads and writes, batches, page
acceptance and attributes, views, faults, closes, in random orders.

A small model follows along; after every step the invariants hold: no page
accepted twice (the model's accepted set is exactly the simulator's), every
failure says how far it got, VMCS values are what the model expects, close
with live views is refused and closes nothing, closed objects refuse use.

Short by default (CI smoke); HCLTDX_FUZZ_LONG=1 runs many more examples.
"""

import gc
import os

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import (Bundle, RuleBasedStateMachine, consumes, invariant, precondition,
                                 rule, run_state_machine_as_test)

import hcltdx
from hcltdx import (AcceptPagesBusy, GuestVtl, MemoryRange, PageAlreadyAcceptedError,
                    SetPageAttributesError, TdCallLeaf, VmcsAccessError, VmcsField)

LONG = os.environ.get("HCLTDX_FUZZ_LONG", "") not in ("", "0")
EXAMPLES = int(os.environ.get("HCLTDX_FUZZ_EXAMPLES", "400" if LONG else "10"))
STEPS = 60 if LONG else 25
PAGE = 0x1000
REGION = 8 << 20          # ranges fall in the first 8 MiB so that they collide
ALL = (1 << 64) - 1
CR3 = VmcsField.VMX_VMCS_GUEST_CR3
RIP = VmcsField.VMX_VMCS_GUEST_RIP
BUSY = 0x80000200 << 32
FULL = 0x800F
ATTRS = int(hcltdx.TdgMemPageGpaAttr(l2_vm1=hcltdx.GpaVmAttributes(FULL)))
MASK = int(hcltdx.TdgMemPageAttrWriteR8(l2_vm1=hcltdx.GpaVmAttributesMask.ALL_CHANGED))
STATS = {"steps": 0, "examples": 0}


def ranges():
    start = st.integers(0, REGION // PAGE - 1).map(lambda p: p * PAGE)
    length = st.one_of(st.integers(1, 8).map(lambda n: n * PAGE),
                       st.integers(1, 2).map(lambda n: n * 0x200000),
                       st.integers(1, 600).map(lambda n: n * PAGE))
    return st.tuples(start, length).map(lambda t: (t[0], min(t[0] + t[1], REGION)))


def make_machine(backend):
    class ApiMachine(RuleBasedStateMachine):
        hcls = Bundle("hcls")

        def __init__(self):
            super().__init__()
            STATS["examples"] += 1
            backend.sim.reset()
            self.sim = backend.sim
            self.opened = []            # every Hcl made
            self.runners = {}           # (index of hcl in opened, vp) -> open runner
            self.views = []             # (runner, view)
            self.vmcs = {}              # (vp, vtl, field) -> value
            self.accepted = set()       # accepted page numbers
            self.attrs_full = set()     # pages whose VM #1 attributes are FULL

        def teardown(self):
            self.views.clear()
            gc.collect()
            for r in self.runners.values():
                r.close()
            for h in self.opened:
                h.close()
            self.sim.clear_faults()

        # -- opening and closing ------------------------------------------------------------

        @precondition(lambda self: sum(not h.closed for h in self.opened) < 3)
        @rule(target=hcls)
        def open_hcl(self):
            STATS["steps"] += 1
            h = backend.open()
            self.opened.append(h)
            return h

        def _hid(self, hcl):
            # A stable key (not id(): rules draw from sorted keys, and a
            # replayed example must draw the same).
            return next(i for i, h in enumerate(self.opened) if h is hcl)

        def _views_of(self, r):
            return [v for (owner, v) in self.views if owner is r]

        @rule(hcl=hcls, vp=st.integers(0, 1))
        def make_runner(self, hcl, vp):
            STATS["steps"] += 1
            if hcl.closed:
                with pytest.raises(ValueError, match="closed"):
                    hcl.runner(vp)
                return
            key = (self._hid(hcl), vp)
            if key in self.runners:
                with pytest.raises(RuntimeError, match="already open"):
                    hcl.runner(vp)
                return
            if backend.name == "device" and self.runners:
                # A device runner pins this thread: one per thread.
                with pytest.raises(RuntimeError, match="thread of its own"):
                    hcl.runner(vp)
                return
            self.runners[key] = hcl.runner(vp)

        @rule(hcl=hcls)
        def close_hcl(self, hcl):
            STATS["steps"] += 1
            mine = [r for (hid, _), r in self.runners.items() if hid == self._hid(hcl)]
            if any(self._views_of(r) for r in mine):
                with pytest.raises(BufferError):
                    hcl.close()
                assert not hcl.closed and all(not r.closed for r in mine)
                return
            hcl.close()
            assert hcl.closed and all(r.closed for r in mine)
            for key in [k for k in self.runners if k[0] == self._hid(hcl)]:
                del self.runners[key]
            with pytest.raises(ValueError, match="closed"):
                hcl.tdcall(0, TdCallLeaf.VP_INFO)

        @precondition(lambda self: self.runners)
        @rule(data=st.data())
        def close_runner(self, data):
            STATS["steps"] += 1
            key = data.draw(st.sampled_from(sorted(self.runners)))
            r = self.runners[key]
            if self._views_of(r):
                with pytest.raises(BufferError):
                    r.close()
                assert not r.closed
                return
            r.close()
            del self.runners[key]
            with pytest.raises(ValueError, match="closed"):
                r.read_vmcs64(GuestVtl.VTL0, CR3)

        # -- VMCS ------------------------------------------------------------------------------

        def _pick_runner(self, data):
            key = data.draw(st.sampled_from(sorted(self.runners)))
            return key[1], self.runners[key]

        @precondition(lambda self: self.runners)
        @rule(data=st.data(), vtl=st.integers(0, 1), field=st.sampled_from([CR3, RIP]),
              value=st.integers(0, ALL), mask=st.sampled_from([ALL, 0xFFFF_F000, 0xFF]),
              fault=st.booleans())
        def write_read(self, data, vtl, field, value, mask, fault):
            STATS["steps"] += 1
            vp, r = self._pick_runner(data)
            key = (vp, vtl, int(field))
            old = self.vmcs.get(key, self.sim.vmcs(vp, vtl, int(field)))
            if fault:
                self.sim.inject(TdCallLeaf.VP_WR, BUSY)
                with pytest.raises(VmcsAccessError) as ei:
                    r.write_vmcs64(GuestVtl(vtl), field, mask, value)
                assert ei.value.code == 0x80000200 and ei.value.vp == vp
            else:
                prev = r.write_vmcs64(GuestVtl(vtl), field, mask, value)
                assert prev == old
                self.vmcs[key] = (old & ~mask) | (value & mask)
            assert r.read_vmcs64(GuestVtl(vtl), field) == self.vmcs.get(key, old)

        @precondition(lambda self: self.runners)
        @rule(data=st.data(), n=st.integers(0, 80), fail_at=st.one_of(st.none(), st.integers(0, 79)))
        def batch_read(self, data, n, fail_at):
            STATS["steps"] += 1
            vp, r = self._pick_runner(data)
            fields = [CR3 if i % 2 else RIP for i in range(n)]
            expect = [self.vmcs.get((vp, 0, int(f)), self.sim.vmcs(vp, 0, int(f))) for f in fields]
            if fail_at is not None and fail_at < n:
                fields[fail_at] = 0x6FFE   # an encoding the module does not know
                with pytest.raises(hcltdx.BatchError) as ei:
                    r.read_vmcs_batch(GuestVtl.VTL0, fields)
                assert ei.value.index == fail_at
                assert ei.value.values.tolist() == expect[:fail_at]
            else:
                assert r.read_vmcs_batch(GuestVtl.VTL0, fields).tolist() == expect

        # -- views -----------------------------------------------------------------------------

        @precondition(lambda self: self.runners)
        @rule(data=st.data(), kind=st.sampled_from(["gps", "apic0", "apic1", "fx", "run"]))
        def take_view(self, data, kind):
            STATS["steps"] += 1
            _, r = self._pick_runner(data)
            v = {"gps": r.tdx_enter_guest_gps, "fx": r.fx_state, "run": r.run_page,
                 "apic0": lambda: r.tdx_apic_page(GuestVtl.VTL0),
                 "apic1": lambda: r.tdx_apic_page(GuestVtl.VTL1)}[kind]()
            self.views.append((r, v))

        @precondition(lambda self: self.views)
        @rule(data=st.data())
        def drop_view(self, data):
            STATS["steps"] += 1
            i = data.draw(st.integers(0, len(self.views) - 1))
            del self.views[i]
            gc.collect()

        @precondition(lambda self: self.runners)
        @rule(data=st.data(), reg=st.integers(0, 15), value=st.integers(0, ALL))
        def gps_write(self, data, reg, value):
            STATS["steps"] += 1
            vp, r = self._pick_runner(data)
            gps = r.tdx_enter_guest_gps()
            gps[reg] = value
            # The GPR list of the run page (tdx-abi §2.3: offset 512, 16 x u64).
            off = 512 + reg * 8
            assert int(self.sim.run_page(vp)[off:off + 8].view("<u8")[0]) == value

        # -- memory ----------------------------------------------------------------------------

        def _live_hcl(self):
            for h in self.opened:
                if not h.closed:
                    return h
            return None

        @precondition(lambda self: any(not h.closed for h in self.opened))
        @rule(rng=ranges(), busy=st.booleans())
        def accept(self, rng, busy):
            STATS["steps"] += 1
            h = self._live_hcl()
            start, end = rng
            if busy:
                self.sim.inject(TdCallLeaf.MEM_PAGE_ACCEPT, BUSY)
            try:
                h.mshv_vtl.tdx_accept_pages(MemoryRange(start, end))
                done = end
            except AcceptPagesBusy as e:
                assert busy and e.accepted.start == start
                done = e.accepted.end
                assert e.gpa == done   # an injected fault answers before any check
            except PageAlreadyAcceptedError as e:
                done = e.accepted.end
                assert e.accepted.start == start and e.gpa == done
                assert done // PAGE in self.accepted
            finally:
                self.sim.clear_faults()
            new = set(range(start // PAGE, done // PAGE))
            assert not (new & self.accepted), "a page was accepted twice"
            self.accepted |= new

        @precondition(lambda self: any(not h.closed for h in self.opened))
        @rule(rng=ranges())
        def set_attributes(self, rng):
            STATS["steps"] += 1
            h = self._live_hcl()
            start, end = rng
            try:
                h.mshv_vtl.tdx_set_page_attributes(MemoryRange(start, end), ATTRS, MASK)
                done = end
            except SetPageAttributesError as e:
                done = e.done.end
                assert e.done.start == start and start <= done < end
                assert done // PAGE not in self.accepted or e.code != 0
            # ATTR.WR may also land on pending pages (tdx-abi §10.6): follow
            # only the accepted ones.
            self.attrs_full |= set(range(start // PAGE, done // PAGE)) & self.accepted

        # -- invariants ------------------------------------------------------------------------

        @invariant()
        def accepted_pages_match(self):
            assert self.sim.page_counts()["accepted"] == len(self.accepted)

        @invariant()
        def attributes_match(self):
            for p in list(self.attrs_full)[:8]:
                assert (self.sim.page_state(p * PAGE).attrs >> 16) & 0xFFFF == FULL

        @invariant()
        def runners_open(self):
            for r in self.runners.values():
                assert not r.closed

    return ApiMachine


@pytest.mark.timeout(1800 if LONG else 120)
def test_api_state_machine(backend):
    STATS.update(steps=0, examples=0)
    machine = make_machine(backend)
    run_state_machine_as_test(machine, settings=settings(
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, database=None,
        # The smoke run does not shrink (bounded time); the long run does.
        phases=list(Phase) if LONG else [Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck)))
    print(f"\n{backend.name}: {STATS['examples']} examples, {STATS['steps']} API steps")
