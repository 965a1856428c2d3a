//! A hostile snapshot trigger for the host's tests: once a group has anything to snapshot,
//! `should_snapshot` never returns, so only the store's epoch deadline can stop it. On an idle
//! group (the load-time self-check) and in `configure` it behaves, so the plugin loads and
//! binds, and fails only where it is used.

use sluice_plugin_sdk::{Decision, GroupStats, SnapshotTrigger, register_trigger};

struct Looping;

impl SnapshotTrigger for Looping {
    fn should_snapshot(stats: GroupStats) -> Result<Decision, String> {
        if stats.entries_since_snapshot == 0 {
            return Ok(Decision::Wait);
        }
        let mut n = stats.applied_index;
        // `black_box` keeps the optimiser from proving the loop has no effect and removing it
        // (an infinite loop without side effects is undefined behaviour in LLVM's eyes).
        loop {
            n = core::hint::black_box(n.wrapping_add(1));
        }
    }
}

register_trigger!(Looping);
