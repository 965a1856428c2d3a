//! Raft replication: one raft-rs group per partition plus the metadata group (id 0), all driven
//! by one loop per node ([`driver`]), talking to peers over one gRPC stream each
//! ([`transport`]). Partitions are replicated on every node of the cluster; a partition's log
//! is its Raft log ([`crate::partition::replica`]).
//!
//! [`Replication`] is what the rest of the node sees: who leads which group, and a way to propose
//! an entry from any node. What committed entries mean is not Raft's business: the driver hands
//! them to each group's [`state_machine::StateMachine`] (cluster metadata and consumer offsets
//! implement it in `cluster/` and `groups/`).

pub mod driver;
pub mod entry;
pub mod group;
#[cfg(test)]
mod sim;
pub mod state_machine;
pub mod storage;
pub mod transport;
pub mod validate;

use std::collections::HashMap;
use std::sync::RwLock;

use raft::prelude::Message;
use tokio::sync::{mpsc, oneshot};

use crate::log::RecoveryPoint;

/// The metadata group's id.
pub const METADATA_GROUP: u64 = 0;

/// Input of the driver loop.
pub enum Event {
    /// Messages from a peer, by group.
    Messages {
        /// The node at the other end of the stream.
        from: u64,
        /// (group, message).
        messages: Vec<(u64, Message)>,
    },
    /// A peer's stream broke or its queue overflowed.
    Unreachable {
        /// The peer.
        peer: u64,
    },
    /// The stream a peer sends to this node ended: the peer most likely died.
    PeerGone {
        /// The peer.
        peer: u64,
    },
    /// An entry proposed on this node outside the produce path (a metadata change).
    Propose {
        /// The group.
        group: u64,
        /// The entry.
        data: Vec<u8>,
        /// Told why if raft-rs refuses the proposal; dropped once it is taken.
        refused: oneshot::Sender<String>,
    },
    /// A replica's fsync finished: (group, ready number, where the log stood).
    Persisted(Result<(u64, u64, RecoveryPoint), String>),
    /// Hand over leadership of a group.
    TransferLeader {
        /// The group.
        group: u64,
        /// The node to hand it to.
        to: u64,
    },
    /// A snapshot of every group's state.
    Status(oneshot::Sender<Vec<GroupStatus>>),
    /// A snapshot a leader's message named was fetched (or could not be).
    SnapshotFetched {
        /// The group.
        group: u64,
        /// The leader's snapshot message, stepped into raft-rs once the snapshot is installed.
        msg: Box<Message>,
        /// The snapshot, or why not.
        fetched: Result<state_machine::FetchedSnapshot, String>,
    },
    /// Capture a group's applied state for a snapshot.
    Capture {
        /// The group.
        group: u64,
        /// The state, or why there is none.
        reply: oneshot::Sender<Result<Captured, String>>,
    },
}

/// A group's applied state at one index, as a snapshot stores it.
#[derive(Debug)]
pub struct Captured {
    /// The last entry the state includes.
    pub index: u64,
    /// The group's applied index when it was captured (past `index` for a data partition's
    /// descriptor, which stands before the log's first entry).
    pub applied: u64,
    /// That entry's term.
    pub term: u64,
    /// The group's voters.
    pub voters: Vec<u64>,
    /// The offset after that entry in the group's log.
    pub offset: i64,
    /// The state machine's bytes.
    pub state: Vec<u8>,
}

/// One group as `sluice cluster status` shows it.
#[derive(Debug, Clone, Default)]
pub struct GroupStatus {
    /// Group id.
    pub group: u64,
    /// Topic and partition (`__cluster_metadata`, 0 for the metadata group).
    pub name: String,
    /// Partition index.
    pub partition: i32,
    /// Leader's node id (0: none known).
    pub leader: u64,
    /// Current term.
    pub term: u64,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// Last index in this node's log.
    pub last_index: u64,
    /// Leader only: (follower, entries behind the leader's last index).
    pub lag: Vec<(u64, u64)>,
}

/// Leader and term of one group, as Metadata responses report them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Leadership {
    /// Node id of the leader (0: none known).
    pub leader: u64,
    /// The term.
    pub term: u64,
    /// Followers whose log matches the leader's last index (leader's view; empty elsewhere).
    pub caught_up: u64,
}

/// The node's handle on replication.
pub struct Replication {
    me: u64,
    voters: Vec<u64>,
    events: mpsc::Sender<Event>,
    leaders: RwLock<HashMap<u64, Leadership>>,
    max_entry_bytes: usize,
}

impl Replication {
    /// A handle for node `me` of the cluster `voters`, whose logs accept entries of at most
    /// `max_entry_bytes`.
    pub fn new(me: u64, voters: Vec<u64>, events: mpsc::Sender<Event>, max_entry_bytes: usize) -> Replication {
        Replication { me, voters, events, leaders: RwLock::new(HashMap::new()), max_entry_bytes }
    }

    /// This node's id.
    pub fn me(&self) -> u64 {
        self.me
    }

    /// The largest entry every replica's log accepts.
    pub fn max_entry_bytes(&self) -> usize {
        self.max_entry_bytes
    }

    /// Every node of the cluster.
    pub fn voters(&self) -> &[u64] {
        &self.voters
    }

    /// Proposes an entry to `group` through this node. The receiver yields why raft-rs refused
    /// the proposal, or closes once it was taken (committing it is another matter: the entry's
    /// state machine reports that).
    pub async fn propose(&self, group: u64, data: Vec<u8>) -> Result<oneshot::Receiver<String>, Stopping> {
        let (refused, verdict) = oneshot::channel();
        self.events.send(Event::Propose { group, data, refused }).await.map_err(|_| Stopping)?;
        Ok(verdict)
    }

    /// Leader and term of a group as this node last saw them.
    pub fn leadership(&self, group: u64) -> Leadership {
        self.leaders.read().unwrap_or_else(|p| p.into_inner()).get(&group).copied().unwrap_or_default()
    }

    /// Asks a group's leader (if it is this node) to hand leadership to `to`.
    pub async fn transfer_leader(&self, group: u64, to: u64) -> bool {
        self.events.send(Event::TransferLeader { group, to }).await.is_ok()
    }

    /// Every group's state on this node.
    pub async fn status(&self) -> Vec<GroupStatus> {
        let (tx, rx) = oneshot::channel();
        if self.events.send(Event::Status(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// A group's applied state, captured between two applies.
    pub async fn capture(&self, group: u64) -> Result<Captured, String> {
        let (reply, rx) = oneshot::channel();
        self.events.send(Event::Capture { group, reply }).await.map_err(|_| Stopping.to_string())?;
        rx.await.map_err(|_| Stopping.to_string())?
    }

    pub(crate) fn set_leadership(&self, group: u64, leadership: Leadership) {
        let mut leaders = self.leaders.write().unwrap_or_else(|p| p.into_inner());
        if leadership == Leadership::default() {
            leaders.remove(&group);
        } else {
            leaders.insert(group, leadership);
        }
    }
}

/// The node is stopping: its driver takes no more events.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("node is stopping")]
pub struct Stopping;
