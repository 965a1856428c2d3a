//! The WebAssembly plugin host: compression codecs, snapshot triggers and retention policies
//! are components (WIT package `sluice:plugins`, see `wit/`) that run under wasmtime with a
//! memory cap, an epoch deadline and no capabilities.
//!
//! - [`engine`]: the one `Engine`, the linker, the compile cache.
//! - [`limits`]: what a call runs inside (store state, limits, the `host` interface).
//! - [`registry`]: loaded plugins by name, version and sha256, bindings, persistence, hot swap.
//! - [`codec`], [`trigger`], [`retention`]: one adapter per kind.
//! - [`wit`]: host bindings per frozen WIT version.
//!
//! A [`Plugin`] keeps a few ready instances per set of binding parameters (a recycled store
//! measured an order of magnitude cheaper than a fresh one); an instance whose call trapped or
//! timed out is dropped. After `quarantine-after-failures` consecutive failures a plugin is
//! quarantined: its calls fail at once and each kind's fallback applies.

pub mod codec;
pub mod engine;
pub mod limits;
pub mod registry;
pub mod retention;
pub mod trigger;
pub mod wit;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use wasmtime::Store;
use wasmtime::component::Component;

use crate::metrics::Metrics;
use engine::PluginEngine;
use limits::{CallLimits, StoreState};
use wit::latest::codec::{CodecPlugin, CodecPluginPre};
use wit::latest::retention::{RetentionPlugin, RetentionPluginPre};
use wit::latest::trigger::{TriggerPlugin, TriggerPluginPre};

/// Ready instances kept per plugin and parameter set.
const POOL_SIZE: usize = 4;
/// Parameter sets per plugin that keep ready instances; calls with others get a fresh one.
const POOLED_BINDINGS: usize = 64;

/// Key/value parameters of a binding.
pub type Params = Vec<(String, String)>;

/// The three kinds of plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    /// Compression codec.
    Codec,
    /// Snapshot trigger.
    Trigger,
    /// Retention policy.
    Retention,
}

impl PluginKind {
    /// Every kind.
    pub const ALL: [PluginKind; 3] = [PluginKind::Codec, PluginKind::Trigger, PluginKind::Retention];

    /// The name used on the command line and in errors.
    pub fn name(self) -> &'static str {
        match self {
            PluginKind::Codec => "codec",
            PluginKind::Trigger => "trigger",
            PluginKind::Retention => "retention",
        }
    }

    /// The topic config that binds a plugin of this kind to a topic.
    pub fn topic_config(self) -> &'static str {
        match self {
            PluginKind::Codec => "sluice.codec",
            PluginKind::Trigger => "sluice.snapshot.trigger",
            PluginKind::Retention => "sluice.retention.policy",
        }
    }

    fn world(self) -> &'static str {
        match self {
            PluginKind::Codec => "codec-plugin",
            PluginKind::Trigger => "trigger-plugin",
            PluginKind::Retention => "retention-plugin",
        }
    }
}

impl std::str::FromStr for PluginKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "codec" => Ok(PluginKind::Codec),
            "trigger" | "snapshot-trigger" => Ok(PluginKind::Trigger),
            "retention" | "retention-policy" => Ok(PluginKind::Retention),
            other => Err(format!("unknown plugin kind {other:?}: expected codec, trigger or retention")),
        }
    }
}

/// Why loading, binding or calling a plugin failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are not an acceptable plugin; the message says why.
    #[error("plugin refused: {0}")]
    Invalid(String),
    /// No such plugin is loaded.
    #[error("no {kind} plugin {name} is loaded")]
    Unknown {
        /// The kind asked for.
        kind: &'static str,
        /// `name` or `name@version`.
        name: String,
    },
    /// wasmtime failed outside a guest call.
    #[error("{what}: {cause}")]
    Wasmtime {
        /// What was being done.
        what: &'static str,
        /// wasmtime's message.
        cause: String,
    },
    /// Plugin storage failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A call failed; the plugin is named in the message.
    #[error("plugin {plugin}: {failure}")]
    Call {
        /// `name@version`.
        plugin: String,
        /// What went wrong.
        failure: CallFailure,
    },
}

impl Error {
    fn wasmtime(what: &'static str) -> impl Fn(wasmtime::Error) -> Error {
        move |e| Error::Wasmtime { what, cause: format!("{e:#}") }
    }
}

