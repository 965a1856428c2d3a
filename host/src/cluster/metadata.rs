//! The metadata group's state machine. Every cluster change (topics, partitions, configs,
//! producer-id blocks, broker addresses, plugins) is an entry of group 0; every node applies the
//! entries in order to its [`Cluster`], so all nodes agree. The node that proposed a change gets
//! its outcome back when it applies the entry itself ([`Proposer`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft::prelude::Entry;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tracing::{error, warn};
use uuid::Uuid;

use base64::Engine as _;

use crate::cluster::{self, Cluster, Error::NotApplied};
use crate::plugins::{Params, PluginInfo, PluginKind, Plugins};
use crate::raft::state_machine::{FetchedSnapshot, GroupChange, StateMachine};
use super::metadata_snapshot::MetadataState;
use crate::raft::{METADATA_GROUP, Replication};
use crate::security::SecurityChange;

/// A change to cluster metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    /// Settle the cluster id; the first one applied wins.
    InitCluster {
        /// Proposed id.
        cluster_id: String,
    },
    /// Announce a node's Kafka address.
    RegisterBroker {
        /// Node id.
        node: i32,
        /// `host:port` clients use.
        addr: String,
    },
    /// CreateTopics (the id is chosen by the proposer, so every node uses the same).
    CreateTopic {
        /// Name.
        name: String,
        /// Id.
        id: Uuid,
        /// Partition count.
        partitions: i32,
        /// Requested replication factor (-1: all nodes).
        replication_factor: i16,
        /// Config overrides.
        configs: BTreeMap<String, String>,
        /// Where each partition's log starts (a restored topic); missing ones at 0.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        start_offsets: Vec<i64>,
    },
    /// DeleteTopics.
    DeleteTopic {
        /// Name.
        name: String,
    },
    /// CreatePartitions.
    CreatePartitions {
        /// Topic.
        name: String,
        /// New partition count.
        count: i32,
    },
    /// AlterConfigs / IncrementalAlterConfigs / plugin bindings.
    SetTopicConfigs {
        /// Topic.
        name: String,
        /// The complete new set of overrides.
        configs: BTreeMap<String, String>,
    },
    /// IncrementalAlterConfigs: changes applied to the overrides as they are at apply time.
    AlterTopicConfigs {
        /// Topic.
        name: String,
        /// The changes, in order.
        changes: Vec<super::topic_config::ConfigChange>,
    },
    /// A block of producer ids for the proposing node.
    AllocateProducerIds,
    /// Load a plugin on every node: each verifies the hash and compiles it itself.
    LoadPlugin {
        /// Plugin name.
        name: String,
        /// Plugin version.
        version: String,
        /// Its kind, or `None` to detect it from the exported world.
        kind: Option<PluginKind>,
        /// Hex sha256 of the component, checked before compiling.
        sha256: String,
        /// The component, base64.
        component: String,
    },
    /// Add or remove SCRAM users or ACLs.
    Security(SecurityChange),
    /// Make a plugin the cluster-wide default of its kind.
    SetDefaultBinding {
        /// The kind.
        kind: PluginKind,
        /// `name` or `name@version`.
        plugin: String,
        /// Its parameters.
        params: Params,
    },
}

/// What applying a command produced.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Done.
    Done,
    /// A topic was created or grown: (topic id, its partitions that are new).
    Partitions(Uuid, std::ops::Range<i32>),
    /// A topic was deleted.
    Deleted(Uuid, i32),
    /// First id of a producer-id block.
    ProducerIds(i64),
    /// A plugin was loaded.
    PluginLoaded(PluginInfo),
}

/// A command with who proposed it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// Node that waits for the outcome.
    pub origin: u64,
    /// Its request number.
    pub request: u64,
    /// The change.
    pub command: Command,
}

impl Envelope {
    /// Entry data: the replica prefix (offsets assigned on write, one per command) and JSON.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising strings, integers and maps cannot fail.
        let json = serde_json::to_vec(self).expect("metadata commands serialise");
        crate::partition::replica::encode_entry(-1, 1, crate::clock::now_ms(), &json)
    }

    /// Decodes entry data written by [`Envelope::encode`].
    pub fn decode(data: &[u8]) -> Result<Envelope, String> {
        let (_, _, _, json) = crate::partition::replica::decode_entry(data).ok_or("metadata entry too short")?;
        serde_json::from_slice(json).map_err(|e| format!("undecodable metadata entry: {e}"))
    }
}

