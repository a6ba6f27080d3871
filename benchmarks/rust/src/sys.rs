//! The two transports (the simulator's backend table, the device ioctl) and
//! the set-up around them: simulators, device files, mappings, resets.

use std::ffi::{c_char, c_int, c_void, CString};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use crate::ops::{page_attrs, MemoryRange, MshvVtl, Runner, Tdcall, TdcallInput, TdcallOutput};

/// `struct mshv_tdcall` (include/hcltdx/abi.h, spec 2.3): packed, 56 bytes.
#[repr(C, packed)]
#[derive(Default, Clone, Copy)]
pub struct MshvTdcall {
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10_out: u64,
    pub r11_out: u64,
}
const _: () = assert!(std::mem::size_of::<MshvTdcall>() == 56);

/// `_IOWR(0xB8, 0x32, struct mshv_tdcall)`.
pub const MSHV_VTL_TDCALL: libc::c_ulong = 0xC038_B832;
const PAGE_SIZE: usize = 4096;
const MSHV_APIC_PAGE_OFFSET: u64 = 0x30000;

#[repr(C)]
pub struct BackendOps {
    pub name: *const c_char,
    pub may_block: c_int,
    pub tdcall: unsafe extern "C" fn(ctx: *mut c_void, vp: u32, io: *mut MshvTdcall) -> c_int,
    pub map_page: unsafe extern "C" fn(ctx: *mut c_void, off: u64, page: *mut *mut c_void) -> c_int,
    pub unmap_page: unsafe extern "C" fn(ctx: *mut c_void, page: *mut c_void),
    pub vtl1_apic_page: Option<unsafe extern "C" fn(ctx: *mut c_void, vp: u32, page: *mut *mut c_void, gpa: *mut u64) -> c_int>,
}

#[repr(C)]
pub struct SimConfig {
    pub vp_count: u32,
    pub memory_size: u64,
    pub backing_fd: c_int,
    pub host_map_all_2m: c_int,
    pub host_map_all_4k: c_int,
    pub tsc_deadline_layout: c_int,
    pub seed: u64,
}

#[repr(C)]
pub struct VmcsFieldDesc {
    pub name: *const c_char,
    pub encoding: u32,
    pub read_mask: u64,
    pub write_mask: u64,
}

pub enum SimHandle {}

extern "C" {
    static hcltdx_sim_backend_ops: BackendOps;
    fn hcltdx_sim_config_init(cfg: *mut SimConfig);
    fn hcltdx_sim_new(cfg: *const SimConfig, err: *mut c_int) -> *mut SimHandle;
    fn hcltdx_sim_free(sim: *mut SimHandle);
    fn hcltdx_sim_reset(sim: *mut SimHandle);
    fn hcltdx_sim_apic_page(sim: *mut SimHandle, vp: u32, vtl: u32) -> *mut c_void;
    pub fn hcltdx_vmcs_field_count() -> usize;
    pub fn hcltdx_vmcs_field_at(i: usize) -> *const VmcsFieldDesc;
}

/// The simulator through its backend table, as the hcltdx core calls it.
pub struct SimTdcall {
    ops: &'static BackendOps,
    ctx: *mut c_void,
    vp: u32,
}

impl Tdcall for SimTdcall {
    #[inline]
    fn tdcall(&mut self, input: &TdcallInput) -> TdcallOutput {
        let mut io = input.to_mshv();
        let rc = unsafe { (self.ops.tdcall)(self.ctx, self.vp, &mut io) };
        if rc != 0 {
            panic!("tdcall failed: {}", std::io::Error::from_raw_os_error(rc));
        }
        TdcallOutput::from_mshv(&io)
    }
}

/// MSHV_VTL_TDCALL on an mshv_vtl file descriptor (the stand-in device).
pub struct DevTdcall {
    fd: c_int,
}

