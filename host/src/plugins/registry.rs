//! Loaded plugins and the cluster-wide default bindings, durable in `data-dir/plugins/`:
//! `<sha256>.wasm` for every loaded component and `registry.json` for names, versions, kinds
//! and defaults. The plugins shipped in the binary are always present.
//!
//! The table is swapped atomically (`ArcSwap`): a lookup takes a snapshot, so a call in flight
//! finishes on the plugin it started with while a load or rebind installs a new table.
//! Every version ever loaded stays, so data written with an old codec stays readable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Error, Params, Plugin, PluginInfo, PluginKind, Plugins};

/// Folder of the plugin store inside the data dir.
pub const PLUGINS_DIR: &str = "plugins";
/// Folder of compiled components inside the plugin store.
pub const COMPILED_DIR: &str = "compiled";
const REGISTRY_FILE: &str = "registry.json";
const REGISTRY_TMP_FILE: &str = "registry.json.tmp";
const COMPONENT_SUFFIX: &str = ".wasm";

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

/// The plugins bound by default when nothing else is: Kafka-like retention, the classic
/// snapshot thresholds, lz4.
const DEFAULTS: [(PluginKind, &str); 3] =
    [(PluginKind::Codec, "lz4"), (PluginKind::Trigger, "entries-or-age"), (PluginKind::Retention, "time-and-size")];

/// A binding: a plugin (`name` or `name@version`) and its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingSpec {
    /// `name` (newest loaded version) or `name@version`.
    pub plugin: String,
    /// Parameters passed to `configure`.
    pub params: Params,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredPlugin {
    info: PluginInfo,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RegistryFile {
    plugins: Vec<StoredPlugin>,
    defaults: BTreeMap<PluginKind, BindingSpec>,
}

/// One loaded plugin; compiled on first use.
pub struct Entry {
    info: PluginInfo,
    builtin: bool,
    /// Set once compiled; a failed compile is not remembered, so a passing I/O error heals.
    compiled: OnceLock<Arc<Plugin>>,
}

impl Entry {
    /// Its identity.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// Whether it ships inside the binary.
    pub fn builtin(&self) -> bool {
        self.builtin
    }

    /// Whether it has been compiled and is quarantined.
    pub fn quarantined(&self) -> bool {
        self.compiled.get().is_some_and(|p| p.is_quarantined())
    }
}

/// A snapshot of the registry.
#[derive(Clone, Default)]
pub struct Table {
    /// In load order: for a name without a version, the last one wins.
    entries: Vec<Arc<Entry>>,
    defaults: BTreeMap<PluginKind, BindingSpec>,
}

impl Table {
    /// Every loaded plugin, in load order.
    pub fn entries(&self) -> &[Arc<Entry>] {
        &self.entries
    }

    /// The cluster-wide default binding of a kind.
    pub fn default_binding(&self, kind: PluginKind) -> Option<&BindingSpec> {
        self.defaults.get(&kind)
    }

    /// The entry `spec` (`name` or `name@version`) names for `kind`.
    pub fn find(&self, kind: PluginKind, spec: &str) -> Option<&Arc<Entry>> {
        let (name, version) = match spec.split_once('@') {
            Some((n, v)) => (n, Some(v)),
            None => (spec, None),
        };
        self.entries
            .iter()
            .rev()
            .find(|e| e.info.kind == kind && e.info.name == name && version.is_none_or(|v| v == e.info.version))
    }

    /// The cluster-wide default binding of every kind.
    pub fn defaults(&self) -> &BTreeMap<PluginKind, BindingSpec> {
        &self.defaults
    }

    /// The entry with this sha256, of any kind.
    pub fn by_sha256(&self, sha256: &str) -> Option<&Arc<Entry>> {
        self.entries.iter().find(|e| e.info.sha256 == sha256)
    }
}

/// The durable plugin store.
pub struct Registry {
    dir: PathBuf,
    table: ArcSwap<Table>,
    /// Serialises writers (load, bind); readers never wait.
    write_lock: Mutex<()>,
}

impl Registry {
    /// Opens `dir`, registering the shipped plugins and every stored one.
    pub fn open(dir: &Path) -> Result<Registry, Error> {
        let io = |what: String| move |source| Error::Io { what, source };
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let mut table = Table::default();
        for (name, version, kind, bytes) in BUILTIN {
            let info = PluginInfo { name: name.to_string(), version: version.to_string(), sha256: sha256_hex(bytes), kind: *kind };
            table.entries.push(Arc::new(Entry { info, builtin: true, compiled: OnceLock::new() }));
        }
        for (kind, name) in DEFAULTS {
            table.defaults.insert(kind, BindingSpec { plugin: name.to_string(), params: Vec::new() });
        }
        let path = dir.join(REGISTRY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let file: RegistryFile = serde_json::from_slice(&bytes)
                    .map_err(|e| Error::Invalid(format!("{} is corrupt: {e}", path.display())))?;
                for stored in file.plugins {
                    table.entries.push(Arc::new(Entry { info: stored.info, builtin: false, compiled: OnceLock::new() }));
                }
                table.defaults.extend(file.defaults);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
        }
        Ok(Registry { dir: dir.to_path_buf(), table: ArcSwap::from_pointee(table), write_lock: Mutex::new(()) })
    }

    /// The current table.
    pub fn snapshot(&self) -> Arc<Table> {
        self.table.load_full()
    }

    fn component_path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}{COMPONENT_SUFFIX}"))
    }

    /// The bytes of a loaded component.
    fn bytes(&self, entry: &Entry) -> Result<Vec<u8>, Error> {
        if entry.builtin
            && let Some((_, _, _, bytes)) = BUILTIN.iter().find(|(n, v, k, _)| *n == entry.info.name && *v == entry.info.version && *k == entry.info.kind) {
                return Ok(bytes.to_vec());
            }
        let path = self.component_path(&entry.info.sha256);
        let bytes = std::fs::read(&path).map_err(|source| Error::Io { what: format!("reading {}", path.display()), source })?;
        // The store is ours, but a disk can rot: never run bytes whose hash changed.
        if sha256_hex(&bytes) != entry.info.sha256 {
            return Err(Error::Invalid(format!("{} no longer matches its sha256", path.display())));
        }
        Ok(bytes)
    }

    /// Installs a new table after persisting it.
    fn install(&self, table: Table) -> Result<(), Error> {
        let file = RegistryFile {
            plugins: table.entries.iter().filter(|e| !e.builtin).map(|e| StoredPlugin { info: e.info.clone() }).collect(),
            defaults: table.defaults.clone(),
        };
        // Plain data structures always serialise.
        let bytes = serde_json::to_vec_pretty(&file).expect("registry serialises");
        write_durably(&self.dir, REGISTRY_TMP_FILE, REGISTRY_FILE, &bytes)?;
        self.table.store(Arc::new(table));
        Ok(())
    }
}