/// How one call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallFailure {
    /// The guest returned an error.
    Returned(String),
    /// The guest trapped (including running out of its memory cap).
    Trapped(String),
    /// The call ran past its deadline and was interrupted.
    TimedOut,
    /// The result was larger than `max-output-bytes`.
    OutputTooLarge(usize),
    /// `configure` refused the binding's parameters.
    Configure(String),
    /// The plugin is quarantined after repeated failures.
    Quarantined,
}

impl fmt::Display for CallFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallFailure::Returned(m) => write!(f, "returned an error: {m}"),
            CallFailure::Trapped(m) => write!(f, "trapped: {m}"),
            CallFailure::TimedOut => write!(f, "timed out"),
            CallFailure::OutputTooLarge(n) => write!(f, "returned {n} bytes, more than allowed"),
            CallFailure::Configure(m) => write!(f, "refused its parameters: {m}"),
            CallFailure::Quarantined => write!(f, "is quarantined after repeated failures"),
        }
    }
}

impl CallFailure {
    /// The label this failure is counted under.
    pub fn reason(&self) -> &'static str {
        match self {
            CallFailure::Returned(_) => "error",
            CallFailure::Trapped(_) => "trap",
            CallFailure::TimedOut => "timeout",
            CallFailure::OutputTooLarge(_) => "output_too_large",
            CallFailure::Configure(_) => "configure",
            CallFailure::Quarantined => "quarantined",
        }
    }
}

/// Identity of a loaded plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginInfo {
    /// Its name, e.g. `time-and-size`.
    pub name: String,
    /// Its version, e.g. `0.1.0`.
    pub version: String,
    /// Hex sha256 of the component bytes.
    pub sha256: String,
    /// Its kind.
    pub kind: PluginKind,
}

impl PluginInfo {
    /// `name@version`.
    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

enum Pre {
    Codec(CodecPluginPre<StoreState>),
    Trigger(TriggerPluginPre<StoreState>),
    Retention(RetentionPluginPre<StoreState>),
}

/// An instantiated plugin of one kind.
pub enum Bindings {
    /// A codec.
    Codec(CodecPlugin),
    /// A snapshot trigger.
    Trigger(TriggerPlugin),
    /// A retention policy.
    Retention(RetentionPlugin),
}

struct Ready {
    store: Store<StoreState>,
    bindings: Bindings,
}

/// A compiled, type-checked plugin and its ready instances.
pub struct Plugin {
    info: PluginInfo,
    pre: Pre,
    limits: CallLimits,
    quarantine_after: u32,
    metrics: Arc<Metrics>,
    engine: wasmtime::Engine,
    pool: Mutex<HashMap<Params, Vec<Ready>>>,
    consecutive_failures: AtomicU32,
    quarantined: AtomicBool,
}

impl Plugin {
    /// Type-checks `component` against `kind`'s world and prepares it for instantiation.
    fn new(engine: &PluginEngine, component: &Component, info: PluginInfo, limits: CallLimits, quarantine_after: u32, metrics: Arc<Metrics>) -> Result<Plugin, Error> {
        check_imports(engine.engine(), component)?;
        let pre = engine.linker().instantiate_pre(component).map_err(|e| {
            Error::Invalid(format!("its imports cannot be satisfied (a plugin may import only WASI without capabilities and sluice:plugins/host): {e:#}"))
        })?;
        let wrong_world = |e: wasmtime::Error| {
            Error::Invalid(format!("it does not export the {} world of sluice:plugins@{}: {e:#}", info.kind.world(), wit::latest::MIN_VERSION))
        };
        let pre = match info.kind {
            PluginKind::Codec => Pre::Codec(CodecPluginPre::new(pre).map_err(wrong_world)?),
            PluginKind::Trigger => Pre::Trigger(TriggerPluginPre::new(pre).map_err(wrong_world)?),
            PluginKind::Retention => Pre::Retention(RetentionPluginPre::new(pre).map_err(wrong_world)?),
        };
        Ok(Plugin {
            info,
            pre,
            limits,
            quarantine_after,
            metrics,
            engine: engine.engine().clone(),
            pool: Mutex::new(HashMap::new()),
            consecutive_failures: AtomicU32::new(0),
            quarantined: AtomicBool::new(false),
        })
    }

    /// Its identity.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// Whether repeated failures quarantined it.
    pub fn is_quarantined(&self) -> bool {
        self.quarantined.load(Ordering::Relaxed)
    }

