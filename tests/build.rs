//! Builds the plugins the tests need (hostile ones and codec versions) for wasm32-wasip2 and
//! writes `gen.rs`: one `<NAME>_COMPONENT` path constant per plugin and a `foreach_plugin!`
//! macro listing them, in the manner of wasmtime's test-programs.

use std::path::PathBuf;
use std::process::Command;

/// The crates under tests/plugins/.
const TEST_PLUGINS: &[&str] = &[
    "looping-trigger",
    "memory-bomb-codec",
    "trapping-retention",
    "huge-output-codec",
    "filesystem-codec",
    "echo-codec",
    "echo-v2-codec",
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("tests/ is inside the workspace").to_path_buf();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target_dir = out_dir.join("wasm");
    for watched in ["tests/plugins", "plugin-sdk", "wit"] {
        println!("cargo:rerun-if-changed={}", workspace.join(watched).display());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.current_dir(&workspace).args(["build", "--release", "--target", "wasm32-wasip2", "--quiet"]);
    for krate in TEST_PLUGINS {
        build.args(["-p", krate]);
    }
    build.env("CARGO_TARGET_DIR", &target_dir).env_remove("CARGO_ENCODED_RUSTFLAGS").env_remove("RUSTFLAGS");
    // Guests ship without debug info: ~80 KB instead of ~2.5 MB each.
    build.env("CARGO_PROFILE_RELEASE_DEBUG", "false").env("CARGO_PROFILE_RELEASE_STRIP", "true");
    let status = build.status().expect("running cargo to build the test plugins");
    if !status.success() {
        panic!("building the test plugins for wasm32-wasip2 failed; is the target installed (`rustup target add wasm32-wasip2`)?");
    }
    let mut generated = String::new();
    let mut names = Vec::new();
    for krate in TEST_PLUGINS {
        let snake = krate.replace('-', "_");
        let wasm = target_dir.join("wasm32-wasip2/release").join(format!("{snake}.wasm"));
        assert!(wasm.exists(), "{} was not built", wasm.display());
        generated.push_str(&format!("/// The component built from tests/plugins/{krate}.\npub const {}_COMPONENT: &str = {:?};\n", snake.to_uppercase(), wasm.display().to_string()));
        names.push(snake);
    }
    generated.push_str("/// Calls `$m!(name)` for every test plugin.\n#[macro_export]\nmacro_rules! foreach_plugin {\n    ($m:ident) => {\n");
    for name in &names {
        generated.push_str(&format!("        $m!({name});\n"));
    }
    generated.push_str("    };\n}\n");
    std::fs::write(out_dir.join("gen.rs"), generated).expect("writing gen.rs");
}
