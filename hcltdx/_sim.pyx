# cython: language_level=3
"""The simulated TDX module and mshv_vtl driver, as a Python object.

``Sim`` owns one instance of the C model (csrc/sim). The core reaches it
through ``ops``/``ctx`` (the backend table); the methods here are the host's
control panel: memory mappings, VMCS inspection, fault injection, counters
and the call log. See docs/simulator.md.
"""

import collections
import os

import numpy as np

from cpython.buffer cimport PyBUF_WRITABLE
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memset
from posix.unistd cimport close

from hcltdx.includes cimport sim as c
from hcltdx.includes.abi cimport mshv_tdcall
from hcltdx.includes.sim cimport hcltdx_sim_backend_ops

DEF_MEMORY_SIZE = 64 << 20
_LARGE_PAGE = 0x200000
_MAX_MEMORY = 1 << 40
_U64 = (1 << 64) - 1

LEAVES = {
    "VP_INFO": 1, "MEM_PAGE_ACCEPT": 6, "VM_RD": 7, "VM_WR": 8, "VP_RD": 9,
    "VP_WR": 10, "MEM_PAGE_ATTR_RD": 23, "MEM_PAGE_ATTR_WR": 24, "VP_INVGLA": 27,
}
_INJECTABLE = frozenset(LEAVES.values())
_STATE_NAMES = ("not_added", "pending", "accepted")

PageState = collections.namedtuple("PageState", "state level attrs pending_attrs")
PageState.__doc__ = """One 4 KiB page as the model holds it.

state: "not_added" | "pending" | "accepted"; level: host mapping level
(0 = 4 KiB, 1 = 2 MiB); attrs: TdgMemPageGpaAttr as stored (L1 slot 0);
pending_attrs: True when attributes were written while the page was pending.
"""

_io = lambda name: [(f"{name}_{r}", "<u8") for r in ("rax", "rcx", "rdx", "r8", "r9", "r10", "r11")]
CALL_LOG_DTYPE = np.dtype(
    [("seq", "<u8"), ("vp", "<u4"), ("injected", "<u4")] + _io("in") + _io("out"))
assert CALL_LOG_DTYPE.itemsize == sizeof(c.hcltdx_sim_log_entry)