    /// Runs one call with the binding's `params` under the call limits. `size` measures the
    /// result for the output cap.
    fn call<R>(
        &self,
        params: &Params,
        size: impl Fn(&R) -> usize,
        f: impl FnOnce(&mut Store<StoreState>, &Bindings) -> wasmtime::Result<Result<R, String>>,
    ) -> Result<R, Error> {
        let label = self.info.label();
        if self.is_quarantined() {
            return Err(self.failed(CallFailure::Quarantined));
        }
        let mut ready = match self.checkout(params) {
            Ok(ready) => ready,
            Err(failure) => return Err(self.failed(failure)),
        };
        ready.store.set_epoch_deadline(self.limits.deadline_ticks());
        let started = Instant::now();
        let outcome = f(&mut ready.store, &ready.bindings);
        self.metrics.observe_plugin_call(&self.info, started.elapsed());
        match outcome {
            Ok(Ok(value)) => {
                let n = size(&value);
                self.checkin(params, ready);
                if n > self.limits.max_output_bytes {
                    return Err(self.failed(CallFailure::OutputTooLarge(n)));
                }
                self.consecutive_failures.store(0, Ordering::Relaxed);
                Ok(value)
            }
            Ok(Err(message)) => {
                self.checkin(params, ready);
                Err(self.failed(CallFailure::Returned(message)))
            }
            // A store that trapped is never reused: `ready` is dropped here.
            Err(trap) => Err(self.failed(classify(&trap))),
        }
        .map_err(|e| {
            tracing::warn!(plugin = %label, cause = %e, "plugin call failed");
            e
        })
    }

    fn failed(&self, failure: CallFailure) -> Error {
        self.metrics.count_plugin_failure(&self.info, failure.reason());
        if failure != CallFailure::Quarantined {
            let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
            if failures >= self.quarantine_after && !self.quarantined.swap(true, Ordering::Relaxed) {
                tracing::error!(plugin = %self.info.label(), failures, "plugin quarantined after consecutive failures");
            }
        }
        Error::Call { plugin: self.info.label(), failure }
    }

    /// A ready instance for `params`: recycled, or new and configured.
    fn checkout(&self, params: &Params) -> Result<Ready, CallFailure> {
        if let Some(ready) = self.pool.lock().unwrap_or_else(|p| p.into_inner()).get_mut(params).and_then(Vec::pop) {
            return Ok(ready);
        }
        let mut store = Store::new(&self.engine, StoreState::new(self.info.label(), &self.limits));
        store.limiter(|s| s.limiter());
        store.set_epoch_deadline(self.limits.deadline_ticks());
        let bindings = match &self.pre {
            Pre::Codec(pre) => pre.instantiate(&mut store).map(Bindings::Codec),
            Pre::Trigger(pre) => pre.instantiate(&mut store).map(Bindings::Trigger),
            Pre::Retention(pre) => pre.instantiate(&mut store).map(Bindings::Retention),
        }
        .map_err(|e| classify(&e))?;
        let configured = match &bindings {
            Bindings::Codec(b) => b.sluice_plugins_codec().call_configure(&mut store, params),
            Bindings::Trigger(b) => b.sluice_plugins_snapshot_trigger().call_configure(&mut store, params),
            Bindings::Retention(b) => b.sluice_plugins_retention_policy().call_configure(&mut store, params),
        };
        match configured {
            Ok(Ok(())) => Ok(Ready { store, bindings }),
            Ok(Err(message)) => Err(CallFailure::Configure(message)),
            Err(trap) => Err(classify(&trap)),
        }
    }

    fn checkin(&self, params: &Params, ready: Ready) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if !pool.contains_key(params) && pool.len() >= POOLED_BINDINGS {
            return;
        }
        let ready_list = pool.entry(params.clone()).or_default();
        if ready_list.len() < POOL_SIZE {
            ready_list.push(ready);
        }
    }

    /// The kind's self-check, run before a plugin is accepted: a codec must round-trip a
    /// sample, a trigger must answer for an idle group, a policy for an empty partition, each
    /// within the call limits.
    pub fn self_check(&self) -> Result<(), Error> {
        let outcome = match self.info.kind {
            PluginKind::Codec => return self.codec_self_check(),
            PluginKind::Trigger => self.should_snapshot(&Params::new(), &trigger::idle_group()).map(drop),
            PluginKind::Retention => {
                let (partition, configs) = retention::empty_partition();
                self.retain(&Params::new(), &partition, &configs, &[]).map(drop)
            }
        };
        match outcome {
            // A plugin may require parameters that only a binding supplies; instantiating and
            // running `configure` already worked.
            Err(Error::Call { failure: CallFailure::Configure(_), .. }) => Ok(()),
            Err(e) => Err(Error::Invalid(format!("self-check failed: {e}"))),
            Ok(()) => Ok(()),
        }
    }

