//! The hcltdx benchmark operations written as a Rust user of the mshv_vtl
//! TDX interface writes them: a `Tdcall` trait with one implementation over
//! the project's C simulator (compiled from csrc/sim by build.rs) and one
//! issuing MSHV_VTL_TDCALL on a device file; field codes and page-operation
//! operands built with `bitfield-struct`; the accept and attribute loops of
//! docs/tdx-abi.md sections 7.12 and 7.13.
//!
//! Usage:
//!   hcltdx-bench-rust --out FILE [--quick] [--rounds N] [--sweep-rounds N] [--backend sim|device|both]
//!                     [--devices JSON]
//!
//! `--devices` is the JSON line printed by benchmarks/devserver.py: the
//! control socket and one stand-in device path per configuration. Results
//! are written as JSON: one entry per (operation, backend) with the ns per
//! unit of every round, using the operation names of the Python suites.

mod ops;
mod sys;

use std::io::Write;

use ops::*;
use sys::*;

struct Args {
    out: String,
    quick: bool,
    rounds: Option<usize>,
    sweep_rounds: Option<usize>,
    backend: String,
    devices: Option<String>,
    only: Option<String>,
    sim_clock: String,
}

fn parse_args() -> Args {
    let mut a = Args {
        out: String::new(),
        quick: false,
        rounds: None,
        sweep_rounds: None,
        backend: "both".into(),
        devices: None,
        only: None,
        sim_clock: "cpu".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| it.next().unwrap_or_else(|| die(&format!("{name} needs a value")));
        match arg.as_str() {
            "--out" => a.out = val("--out"),
            "--quick" => a.quick = true,
            "--rounds" => {
                a.rounds = Some(val("--rounds").parse().unwrap_or_else(|_| die("--rounds: not a number")))
            }
            "--sweep-rounds" => {
                a.sweep_rounds =
                    Some(val("--sweep-rounds").parse().unwrap_or_else(|_| die("--sweep-rounds: not a number")))
            }
            "--backend" => a.backend = val("--backend"),
            "--devices" => a.devices = Some(val("--devices")),
            "--only" => a.only = Some(val("--only")),
            "--sim-clock" => a.sim_clock = val("--sim-clock"),
            "-h" | "--help" => {
                println!("usage: hcltdx-bench-rust --out FILE [--quick] [--rounds N] [--sweep-rounds N] [--backend sim|device|both] [--devices SPEC] [--only OP] [--sim-clock cpu|wall]");
                std::process::exit(0);
            }
            other => die(&format!("unknown argument {other:?}")),
        }
    }
    if a.out.is_empty() {
        die("--out FILE is required");
    }
    if !matches!(a.sim_clock.as_str(), "cpu" | "wall") {
        die("--sim-clock must be cpu or wall");
    }
    if !matches!(a.backend.as_str(), "sim" | "device" | "both") {
        die("--backend must be sim, device or both");
    }
    a
}

fn die(msg: &str) -> ! {
    eprintln!("hcltdx-bench-rust: {msg}");
    std::process::exit(2);
}

/// One measured operation: ns per unit for each round.
struct Result {
    op: &'static str,
    backend: &'static str,
    unit: &'static str,
    units_per_iteration: u64,
    iterations: u64,
    rounds_ns: Vec<f64>,
}

/// The clock of a backend: thread CPU time or monotonic wall time, in ns.
#[derive(Clone, Copy)]
struct Clock(libc::clockid_t);

impl Clock {
    #[inline]
    fn now(self) -> f64 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        unsafe { libc::clock_gettime(self.0, &mut ts) };
        ts.tv_sec as f64 * 1e9 + ts.tv_nsec as f64
    }
}

/// Iterations of `f` that take about `target_ns` (the same rule as the
/// Python suites: double until a tenth of the target, then scale).
fn calibrate<F: FnMut()>(clock: Clock, target_ns: f64, f: &mut F) -> u64 {
    for _ in 0..3 {
        f(); // warm: first-touch faults and cold caches are not the steady cost
    }
    let mut n: u64 = 1;
    loop {
        let t0 = clock.now();
        for _ in 0..n {
            f();
        }
        let dt = clock.now() - t0;
        if dt >= target_ns / 10.0 || n >= 1 << 40 {
            return ((n as f64) * target_ns / dt.max(1.0)).ceil().max(1.0) as u64;
        }
        n *= 2;
    }
}

