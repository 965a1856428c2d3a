//! Builds the plugins shipped inside the `sluice` binary (the cluster's defaults) for
//! wasm32-wasip2, which emits components directly, and generates `builtin_plugins.rs` with
//! their bytes. Each plugin is built in release mode in the guests' own target dir (see
//! `guest_target_dir`).

use std::path::PathBuf;

/// (crate, plugin name, kind) of every shipped plugin.
const SHIPPED: &[(&str, &str, &str)] = &[
    ("lz4-codec", "lz4", "Codec"),
    ("deflate-codec", "deflate", "Codec"),
    ("gzip-codec", "gzip", "Codec"),
    ("zstd-codec", "zstd", "Codec"),
    ("entries-or-age-trigger", "entries-or-age", "Trigger"),
    ("log-bytes-trigger", "log-bytes", "Trigger"),
    ("time-and-size-retention", "time-and-size", "Retention"),
    ("keep-last-segments-retention", "keep-last-segments", "Retention"),
];

include!("build-support/guests.rs");

fn main() {
    compile_admin_api();
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("host/ is inside the workspace").to_path_buf();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed=build-support/guests.rs");
    let crates: Vec<&str> = SHIPPED.iter().map(|(krate, _, _)| *krate).collect();
    let components = build_guests(&workspace, &out_dir, &crates, &["plugins", "plugin-sdk", "wit"]);
    let version = std::env::var("CARGO_PKG_VERSION").expect("cargo sets CARGO_PKG_VERSION");
    let mut generated = String::from("/// The plugins shipped in this binary: (name, version, kind, component bytes).\n");
    generated.push_str("pub const BUILTIN: &[(&str, &str, PluginKind, &[u8])] = &[\n");
    for ((_, name, kind), wasm) in SHIPPED.iter().zip(components) {
        generated.push_str(&format!("    ({name:?}, {version:?}, PluginKind::{kind}, include_bytes!({:?})),\n", wasm.display().to_string()));
    }
    generated.push_str("];\n");
    std::fs::write(out_dir.join("builtin_plugins.rs"), generated).expect("writing builtin_plugins.rs");
}

/// Generates the admin gRPC service from `proto/admin.proto` with the protoc shipped by
/// `protoc-bin-vendored`, so no system protoc is needed.
fn compile_admin_api() {
    println!("cargo:rerun-if-changed=proto/admin.proto");
    println!("cargo:rerun-if-changed=proto/raft.proto");
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("protoc-bin-vendored ships a protoc for this platform");
    // SAFETY: build scripts are single-threaded; nothing else reads the environment meanwhile.
    unsafe { std::env::set_var("PROTOC", protoc) };
    tonic_prost_build::configure().compile_protos(&["proto/admin.proto", "proto/raft.proto"], &["proto"]).expect("compiling the gRPC protocols");
}
