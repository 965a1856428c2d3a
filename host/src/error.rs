//! The crate-level error: every subsystem's error, wrapped.

/// Anything that stops a node from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Cluster metadata or a partition could not be opened.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::Error),
    /// A listener could not be bound, or the data dir could not be used.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The consumer group coordinator could not load its offsets.
    #[error(transparent)]
    Groups(#[from] crate::groups::Error),
    /// The plugin store could not be opened.
    #[error(transparent)]
    Plugins(#[from] crate::plugins::Error),
    /// TLS for Kafka clients could not be set up from `kafka.tls`.
    #[error("kafka.tls: {0}")]
    Tls(#[from] crate::kafka::TlsError),
    /// Another process holds the data dir.
    #[error("data dir {0} is in use by another sluice process")]
    DataDirLocked(std::path::PathBuf),
}
