//! What a data partition's snapshot holds: not its records (Kafka retention decides which
//! records stay) but where its Raft log starts, how far it was committed, and the
//! idempotent-producer state before its first kept entry. A follower whose log is behind the
//! leader's first entry installs it, then takes every kept entry from the leader's log.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Error;
use super::producer_state::ProducerStates;
use crate::log::fs::{FileSystem, replace_file};

/// Where an installed descriptor is kept, for the producer state a restart rebuilds before the
/// first checkpoint after the install.
const INSTALLED_FILE: &str = "snapshot-descriptor.json";
const INSTALLED_TMP_FILE: &str = "snapshot-descriptor.json.tmp";

/// The largest descriptor read back from disk.
const MAX_INSTALLED_BYTES: u64 = 64 << 20;

/// A data partition's snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Descriptor {
    /// The Kafka log-start offset when it was taken.
    pub log_start_offset: i64,
    /// The high watermark when it was taken.
    pub high_watermark: i64,
    /// Idempotent-producer state before the log's first kept entry.
    pub producers: ProducerStates,
}

impl Descriptor {
    /// Its bytes in a snapshot.
    pub fn encode(&self) -> Vec<u8> {
        // Plain maps of integers always serialise.
        serde_json::to_vec(self).expect("descriptor serialises")
    }

    /// Reads a snapshot's bytes.
    pub fn decode(bytes: &[u8]) -> Result<Descriptor, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("not a partition descriptor: {e}"))
    }

    /// Keeps the installed descriptor in `dir`, durably, before the log is replaced.
    pub(crate) fn keep(&self, fs: &dyn FileSystem, dir: &Path) -> Result<(), Error> {
        replace_file(fs, dir, INSTALLED_TMP_FILE, INSTALLED_FILE, &self.encode()).map_err(|source| Error::Log(crate::log::Error::Io { path: dir.join(INSTALLED_FILE), source }))
    }

    /// The descriptor last installed in `dir`, if any; a damaged one is reported and ignored
    /// (its producers are forgotten, nothing else).
    pub(crate) fn installed(fs: &dyn FileSystem, dir: &Path) -> Option<Descriptor> {
        let path = dir.join(INSTALLED_FILE);
        let bytes = fs.open_read(&path).and_then(|f| f.read_to_end(MAX_INSTALLED_BYTES)).ok()?;
        Descriptor::decode(&bytes).inspect_err(|e| tracing::warn!(path = %path.display(), cause = %e, "ignoring the installed snapshot descriptor")).ok()
    }
}
