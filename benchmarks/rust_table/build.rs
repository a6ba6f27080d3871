// Builds the simulator's C sources into a static library (plain -O2, no LTO,
// so the Rust linker can take it) and links it.
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("../..");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let cc = env::var("CC").unwrap_or_else(|_| "cc".into());
    let mut objs = Vec::new();
    let mut srcs: Vec<PathBuf> = std::fs::read_dir(root.join("csrc/sim"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().map_or(false, |x| x == "c"))
        .collect();
    srcs.sort();
    for src in &srcs {
        let obj = out.join(src.file_stem().unwrap()).with_extension("o");
        let ok = Command::new(&cc)
            .args(["-O2", "-std=gnu11", "-fPIC", "-pthread", "-c"])
            .arg("-I")
            .arg(root.join("include"))
            .arg(src)
            .arg("-o")
            .arg(&obj)
            .status()
            .expect("running the C compiler");
        assert!(ok.success(), "compiling {}", src.display());
        println!("cargo:rerun-if-changed={}", src.display());
        objs.push(obj);
    }
    let lib = out.join("libhcltdx_sim.a");
    let _ = std::fs::remove_file(&lib);
    let ok = Command::new("ar").arg("rcs").arg(&lib).args(&objs).status().expect("running ar");
    assert!(ok.success());
    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rustc-link-lib=static=hcltdx_sim");
    println!("cargo:rustc-link-lib=dylib=pthread");
    println!("cargo:rerun-if-changed={}", root.join("include/hcltdx").display());
}
