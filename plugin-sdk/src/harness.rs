//! Runs a plugin in the real Sluice host, in-process: the same engine, limits, import policy,
//! self-check and calls the broker uses. For a plugin crate's native tests:
//!
//! ```no_run
//! use sluice_plugin_sdk::harness::{Harness, PluginKind};
//!
//! let component = Harness::build(env!("CARGO_MANIFEST_DIR")).unwrap();
//! let harness = Harness::new().unwrap();
//! let policy = harness.load(&component, PluginKind::Retention).unwrap();
//! assert!(policy.check_params(&vec![("segments".into(), "3".into())]).is_ok());
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

pub use sluice::config::PluginsConfig;
pub use sluice::plugins::wit::latest::retention::exports::sluice::plugins::retention_policy as retention;
pub use sluice::plugins::wit::latest::trigger::exports::sluice::plugins::snapshot_trigger as trigger;
pub use sluice::plugins::{CallFailure, Error, Params, Plugin, PluginKind};

/// A plugin host with its own temporary plugin store.
pub struct Harness {
    plugins: sluice::plugins::Plugins,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// A host with the broker's default limits.
    pub fn new() -> Result<Harness, Error> {
        Harness::with_config(PluginsConfig::default())
    }

    /// A host with these limits (a short `call-timeout-ms`, a small `max-memory-bytes`, ...).
    pub fn with_config(config: PluginsConfig) -> Result<Harness, Error> {
        let dir = tempfile::tempdir().map_err(|source| Error::Io { what: "creating a temporary plugin store".into(), source })?;
        let plugins = sluice::plugins::Plugins::open(dir.path(), &config, Arc::new(sluice::Metrics::new(0)))?;
        Ok(Harness { plugins, _dir: dir })
    }

    /// Builds the plugin crate in `crate_dir` for wasm32-wasip2 (release, in a target dir under
    /// the system's temp dir, reused between runs) and returns the component's path.
    pub fn build(crate_dir: impl AsRef<Path>) -> Result<PathBuf, String> {
        let crate_dir = crate_dir.as_ref();
        let manifest = crate_dir.join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).map_err(|e| format!("reading {}: {e}", manifest.display()))?;
        let name = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("name").and_then(|r| r.trim().strip_prefix('=')).map(|v| v.trim().trim_matches('"').to_string()))
            .ok_or_else(|| format!("no package name in {}", manifest.display()))?;
        let target_dir = std::env::temp_dir().join("sluice-harness").join(&name);
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(crate_dir)
            .args(["build", "--release", "--quiet", "--target", "wasm32-wasip2", "--manifest-path"])
            .arg(&manifest)
            .env("CARGO_TARGET_DIR", &target_dir)
            .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
            .env("CARGO_PROFILE_RELEASE_STRIP", "true")
            .status()
            .map_err(|e| format!("running cargo: {e}"))?;
        if !status.success() {
            return Err(format!("building {name} for wasm32-wasip2 failed (is the target installed? `rustup target add wasm32-wasip2`)"));
        }
        let component = target_dir.join("wasm32-wasip2/release").join(format!("{}.wasm", name.replace('-', "_")));
        if component.exists() { Ok(component) } else { Err(format!("{} was not produced", component.display())) }
    }

    /// Loads a component as `kind`, exactly as `sluice plugin load` would: compiled,
    /// type-checked against the kind's world, import policy and self-check applied.
    pub fn load(&self, component: &Path, kind: PluginKind) -> Result<Arc<Plugin>, Error> {
        let bytes = std::fs::read(component).map_err(|source| Error::Io { what: format!("reading {}", component.display()), source })?;
        let name = component.file_stem().map(|s| s.to_string_lossy().replace('_', "-")).unwrap_or_else(|| "plugin".into());
        let info = self.plugins.load(&bytes, Some(kind), &name, "harness")?;
        self.plugins.resolve(kind, &info.label())
    }
}
