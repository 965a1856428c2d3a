//! Snapshots: each Raft group's applied state, compressed by its bound codec plugin into an
//! object store ([`store`]), described by a manifest written last ([`manifest`]); when a group
//! takes one is its bound snapshot trigger's decision ([`trigger`]).

pub mod install;
pub mod manifest;
pub mod restore;
pub mod store;
pub mod taker;

pub use manifest::Manifest;
pub use store::SnapshotStore;
pub use taker::Snapshots;

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `snapshot.*` settings that cannot work.
    #[error("{0}")]
    Config(String),
    /// The object store failed.
    #[error("{what} {key}: {source}")]
    Store {
        /// What was being done.
        what: &'static str,
        /// The object.
        key: String,
        /// The store's error.
        source: object_store::Error,
    },
    /// An object is not what its manifest says.
    #[error("corrupt snapshot object {key}: {why}")]
    Corrupt {
        /// The object.
        key: String,
        /// What is wrong.
        why: String,
    },
    /// The state is larger than `snapshot.max-snapshot-bytes`.
    #[error("snapshot of {bytes} bytes exceeds snapshot.max-snapshot-bytes ({limit})")]
    TooLarge {
        /// Its size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The codec failed.
    #[error(transparent)]
    Codec(#[from] crate::plugins::Error),
    /// A blocking task died.
    #[error("snapshot task failed: {0}")]
    Task(String),
    /// The group's state could not be captured.
    #[error("capturing the state failed: {0}")]
    State(String),
    /// A cluster restore was refused or failed.
    #[error("{0}")]
    Restore(String),
}

impl Error {
    fn store(what: &'static str, key: &str, source: object_store::Error) -> Error {
        Error::Store { what, key: key.to_string(), source }
    }

    /// Whether the object was missing (the snapshot is gone or never finished).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Store { source: object_store::Error::NotFound { .. }, .. })
    }

    /// The metrics label of the failure.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::Store { .. } => "store",
            Error::Corrupt { .. } => "corrupt",
            Error::TooLarge { .. } => "too_large",
            Error::Codec(_) => "codec",
            Error::Task(_) => "task",
            Error::State(_) | Error::Restore(_) => "state",
        }
    }
}
