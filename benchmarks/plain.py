"""The baseline: the same operations as a Python user writes them without
hcltdx, with only ``ctypes``, ``struct``, ``mmap`` and ``fcntl.ioctl``.

Two transports: the project's simulator as a shared library
(``make -C csrc build/libhcltdx_sim.so``; its C entry ``hcltdx_sim_tdcall``
called through ctypes with a ctypes ``mshv_tdcall`` structure) and the
stand-in device (``fcntl.ioctl(fd, 0xC038B832, buf)`` on a 56-byte buffer
packed with ``struct``; run page and APIC page through ``mmap``). Field
codes, the accept loop and the attribute loop follow docs/tdx-abi.md
sections 7.4, 7.12 and 7.13. Nothing here imports hcltdx.
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import struct
import time

MSHV_VTL_TDCALL = 0xC038B832
VP_RD, VP_WR, MEM_PAGE_ACCEPT, MEM_PAGE_ATTR_WR = 9, 10, 6, 24
OPERAND_BUSY, OPERAND_INVALID = 0x80000200, 0xC0000100
PAGE_ALREADY_ACCEPTED, PAGE_SIZE_MISMATCH = 0x00000B0A, 0xC0000B0B
SIZE_2M, SIZE_4K = 0x200000, 0x1000
APIC_PAGE_OFFSET = 0x30000
CONTEXT_OFFSET, CONTEXT_SIZE = 272, 1024

# read_private_regs/write_private_regs: run-page offsets (spec 7.16).
_REGS_GPR = struct.Struct("<QQQBB")       # rflags, rip, ssp, rvi, svi at 640
_REGS_MSR = struct.Struct("<QQQQQ8xQ")    # kernel_gs_base .. xss, (cr2), tsc_aux at 408
_REGS_ENTRY = struct.Struct("<Q")         # entry_rcx at 504


class MshvTdcall(ctypes.Structure):
    _pack_ = 1
    _fields_ = [(n, ctypes.c_uint64) for n in
                ("rax", "rcx", "rdx", "r8", "r9", "r10_out", "r11_out")]


class SimConfig(ctypes.Structure):
    _fields_ = [("vp_count", ctypes.c_uint32), ("memory_size", ctypes.c_uint64),
                ("backing_fd", ctypes.c_int), ("host_map_all_2m", ctypes.c_int),
                ("host_map_all_4k", ctypes.c_int), ("tsc_deadline_layout", ctypes.c_int),
                ("seed", ctypes.c_uint64)]


class FieldDesc(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("encoding", ctypes.c_uint32),
                ("read_mask", ctypes.c_uint64), ("write_mask", ctypes.c_uint64)]


class TdxError(Exception):
    pass


def load_library(path: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(path)
    lib.hcltdx_sim_config_init.argtypes = [ctypes.POINTER(SimConfig)]
    lib.hcltdx_sim_new.argtypes = [ctypes.POINTER(SimConfig), ctypes.POINTER(ctypes.c_int)]
    lib.hcltdx_sim_new.restype = ctypes.c_void_p
    lib.hcltdx_sim_free.argtypes = [ctypes.c_void_p]
    lib.hcltdx_sim_reset.argtypes = [ctypes.c_void_p]
    lib.hcltdx_sim_tdcall.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.POINTER(MshvTdcall)]
    lib.hcltdx_sim_tdcall.restype = ctypes.c_int
    lib.hcltdx_sim_run_page.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.hcltdx_sim_run_page.restype = ctypes.c_void_p
    lib.hcltdx_sim_apic_page.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32]
    lib.hcltdx_sim_apic_page.restype = ctypes.c_void_p
    lib.hcltdx_vmcs_field_count.restype = ctypes.c_size_t
    lib.hcltdx_vmcs_field_at.argtypes = [ctypes.c_size_t]
    lib.hcltdx_vmcs_field_at.restype = ctypes.POINTER(FieldDesc)
    return lib


def readable_64bit_fields(lib: ctypes.CDLL) -> list[int]:
    """Encodings of the catalogue's readable 64-bit/natural fields, in order."""
    out = []
    for i in range(lib.hcltdx_vmcs_field_count()):
        d = lib.hcltdx_vmcs_field_at(i).contents
        if d.read_mask and (d.encoding >> 13) & 3 in (1, 3):
            out.append(d.encoding)
    return out


