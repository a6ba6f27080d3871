//! TDG.VP.RD of GUEST_CR3 (VTL0) in a loop from Rust, through the same C
//! backend table (`hcltdx_sim_backend_ops`) the Cython core calls: the
//! compiled-caller yardstick of benchmarks/bench_runner.py.
//!
//!     cargo run --release -- [iterations] [code,code,...|-] [runs]
//!
//! With a list of field codes (hex), one iteration reads each of them in
//! turn, each value cut to its field's width (what a Rust caller's
//! read_vmcs16/32/64 does), and the time is reported per field: the
//! yardstick of a batch over the same fields. The time printed is the best
//! of `runs` timed runs (default 5), after a warm-up of a tenth of them.
use std::ffi::{c_char, c_int, c_void};
use std::hint::black_box;
use std::time::Instant;

#[repr(C)]
#[derive(Default)]
struct MshvTdcall {
    rax: u64,
    rcx: u64,
    rdx: u64,
    r8: u64,
    r9: u64,
    r10_out: u64,
    r11_out: u64,
}

#[repr(C)]
struct BackendOps {
    name: *const c_char,
    may_block: c_int,
    tdcall: unsafe extern "C" fn(*mut c_void, u32, *mut MshvTdcall) -> c_int,
    // map_page, unmap_page, vtl1_apic_page follow; not used here.
}

extern "C" {
    static hcltdx_sim_backend_ops: BackendOps;
    fn hcltdx_sim_config_init(cfg: *mut c_void);
    fn hcltdx_sim_new(cfg: *const c_void, err: *mut c_int) -> *mut c_void;
    fn hcltdx_sim_free(sim: *mut c_void);
}

/// Field code of VMX_VMCS_GUEST_CR3 (0x6802) for VTL0 (docs/tdx-abi.md 7.4).
const GUEST_CR3_VTL0: u64 = 0x2420_0003_0000_6802;
const VP_RD: u64 = 9;

/// Value bits of a field code's width (bits 13-14 of the encoding: 16, 64,
/// 32 bits, natural width; docs/tdx-abi.md 7.4).
const WIDTH_MASK: [u64; 4] = [0xFFFF, u64::MAX, 0xFFFF_FFFF, u64::MAX];

fn parse_codes(arg: &str) -> Vec<u64> {
    arg.split(',')
        .map(|c| {
            let c = c.trim().trim_start_matches("0x");
            u64::from_str_radix(c, 16).unwrap_or_else(|_| panic!("not a hex field code: {c:?}"))
        })
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let iters: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(20_000_000);
    let codes: Option<Vec<u64>> = args.next().filter(|a| a != "-").map(|a| parse_codes(&a));
    let runs: u64 = args.next().and_then(|s| s.parse().ok()).filter(|&r| r > 0).unwrap_or(5);
    // hcltdx_sim_config is a plain C struct; the defaults (1 VP, 64 MiB) suit.
    let mut cfg = [0u64; 16];
    let mut err: c_int = 0;
    unsafe { hcltdx_sim_config_init(cfg.as_mut_ptr().cast()) };
    let sim = unsafe { hcltdx_sim_new(cfg.as_ptr().cast(), &mut err) };
    assert!(!sim.is_null(), "hcltdx_sim_new failed: {err}");
    let ops = unsafe { &hcltdx_sim_backend_ops };
    let read = |code: u64| -> u64 {
        let mut io = MshvTdcall { rax: VP_RD, rdx: code, ..Default::default() };
        let rc = unsafe { (ops.tdcall)(sim, 0, &mut io) };
        if rc != 0 || (io.rax >> 32) != 0 {
            panic!("VP.RD of {code:#x} failed: errno {rc}, rax {:#x}", io.rax);
        }
        io.r8
    };
    match codes {
        None => {
            let run = |n: u64| -> f64 {
                let t0 = Instant::now();
                for _ in 0..n {
                    black_box(read(black_box(GUEST_CR3_VTL0)));
                }
                t0.elapsed().as_nanos() as f64 / n as f64
            };
            run(iters / 10);
            let best = (0..runs).map(|_| run(iters / 5)).fold(f64::INFINITY, f64::min);
            println!("rust_vp_rd_ns_per_call {best:.1} (best of {runs} runs of {} calls)", iters / 5);
        }
        Some(codes) => {
            let mut out = vec![0u64; codes.len()];
            let per = (iters / codes.len() as u64).max(1);
            let mut run = |n: u64| -> f64 {
                let t0 = Instant::now();
                for _ in 0..n {
                    for (o, &c) in out.iter_mut().zip(black_box(&codes)) {
                        *o = read(c) & WIDTH_MASK[((c >> 13) & 3) as usize];
                    }
                    black_box(&mut out);
                }
                t0.elapsed().as_nanos() as f64 / (n * codes.len() as u64) as f64
            };
            run(per / 10);
            let best = (0..runs).map(|_| run(per / 5)).fold(f64::INFINITY, f64::min);
            println!(
                "rust_batch_ns_per_field {best:.1} (best of {runs} runs of {} rounds of {} fields)",
                per / 5,
                codes.len()
            );
        }
    }
    unsafe { hcltdx_sim_free(sim) };
}
