//! A hostile snapshot trigger for the host's tests: `should_snapshot` never returns, so only
//! the store's epoch deadline can stop it. `configure` behaves, so the plugin binds.

use sluice_plugin_sdk::{Decision, GroupStats, SnapshotTrigger, register_trigger};

struct Looping;

impl SnapshotTrigger for Looping {
    fn should_snapshot(stats: GroupStats) -> Result<Decision, String> {
        let mut n = stats.applied_index;
        // `black_box` keeps the optimiser from proving the loop has no effect and removing it
        // (an infinite loop without side effects is undefined behaviour in LLVM's eyes).
        loop {
            n = core::hint::black_box(n.wrapping_add(1));
        }
    }
}

register_trigger!(Looping);