/// Applies one command to this node's cluster state. Errors are outcomes too (every node
/// reaches the same one), returned to the proposer.
pub fn apply(cluster: &Cluster, plugins: &Plugins, command: &Command) -> Result<Outcome, cluster::Error> {
    match command {
        Command::InitCluster { cluster_id } => {
            cluster.adopt_cluster_id(cluster_id)?;
            Ok(Outcome::Done)
        }
        Command::RegisterBroker { node, addr } => {
            cluster.register_broker(*node, addr.clone())?;
            Ok(Outcome::Done)
        }
        Command::CreateTopic { name, id, partitions, replication_factor, configs, start_offsets } => {
            cluster.create_topic_with_id(name, *id, *partitions, *replication_factor, configs.clone(), start_offsets.clone())?;
            Ok(Outcome::Partitions(*id, 0..*partitions))
        }
        Command::DeleteTopic { name } => {
            let topic = cluster.topic(name).ok_or_else(|| cluster::Error::UnknownTopic(name.clone()))?;
            cluster.delete_topic(name)?;
            Ok(Outcome::Deleted(topic.id, topic.partitions.len() as i32))
        }
        Command::CreatePartitions { name, count } => {
            let topic = cluster.topic(name).ok_or_else(|| cluster::Error::UnknownTopic(name.clone()))?;
            let before = topic.partitions.len() as i32;
            cluster.create_partitions(name, *count, false)?;
            Ok(Outcome::Partitions(topic.id, before..*count))
        }
        Command::SetTopicConfigs { name, configs } => {
            cluster.set_topic_configs(name, configs.clone())?;
            Ok(Outcome::Done)
        }
        Command::AlterTopicConfigs { name, changes } => {
            let topic = cluster.topic(name).ok_or_else(|| cluster::Error::UnknownTopic(name.clone()))?;
            let configs = super::topic_config::apply_changes(&topic.configs, changes, &cluster.config().log).map_err(cluster::Error::InvalidConfig)?;
            cluster.set_topic_configs(name, configs)?;
            Ok(Outcome::Done)
        }
        Command::AllocateProducerIds => Ok(Outcome::ProducerIds(cluster.take_producer_id_block()?)),
        Command::LoadPlugin { name, version, kind, sha256, component } => {
            let refused = |why: String| cluster::Error::InvalidConfig(format!("plugin {name}@{version} refused: {why}"));
            let bytes = base64::engine::general_purpose::STANDARD.decode(component).map_err(|e| refused(e.to_string()))?;
            if crate::plugins::registry::sha256_hex(&bytes) != *sha256 {
                return Err(refused("its bytes do not match their sha256".into()));
            }
            plugins.load(&bytes, *kind, name, version).map(Outcome::PluginLoaded).map_err(|e| refused(e.to_string()))
        }
        Command::Security(change) => {
            cluster.change_security(change)?;
            Ok(Outcome::Done)
        }
        Command::SetDefaultBinding { kind, plugin, params } => {
            plugins.set_default(*kind, plugin, params.clone()).map_err(|e| cluster::Error::InvalidConfig(e.to_string()))?;
            if *kind == PluginKind::Retention {
                cluster.retention_changed().notify_one();
            }
            Ok(Outcome::Done)
        }
    }
}

/// Proposes metadata changes from this node and hands each its outcome once this node applied
/// it.
pub struct Proposer {
    replication: Arc<Replication>,
    next_request: AtomicU64,
    waiters: Mutex<HashMap<u64, oneshot::Sender<Result<Outcome, cluster::Error>>>>,
    timeout: Duration,
}

/// Request ids of one process start at a random point of a 2^64 space (low bits zero), so an
/// entry proposed before a restart cannot complete a waiter of this process.
fn first_request_id() -> u64 {
    let (random, _) = Uuid::new_v4().as_u64_pair();
    (random & !0xFFFF_FFFF) | 1
}

impl Proposer {
    /// Proposes through `replication`; a change not applied here within `timeout` fails.
    pub fn new(replication: Arc<Replication>, timeout: Duration) -> Proposer {
        Proposer { replication, next_request: AtomicU64::new(first_request_id()), waiters: Mutex::new(HashMap::new()), timeout }
    }