/// `rounds` timed rounds of about `target_ns` each; ns per unit per round
/// (`f` performs `units` units). Returns (iterations per round, rounds).
fn measure<F: FnMut()>(clock: Clock, rounds: usize, target_ns: f64, units: u64, mut f: F) -> (u64, Vec<f64>) {
    let iterations = calibrate(clock, target_ns, &mut f);
    let mut out = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t0 = clock.now();
        for _ in 0..iterations {
            f();
        }
        let ns = clock.now() - t0;
        out.push(ns / (iterations * units) as f64);
    }
    (iterations, out)
}

fn run_backend<T: Tdcall, C: Control>(
    backend: &'static str,
    mut env: Env<T>,
    ctl: &mut C,
    args: &Args,
    results: &mut Vec<Result>,
) {
    let rounds = args.rounds.unwrap_or(if args.quick { 2 } else { 15 });
    let sweep_rounds = args.sweep_rounds.or(args.rounds).unwrap_or(if args.quick { 1 } else { 9 });
    let quick = args.quick;
    let target = if quick { 1e6 } else { 5e7 }; // ns per round: 1 ms quick, 50 ms full
    // The in-process simulator is CPU-bound: its thread's CPU time leaves out
    // the time other processes of a shared machine hold the CPU. Over the
    // device the work happens in the daemon: wall time.
    let clock = Clock(if backend == "sim" && args.sim_clock == "cpu" {
        libc::CLOCK_THREAD_CPUTIME_ID
    } else {
        libc::CLOCK_MONOTONIC
    });
    let want = |op: &str| args.only.as_deref().map_or(true, |o| o == op);
    let fields = readable_64bit_fields();
    let f8: Vec<VmcsField> = fields[..8].to_vec();
    let cr3 = VmcsField::VMX_VMCS_GUEST_CR3;
    let mut push = |op: &'static str, unit: &'static str, units: u64, iterations: u64, r: Vec<f64>| {
        results.push(Result { op, backend, unit, units_per_iteration: units, iterations, rounds_ns: r })
    };

    {
        let runner = &mut env.runner;
        if want("read_vmcs64") {
            let (n, r) = measure(clock, rounds, target, 1, || {
                std::hint::black_box(runner.read_vmcs64(GuestVtl::Vtl0, std::hint::black_box(cr3)));
            });
            push("read_vmcs64", "call", 1, n, r);
        }
        if want("write_vmcs64") {
            let (n, r) = measure(clock, rounds, target, 1, || {
                std::hint::black_box(runner.write_vmcs64(GuestVtl::Vtl0, cr3, !0u64, std::hint::black_box(0x1000)));
            });
            push("write_vmcs64", "call", 1, n, r);
        }
        for (op, count) in [("read_vmcs_batch[1]", 1usize), ("read_vmcs_batch[8]", 8), ("read_vmcs_batch[64]", 64)] {
            if !want(op) {
                continue;
            }
            let list: Vec<VmcsField> = fields[..count].to_vec();
            let mut values = vec![0u64; count];
            let (n, r) = measure(clock, rounds, target, count as u64, || {
                runner.read_vmcs_batch(GuestVtl::Vtl0, &list, &mut values);
                std::hint::black_box(&values);
            });
            push(op, "field", count as u64, n, r);
        }
        if want("poll_vmcs[8]") {
            let samples = 64usize;
            let mut rows = vec![0u64; samples * (1 + f8.len())];
            let (n, r) = measure(clock, rounds, target, samples as u64, || {
                runner.poll_vmcs(GuestVtl::Vtl0, &f8, samples, &mut rows);
                std::hint::black_box(&rows);
            });
            push("poll_vmcs[8]", "sample", samples as u64, n, r);
        }
        if want("private_regs") {
            let mut regs = TdxPrivateRegs::new(GuestVtl::Vtl1);
            let (n, r) = measure(clock, rounds, target, 1, || {
                runner.read_private_regs(&mut regs);
                runner.write_private_regs(std::hint::black_box(&regs));
            });
            push("private_regs", "read+write", 1, n, r);
        }
        if want("snapshot") {
            let mut snap = Snapshot::default();
            let (n, r) = measure(clock, rounds, target, 1, || {
                runner.snapshot(&f8, &mut snap);
                std::hint::black_box(&snap);
            });
            push("snapshot", "snapshot", 1, n, r);
        }
    }
    if want("vmcs_field_code") && backend == "sim" {
        let (n, r) = measure(clock, rounds, target, 1, || {
            std::hint::black_box(vmcs_field_code(std::hint::black_box(cr3), std::hint::black_box(GuestVtl::Vtl0)));
        });
        push("vmcs_field_code", "call", 1, n, r);
    }

    // Page operations: each configuration is a separate simulator/device.
    let attrs = page_attrs();
    let sweeps: [(&'static str, &'static str, MemoryRange); 4] = [
        ("tdx_accept_pages[1GiB@2MiB]", "acc2m", MemoryRange::new(0, 1 << 30)),
        ("tdx_accept_pages[64MiB@4KiB]", "acc4k", MemoryRange::new(0, 64 << 20)),
        ("tdx_set_page_attributes[1GiB@2MiB]", "attr2m", MemoryRange::new(0, 1 << 30)),
        ("tdx_set_page_attributes[64MiB@4KiB]", "attr4k", MemoryRange::new(0, 64 << 20)),
    ];
    for (op, config, range) in sweeps {
        if !want(op) {
            continue;
        }
        // --quick: the first 4 MiB only (as the Python suites).
        let range = if quick { MemoryRange::new(0, range.end.min(4 << 20)) } else { range };
        let mut vtl = ctl.page_backend(config);
        let accept = op.starts_with("tdx_accept");
        let mut r = Vec::with_capacity(sweep_rounds);
        if !accept {
            ctl.reset(config, &mut vtl);
        }
        for _ in 0..sweep_rounds {
            if accept {
                ctl.reset(config, &mut vtl);
            }
            let t0 = clock.now();
            if accept {
                vtl.tdx_accept_pages(range, None).expect("accept");
            } else {
                vtl.tdx_set_page_attributes(range, attrs.0, attrs.1).expect("set attributes");
            }
            r.push(clock.now() - t0);
        }
        push(op, "sweep", 1, 1, r);
    }
    let _ = &mut env;
}