def vmcs_field_code(encoding: int, vtl: int) -> int:
    """Spec 7.4: raw | size << 32 | TD_VCPU << 52 | class << 56."""
    size = (1, 3, 2, 3)[(encoding >> 13) & 3]
    return encoding | size << 32 | 2 << 52 | (44 if vtl else 36) << 56


class _Transport:
    """The operations over ``tdcall(leaf, rcx, rdx, r8, r9) -> (rax, rcx, rdx, r8)``."""

    run: memoryview
    apic0: memoryview
    apic1: memoryview

    def read_vmcs64(self, vtl: int, encoding: int) -> int:
        if (encoding >> 13) & 3 not in (1, 3):
            raise ValueError(f"VMCS field {encoding:#x} is not 64-bit")
        rax, _, _, r8 = self.tdcall(VP_RD, 0, vmcs_field_code(encoding, vtl), 0, 0)
        if rax >> 32:
            raise TdxError(f"VP.RD of {encoding:#x} failed: {rax:#x}")
        return r8

    def write_vmcs64(self, vtl: int, encoding: int, mask: int, value: int) -> int:
        if (encoding >> 13) & 3 not in (1, 3):
            raise ValueError(f"VMCS field {encoding:#x} is not 64-bit")
        rax, _, _, r8 = self.tdcall(VP_WR, 0, vmcs_field_code(encoding, vtl), value, mask)
        if rax >> 32:
            raise TdxError(f"VP.WR of {encoding:#x} failed: {rax:#x}")
        return r8

    def read_vmcs_batch(self, vtl: int, encodings: list[int]) -> list[int]:
        read = self.read_vmcs64
        return [read(vtl, e) for e in encodings]

    def poll_vmcs(self, vtl: int, encodings: list[int], samples: int) -> list[list[int]]:
        read, clock = self.read_vmcs64, time.monotonic_ns
        return [[clock()] + [read(vtl, e) for e in encodings] for _ in range(samples)]

    def read_private_regs(self) -> dict:
        run = self.run
        rflags, rip, ssp, rvi, svi = _REGS_GPR.unpack_from(run, 640)
        kgs, star, lstar, sfmask, xss, tsc_aux = _REGS_MSR.unpack_from(run, 408)
        (entry,) = _REGS_ENTRY.unpack_from(run, 504)
        return dict(rflags=rflags, rip=rip, ssp=ssp, rvi=rvi, svi=svi, msr_kernel_gs_base=kgs,
                    msr_star=star, msr_lstar=lstar, msr_sfmask=sfmask, msr_xss=xss,
                    msr_tsc_aux=tsc_aux, vp_entry_flags=entry)

    def write_private_regs(self, r: dict) -> None:
        run = self.run
        _REGS_GPR.pack_into(run, 640, r["rflags"], r["rip"], r["ssp"], r["rvi"], r["svi"])
        # cr2 (at 448) sits between xss and tsc_aux and is shared: keep it.
        struct.pack_into("<5Q", run, 408, r["msr_kernel_gs_base"], r["msr_star"],
                         r["msr_lstar"], r["msr_sfmask"], r["msr_xss"])
        struct.pack_into("<Q", run, 456, r["msr_tsc_aux"])
        _REGS_ENTRY.pack_into(run, 504, r["vp_entry_flags"])

    def snapshot(self, encodings: list[int]) -> dict:
        return dict(t_ns=time.monotonic_ns(),
                    context=bytes(self.run[CONTEXT_OFFSET:CONTEXT_OFFSET + CONTEXT_SIZE]),
                    apic_vtl0=bytes(self.apic0), apic_vtl1=bytes(self.apic1),
                    private_regs=self.read_private_regs(),
                    vmcs_vtl0=self.read_vmcs_batch(0, encodings),
                    vmcs_vtl1=self.read_vmcs_batch(1, encodings))

    def _accept(self, gpn: int, large: bool) -> int:
        return self.tdcall(MEM_PAGE_ACCEPT, gpn << 12 | large, 0, 0, 0)[0] >> 32

    def _attr_wr(self, gpn: int, large: bool, attributes: int, mask: int) -> int:
        return self.tdcall(MEM_PAGE_ATTR_WR, gpn << 12 | large, attributes, mask, 0)[0] >> 32

    def tdx_accept_pages(self, start: int, end: int) -> None:
        while start != end:
            gpn = start >> 12
            if start % SIZE_2M == 0 and end - start >= SIZE_2M:
                code = self._accept(gpn, True)
                if code == 0:
                    start += SIZE_2M
                    continue
                if code != PAGE_SIZE_MISMATCH:
                    raise TdxError(f"accept of page {gpn} failed: {code:#x}")
            code = self._accept(gpn, False)
            if code:
                raise TdxError(f"accept of page {gpn} failed: {code:#x}")
            start += SIZE_4K

    def tdx_set_page_attributes(self, start: int, end: int, attributes: int, mask: int) -> None:
        while start != end:
            gpn = start >> 12
            if start % SIZE_2M == 0 and end - start >= SIZE_2M:
                code = self._attr_wr(gpn, True, attributes, mask)
                if code == 0:
                    start += SIZE_2M
                    continue
                if code != PAGE_SIZE_MISMATCH:
                    raise TdxError(f"ATTR.WR of page {gpn} failed: {code:#x}")
            code = self._attr_wr(gpn, False, attributes, mask)
            if code:
                raise TdxError(f"ATTR.WR of page {gpn} failed: {code:#x}")
            start += SIZE_4K