def _int(name, value, lo, hi):
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not bool")
    try:
        v = value.__index__()
    except AttributeError:
        raise TypeError(f"{name} must be an int, not {type(value).__name__}") from None
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be in [{lo:#x}, {hi:#x}], got {v:#x}")
    return v


def _level(value):
    if isinstance(value, str):
        try:
            return {"4K": 0, "2M": 1}[value.upper()]
        except KeyError:
            raise ValueError(f"level must be '4K' or '2M', got {value!r}") from None
    return _int("level", value, 0, 1)


def _range(value):
    if hasattr(value, "start") and hasattr(value, "end"):
        start, end = value.start, value.end
    elif isinstance(value, tuple) and len(value) == 2:
        start, end = value
    else:
        raise TypeError("range must have .start/.end or be a (start, end) tuple, "
                        f"not {type(value).__name__}")
    start = _int("range start", start, 0, _U64)
    end = _int("range end", end, 0, _U64)
    if end <= start:
        raise ValueError(f"range end {end:#x} must be above start {start:#x}")
    return start, end - start


def _status(value):
    """A full RAX, or a TdCallResultCode placed in the code half."""
    try:
        from hcltdx.tdx import TdCallResultCode
    except ImportError:
        TdCallResultCode = None
    if TdCallResultCode is not None and isinstance(value, TdCallResultCode):
        return _int("status", value, 0, 0xFFFFFFFF) << 32
    return _int("status", value, 0, _U64)


cdef int _check(int rc, what) except -1:
    if rc == 0:
        return 0
    if rc == -22:
        raise ValueError(f"{what}: invalid argument")
    if rc == -17:
        raise ValueError(f"{what}: pages already added by the host")
    if rc == -12:
        raise MemoryError(what)
    raise OSError(-rc, f"{what}: {os.strerror(-rc)}")


cdef class _PageBuffer:
    """Exports one page of the model; keeps the Sim alive while viewed."""
    cdef object owner
    cdef char *ptr
    cdef Py_ssize_t shape[1]
    cdef Py_ssize_t strides[1]

    def __getbuffer__(self, Py_buffer *buf, int flags):
        self.shape[0] = 4096
        self.strides[0] = 1
        buf.buf = self.ptr
        buf.obj = self
        buf.len = 4096
        buf.readonly = 0
        buf.itemsize = 1
        buf.format = "B"
        buf.ndim = 1
        buf.shape = self.shape
        buf.strides = self.strides
        buf.suboffsets = NULL
        buf.internal = NULL

    def __releasebuffer__(self, Py_buffer *buf):
        pass


cdef uint32_t _vp(Sim sim, vp) except? 0xFFFFFFFF:
    return _int("vp", vp, 0, c.hcltdx_sim_vp_count(sim._ptr()) - 1)


cdef object _page(Sim owner, void *p):
    cdef _PageBuffer b = _PageBuffer.__new__(_PageBuffer)
    b.owner = owner
    b.ptr = <char *>p
    return np.frombuffer(memoryview(b), dtype=np.uint8)


cdef class Sim:
    """A simulated TD: TDX module + mshv_vtl driver, in process.

    Sim(vp_count=2, memory_size=64 MiB, *, backing=None, host_map="2M",
        tsc_deadline_layout=False, seed=0)

    backing: None (anonymous pages), "memfd" (a new memfd, kept open in
    ``backing_fd``), or a path to create/open; run pages and VTL0 APIC pages
    then live in that file at their mshv_vtl mmap offsets.
    host_map: "2M" (all memory added pending as 2 MiB pages), "4K" (added
    pending as 4 KiB pages) or None (nothing added; use ``map_host``).
    """

    def __cinit__(self, *args, **kwargs):
        self._sim = NULL
        self.ops = &hcltdx_sim_backend_ops
        self.ctx = NULL
        self.backing_fd = -1
        self.backing_path = None

    def __init__(self, vp_count=2, memory_size=DEF_MEMORY_SIZE, *, backing=None,
                 host_map="2M", tsc_deadline_layout=False, seed=0):
        cdef c.hcltdx_sim_config cfg
        cdef int err = 0
        if self._sim != NULL or self.backing_fd >= 0:
            raise RuntimeError("Sim is already initialised")
        vp_count = _int("vp_count", vp_count, 1, c.HCLTDX_SIM_MAX_VPS)
        memory_size = _int("memory_size", memory_size, _LARGE_PAGE, _MAX_MEMORY)
        if memory_size % _LARGE_PAGE:
            raise ValueError(f"memory_size must be a multiple of 2 MiB, got {memory_size:#x}")
        if host_map not in ("2M", "4K", None):
            raise ValueError(f"host_map must be '2M', '4K' or None, got {host_map!r}")
        if not isinstance(tsc_deadline_layout, bool):
            raise TypeError("tsc_deadline_layout must be a bool")
        seed = _int("seed", seed, 0, _U64)
        fd = -1
        path = None
        if backing is None:
            pass
        elif backing == "memfd":
            fd = os.memfd_create("hcltdx-sim", os.MFD_CLOEXEC)
            path = f"/proc/self/fd/{fd}"
        elif isinstance(backing, (str, bytes, os.PathLike)):
            path = os.fspath(backing)
            if isinstance(path, bytes):
                path = os.fsdecode(path)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        else:
            raise TypeError(f"backing must be None, 'memfd' or a path, not {type(backing).__name__}")

        c.hcltdx_sim_config_init(&cfg)
        cfg.vp_count = vp_count
        cfg.memory_size = memory_size
        cfg.backing_fd = fd
        cfg.host_map_all_2m = host_map == "2M"
        cfg.host_map_all_4k = host_map == "4K"
        cfg.tsc_deadline_layout = tsc_deadline_layout
        cfg.seed = seed
        self.backing_fd = fd
        self.backing_path = path
        self._sim = c.hcltdx_sim_new(&cfg, &err)
        if self._sim == NULL:
            _check(err, "creating the simulator")
        self.ctx = self._sim

    def __dealloc__(self):
        if self._sim != NULL:
            c.hcltdx_sim_free(self._sim)
            self._sim = NULL
            self.ctx = NULL
        if self.backing_fd >= 0:
            close(self.backing_fd)
            self.backing_fd = -1

    cdef c.hcltdx_sim *_ptr(self) except NULL:
        if self._sim == NULL:
            raise ValueError("this Sim is not initialised: construct it with Sim(...)")
        return self._sim

    def __repr__(self):
        if self._sim == NULL:
            return "<Sim (not initialised)>"
        return (f"<Sim vp_count={self.vp_count} memory_size={self.memory_size:#x} "
                f"backing={self.backing_path!r}>")

    # ---- configuration ----------------------------------------------------

    @property
    def vp_count(self):
        """Number of VPs (1..64)."""
        return c.hcltdx_sim_vp_count(self._ptr())

    @property
    def memory_size(self):
        """Bytes of TD private memory."""
        return c.hcltdx_sim_memory_size(self._ptr())

    @property
    def tsc_deadline_layout(self):
        """True when run pages use the newer layout with the L2 TSC-deadline block."""
        return bool(c.hcltdx_sim_config_of(self._ptr()).tsc_deadline_layout)

    # ---- the raw call -------------------------------------------------------

    def _tdcall(self, vp, leaf, rcx=0, rdx=0, r8=0, r9=0):
        """One TDCALL as MSHV_VTL_TDCALL carries it; (rax, rcx, rdx, r8, r9, r10, r11)."""
        cdef mshv_tdcall io
        cdef c.hcltdx_sim *sp = self._ptr()
        cdef uint32_t v = _vp(self, vp)
        memset(&io, 0, sizeof(io))
        io.rax = _int("leaf", leaf, 0, _U64)
        io.rcx = _int("rcx", rcx, 0, _U64)
        io.rdx = _int("rdx", rdx, 0, _U64)
        io.r8 = _int("r8", r8, 0, _U64)
        io.r9 = _int("r9", r9, 0, _U64)
        with nogil:
            c.hcltdx_sim_tdcall(sp, v, &io)
        return (io.rax, io.rcx, io.rdx, io.r8, io.r9, io.r10_out, io.r11_out)

    # ---- shared pages -------------------------------------------------------

    def run_page(self, vp, structured=False):
        """VP ``vp``'s run page (hcl_run) as a live uint8[4096] view.

        structured=True returns a one-element view typed with the run-page
        dtype of hcltdx.abi (the layout variant this Sim was made with)."""
        arr = _page(self, c.hcltdx_sim_run_page(self._ptr(), _vp(self, vp)))
        if not structured:
            return arr
        from hcltdx import abi
        if hasattr(abi, "run_page_dtype"):
            dt = abi.run_page_dtype(self.tsc_deadline_layout)
        else:
            dt = abi.RUN_PAGE_DTYPE
        return arr[:dt.itemsize].view(dt)

    def apic_page(self, vp, vtl=0):
        """VP ``vp``'s virtual-APIC page of ``vtl`` (0: the kernel's mmapped
        page, 1: the model's private page) as a live uint8[4096] view."""
        cdef uint32_t v = _vp(self, vp)
        cdef uint32_t t = _int("vtl", vtl, 0, 1)
        return _page(self, c.hcltdx_sim_apic_page(self._ptr(), v, t))

    def vtl1_apic_page_gpa(self, vp):
        """GPA the model assigns to VP ``vp``'s VTL1 APIC page (outside TD memory)."""
        return c.hcltdx_sim_vtl1_apic_page_gpa(self._ptr(), _vp(self, vp))

    # ---- host side of memory --------------------------------------------------

    def map_host(self, range, level):
        """Host adds ``range`` as pending pages mapped at ``level``
        (0/"4K" or 1/"2M"; 2 MiB needs a 2 MiB-aligned range).
        ValueError if any page of it is already added."""
        cdef c.hcltdx_sim *sp = self._ptr()
        cdef uint64_t g, n
        cdef uint32_t lvl
        cdef int rc
        g, n = _range(range)
        lvl = _level(level)
        # The model walks every 4 KiB page of the range (up to 2**28).
        with nogil:
            rc = c.hcltdx_sim_map_host(sp, g, n, lvl)
        _check(rc, f"map_host({g:#x}+{n:#x}, level {lvl})")

    def unmap_host(self, range):
        """Host removes ``range``: its pages become not-added, attributes cleared."""
        cdef c.hcltdx_sim *sp = self._ptr()
        cdef uint64_t g, n
        cdef int rc
        g, n = _range(range)
        with nogil:
            rc = c.hcltdx_sim_unmap_host(sp, g, n)
        _check(rc, f"unmap_host({g:#x}+{n:#x})")

    def page_state(self, gpa):
        """PageState of the 4 KiB page holding ``gpa``."""
        cdef c.hcltdx_sim_page_info info
        g = _int("gpa", gpa, 0, self.memory_size - 1)
        _check(c.hcltdx_sim_get_page_info(self._ptr(), g, &info), "page_state")
        return PageState(_STATE_NAMES[info.state], info.level, info.attrs,
                         bool(info.pending_attrs))

    def page_counts(self):
        """{"not_added": n, "pending": n, "accepted": n} in 4 KiB pages."""
        cdef uint64_t out[3]
        c.hcltdx_sim_page_counts(self._ptr(), out)
        return {name: out[i] for i, name in enumerate(_STATE_NAMES)}

    def footprint(self):
        """Bytes of host memory the model itself uses."""
        return c.hcltdx_sim_footprint(self._ptr())

    # ---- per-VP state ---------------------------------------------------------

    def vmcs(self, vp, vtl, field):
        """Raw value of VMCS ``field`` (Intel encoding) of ``vtl``'s L2 VM,
        bypassing read masks. KeyError for a field the model does not know."""
        cdef uint64_t value = 0
        cdef uint32_t v = _vp(self, vp)
        cdef uint32_t vm = _int("vtl", vtl, 0, 1) + 1
        cdef uint32_t enc = _int("field", field, 0, 0xFFFFFFFF)
        rc = c.hcltdx_sim_vmcs_peek(self._ptr(), v, vm, enc, &value)
        if rc == -2:
            raise KeyError(f"VMCS field {enc:#x} is not in the catalogue")
        _check(rc, "vmcs")
        return value

    def set_vmcs(self, vp, vtl, field, value):
        """Store ``value`` in a VMCS field, bypassing write masks (truncated
        to the field's width)."""
        cdef uint32_t v = _vp(self, vp)
        cdef uint32_t vm = _int("vtl", vtl, 0, 1) + 1
        cdef uint32_t enc = _int("field", field, 0, 0xFFFFFFFF)
        cdef uint64_t val = _int("value", value, 0, _U64)
        rc = c.hcltdx_sim_vmcs_poke(self._ptr(), v, vm, enc, val)
        if rc == -2:
            raise KeyError(f"VMCS field {enc:#x} is not in the catalogue")
        _check(rc, "set_vmcs")

    def msr_bitmap(self, vp, vtl, index):
        """64-bit word ``index`` (0..511) of ``vtl``'s MSR bitmap."""
        cdef uint64_t value = 0
        cdef uint32_t v = _vp(self, vp)
        cdef uint32_t vm = _int("vtl", vtl, 0, 1) + 1
        cdef uint32_t i = _int("index", index, 0, 511)
        _check(c.hcltdx_sim_msr_bitmap_peek(self._ptr(), v, vm, i, &value), "msr_bitmap")
        return value

    def l2_ctls(self, vp, vtl):
        """The L2 controls (TdxL2Ctls as int) of ``vtl``'s L2 VM."""
        cdef uint64_t value = 0
        cdef uint32_t v = _vp(self, vp)
        cdef uint32_t vm = _int("vtl", vtl, 0, 1) + 1
        _check(c.hcltdx_sim_l2_ctls_peek(self._ptr(), v, vm, &value), "l2_ctls")
        return value

    def invgla_count(self, vp):
        """GLAs invalidated by VP.INVGLA on VP ``vp`` so far."""
        return c.hcltdx_sim_invgla_count(self._ptr(), _vp(self, vp))

    # ---- fault injection --------------------------------------------------------

    def inject(self, leaf, status, count=1):
        """The next ``count`` calls of ``leaf`` return ``status`` (full RAX, or
        a TdCallResultCode) without side effects. Queues append."""
        lf = _int("leaf", leaf, 0, _U64)
        if lf not in _INJECTABLE:
            raise ValueError(f"leaf {lf} cannot be injected (one of {sorted(_INJECTABLE)})")
        _check(c.hcltdx_sim_inject(self._ptr(), lf, _int("count", count, 0, 0xFFFFFFFF),
                                   _status(status)), "inject")

    def inject_rate(self, leaf, status, probability, seed=0):
        """Each call of ``leaf`` returns ``status`` with ``probability``
        (0..1), drawn from a PRNG seeded by ``seed``: same seed, same sequence."""
        lf = _int("leaf", leaf, 0, _U64)
        if lf not in _INJECTABLE:
            raise ValueError(f"leaf {lf} cannot be injected (one of {sorted(_INJECTABLE)})")
        if isinstance(probability, bool) or not isinstance(probability, (int, float)):
            raise TypeError("probability must be a float")
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {probability!r}")
        den = 1 << 24
        _check(c.hcltdx_sim_inject_rate(self._ptr(), lf, <uint32_t>round(probability * den), den,
                                        _status(status), _int("seed", seed, 0, _U64)),
               "inject_rate")

    def clear_faults(self):
        """Drop every scripted and random fault."""
        c.hcltdx_sim_clear_faults(self._ptr())

    # ---- counters and the log -----------------------------------------------------

    def counters(self):
        """Calls per leaf slot: {"VP_RD": n, ..., "OTHER": n}."""
        cdef uint64_t out[16]
        c.hcltdx_sim_counters(self._ptr(), out)
        return {c.hcltdx_sim_slot_name(i).decode(): out[i]
                for i in range(c.HCLTDX_SIM_NUM_SLOTS)}

    def enable_log(self, capacity=4096):
        """Record calls in a ring of ``capacity`` entries (oldest dropped first)."""
        _check(c.hcltdx_sim_log_enable(self._ptr(), _int("capacity", capacity, 1, 1 << 26)),
               "enable_log")

    def disable_log(self):
        """Stop recording and free the ring."""
        c.hcltdx_sim_log_enable(self._ptr(), 0)

    def call_log(self):
        """The recorded calls, oldest first, as a CALL_LOG_DTYPE array."""
        cdef size_t n = c.hcltdx_sim_log_len(self._ptr())
        out = np.zeros(n, dtype=CALL_LOG_DTYPE)
        cdef unsigned char[::1] raw = out.view(np.uint8).reshape(-1) if n else None
        if n:
            n = c.hcltdx_sim_log_read(self._ptr(), <c.hcltdx_sim_log_entry *>&raw[0], n)
        return out[:n]

    @property
    def log_dropped(self):
        """Entries dropped because the ring was full."""
        return c.hcltdx_sim_log_dropped(self._ptr())

    def clear_log(self):
        """Empty the ring (recording stays enabled)."""
        c.hcltdx_sim_log_clear(self._ptr())

    def reset(self):
        """Back to the state right after construction."""
        cdef c.hcltdx_sim *sp = self._ptr()
        with nogil:
            c.hcltdx_sim_reset(sp)

    # ---- the synthetic guest (docs/guest.md) ---------------------------------

    def guest(self, enable=True, *, seed=0, clock="manual", start_ns=0):
        """Turn the synthetic VTL0 guest on or off.

        enable: True/False. seed: any u64; picks each VP's code offset, CR3
        sequence and exits. clock: "manual" (moves only by ``guest_advance``;
        for tests) or "wall" (follows the monotonic clock from this call; for
        the CLI). start_ns: the guest clock's value now. When on, each tdcall
        for VP n first brings VP n's guest fields and the run page's exit_info
        to the guest clock. Off (the default): the model is exactly as without it.
        """
        if not isinstance(enable, bool):
            raise TypeError(f"enable must be a bool, not {type(enable).__name__}")
        if clock not in ("manual", "wall"):
            raise ValueError(f"clock must be 'manual' or 'wall', got {clock!r}")
        cdef uint64_t s = _int("seed", seed, 0, _U64)
        cdef uint64_t t0 = _int("start_ns", start_ns, 0, _U64)
        _check(c.hcltdx_sim_guest_set(self._ptr(), enable, s, clock == "wall", t0),
               "configuring the guest")

    @property
    def guest_enabled(self):
        """True while the synthetic guest is on."""
        return bool(c.hcltdx_sim_guest_enabled(self._ptr()))

    @property
    def guest_clock(self):
        """The guest clock in ns (manual: what was advanced; wall: plus elapsed time)."""
        return c.hcltdx_sim_guest_clock(self._ptr())

    def guest_advance(self, ns):
        """Move the manual guest clock forward by ns nanoseconds."""
        cdef uint64_t n = _int("ns", ns, 0, _U64)
        if c.hcltdx_sim_guest_advance(self._ptr(), n):
            raise ValueError("guest_advance needs the manual clock (guest(clock='manual'))")

    def guest_state(self, vp, t_ns=None):
        """The guest state of VP vp at clock t_ns (default: now), as a dict.

        Pure: it computes, it does not write the model."""
        cdef c.hcltdx_sim_guest_values g
        cdef c.hcltdx_sim *sp = self._ptr()
        cdef uint32_t v = _vp(self, vp)
        cdef uint64_t t = c.hcltdx_sim_guest_clock(sp) if t_ns is None else _int("t_ns", t_ns, 0, _U64)
        _check(c.hcltdx_sim_guest_state(sp, v, t, &g), "computing the guest state")
        return {"t_ns": t, "rip": g.rip, "rsp": g.rsp, "cr3": g.cr3, "tsc": g.tsc,
                "preemption_timer": g.preemption_timer, "exit_index": g.exit_index,
                "exit_reason": g.exit_reason, "qualification": g.qualification,
                "gpa": g.gpa, "gla": g.gla, "instr_len": g.instr_len,
                "interruption_info": g.interruption_info, "exit_rax": g.exit_rax}