impl Plugins {
    /// Loads a component as a plugin: checks its size, compiles it, type-checks it against
    /// its kind's world (or, without `kind`, finds the world it exports), runs the kind's
    /// self-check, stores it durably and makes it available. Anything refused leaves the
    /// registry as it was.
    pub fn load(&self, bytes: &[u8], kind: Option<PluginKind>, name: &str, version: &str) -> Result<PluginInfo, Error> {
        if bytes.len() > self.config.max_component_bytes {
            return Err(Error::Invalid(format!("{} bytes exceed plugins.max-component-bytes ({})", bytes.len(), self.config.max_component_bytes)));
        }
        if name.is_empty() || version.is_empty() || name.contains('@') || name.contains(char::is_whitespace) {
            return Err(Error::Invalid(format!("invalid plugin name or version {name:?}@{version:?}")));
        }
        let sha256 = sha256_hex(bytes);
        let kinds: Vec<PluginKind> = kind.map_or(PluginKind::ALL.to_vec(), |k| vec![k]);
        let mut last_error = None;
        let mut built = None;
        for kind in kinds {
            let info = PluginInfo { name: name.to_string(), version: version.to_string(), sha256: sha256.clone(), kind };
            match self.build(info, bytes) {
                Ok(plugin) => {
                    built = Some(plugin);
                    break;
                }
                Err(e) => last_error = Some(e),
            }
        }
        let plugin = match built {
            Some(p) => p,
            None => return Err(last_error.unwrap_or_else(|| Error::Invalid("no plugin kind matched".into()))),
        };
        plugin.self_check()?;
        let _writer = self.registry.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut table = (*self.registry.snapshot()).clone();
        if let Some(existing) = table.find(plugin.info().kind, &plugin.info().label())
            && existing.info.sha256 != sha256 {
                return Err(Error::Invalid(format!("{} is already loaded with different bytes; give the new build a new version", plugin.info().label())));
            }
        let path = self.registry.component_path(&sha256);
        write_durably(&self.registry.dir, &format!("{sha256}.tmp"), path.file_name().and_then(|n| n.to_str()).unwrap_or_default(), bytes)?;
        table.entries.retain(|e| e.info.label() != plugin.info().label() || e.info.kind != plugin.info().kind);
        let info = plugin.info().clone();
        let compiled = OnceLock::new();
        let _ = compiled.set(plugin);
        table.entries.push(Arc::new(Entry { info: info.clone(), builtin: false, compiled }));
        self.registry.install(table)?;
        self.metrics.set_plugin_loaded(&info);
        tracing::info!(plugin = %info.label(), kind = info.kind.name(), sha256 = %info.sha256, "plugin loaded");
        Ok(info)
    }