class PlainSim(_Transport):
    """The simulator library through ctypes."""

    def __init__(self, lib: ctypes.CDLL, memory_size: int = 64 << 20, host_map: str = "2M"):
        cfg = SimConfig()
        lib.hcltdx_sim_config_init(ctypes.byref(cfg))
        cfg.vp_count, cfg.memory_size = 1, memory_size
        cfg.host_map_all_2m, cfg.host_map_all_4k = host_map == "2M", host_map == "4K"
        err = ctypes.c_int(0)
        self.lib = lib
        self.sim = lib.hcltdx_sim_new(ctypes.byref(cfg), ctypes.byref(err))
        if not self.sim:
            raise OSError(-err.value, os.strerror(-err.value))
        page = ctypes.c_char * 4096
        self.run = memoryview(page.from_address(lib.hcltdx_sim_run_page(self.sim, 0))).cast("B")
        self.apic0 = memoryview(page.from_address(lib.hcltdx_sim_apic_page(self.sim, 0, 0))).cast("B")
        self.apic1 = memoryview(page.from_address(lib.hcltdx_sim_apic_page(self.sim, 0, 1))).cast("B")
        self.io = MshvTdcall()
        self._ref = ctypes.byref(self.io)
        self._call = lib.hcltdx_sim_tdcall

    def tdcall(self, leaf, rcx, rdx, r8, r9):
        io = self.io
        io.rax, io.rcx, io.rdx, io.r8, io.r9, io.r10_out, io.r11_out = leaf, rcx, rdx, r8, r9, 0, 0
        rc = self._call(self.sim, 0, self._ref)
        if rc:
            raise OSError(-rc, os.strerror(-rc))
        return io.rax, io.rcx, io.rdx, io.r8

    def reset(self) -> None:
        self.lib.hcltdx_sim_reset(self.sim)

    def close(self) -> None:
        for v in (self.run, self.apic0, self.apic1):
            v.release()
        if self.sim:
            self.lib.hcltdx_sim_free(self.sim)
            self.sim = None


class PlainDevice(_Transport):
    """An mshv_vtl file (here: the stand-in) through fcntl.ioctl and mmap."""

    def __init__(self, path: str, vp: int = 0):
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        self._maps = [mmap.mmap(self.fd, 4096, offset=vp * 4096),
                      mmap.mmap(self.fd, 4096, offset=(APIC_PAGE_OFFSET | vp) * 4096)]
        self.run, self.apic0 = (memoryview(m) for m in self._maps)
        self.apic1 = memoryview(bytearray(4096))   # VTL1's APIC page is private memory
        self.buf = bytearray(56)

    def tdcall(self, leaf, rcx, rdx, r8, r9):
        buf = self.buf
        struct.pack_into("<7Q", buf, 0, leaf, rcx, rdx, r8, r9, 0, 0)
        fcntl.ioctl(self.fd, MSHV_VTL_TDCALL, buf)
        return struct.unpack_from("<4Q", buf)

    def close(self) -> None:
        for v in (self.run, self.apic0, self.apic1):
            v.release()
        for m in self._maps:
            m.close()
        os.close(self.fd)
