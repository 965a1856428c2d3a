//! The Sluice plugin SDK: everything a plugin author depends on to write a compression codec, a
//! snapshot trigger or a retention policy as a WebAssembly component. The [`guide`] walks
//! through writing, building, loading and binding one.
//!
//! # Layout
//!
//! - One trait per plugin kind, [`Codec`], [`SnapshotTrigger`] and [`RetentionPolicy`], and one
//!   export macro per kind, [`register_codec!`], [`register_trigger!`] and
//!   [`register_retention!`].
//! - The WIT types an author meets, re-exported by name: [`GroupStats`], [`GroupId`],
//!   [`TopicPartition`], [`Decision`], [`PartitionInfo`], [`SegmentInfo`], [`Retention`] and
//!   [`Level`].
//! - [`log`], the one thing the host offers a plugin, and [`Params`] to read parameters.
//!
//! The bindings wit-bindgen generates from `wit/since_v0.1.0` are hidden; they are not part of
//! this crate's API and may change with any wit-bindgen upgrade.
//!
//! This crate also builds for the host target, so a plugin's logic can be unit-tested with a
//! plain `cargo test`; there [`log`] writes to stderr instead of calling the host, and
//! `harness` (feature `harness`) builds the plugin as a component and runs it in the real
//! host, in-process.

#![deny(missing_docs)]

#[doc(hidden)]
#[path = "bindings.rs"]
pub mod __bindings;
mod codec;
#[cfg(all(feature = "harness", not(target_arch = "wasm32")))]
pub mod harness;
mod params;
mod retention;
mod trigger;

#[doc = include_str!("../../docs/plugin-author-guide.md")]
// The guide's example shows the unit tests a plugin keeps beside its logic; as a doctest they
// only compile.
#[allow(clippy::test_attr_in_doctest)]
pub mod guide {}

pub use __bindings::codec::sluice::plugins::types::Level;
pub use __bindings::retention::exports::sluice::plugins::retention_policy::{PartitionInfo, Retention, SegmentInfo};
pub use __bindings::trigger::exports::sluice::plugins::snapshot_trigger::{Decision, GroupId, GroupStats, TopicPartition};
pub use codec::{__assert_codec, Codec};
pub use params::Params;
pub use retention::{__assert_retention, RetentionPolicy};
pub use trigger::{__assert_trigger, SnapshotTrigger};

/// The version of the WIT package (`sluice:plugins`) this SDK binds, and embeds in every
/// plugin's `sluice:api-version` custom section.
pub const API_VERSION: &str = "0.1.0";

/// [`API_VERSION`] as the bytes of the custom section. A byte-string literal, because a
/// `link_section` static needs a fixed-size array; a test keeps the two equal.
#[doc(hidden)]
pub const __API_VERSION_BYTES: [u8; 5] = *b"0.1.0";

/// Embeds [`API_VERSION`] in the `sluice:api-version` custom section. Expanded by every
/// `register_*!` macro in the plugin crate itself rather than defined here: the plugin's own
/// objects are always linked, so the section cannot be dropped with an unused SDK object, and
/// there is exactly one copy (the linker concatenates custom sections of the same name).
#[doc(hidden)]
#[macro_export]
macro_rules! __api_version_section {
    () => {
        #[doc(hidden)]
        #[used]
        #[cfg_attr(target_arch = "wasm32", unsafe(link_section = "sluice:api-version"))]
        static __SLUICE_PLUGIN_API_VERSION: [u8; 5] = $crate::__API_VERSION_BYTES;
    };
}

/// Writes `message` to the broker's log at `level`, tagged with the plugin's name and version.
///
/// The host may cut long messages. Outside WebAssembly (a plugin's unit tests) it writes the
/// message to stderr.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    __bindings::codec::sluice::plugins::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{}] {message}", level_name(level));
}

/// The lowercase name of `level`, as the WIT spells it.
pub fn level_name(level: Level) -> &'static str {
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_version_is_the_bound_wit_package() {
        assert_eq!(&__API_VERSION_BYTES[..], API_VERSION.as_bytes());
        let wit = include_str!("../../wit/since_v0.1.0/plugins.wit");
        assert!(wit.contains(&format!("package sluice:plugins@{API_VERSION};")));
    }

    #[test]
    fn level_names_follow_the_wit() {
        let wit = include_str!("../../wit/since_v0.1.0/plugins.wit");
        for level in [Level::Trace, Level::Debug, Level::Info, Level::Warn, Level::Error] {
            assert!(wit.contains(&format!("        {},\n", level_name(level))), "{level:?}");
        }
    }
}
