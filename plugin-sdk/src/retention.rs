//! The retention policy kind: the [`RetentionPolicy`] trait and [`register_retention!`], which
//! exports it as the `sluice:plugins/retention-policy` interface.

use crate::__bindings::retention::exports::sluice::plugins::retention_policy::{Guest, PartitionInfo, Retention, SegmentInfo};

/// Decides which prefix of a partition may be deleted.
///
/// The partition's leader asks; the host clamps the answer (never past the high watermark,
/// never before the current log start, never past what snapshots still need) and replicates
/// it, so every replica deletes the same whole segments. An `Err`, a trap or a timeout deletes
/// nothing.
pub trait RetentionPolicy {
    /// Called once per instance, before any other call, with the binding's `--param k=v`
    /// pairs. An `Err` refuses the binding. The default accepts anything.
    fn configure(params: Vec<(String, String)>) -> Result<(), String> {
        let _ = params;
        Ok(())
    }

    /// Where the partition's log should start now. `configs` are the topic's configs
    /// (`retention.ms`, `retention.bytes`, ...; see [`Params`](crate::Params) to read them);
    /// `segments` are listed oldest first.
    fn retain(partition: PartitionInfo, configs: Vec<(String, String)>, segments: Vec<SegmentInfo>) -> Result<Retention, String>;
}

impl<T: RetentionPolicy> Guest for T {
    fn configure(params: Vec<(String, String)>) -> Result<(), String> {
        <T as RetentionPolicy>::configure(params)
    }

    fn retain(partition: PartitionInfo, configs: Vec<(String, String)>, segments: Vec<SegmentInfo>) -> Result<Retention, String> {
        <T as RetentionPolicy>::retain(partition, configs, segments)
    }
}

/// Exports a type implementing [`RetentionPolicy`] as this component's policy.
///
/// Call it once, at the root of the plugin crate (a `cdylib`); see
/// [`register_codec!`](crate::register_codec) for what else it embeds.
///
/// ```
/// use sluice_plugin_sdk::{PartitionInfo, Retention, RetentionPolicy, SegmentInfo, register_retention};
///
/// struct KeepEverything;
///
/// impl RetentionPolicy for KeepEverything {
///     fn retain(_: PartitionInfo, _: Vec<(String, String)>, _: Vec<SegmentInfo>) -> Result<Retention, String> {
///         Ok(Retention::KeepAll)
///     }
/// }
///
/// register_retention!(KeepEverything);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! register_retention {
    ($ty:ty) => {
        $crate::__api_version_section!();
        const _: () = {
            type __SluiceRetention = $ty;
            const _: fn() = $crate::__assert_retention::<__SluiceRetention>;
            // Only a component has anywhere to export to, and native linkers refuse the
            // component model's export names (`sluice:plugins/...#...`); on the host target
            // (a plugin's unit tests) the registration is type-checked and nothing more.
            #[cfg(target_arch = "wasm32")]
            $crate::__bindings::retention::export_retention!(__SluiceRetention with_types_in $crate::__bindings::retention);
        };
    };
}

/// Fails to compile unless `T` implements [`RetentionPolicy`]; used by [`register_retention!`].
#[doc(hidden)]
pub fn __assert_retention<T: RetentionPolicy>() {}
