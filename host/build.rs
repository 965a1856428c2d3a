//! Builds the plugins shipped inside the `sluice` binary (the cluster's defaults) for
//! wasm32-wasip2, which emits components directly, and generates `builtin_plugins.rs` with
//! their bytes. Each plugin is built in release mode in a target dir inside `OUT_DIR`.

use std::path::PathBuf;
use std::process::Command;

/// (crate, plugin name, kind) of every shipped plugin.
const SHIPPED: &[(&str, &str, &str)] = &[
    ("lz4-codec", "lz4", "Codec"),
    ("deflate-codec", "deflate", "Codec"),
    ("entries-or-age-trigger", "entries-or-age", "Trigger"),
    ("log-bytes-trigger", "log-bytes", "Trigger"),
    ("time-and-size-retention", "time-and-size", "Retention"),
    ("keep-last-segments-retention", "keep-last-segments", "Retention"),
];

fn main() {
    compile_admin_api();
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("host/ is inside the workspace").to_path_buf();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target_dir = out_dir.join("wasm");
    for watched in ["plugins", "plugin-sdk", "wit"] {
        println!("cargo:rerun-if-changed={}", workspace.join(watched).display());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.current_dir(&workspace).args(["build", "--release", "--target", "wasm32-wasip2", "--quiet"]);
    for (krate, _, _) in SHIPPED {
        build.args(["-p", krate]);
    }
    // The host's own flags and jobserver settings are not meant for the guests.
    build.env("CARGO_TARGET_DIR", &target_dir).env_remove("CARGO_ENCODED_RUSTFLAGS").env_remove("RUSTFLAGS");
    // Guests ship without debug info (~80 KB instead of ~2.5 MB each), optimised as one unit,
    // with wasm SIMD (wasmtime enables it by default).
    build
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true")
        .env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+simd128");
    let status = build.status().expect("running cargo to build the shipped plugins");
    if !status.success() {
        panic!("building the shipped plugins for wasm32-wasip2 failed; is the target installed (`rustup target add wasm32-wasip2`)?");
    }
    let version = std::env::var("CARGO_PKG_VERSION").expect("cargo sets CARGO_PKG_VERSION");
    let mut generated = String::from("/// The plugins shipped in this binary: (name, version, kind, component bytes).\n");
    generated.push_str("pub const BUILTIN: &[(&str, &str, PluginKind, &[u8])] = &[\n");
    for (krate, name, kind) in SHIPPED {
        let wasm = target_dir.join("wasm32-wasip2/release").join(format!("{}.wasm", krate.replace('-', "_")));
        assert!(wasm.exists(), "{} was not built", wasm.display());
        generated.push_str(&format!("    ({name:?}, {version:?}, PluginKind::{kind}, include_bytes!({:?})),\n", wasm.display().to_string()));
    }
    generated.push_str("];\n");
    std::fs::write(out_dir.join("builtin_plugins.rs"), generated).expect("writing builtin_plugins.rs");
}

/// Generates the admin gRPC service from `proto/admin.proto` with the protoc shipped by
/// `protoc-bin-vendored`, so no system protoc is needed.
fn compile_admin_api() {
    println!("cargo:rerun-if-changed=proto/admin.proto");
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("protoc-bin-vendored ships a protoc for this platform");
    // SAFETY: build scripts are single-threaded; nothing else reads the environment meanwhile.
    unsafe { std::env::set_var("PROTOC", protoc) };
    tonic_prost_build::configure().compile_protos(&["proto/admin.proto"], &["proto"]).expect("compiling proto/admin.proto");
}
