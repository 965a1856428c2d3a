// Shared by the build scripts of `sluice` (host/build.rs) and `sluice-tests` (tests/build.rs),
// which `include!` it: builds plugin crates of this workspace as wasm32-wasip2 components.

/// Builds `crates` for wasm32-wasip2 in release mode into `target_dir` (so the outer build's
/// target dir and lock are never touched), reruns the build script when `watched` workspace
/// folders change, and returns each crate's component path, in order.
fn build_guests(workspace: &std::path::Path, target_dir: &std::path::Path, crates: &[&str], watched: &[&str]) -> Vec<std::path::PathBuf> {
    for folder in watched {
        println!("cargo:rerun-if-changed={}", workspace.join(folder).display());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = std::process::Command::new(cargo);
    build.current_dir(workspace).args(["build", "--release", "--target", "wasm32-wasip2", "--quiet"]);
    for krate in crates {
        build.args(["-p", krate]);
    }
    // The host's own flags are not meant for the guests. Guests ship without debug info (~80 KB
    // instead of ~2.5 MB each), optimised as one unit, with wasm SIMD (wasmtime enables it).
    build
        .env("CARGO_TARGET_DIR", target_dir)
        .env_remove("RUSTFLAGS")
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+simd128")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true")
        .env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1");
    let status = build.status().expect("running cargo to build plugins");
    if !status.success() {
        panic!("building plugins for wasm32-wasip2 failed; is the target installed (`rustup target add wasm32-wasip2`)?");
    }
    crates
        .iter()
        .map(|krate| {
            let wasm = target_dir.join("wasm32-wasip2/release").join(format!("{}.wasm", krate.replace('-', "_")));
            assert!(wasm.exists(), "{} was not built", wasm.display());
            wasm
        })
        .collect()
}
