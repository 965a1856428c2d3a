//! The process's one wasmtime `Engine`: component model on, epoch interruption on (a ticker
//! thread advances the epoch), concurrency support off. Compiled components are cached on disk
//! under the plugin's sha256 and the engine's compatibility hash; only artifacts this node
//! compiled itself are ever deserialized.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};

use super::Error;
use super::limits::{EPOCH_TICK, StoreState};
use super::wit::latest::codec::CodecPlugin;

/// Suffix of compiled artifacts in the cache directory.
const COMPILED_SUFFIX: &str = ".cwasm";

/// The engine, the linker every plugin is instantiated with, and the compile cache.
pub struct PluginEngine {
    engine: Engine,
    linker: Linker<StoreState>,
    cache_dir: PathBuf,
    /// `precompile_compatibility_hash`, as hex: part of every cache file name.
    compat: String,
    stop_ticker: Arc<AtomicBool>,
}

impl PluginEngine {
    /// Creates the engine, its linker (WASI without capabilities plus the `host` interface)
    /// and starts the epoch ticker. `cache_dir` holds compiled components.
    pub fn new(cache_dir: &Path) -> Result<PluginEngine, Error> {
        let mut config = Config::new();
        config.wasm_component_model(true).epoch_interruption(true).concurrency_support(false);
        let engine = Engine::new(&config).map_err(Error::wasmtime("creating the engine"))?;
        let mut linker = Linker::<StoreState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(Error::wasmtime("linking WASI"))?;
        // The `host` and `types` interfaces are the same in every world of a version.
        CodecPlugin::add_to_linker::<StoreState, wasmtime::component::HasSelf<StoreState>>(&mut linker, |s| s)
            .map_err(Error::wasmtime("linking the host interface"))?;
        std::fs::create_dir_all(cache_dir).map_err(|e| Error::Io { what: format!("creating {}", cache_dir.display()), source: e })?;
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let compat = format!("{:016x}", hasher.finish());
        let stop_ticker = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.clone();
        let stop = Arc::clone(&stop_ticker);
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticker_engine.increment_epoch();
                }
            })
            .map_err(|e| Error::Io { what: "starting the epoch ticker".into(), source: e })?;
        Ok(PluginEngine { engine, linker, cache_dir: cache_dir.to_path_buf(), compat, stop_ticker })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The linker plugins are instantiated with.
    pub fn linker(&self) -> &Linker<StoreState> {
        &self.linker
    }

    /// Compiles `bytes` (whose sha256 is `sha256`), or loads this node's cached compilation.
    pub fn compile(&self, sha256: &str, bytes: &[u8]) -> Result<Component, Error> {
        let cached = self.cache_dir.join(format!("{sha256}-{}{COMPILED_SUFFIX}", self.compat));
        if cached.exists() {
            // SAFETY: the file is in this node's own cache, written below by this same engine
            // configuration (its name carries the compatibility hash); nothing else writes it.
            match unsafe { Component::deserialize_file(&self.engine, &cached) } {
                Ok(component) => return Ok(component),
                Err(e) => tracing::warn!(file = %cached.display(), cause = %e, "discarding an unusable compiled plugin"),
            }
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| Error::Invalid(format!("not a valid component: {e:#}")))?;
        if let Ok(compiled) = component.serialize() {
            let tmp = cached.with_extension("tmp");
            // A failed cache write only costs a recompile next time.
            if std::fs::write(&tmp, compiled).is_ok() {
                let _ = std::fs::rename(&tmp, &cached);
            }
        }
        Ok(component)
    }
}

impl Drop for PluginEngine {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}
