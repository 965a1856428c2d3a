// Shared by the build scripts of `sluice` (host/build.rs) and `sluice-tests` (tests/build.rs),
// which `include!` it: builds plugin crates of this workspace as wasm32-wasip2 components.

/// Builds `crates` for wasm32-wasip2 in release mode into the guests' own target dir (so the
/// outer build's lock is never touched), reruns the build script when `watched` workspace
/// folders change, and returns each crate's component path, in order.
fn build_guests(workspace: &std::path::Path, out_dir: &std::path::Path, crates: &[&str], watched: &[&str]) -> Vec<std::path::PathBuf> {
    let target_dir = guest_target_dir(out_dir);
    let target_dir = target_dir.as_path();
    for folder in watched {
        println!("cargo:rerun-if-changed={}", workspace.join(folder).display());
    }
    ensure_wasm_target();
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

/// One target dir for every build script's guests, beside the outer profile's `build/`
/// (OUT_DIR is `<target>/<profile>/build/<crate>-<hash>/out`), so the host-side tools guests
/// need (wit-bindgen's macros) are compiled once, not once per build script. Cargo's lock on
/// that dir serialises the build scripts that share it.
fn guest_target_dir(out_dir: &std::path::Path) -> std::path::PathBuf {
    match out_dir.ancestors().nth(3) {
        Some(profile_dir) if out_dir.ancestors().nth(2).is_some_and(|build| build.ends_with("build")) => profile_dir.join("wasm-guests"),
        _ => out_dir.join("wasm"),
    }
}

/// rustup installs the targets `rust-toolchain.toml` lists only along with the toolchain, so a
/// toolchain installed before stays without wasm32-wasip2: add it when the sysroot lacks it.
fn ensure_wasm_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let installed = || {
        std::process::Command::new(&rustc)
            .args(["--print", "sysroot"])
            .output()
            .ok()
            .map(|out| std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("lib/rustlib/wasm32-wasip2"))
            .is_some_and(|dir| dir.is_dir())
    };
    if installed() {
        return;
    }
    println!("cargo:warning=adding the wasm32-wasip2 target to this toolchain (rustup target add wasm32-wasip2)");
    // Two build scripts may get here at once; rustup serialises installs, and a second one that
    // finds the target present succeeds too.
    let added = std::process::Command::new("rustup").args(["target", "add", "wasm32-wasip2"]).status();
    if !installed() {
        panic!("the wasm32-wasip2 target is missing and `rustup target add wasm32-wasip2` did not add it ({added:?})");
    }
}
