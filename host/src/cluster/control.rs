//! Cluster changes as the Kafka handlers and the admin API make them. Every change is a metadata
//! [`Command`], proposed to the metadata group and awaited until this node applied it (on a
//! single node too: it is a cluster of one voter).

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use uuid::Uuid;

use super::metadata::{Command, Outcome, Proposer};
use super::{Cluster, Error, Topic};
use crate::plugins::{Params, PluginInfo, PluginKind};
use crate::raft::Replication;

/// The way this node changes cluster metadata.
pub struct Control {
    cluster: Arc<Cluster>,
    proposer: Arc<Proposer>,
    /// Held while a block of producer ids is taken, so callers that find the block used up
    /// together take one new block, not one each.
    taking_ids: tokio::sync::Mutex<()>,
}

impl Control {
    pub fn new(cluster: Arc<Cluster>, proposer: Arc<Proposer>) -> Control {
        Control { cluster, proposer, taking_ids: tokio::sync::Mutex::new(()) }
    }

    /// The replication handle.
    pub fn replication(&self) -> &Arc<Replication> {
        self.proposer.replication()
    }

    /// Applies `command` through the metadata group.
    async fn change(&self, command: Command) -> Result<Outcome, Error> {
        self.proposer.propose(command).await
    }

    /// Waits (at most the metadata timeout) until every partition of `topic` has a leader, so
    /// a client that produces right after creating it finds one. Not finding one is no error:
    /// clients retry NOT_LEADER_OR_FOLLOWER.
    async fn wait_for_leaders(&self, topic: &Topic, from: usize) {
        wait_for_leaders(self.replication(), topic, from, self.proposer.timeout()).await;
    }

    /// Creates a topic; returns it as applied here.
    pub async fn create_topic(&self, name: &str, partitions: i32, replication_factor: i16, configs: BTreeMap<String, String>) -> Result<Arc<Topic>, Error> {
        // Checked here first so the common refusals need no round through the metadata group.
        self.cluster.validate_new_topic(name, partitions, replication_factor, &configs)?;
        let id = Uuid::new_v4();
        self.change(Command::CreateTopic { name: name.to_string(), id, partitions, replication_factor, configs, start_offsets: Vec::new() }).await?;
        let topic = self.cluster.topic_by_id(id).ok_or_else(|| Error::UnknownTopic(name.to_string()))?;
        self.wait_for_leaders(&topic, 0).await;
        Ok(topic)
    }

    /// Deletes a topic.
    pub async fn delete_topic(&self, name: &str) -> Result<(), Error> {
        self.change(Command::DeleteTopic { name: name.to_string() }).await.map(drop)
    }

    /// Grows a topic (or only checks that it could, with `validate_only`).
    pub async fn create_partitions(&self, name: &str, count: i32, validate_only: bool) -> Result<(), Error> {
        if validate_only {
            return self.cluster.create_partitions(name, count, true);
        }
        let before = self.cluster.topic(name).map_or(0, |t| t.partitions.len());
        self.change(Command::CreatePartitions { name: name.to_string(), count }).await?;
        if let Some(topic) = self.cluster.topic(name) {
            self.wait_for_leaders(&topic, before).await;
        }
        Ok(())
    }

    /// Replaces a topic's config overrides (already validated).
    pub async fn set_topic_configs(&self, name: &str, configs: BTreeMap<String, String>) -> Result<(), Error> {
        self.change(Command::SetTopicConfigs { name: name.to_string(), configs }).await.map(drop)
    }

    /// Applies IncrementalAlterConfigs changes (already validated against the current configs)
    /// to the configs as they are when the change applies.
    pub async fn alter_topic_configs(&self, name: &str, changes: Vec<super::topic_config::ConfigChange>) -> Result<(), Error> {
        self.change(Command::AlterTopicConfigs { name: name.to_string(), changes }).await.map(drop)
    }

    /// Loads a plugin on every node; each checks the component's hash and compiles it itself.
    pub async fn load_plugin(&self, component: Vec<u8>, kind: Option<PluginKind>, name: String, version: String) -> Result<PluginInfo, String> {
        let sha256 = crate::plugins::registry::sha256_hex(&component);
        let component = base64::engine::general_purpose::STANDARD.encode(&component);
        match self.change(Command::LoadPlugin { name, version, kind, sha256, component }).await {
            Ok(Outcome::PluginLoaded(info)) => Ok(info),
            Ok(other) => Err(format!("unexpected outcome {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Applies `commands` in order through the metadata group, stopping at the first refused.
    pub async fn apply_all(&self, commands: Vec<Command>) -> Result<usize, Error> {
        let count = commands.len();
        for command in commands {
            self.change(command).await?;
        }
        Ok(count)
    }

    /// Adds or removes SCRAM users or ACLs on every node.
    pub async fn change_security(&self, change: crate::security::SecurityChange) -> Result<(), Error> {
        self.change(Command::Security(change)).await.map(drop)
    }

    /// Sets the cluster-wide default binding of a kind.
    pub async fn set_default_binding(&self, kind: PluginKind, plugin: String, params: Params) -> Result<(), String> {
        self.change(Command::SetDefaultBinding { kind, plugin, params }).await.map(drop).map_err(|e| e.to_string())
    }

    /// A new producer id, unique in the cluster: from a block of ids granted to this node,
    /// taking a new block (whose end is durable before any id of it is used) when it runs out.
    pub async fn allocate_producer_id(&self) -> Result<i64, Error> {
        loop {
            if let Some(id) = self.cluster.next_local_producer_id() {
                return Ok(id);
            }
            let _taking = self.taking_ids.lock().await;
            if let Some(id) = self.cluster.next_local_producer_id() {
                return Ok(id);
            }
            match self.change(Command::AllocateProducerIds).await? {
                Outcome::ProducerIds(start) => self.cluster.grant_producer_ids(start),
                other => return Err(Error::NotApplied(format!("unexpected outcome {other:?}"))),
            }
        }
    }
}

/// Waits, at most `timeout`, until every partition of `topic` from index `from` on has a leader
/// (serving, when it is this node).
pub async fn wait_for_leaders(replication: &Replication, topic: &Topic, from: usize, timeout: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    // A leader elected here serves only once it has applied its first entry of the term.
    let waiting = |p: &Arc<crate::partition::Partition>| {
        let leader = replication.leadership(super::group_of(topic.id, p.index())).leader;
        leader == 0 || (leader == replication.me() && !p.is_leader())
    };
    while topic.partitions.iter().skip(from).any(waiting) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
