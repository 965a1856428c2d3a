//! Host bindings, one module per frozen WIT version. `latest` is what new code uses.

pub mod since_v0_1_0;

pub use since_v0_1_0 as latest;