fn write_json(path: &str, results: &[Result], args: &Args) {
    let mut s = String::from("{\n  \"impl\": \"rust\",\n");
    s += &format!("  \"quick\": {},\n  \"pid\": {},\n", args.quick, std::process::id());
    s += &format!("  \"sim_clock\": \"{}\",\n", args.sim_clock);
    s += &format!("  \"cpus_allowed\": {:?},\n  \"results\": [\n", allowed_cpus());
    for (i, r) in results.iter().enumerate() {
        let rounds: Vec<String> = r.rounds_ns.iter().map(|v| format!("{v:.3}")).collect();
        s += &format!(
            "    {{\"op\": \"{}\", \"backend\": \"{}\", \"unit\": \"{}\", \"units_per_iteration\": {}, \"iterations\": {}, \"rounds_ns\": [{}]}}{}\n",
            r.op,
            r.backend,
            r.unit,
            r.units_per_iteration,
            r.iterations,
            rounds.join(", "),
            if i + 1 < results.len() { "," } else { "" }
        );
    }
    s += "  ]\n}\n";
    let mut f = std::fs::File::create(path).unwrap_or_else(|e| die(&format!("{path}: {e}")));
    f.write_all(s.as_bytes()).unwrap_or_else(|e| die(&format!("{path}: {e}")));
}

fn main() {
    let args = parse_args();
    let mut results = Vec::new();
    if args.backend != "device" {
        let mut ctl = SimControl::default();
        let env = SimEnv::new(1, 64 << 20, HostMap::Map2M).env();
        run_backend("sim", env, &mut ctl, &args, &mut results);
    }
    if args.backend != "sim" {
        let spec = args.devices.as_deref().unwrap_or_else(|| die("--backend device needs --devices JSON"));
        let mut ctl = DeviceControl::connect(spec).unwrap_or_else(|e| die(&format!("devices: {e}")));
        let path = ctl.path("small").unwrap_or_else(|| die("devices: no 'small' configuration"));
        let env = DevEnv::open(&path, 0).unwrap_or_else(|e| die(&format!("{path}: {e}")));
        run_backend("device", env, &mut ctl, &args, &mut results);
    }
    write_json(&args.out, &results, &args);
}