    /// The plugin `spec` names for `kind`, compiled.
    pub fn resolve(&self, kind: PluginKind, spec: &str) -> Result<Arc<Plugin>, Error> {
        let table = self.registry.snapshot();
        let entry = table.find(kind, spec).ok_or_else(|| Error::Unknown { kind: kind.name(), name: spec.to_string() })?;
        self.compiled(entry)
    }

    /// The plugin with this sha256 (for reading data an older codec version wrote).
    pub fn resolve_sha256(&self, sha256: &str) -> Result<Arc<Plugin>, Error> {
        let table = self.registry.snapshot();
        let entry = table.by_sha256(sha256).ok_or_else(|| Error::Unknown { kind: "any", name: format!("sha256 {sha256}") })?;
        self.compiled(entry)
    }

    fn compiled(&self, entry: &Entry) -> Result<Arc<Plugin>, Error> {
        if let Some(plugin) = entry.compiled.get() {
            return Ok(Arc::clone(plugin));
        }
        let bytes = self.registry.bytes(entry)?;
        let plugin = self.build(entry.info.clone(), &bytes)?;
        self.metrics.set_plugin_loaded(&entry.info);
        // Two callers may compile at once; the first one's plugin is kept.
        let _ = entry.compiled.set(plugin);
        entry.compiled.get().cloned().ok_or_else(|| Error::Invalid("plugin vanished".into()))
    }

    /// The plugin bound to a topic for `kind` (its topic config, else the cluster default)
    /// and the binding's parameters.
    pub fn binding(&self, kind: PluginKind, topic_configs: &BTreeMap<String, String>) -> Result<(Arc<Plugin>, Params), Error> {
        match topic_configs.get(kind.topic_config()) {
            Some(spec) => Ok((self.resolve(kind, spec)?, topic_params(topic_configs))),
            None => {
                let table = self.registry.snapshot();
                let spec = table.default_binding(kind).ok_or_else(|| Error::Unknown { kind: kind.name(), name: "(default)".into() })?;
                Ok((self.resolve(kind, &spec.plugin)?, spec.params.clone()))
            }
        }
    }

    /// Makes `spec` with `params` the cluster-wide default for `kind`, after checking that the
    /// plugin exists and accepts the parameters; otherwise the old default stays.
    pub fn set_default(&self, kind: PluginKind, spec: &str, params: Params) -> Result<(), Error> {
        let plugin = self.resolve(kind, spec)?;
        plugin.check_params(&params)?;
        let _writer = self.registry.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut table = (*self.registry.snapshot()).clone();
        table.defaults.insert(kind, BindingSpec { plugin: spec.to_string(), params });
        self.registry.install(table)?;
        tracing::info!(kind = kind.name(), plugin = spec, "default binding changed");
        Ok(())
    }

    /// The component bytes of a loaded plugin, by sha256.
    pub fn component(&self, sha256: &str) -> Result<Vec<u8>, Error> {
        let table = self.registry.snapshot();
        let entry = table.by_sha256(sha256).ok_or_else(|| Error::Unknown { kind: "any", name: sha256.to_string() })?;
        self.registry.bytes(entry)
    }

    /// Checks the plugin bindings among a topic's would-be configs: each named plugin must be
    /// loaded, of the right kind, and accept the `sluice.plugin.param.*` parameters.
    pub fn check_topic_configs(&self, configs: &BTreeMap<String, String>) -> Result<(), String> {
        let params = topic_params(configs);
        for kind in PluginKind::ALL {
            if let Some(spec) = configs.get(kind.topic_config()) {
                let plugin = self.resolve(kind, spec).map_err(|e| format!("{}: {e}", kind.topic_config()))?;
                plugin.check_params(&params).map_err(|e| format!("{}: {e}", kind.topic_config()))?;
            }
        }
        Ok(())
    }
}

/// The topic configs that are plugin parameters, with their prefix removed.
pub fn topic_params(configs: &BTreeMap<String, String>) -> Params {
    configs
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(crate::cluster::topic_config::PLUGIN_PARAM_PREFIX).map(|k| (k.to_string(), v.clone())))
        .collect()
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Replaces `dir/name` durably (see [`crate::durable::replace_file`]).
fn write_durably(dir: &Path, tmp_name: &str, name: &str, bytes: &[u8]) -> Result<(), Error> {
    crate::durable::replace_file(dir, tmp_name, name, bytes).map_err(|source| Error::Io { what: format!("writing {}", dir.join(name).display()), source })
}