    /// How long a change may take to apply.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The replication handle it proposes through.
    pub fn replication(&self) -> &Arc<Replication> {
        &self.replication
    }

    /// Proposes a metadata change and waits until this node has applied it.
    pub async fn propose(&self, command: Command) -> Result<Outcome, cluster::Error> {
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let data = Envelope { origin: self.replication.me(), request, command }.encode();
        let max_entry_bytes = self.replication.max_entry_bytes();
        if data.len() > max_entry_bytes {
            // Every node would refuse to log it: refuse it before it is proposed.
            return Err(cluster::Error::InvalidConfig(format!(
                "the metadata change takes {} bytes, more than the {max_entry_bytes} an entry may hold (kafka.max-request-bytes)",
                data.len()
            )));
        }
        let (tx, outcome) = oneshot::channel();
        self.lock_waiters().insert(request, tx);
        let waited = tokio::time::timeout(self.timeout, async {
            let verdict = self.replication.propose(METADATA_GROUP, data).await.map_err(|e| NotApplied(e.to_string()))?;
            if let Ok(why) = verdict.await {
                return Err(NotApplied(why));
            }
            outcome.await.unwrap_or_else(|_| Err(NotApplied("node is stopping".into())))
        })
        .await;
        self.lock_waiters().remove(&request);
        waited.unwrap_or_else(|_| Err(NotApplied(format!("not applied within {} ms (no metadata leader?)", self.timeout.as_millis()))))
    }

    fn complete(&self, request: u64, outcome: Result<Outcome, cluster::Error>) {
        if let Some(tx) = self.lock_waiters().remove(&request) {
            let _ = tx.send(outcome);
        }
    }