    /// Checks that `params` are accepted by the plugin's `configure`.
    pub fn check_params(&self, params: &Params) -> Result<(), Error> {
        match self.checkout(params) {
            Ok(ready) => {
                self.checkin(params, ready);
                Ok(())
            }
            Err(failure) => Err(Error::Call { plugin: self.info.label(), failure }),
        }
    }
}

/// Interfaces a plugin may import: the host's own, and WASI interfaces that carry no
/// capability (stdio goes nowhere, the environment is empty). Files, sockets and anything
/// else are refused at load, even though nothing would be granted.
const ALLOWED_IMPORTS: &[&str] = &["sluice:plugins/", "wasi:cli/", "wasi:io/", "wasi:clocks/", "wasi:random/"];

fn check_imports(engine: &wasmtime::Engine, component: &Component) -> Result<(), Error> {
    let ty = component.component_type();
    let refused: Vec<&str> = ty
        .imports(engine)
        .map(|(name, _)| name)
        .filter(|name| !ALLOWED_IMPORTS.iter().any(|allowed| name.starts_with(allowed)))
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "it imports {}: plugins get no files, no network and no other host interfaces",
            refused.join(", ")
        )))
    }
}

fn classify(error: &wasmtime::Error) -> CallFailure {
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => CallFailure::TimedOut,
        _ => CallFailure::Trapped(format!("{error:#}")),
    }
}

/// Everything the broker needs from the plugin system: the engine, the call limits and the
/// registry of loaded plugins and bindings.
pub struct Plugins {
    engine: PluginEngine,
    limits: CallLimits,
    config: crate::config::PluginsConfig,
    metrics: Arc<Metrics>,
    registry: registry::Registry,
}

impl Plugins {
    /// Starts the engine and loads the registry in `data_dir/plugins`, with the shipped
    /// plugins as the defaults.
    pub fn open(data_dir: &std::path::Path, config: &crate::config::PluginsConfig, metrics: Arc<Metrics>) -> Result<Plugins, Error> {
        let dir = data_dir.join(registry::PLUGINS_DIR);
        let engine = PluginEngine::new(&dir.join(registry::COMPILED_DIR))?;
        let limits = CallLimits {
            timeout: std::time::Duration::from_millis(config.call_timeout_ms),
            max_memory_bytes: config.max_memory_bytes,
            max_output_bytes: config.max_output_bytes,
        };
        let registry = registry::Registry::open(&dir)?;
        Ok(Plugins { engine, limits, config: config.clone(), metrics, registry })
    }

    /// The registry.
    pub fn registry(&self) -> &registry::Registry {
        &self.registry
    }

    /// Compiles and type-checks a component as `kind`.
    fn build(&self, info: PluginInfo, bytes: &[u8]) -> Result<Arc<Plugin>, Error> {
        let component = self.engine.compile(&info.sha256, bytes)?;
        check_api_version(bytes)?;
        let plugin = Plugin::new(&self.engine, &component, info, self.limits, self.config.quarantine_after_failures, Arc::clone(&self.metrics))?;
        Ok(Arc::new(plugin))
    }
}

/// The custom section the SDK embeds its WIT version in.
const API_VERSION_SECTION: &str = "sluice:api-version";

/// Refuses a component built by an SDK for a WIT version this host does not serve. Components
/// built without the SDK carry no section and are judged by type-checking alone.
fn check_api_version(bytes: &[u8]) -> Result<(), Error> {
    for payload in wasmtime::wasmparser::Parser::new(0).parse_all(bytes) {
        let Ok(wasmtime::wasmparser::Payload::CustomSection(section)) = payload else { continue };
        if section.name() != API_VERSION_SECTION {
            continue;
        }
        let version = String::from_utf8_lossy(section.data()).trim_matches(char::from(0)).trim().to_string();
        let major_minor = |v: &str| v.split('.').take(2).collect::<Vec<_>>().join(".");
        if major_minor(&version) != major_minor(wit::latest::MIN_VERSION) {
            return Err(Error::Invalid(format!(
                "built for sluice:plugins@{version}; this broker serves {}",
                wit::latest::MIN_VERSION
            )));
        }
    }
    Ok(())
}
