//! Compiles the project's simulator (csrc/sim/*.c) into this binary: the
//! same C source the Python extension and libhcltdx_sim.so are built from.
//! They are built with link-time optimisation, which flattens the model's
//! call chain across its files; here the files are compiled as one
//! translation unit (a generated file including each of them), which gives
//! the compiler the same view without needing LTO between C and Rust.
use std::path::PathBuf;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let sim = root.join("csrc/sim");
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&sim)
        .expect("csrc/sim")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().map_or(false, |x| x == "c"))
        .collect();
    sources.sort();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let unity = out.join("hcltdx_sim_unity.c");
    let text: String = sources.iter().map(|p| format!("#include \"{}\"\n", p.display())).collect();
    std::fs::write(&unity, text).expect("write the unity source");
    let mut build = cc::Build::new();
    build
        .file(&unity)
        .include(root.join("include"))
        .include(&sim)
        .flag("-std=gnu11")
        .flag("-pthread")
        .flag("-fno-semantic-interposition")
        .opt_level(2)
        .warnings(false);
    build.compile("hcltdx_sim");
    println!("cargo:rustc-link-lib=pthread");
    for p in &sources {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    println!("cargo:rerun-if-changed={}", sim.join("sim_internal.h").display());
    for h in ["abi.h", "backend.h", "sim.h", "vmcs_fields.def"] {
        println!("cargo:rerun-if-changed={}", root.join("include/hcltdx").join(h).display());
    }
}