    fn lock_waiters(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Result<Outcome, cluster::Error>>>> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The metadata group's [`StateMachine`]: applies each entry to the cluster state and records
/// its index in the same durable write.
pub struct MetadataMachine {
    cluster: Arc<Cluster>,
    plugins: Arc<Plugins>,
    proposer: Arc<Proposer>,
    /// Told the name of every topic deleted, on every node.
    topic_deleted: Box<dyn Fn(String) + Send>,
}

impl MetadataMachine {
    /// Applies to `cluster` and `plugins`; outcomes of this node's proposals go to `proposer`;
    /// `topic_deleted` hears of each deleted topic (consumer groups drop their offsets).
    pub fn new(cluster: Arc<Cluster>, plugins: Arc<Plugins>, proposer: Arc<Proposer>, topic_deleted: Box<dyn Fn(String) + Send>) -> MetadataMachine {
        MetadataMachine { cluster, plugins, proposer, topic_deleted }
    }

    fn apply_entry(&self, entry: &Entry, changes: &mut Vec<GroupChange>) {
        if entry.data.is_empty() || entry.index <= self.cluster.applied_index() {
            return;
        }
        let envelope = match Envelope::decode(&entry.data) {
            Ok(e) => e,
            Err(cause) => {
                error!(index = entry.index, %cause, "skipping an undecodable metadata entry");
                return;
            }
        };
        // Applying may compile a plugin: tell the runtime this worker blocks for a while.
        let applied = tokio::task::block_in_place(|| self.cluster.apply_entry(entry.index, || apply(&self.cluster, &self.plugins, &envelope.command)));
        let outcome = match applied {
            Ok(Err(e @ (cluster::Error::Io(_) | cluster::Error::CorruptTopicId(..)))) => {
                // Every node must apply every entry: one this node could not store stops it.
                error!(index = entry.index, cause = %e, "storing applied metadata failed; stopping the node");
                std::process::exit(70);
            }
            Ok(outcome) => outcome,
            Err(e) => {
                error!(index = entry.index, cause = %e, "recording the applied metadata index failed; stopping the node");
                std::process::exit(70);
            }
        };
        self.group_changes(&envelope.command, &outcome, changes);
        if let Err(e) = &outcome
            && !matches!(envelope.command, Command::CreateTopic { .. } | Command::DeleteTopic { .. })
        {
            warn!(index = entry.index, cause = %e, "metadata change refused");
        }
        if envelope.origin == self.proposer.replication.me() {
            self.proposer.complete(envelope.request, outcome);
        }
    }

    /// The groups an applied command started or stopped.
    fn group_changes(&self, command: &Command, outcome: &Result<Outcome, cluster::Error>, changes: &mut Vec<GroupChange>) {
        match outcome {
            Ok(Outcome::Partitions(topic_id, range)) => {
                if let Some(topic) = self.cluster.topic_by_id(*topic_id) {
                    for i in range.clone() {
                        if let Some(p) = topic.partitions.get(i as usize) {
                            changes.push(GroupChange::Start { group: cluster::group_of(*topic_id, i), log: Arc::clone(p) });
                        }
                    }
                }
            }
            Ok(Outcome::Deleted(topic_id, count)) => {
                changes.extend((0..*count).map(|i| GroupChange::Stop { group: cluster::group_of(*topic_id, i) }));
                if let Command::DeleteTopic { name } = command {
                    (self.topic_deleted)(name.clone());
                }
            }
            _ => {}
        }
    }
}

impl StateMachine for MetadataMachine {
    fn apply(&mut self, committed: &[Entry]) -> Vec<GroupChange> {
        let mut changes = Vec::new();
        for entry in committed {
            self.apply_entry(entry, &mut changes);
        }
        changes
    }

    fn snapshot(&self) -> Option<Result<Vec<u8>, String>> {
        Some(Ok(super::metadata_snapshot::MetadataState::capture(&self.cluster, &self.plugins).encode()))
    }

    fn check(&self, state: &[u8]) -> Result<(), String> {
        MetadataState::decode(state).map(drop)
    }

    fn restore(&mut self, snapshot: &FetchedSnapshot, index: u64) -> Result<Vec<GroupChange>, String> {
        let target = MetadataState::decode(&snapshot.state)?;
        let current = MetadataState::capture(&self.cluster, &self.plugins);
        let component = |sha: &str| snapshot.components.get(sha).cloned().or_else(|| self.plugins.component(sha).ok()).ok_or_else(|| format!("plugin {sha} is neither in the snapshot's store nor loaded"));
        let commands = target.commands_from(&current, true, component)?;
        let mut changes = Vec::new();
        // Loading plugins compiles them: tell the runtime this worker blocks for a while.
        let restored = tokio::task::block_in_place(|| {
            self.cluster.restore_to(index, target.cluster.producer_id_block_end, || {
                for command in &commands {
                    let outcome = apply(&self.cluster, &self.plugins, command);
                    self.group_changes(command, &outcome, &mut changes);
                    outcome.map_err(|e| format!("restoring the snapshot's metadata: {e}"))?;
                }
                Ok::<(), String>(())
            })
        });
        restored.map_err(|e| e.to_string())??;
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    fn proposer(max_entry_bytes: usize) -> (Proposer, mpsc::Receiver<crate::raft::Event>) {
        let (tx, rx) = mpsc::channel(4);
        let replication = Arc::new(Replication::new(1, vec![1], tx, max_entry_bytes));
        (Proposer::new(replication, Duration::from_secs(1)), rx)
    }

    #[test]
    fn metadata_request_ids_do_not_restart_at_1() {
        let ids: std::collections::HashSet<u64> = (0..64).map(|_| proposer(1 << 20).0.next_request.load(Ordering::Relaxed)).collect();
        assert_eq!(ids.len(), 64, "two processes of one node would reuse request ids");
    }

    #[tokio::test]
    async fn entries_larger_than_the_log_accepts_are_refused_before_proposing() {
        let (proposer, mut rx) = proposer(4096);
        let command = Command::LoadPlugin { name: "big".into(), version: "1".into(), kind: None, sha256: String::new(), component: "A".repeat(8192) };
        let refused = proposer.propose(command).await.unwrap_err();
        assert!(refused.to_string().contains("more than the 4096"), "{refused}");
        assert!(rx.try_recv().is_err(), "nothing reached the driver");
    }

    #[tokio::test]
    async fn a_proposal_raft_refuses_fails_at_once_and_leaves_no_waiter() {
        let (proposer, mut rx) = proposer(1 << 20);
        let driver = tokio::spawn(async move {
            if let Some(crate::raft::Event::Propose { refused, .. }) = rx.recv().await {
                let _ = refused.send("no metadata leader is known yet".into());
            }
        });
        let failed = proposer.propose(Command::AllocateProducerIds).await.unwrap_err();
        assert!(failed.to_string().contains("no metadata leader"), "{failed}");
        assert!(proposer.lock_waiters().is_empty());
        driver.await.unwrap();
    }
}
