//! Builds the plugins the tests need (hostile ones and codec versions) for wasm32-wasip2 and
//! writes `gen.rs`: one `<NAME>_COMPONENT` path constant per plugin and a `foreach_plugin!`
//! macro listing them, in the manner of wasmtime's test-programs.

use std::path::PathBuf;

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

include!("../host/build-support/guests.rs");

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("tests/ is inside the workspace").to_path_buf();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed=../host/build-support/guests.rs");
    let components = build_guests(&workspace, &out_dir, TEST_PLUGINS, &["tests/plugins", "plugin-sdk", "wit"]);
    let mut generated = String::new();
    let mut names = Vec::new();
    for (krate, wasm) in TEST_PLUGINS.iter().zip(components) {
        let snake = krate.replace('-', "_");
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
