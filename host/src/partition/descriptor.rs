//! What a data partition's snapshot holds: not its records (Kafka retention decides which
//! records stay) but where its Raft log starts, how far it was committed, and the
//! idempotent-producer state before its first kept entry. A follower whose log is behind the
//! leader's first entry installs it, then takes every kept entry from the leader's log. The
//! installed one is kept beside the log ([`super::kept_state`]): a restart before the next
//! checkpoint starts from its producers.

use serde::{Deserialize, Serialize};

use super::producer_state::ProducerStates;

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
}
