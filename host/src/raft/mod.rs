//! Raft replication: one raft-rs group per partition plus the metadata group (id 0), all driven
//! by one loop per node ([`driver`]), talking to peers over one gRPC stream each
//! ([`transport`]). Partitions are replicated on every node of the cluster; a partition's log
//! is its Raft log ([`crate::partition::replica`]).
//!
//! [`Replication`] is what the rest of the node sees: who leads which group, and a way to change
//! cluster metadata from any node ([`metadata`]).

pub mod control;
pub mod driver;
pub mod metadata;
pub mod transport;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use raft::prelude::Message;
use tokio::sync::{mpsc, oneshot};

use crate::cluster::Error::NotApplied;
use crate::log::RecoveryPoint;
use metadata::{Command, Envelope, Outcome};

/// The metadata group's id.
pub const METADATA_GROUP: u64 = 0;

/// Input of the driver loop.
pub enum Event {
    /// Messages from a peer.
    Messages(Vec<(u64, Message)>),
    /// A peer's stream broke or its queue overflowed.
    Unreachable {
        /// The peer.
        peer: u64,
    },
    /// A metadata change proposed on this node.
    ProposeMeta {
        /// Matches the waiter in [`Replication`].
        request: u64,
        /// The encoded [`Envelope`].
        data: Vec<u8>,
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
    next_request: AtomicU64,
    waiters: Mutex<HashMap<u64, oneshot::Sender<Result<Outcome, crate::cluster::Error>>>>,
    leaders: RwLock<HashMap<u64, Leadership>>,
    timeout: Duration,
}

impl Replication {
    /// A handle for node `me` of the cluster `voters`.
    pub fn new(me: u64, voters: Vec<u64>, events: mpsc::Sender<Event>, timeout: Duration) -> Replication {
        Replication {
            me,
            voters,
            events,
            next_request: AtomicU64::new(1),
            waiters: Mutex::new(HashMap::new()),
            leaders: RwLock::new(HashMap::new()),
            timeout,
        }
    }

    /// This node's id.
    pub fn me(&self) -> u64 {
        self.me
    }

    /// Every node of the cluster.
    pub fn voters(&self) -> &[u64] {
        &self.voters
    }

    /// Proposes a metadata change and waits until this node has applied it.
    pub async fn propose(&self, command: Command) -> Result<Outcome, crate::cluster::Error> {
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let data = Envelope { origin: self.me, request, command }.encode();
        let (tx, rx) = oneshot::channel();
        self.lock_waiters().insert(request, tx);
        if self.events.send(Event::ProposeMeta { request, data }).await.is_err() {
            self.lock_waiters().remove(&request);
            return Err(NotApplied("node is stopping".into()));
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(NotApplied("node is stopping".into())),
            Err(_) => {
                self.lock_waiters().remove(&request);
                Err(NotApplied(format!("not applied within {} ms (no metadata leader?)", self.timeout.as_millis())))
            }
        }
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

    pub(crate) fn complete(&self, request: u64, outcome: Result<Outcome, crate::cluster::Error>) {
        if let Some(tx) = self.lock_waiters().remove(&request) {
            let _ = tx.send(outcome);
        }
    }

    pub(crate) fn set_leadership(&self, group: u64, leadership: Leadership) {
        let mut leaders = self.leaders.write().unwrap_or_else(|p| p.into_inner());
        if leadership == Leadership::default() {
            leaders.remove(&group);
        } else {
            leaders.insert(group, leadership);
        }
    }

    fn lock_waiters(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Result<Outcome, crate::cluster::Error>>>> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }
}
