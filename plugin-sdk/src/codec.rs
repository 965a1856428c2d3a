//! The codec kind: the [`Codec`] trait an author implements and [`register_codec!`] which
//! exports it as the `sluice:plugins/codec` interface. Compression itself is the plugin's.

use crate::__bindings::codec::exports::sluice::plugins::codec::Guest;

/// A compression codec for what Sluice owns: snapshots, archived segments, batches at rest.
///
/// The host records the codec's [`name`](Codec::name) and the component's sha256 next to every
/// blob it compresses, and later hands the blob to that same version to decompress. Two
/// versions sharing a name must nevertheless read each other's output, because an operator
/// may swap one for the other.
///
/// A failed call (an `Err`, a trap, a timeout) fails the snapshot, archive or write that
/// needed it; nothing half-compressed is stored.
pub trait Codec {
    /// A stable name, e.g. `"lz4"`.
    fn name() -> String;

    /// Called once per instance, before any other call, with the binding's `--param k=v`
    /// pairs. An `Err` refuses the binding. The default accepts anything.
    fn configure(params: Vec<(String, String)>) -> Result<(), String> {
        let _ = params;
        Ok(())
    }

    /// Compresses `data` at `level`, on the codec's own scale; 0 means its default.
    fn compress(data: Vec<u8>, level: i32) -> Result<Vec<u8>, String>;

    /// Restores what [`compress`](Codec::compress) produced. `expected_size` is the original
    /// length; the host checks the result against it again, so a codec may use it to size its
    /// output and should refuse anything else.
    fn decompress(data: Vec<u8>, expected_size: u64) -> Result<Vec<u8>, String>;
}

impl<T: Codec> Guest for T {
    fn name() -> String {
        <T as Codec>::name()
    }

    fn configure(params: Vec<(String, String)>) -> Result<(), String> {
        <T as Codec>::configure(params)
    }

    fn compress(data: Vec<u8>, level: i32) -> Result<Vec<u8>, String> {
        <T as Codec>::compress(data, level)
    }

    fn decompress(data: Vec<u8>, expected_size: u64) -> Result<Vec<u8>, String> {
        <T as Codec>::decompress(data, expected_size)
    }
}

/// Exports a type implementing [`Codec`] as this component's codec.
///
/// Call it once, at the root of the plugin crate (a `cdylib`). It also embeds the SDK's WIT
/// version in the `sluice:api-version` custom section, which the host checks before
/// instantiating; registering two plugins in one module is a compile error.
///
/// ```
/// use sluice_plugin_sdk::{Codec, register_codec};
///
/// struct Identity;
///
/// impl Codec for Identity {
///     fn name() -> String {
///         "identity".into()
///     }
///     fn compress(data: Vec<u8>, _level: i32) -> Result<Vec<u8>, String> {
///         Ok(data)
///     }
///     fn decompress(data: Vec<u8>, _expected_size: u64) -> Result<Vec<u8>, String> {
///         Ok(data)
///     }
/// }
///
/// register_codec!(Identity);
/// # fn main() {}
/// ```
///
/// A type that is not a [`Codec`] is refused at compile time, on every target:
///
/// ```compile_fail
/// struct NotACodec;
/// sluice_plugin_sdk::register_codec!(NotACodec);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! register_codec {
    ($ty:ty) => {
        $crate::__api_version_section!();
        const _: () = {
            type __SluiceCodec = $ty;
            const _: fn() = $crate::__assert_codec::<__SluiceCodec>;
            // Only a component has anywhere to export to, and native linkers refuse the
            // component model's export names (`sluice:plugins/...#...`); on the host target
            // (a plugin's unit tests) the registration is type-checked and nothing more.
            #[cfg(target_arch = "wasm32")]
            $crate::__bindings::codec::export_codec!(__SluiceCodec with_types_in $crate::__bindings::codec);
        };
    };
}

/// Fails to compile unless `T` implements [`Codec`]; used by [`register_codec!`].
#[doc(hidden)]
pub fn __assert_codec<T: Codec>() {}
