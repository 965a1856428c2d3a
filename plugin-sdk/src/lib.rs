//! The Sluice plugin SDK. The WIT contracts and the export macro arrive with the plugin platform;
//! until then this crate only reserves the name authors will depend on.
