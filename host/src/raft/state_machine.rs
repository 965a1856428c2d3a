//! What a Raft group's committed entries are applied to. The driver knows groups, logs and
//! peers; what an entry means belongs to the module that owns the state: cluster metadata
//! (`cluster::metadata`), committed consumer offsets (`groups`). A partition's own entries (its
//! data, its log start) are applied by the replica itself.
//!
//! Every replica applies the same entries in the same order, and an entry may be applied again
//! after a restart (whatever recorded the applied index may lag what was applied): applying
//! must be deterministic and safe to repeat.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use raft::prelude::Entry;

use crate::partition::Partition;

/// A group's applied state.
pub trait StateMachine: Send {
    /// Applies committed entries, in log order. Returns the groups the entries started or
    /// stopped on this node (the metadata group creates and deletes partitions).
    fn apply(&mut self, committed: &[Entry]) -> Vec<GroupChange>;

    /// The applied state as a snapshot holds it (called between applies, so it is the state
    /// at the group's applied index); `None` if the group keeps nothing beyond its log.
    fn snapshot(&self) -> Option<Result<Vec<u8>, String>> {
        None
    }

    /// Whether a fetched snapshot's state is one [`StateMachine::restore`] can read: checked
    /// before raft-rs takes the snapshot, since once it has, the install must not fail.
    fn check(&self, state: &[u8]) -> Result<(), String> {
        let _ = state;
        Ok(())
    }

    /// Replaces the state with a snapshot's, taken at `index` (a follower too far behind the
    /// leader's log). Returns the groups that started or stopped. After it returns, the
    /// state's applied index is `index`; if it fails part way, the applied index has not moved
    /// (the leader sends the snapshot again, and installing it again converges).
    fn restore(&mut self, snapshot: &FetchedSnapshot, index: u64) -> Result<Vec<GroupChange>, String> {
        let _ = (snapshot, index);
        Err("this group's state cannot be restored from a snapshot".into())
    }
}

/// A snapshot a leader named, fetched and checked.
pub struct FetchedSnapshot {
    /// The state machine's bytes.
    pub state: Vec<u8>,
    /// The offset after the snapshot's last entry in the group's log.
    pub offset: i64,
    /// Plugin components the state refers to that this node lacks, by sha256.
    pub components: HashMap<String, Vec<u8>>,
}

/// Where a follower gets the snapshot a Raft snapshot message names (the message's data):
/// from the object store every node shares, or from the leader.
pub trait SnapshotSource: Send + Sync {
    /// Fetches, checks and decodes it.
    fn fetch(&self, group: u64, leader: u64, data: Vec<u8>) -> Pin<Box<dyn Future<Output = Result<FetchedSnapshot, String>> + Send>>;
}

/// A group the metadata state machine started or stopped.
pub enum GroupChange {
    /// A new partition's group, with the replica that is its log.
    Start {
        /// The group id.
        group: u64,
        /// Its log.
        log: Arc<Partition>,
    },
    /// A deleted partition's group.
    Stop {
        /// The group id.
        group: u64,
    },
}

/// Picks the state machine of a partition's group, if its entries mean more than records (the
/// offsets topic's do).
pub type MachineFor = Box<dyn Fn(&Arc<Partition>) -> Option<Box<dyn StateMachine>> + Send>;
