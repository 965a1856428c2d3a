//! The snapshot trigger kind: the [`SnapshotTrigger`] trait and [`register_trigger!`], which
//! exports it as the `sluice:plugins/snapshot-trigger` interface.

use crate::__bindings::trigger::exports::sluice::plugins::snapshot_trigger::{Decision, GroupStats, Guest};

/// Decides when a Raft group (the metadata group or a partition's) snapshots its state and
/// compacts its log.
///
/// The host asks every group periodically, on every node. An `Err`, a trap or a timeout makes
/// the host fall back to its built-in threshold (10,000 entries, or one hour with at least one
/// entry) for that call.
pub trait SnapshotTrigger {
    /// Called once per instance, before any other call, with the binding's `--param k=v`
    /// pairs. An `Err` refuses the binding. The default accepts anything.
    fn configure(params: Vec<(String, String)>) -> Result<(), String> {
        let _ = params;
        Ok(())
    }

    /// Whether the group described by `stats` should snapshot now.
    fn should_snapshot(stats: GroupStats) -> Result<Decision, String>;
}

impl<T: SnapshotTrigger> Guest for T {
    fn configure(params: Vec<(String, String)>) -> Result<(), String> {
        <T as SnapshotTrigger>::configure(params)
    }

    fn should_snapshot(stats: GroupStats) -> Result<Decision, String> {
        <T as SnapshotTrigger>::should_snapshot(stats)
    }
}

/// Exports a type implementing [`SnapshotTrigger`] as this component's trigger.
///
/// Call it once, at the root of the plugin crate (a `cdylib`); see
/// [`register_codec!`](crate::register_codec) for what else it embeds.
///
/// ```
/// use sluice_plugin_sdk::{Decision, GroupStats, SnapshotTrigger, register_trigger};
///
/// struct EveryThousand;
///
/// impl SnapshotTrigger for EveryThousand {
///     fn should_snapshot(stats: GroupStats) -> Result<Decision, String> {
///         Ok(if stats.entries_since_snapshot >= 1000 { Decision::Snapshot } else { Decision::Wait })
///     }
/// }
///
/// register_trigger!(EveryThousand);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! register_trigger {
    ($ty:ty) => {
        $crate::__api_version_section!();
        const _: () = {
            type __SluiceTrigger = $ty;
            const _: fn() = $crate::__assert_trigger::<__SluiceTrigger>;
            // Only a component has anywhere to export to, and native linkers refuse the
            // component model's export names (`sluice:plugins/...#...`); on the host target
            // (a plugin's unit tests) the registration is type-checked and nothing more.
            #[cfg(target_arch = "wasm32")]
            $crate::__bindings::trigger::export_trigger!(__SluiceTrigger with_types_in $crate::__bindings::trigger);
        };
    };
}

/// Fails to compile unless `T` implements [`SnapshotTrigger`]; used by [`register_trigger!`].
#[doc(hidden)]
pub fn __assert_trigger<T: SnapshotTrigger>() {}