impl Tdcall for DevTdcall {
    #[inline]
    fn tdcall(&mut self, input: &TdcallInput) -> TdcallOutput {
        let mut io = input.to_mshv();
        let rc = unsafe { libc::ioctl(self.fd, MSHV_VTL_TDCALL, &mut io as *mut MshvTdcall) };
        if rc < 0 {
            panic!("MSHV_VTL_TDCALL failed: {}", std::io::Error::last_os_error());
        }
        TdcallOutput::from_mshv(&io)
    }
}

pub enum HostMap {
    Map2M,
    Map4K,
}

pub struct SimEnv {
    sim: *mut SimHandle,
}

impl SimEnv {
    pub fn new(vp_count: u32, memory_size: u64, map: HostMap) -> SimEnv {
        let mut cfg = std::mem::MaybeUninit::<SimConfig>::uninit();
        let mut err: c_int = 0;
        let sim = unsafe {
            hcltdx_sim_config_init(cfg.as_mut_ptr());
            let mut cfg = cfg.assume_init();
            cfg.vp_count = vp_count;
            cfg.memory_size = memory_size;
            cfg.host_map_all_2m = matches!(map, HostMap::Map2M) as c_int;
            cfg.host_map_all_4k = matches!(map, HostMap::Map4K) as c_int;
            hcltdx_sim_new(&cfg, &mut err)
        };
        if sim.is_null() {
            panic!("hcltdx_sim_new: {}", std::io::Error::from_raw_os_error(-err));
        }
        SimEnv { sim }
    }

    fn call(&self, vp: u32) -> SimTdcall {
        SimTdcall { ops: unsafe { &hcltdx_sim_backend_ops }, ctx: self.sim as *mut c_void, vp }
    }

    /// A runner of VP 0 over the model's own pages (what the backend's
    /// map_page hands the hcltdx core).
    pub fn env(self) -> Env<SimTdcall> {
        let ops = unsafe { &hcltdx_sim_backend_ops };
        let mut run: *mut c_void = std::ptr::null_mut();
        let mut apic0: *mut c_void = std::ptr::null_mut();
        unsafe {
            assert_eq!((ops.map_page)(self.sim as *mut c_void, 0, &mut run), 0);
            assert_eq!((ops.map_page)(self.sim as *mut c_void, MSHV_APIC_PAGE_OFFSET, &mut apic0), 0);
        }
        let apic1 = unsafe { hcltdx_sim_apic_page(self.sim, 0, 1) } as *mut u8;
        let runner = Runner::new(self.call(0), run as *mut u8, apic0 as *mut u8, apic1);
        Env { runner, _keep: Keep::Sim(self) }
    }
}

impl Drop for SimEnv {
    fn drop(&mut self) {
        unsafe { hcltdx_sim_free(self.sim) }
    }
}

