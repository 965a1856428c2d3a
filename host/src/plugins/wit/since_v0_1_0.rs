//! Bindings for the frozen WIT package `sluice:plugins@0.1.0` (`wit/since_v0.1.0`).

/// The first API version these bindings serve.
pub const MIN_VERSION: &str = "0.1.0";

/// The codec world. It also generates the shared `types` and `host` interfaces.
pub mod codec {
    wasmtime::component::bindgen!({
        path: "../wit/since_v0.1.0",
        world: "codec-plugin",
    });
}

/// The snapshot trigger world.
pub mod trigger {
    wasmtime::component::bindgen!({
        path: "../wit/since_v0.1.0",
        world: "trigger-plugin",
        with: {
            "sluice:plugins/types": super::codec::sluice::plugins::types,
            "sluice:plugins/host": super::codec::sluice::plugins::host,
        },
    });
}

/// The retention policy world.
pub mod retention {
    wasmtime::component::bindgen!({
        path: "../wit/since_v0.1.0",
        world: "retention-plugin",
        with: {
            "sluice:plugins/types": super::codec::sluice::plugins::types,
            "sluice:plugins/host": super::codec::sluice::plugins::host,
        },
    });
}
