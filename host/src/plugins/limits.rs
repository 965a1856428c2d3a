//! What every plugin call runs inside: a store with a memory cap (`StoreLimits`), an epoch
//! deadline, a WASI context with no files, no environment and no network, and the `host`
//! interface (logging). A store whose call trapped is never used again.

use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::wit::latest::codec::sluice::plugins::{host, types};

/// How often the engine's epoch advances; call deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Limits applied to every plugin call.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    /// Longest a call may run.
    pub timeout: Duration,
    /// Linear memory an instance may grow to.
    pub max_memory_bytes: usize,
    /// Largest result accepted.
    pub max_output_bytes: usize,
}

impl CallLimits {
    /// The epoch deadline of one call, in ticks (at least one).
    pub fn deadline_ticks(&self) -> u64 {
        (self.timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
    }
}

/// The data of one plugin store.
pub struct StoreState {
    /// `name@version`, for log lines.
    pub plugin: String,
    limits: StoreLimits,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl StoreState {
    /// A capability-less store state for `plugin`.
    pub fn new(plugin: String, limits: &CallLimits) -> StoreState {
        StoreState {
            plugin,
            limits: StoreLimitsBuilder::new().memory_size(limits.max_memory_bytes).instances(4).tables(8).memories(2).build(),
            // No preopened directories, no environment variables, no arguments, no sockets.
            wasi: WasiCtxBuilder::new().build(),
            table: ResourceTable::new(),
        }
    }

    /// The resource limiter, for `Store::limiter`.
    pub fn limiter(&mut self) -> &mut StoreLimits {
        &mut self.limits
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl types::Host for StoreState {}

impl host::Host for StoreState {
    fn log(&mut self, level: types::Level, message: String) {
        // Guests are untrusted: cap what one line may put into the broker's log.
        let message: String = message.chars().take(4096).collect();
        let plugin = self.plugin.as_str();
        match level {
            types::Level::Trace => tracing::trace!(plugin, "{message}"),
            types::Level::Debug => tracing::debug!(plugin, "{message}"),
            types::Level::Info => tracing::info!(plugin, "{message}"),
            types::Level::Warn => tracing::warn!(plugin, "{message}"),
            types::Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}