enum Keep {
    Sim(#[allow(dead_code)] SimEnv),
    Dev(#[allow(dead_code)] DevEnvKeep),
}

pub struct Env<T: Tdcall> {
    pub runner: Runner<T>,
    _keep: Keep,
}

struct DevEnvKeep {
    fd: c_int,
    maps: Vec<*mut c_void>,
    _apic1: Vec<u8>,
}

impl Drop for DevEnvKeep {
    fn drop(&mut self) {
        unsafe {
            for m in &self.maps {
                libc::munmap(*m, PAGE_SIZE);
            }
            libc::close(self.fd);
        }
    }
}

fn open_rw(path: &str) -> std::io::Result<c_int> {
    let c = CString::new(path).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

fn map_page(fd: c_int, page_offset: u64) -> std::io::Result<*mut c_void> {
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            (page_offset * PAGE_SIZE as u64) as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(p)
}

pub struct DevEnv;

impl DevEnv {
    /// Opens the device, maps VP `vp`'s run page and VTL0 APIC page; VTL1's
    /// APIC page is a private page of this process (spec 2.6).
    pub fn open(path: &str, vp: u32) -> std::io::Result<Env<DevTdcall>> {
        let fd = open_rw(path)?;
        let run = map_page(fd, vp as u64)?;
        let apic0 = map_page(fd, MSHV_APIC_PAGE_OFFSET | vp as u64)?;
        let mut apic1 = vec![0u8; PAGE_SIZE];
        let runner = Runner::new(DevTdcall { fd }, run as *mut u8, apic0 as *mut u8, apic1.as_mut_ptr());
        Ok(Env { runner, _keep: Keep::Dev(DevEnvKeep { fd, maps: vec![run, apic0], _apic1: apic1 }) })
    }
}

/// Where the page operations run and how their state is put back between
/// sweeps (accepting twice is PAGE_ALREADY_ACCEPTED).
pub trait Control {
    type T: Tdcall;
    fn page_backend(&mut self, config: &str) -> MshvVtl<Self::T>;
    /// Back to the configuration's initial state: all memory pending, and
    /// for the attribute configurations, accepted.
    fn reset(&mut self, config: &str, vtl: &mut MshvVtl<Self::T>);
}

fn config_of(config: &str) -> (u64, HostMap) {
    match config {
        "acc2m" | "attr2m" => (1 << 30, HostMap::Map2M),
        "acc4k" | "attr4k" => (64 << 20, HostMap::Map4K),
        other => panic!("unknown page configuration {other}"),
    }
}

fn full_range(config: &str) -> MemoryRange {
    MemoryRange::new(0, config_of(config).0)
}

#[derive(Default)]
pub struct SimControl {
    sims: Vec<(String, SimEnv)>,
}

impl Control for SimControl {
    type T = SimTdcall;
    fn page_backend(&mut self, config: &str) -> MshvVtl<SimTdcall> {
        let (size, map) = config_of(config);
        let env = SimEnv::new(1, size, map);
        let vtl = MshvVtl::new(env.call(0));
        self.sims.push((config.to_string(), env));
        vtl
    }
    fn reset(&mut self, config: &str, vtl: &mut MshvVtl<SimTdcall>) {
        let (_, env) = self.sims.iter().find(|(c, _)| c == config).expect("configuration");
        unsafe { hcltdx_sim_reset(env.sim) };
        if config.starts_with("attr") {
            vtl.tdx_accept_pages(full_range(config), None).expect("accept before attributes");
        }
    }
}

/// The stand-in devices served by benchmarks/devserver.py and its control
/// socket (one line per request: "reset CONFIG" answered by "ok").
pub struct DeviceControl {
    ctl: BufReader<UnixStream>,
    paths: Vec<(String, String)>,
}

impl DeviceControl {
    /// `spec`: "ctl=SOCKET,small=PATH,acc2m=PATH,...".
    pub fn connect(spec: &str) -> std::io::Result<DeviceControl> {
        let mut ctl = None;
        let mut paths = Vec::new();
        for item in spec.split(',') {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("bad item {item:?}")))?;
            if k == "ctl" {
                ctl = Some(v.to_string());
            } else {
                paths.push((k.to_string(), v.to_string()));
            }
        }
        let ctl = ctl.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no ctl= socket"))?;
        Ok(DeviceControl { ctl: BufReader::new(UnixStream::connect(ctl)?), paths })
    }

    pub fn path(&self, config: &str) -> Option<String> {
        self.paths.iter().find(|(c, _)| c == config).map(|(_, p)| p.clone())
    }
}

impl Control for DeviceControl {
    type T = DevTdcall;
    fn page_backend(&mut self, config: &str) -> MshvVtl<DevTdcall> {
        let path = self.path(config).unwrap_or_else(|| panic!("no device for {config}"));
        let fd = open_rw(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        MshvVtl::new(DevTdcall { fd })
    }
    fn reset(&mut self, config: &str, _vtl: &mut MshvVtl<DevTdcall>) {
        let s = self.ctl.get_mut();
        s.write_all(format!("reset {config}\n").as_bytes()).expect("control socket");
        let mut line = String::new();
        self.ctl.read_line(&mut line).expect("control socket");
        assert_eq!(line.trim(), "ok", "device reset of {config}: {line}");
    }
}

pub fn allowed_cpus() -> Vec<usize> {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![];
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect()
    }
}

pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[allow(dead_code)]
pub fn default_attrs() -> (u64, u64) {
    page_attrs()
}
