//! What a Raft group's committed entries are applied to. The driver knows groups, logs and
//! peers; what an entry means belongs to the module that owns the state: cluster metadata
//! (`cluster::metadata`), committed consumer offsets (`groups`). A partition's own entries (its
//! data, its log start) are applied by the replica itself.
//!
//! Every replica applies the same entries in the same order, and an entry may be applied again
//! after a restart (whatever recorded the applied index may lag what was applied): applying
//! must be deterministic and safe to repeat.

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
pub type MachineFor = Box<dyn Fn(&Partition) -> Option<Box<dyn StateMachine>> + Send>;
