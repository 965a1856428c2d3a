//! The code wit-bindgen generates from `wit/since_v0.1.0`, one module per world. Nothing here is
//! part of the SDK's API: authors use the traits, the re-exported types and the `register_*!`
//! macros, which reach in here through `$crate`.
//!
//! The `types` and `host` interfaces are generated once, in [`codec`], and the other worlds
//! point at them with `with`, so there is one `Level` and one `log` import.
//!
//! Each world's export macro, expanded in the plugin crate, embeds that world's full type
//! section; this crate itself only embeds sections describing the imports, which all three
//! worlds share, so linking the SDK never adds an export a plugin does not implement.

#![allow(missing_docs)]

/// The `codec-plugin` world; also the one home of the shared `types` and `host` interfaces.
pub mod codec {
    wit_bindgen::generate!({
        path: "../wit/since_v0.1.0",
        world: "codec-plugin",
        additional_derives: [PartialEq, Eq],
        export_macro_name: "export_codec",
        pub_export_macro: true,
        default_bindings_module: "::sluice_plugin_sdk::__bindings::codec",
    });
}

/// The `trigger-plugin` world.
pub mod trigger {
    wit_bindgen::generate!({
        path: "../wit/since_v0.1.0",
        world: "trigger-plugin",
        additional_derives: [PartialEq, Eq],
        with: {
            "sluice:plugins/types@0.1.0": crate::__bindings::codec::sluice::plugins::types,
            "sluice:plugins/host@0.1.0": crate::__bindings::codec::sluice::plugins::host,
        },
        export_macro_name: "export_trigger",
        pub_export_macro: true,
        default_bindings_module: "::sluice_plugin_sdk::__bindings::trigger",
    });
}

/// The `retention-plugin` world.
pub mod retention {
    wit_bindgen::generate!({
        path: "../wit/since_v0.1.0",
        world: "retention-plugin",
        additional_derives: [PartialEq, Eq],
        with: {
            "sluice:plugins/types@0.1.0": crate::__bindings::codec::sluice::plugins::types,
            "sluice:plugins/host@0.1.0": crate::__bindings::codec::sluice::plugins::host,
        },
        export_macro_name: "export_retention",
        pub_export_macro: true,
        default_bindings_module: "::sluice_plugin_sdk::__bindings::retention",
    });
}
