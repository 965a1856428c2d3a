//! The metadata group's state machine. Every cluster change (topics, partitions, configs,
//! producer-id blocks, broker addresses) is an entry of group 0; every node applies the entries
//! in order to its [`Cluster`], so all nodes agree. The node that proposed a change gets its
//! outcome back when it applies the entry itself.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use base64::Engine as _;

use crate::cluster::{self, Cluster};
use crate::plugins::{Params, PluginInfo, PluginKind, Plugins};

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
        Command::CreateTopic { name, id, partitions, replication_factor, configs } => {
            cluster.create_topic_with_id(name, *id, *partitions, *replication_factor, configs.clone())?;
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
        Command::AllocateProducerIds => Ok(Outcome::ProducerIds(cluster.take_producer_id_block()?)),
        Command::LoadPlugin { name, version, kind, sha256, component } => {
            let refused = |why: String| cluster::Error::InvalidConfig(format!("plugin {name}@{version} refused: {why}"));
            let bytes = base64::engine::general_purpose::STANDARD.decode(component).map_err(|e| refused(e.to_string()))?;
            if crate::plugins::registry::sha256_hex(&bytes) != *sha256 {
                return Err(refused("its bytes do not match their sha256".into()));
            }
            plugins.load(&bytes, *kind, name, version).map(Outcome::PluginLoaded).map_err(|e| refused(e.to_string()))
        }
        Command::SetDefaultBinding { kind, plugin, params } => {
            plugins.set_default(*kind, plugin, params.clone()).map_err(|e| cluster::Error::InvalidConfig(e.to_string()))?;
            Ok(Outcome::Done)
        }
    }
}
