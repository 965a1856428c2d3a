//! Cluster metadata of this node: the cluster id, topics (id, partition count, config overrides)
//! and producer-id allocation, persisted in `metadata.json` in the data dir and replaced
//! atomically on every change. The partitions themselves are opened here and handed out to the
//! Kafka handlers. In a cluster every change is an entry of the Raft metadata group
//! ([`metadata`]) applied here on every node in the same order; `metadata.json` is
//! then the applied state, recording the last applied index.

pub mod control;
pub mod metadata;
pub mod metadata_snapshot;
pub mod retention;
pub mod topic_config;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use uuid::Uuid;

use crate::config::Config;
use crate::log::LogConfig;
use crate::partition::{self, Partition, PartitionConfig};
use crate::security::{SecurityChange, SecurityState};

const METADATA_FILE: &str = "metadata.json";
const METADATA_TMP_FILE: &str = "metadata.json.tmp";
const PARTITIONS_DIR: &str = "partitions";
/// In every partition directory: the id of the topic that owns it.
const TOPIC_ID_FILE: &str = "topic-id";
const TOPIC_ID_TMP_FILE: &str = "topic-id.tmp";
/// Producer ids are handed out from blocks whose end is persisted first, so a restart never
/// reuses an id without an fsync per InitProducerId.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// Why a metadata operation failed; each maps to a Kafka error code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// TOPIC_ALREADY_EXISTS.
    #[error("topic {0} already exists")]
    TopicExists(String),
    /// UNKNOWN_TOPIC_OR_PARTITION.
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
    /// INVALID_TOPIC_EXCEPTION.
    #[error("invalid topic name {0:?}: {1}")]
    InvalidTopic(String, &'static str),
    /// INVALID_PARTITIONS.
    #[error("{0}")]
    InvalidPartitions(String),
    /// INVALID_REPLICATION_FACTOR.
    #[error("replication factor {0} is not possible: every partition is replicated on all {1} nodes")]
    InvalidReplicationFactor(i16, usize),
    /// A metadata change was not applied in time (REQUEST_TIMED_OUT), or lost with its leader.
    #[error("metadata change not applied: {0}")]
    NotApplied(String),
    /// INVALID_CONFIG.
    #[error("{0}")]
    InvalidConfig(String),
    /// The principal may not do this (TOPIC_, GROUP_ or CLUSTER_AUTHORIZATION_FAILED).
    #[error("not authorized to access this {0:?}")]
    NotAuthorized(crate::security::ResourceType),
    /// KAFKA_STORAGE_ERROR.
    #[error("metadata storage failed: {0}")]
    Io(#[from] std::io::Error),
    /// A partition could not be opened.
    #[error(transparent)]
    Partition(#[from] partition::Error),
    /// `metadata.json` did not parse.
    #[error("corrupt {METADATA_FILE}: {0}")]
    Corrupt(String),
    /// A partition directory's `topic-id` file did not parse; the directory is left alone.
    #[error("unreadable topic id in {0}: {1}")]
    CorruptTopicId(PathBuf, String),
}

/// A topic and its open partitions.
pub struct Topic {
    /// The topic's name.
    pub name: String,
    /// Its id (Metadata v10+, CreateTopics v7).
    pub id: Uuid,
    /// Config overrides, as set by CreateTopics / IncrementalAlterConfigs.
    pub configs: BTreeMap<String, String>,
    /// Partition `i` is `partitions[i]`.
    pub partitions: Vec<Arc<Partition>>,
    /// Where each partition's log started when the topic was created (a topic restored from a
    /// lost cluster's snapshots resumes at its offsets); missing ones started at 0.
    pub start_offsets: Vec<i64>,
}

/// A topic as metadata records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicRecord {
    /// Name.
    pub name: String,
    /// Id.
    pub id: Uuid,
    /// Partition count.
    pub partitions: i32,
    /// Config overrides.
    pub configs: BTreeMap<String, String>,
    /// Where each partition's log started ([`Topic::start_offsets`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub start_offsets: Vec<i64>,
}

/// The replicated part of the metadata, as a snapshot holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicatedState {
    /// The id the metadata group settled on.
    pub cluster_id: Option<String>,
    /// End of the last producer-id block handed out.
    pub producer_id_block_end: i64,
    /// Every topic.
    pub topics: Vec<TopicRecord>,
    /// Node id -> advertised Kafka address.
    pub brokers: BTreeMap<i32, String>,
    /// SCRAM users and ACLs.
    #[serde(default)]
    pub security: SecurityState,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MetadataFile {
    cluster_id: String,
    producer_id_block_end: i64,
    topics: Vec<TopicRecord>,
    /// Replicated: index of the last metadata-group entry applied.
    #[serde(default)]
    applied_index: u64,
    /// Replicated: node id -> advertised Kafka address.
    #[serde(default)]
    brokers: BTreeMap<i32, String>,
    /// Replicated: the id the metadata group settled on (every node reports the same one).
    #[serde(default)]
    shared_cluster_id: Option<String>,
    /// Replicated: SCRAM users and ACLs.
    #[serde(default)]
    security: SecurityState,
}

/// How partitions join Raft groups on this node (a single node is a cluster of one voter).
#[derive(Clone)]
pub struct Replicas {
    /// Node ids of every node; each partition is replicated on all of them.
    pub voters: Vec<u64>,
    /// Where leaders' proposals go.
    pub proposals: tokio::sync::mpsc::Sender<partition::replica::Proposal>,
    /// Bytes of recent entries cached per replica.
    pub cache_bytes: usize,
}

/// The Raft group of a topic's partition: derived from the topic id, which the metadata group
/// hands every node, so all nodes agree without a counter. Never 0 (the metadata group).
pub fn group_of(topic_id: Uuid, partition: i32) -> u64 {
    let (hi, _) = topic_id.as_u64_pair();
    (hi ^ partition as u32 as u64) | (1 << 63)
}

struct ProducerIds {
    /// The end of the last block handed out, durable in metadata.json.
    block_end: i64,
}

/// The node's metadata and its open partitions.
pub struct Cluster {
    config: Arc<Config>,
    cluster_id: String,
    shared_cluster_id: RwLock<Option<String>>,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Lock order: after `write_lock`.
    producer_ids: Mutex<ProducerIds>,
    /// Serialises writers of metadata.json; taken before `topics` and `producer_ids`.
    write_lock: Mutex<()>,
    replicas: Replicas,
    /// Replicated: (next, end) of the block granted to this node.
    local_producer_ids: Mutex<(i64, i64)>,
    applied_index: std::sync::atomic::AtomicU64,
    /// Woken when a topic's configs change (retention then runs at once).
    retention_changed: tokio::sync::Notify,
    /// The applied index in `metadata.json` as last written.
    persisted_index: std::sync::atomic::AtomicU64,
    brokers: RwLock<BTreeMap<i32, String>>,
    /// Replaced whole on every change, so a request reads one consistent state without a lock.
    security: arc_swap::ArcSwap<SecurityState>,
}

impl Cluster {
    /// Loads `metadata.json` (or starts a new cluster) and opens every partition.
    pub fn open(config: Arc<Config>, replicas: Replicas) -> Result<Cluster, Error> {
        std::fs::create_dir_all(config.data_dir.join(PARTITIONS_DIR))?;
        let path = config.data_dir.join(METADATA_FILE);
        let file = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<MetadataFile>(&bytes).map_err(|e| Error::Corrupt(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => MetadataFile {
                cluster_id: Uuid::new_v4().simple().to_string(),
                producer_id_block_end: 0,
                topics: Vec::new(),
                applied_index: 0,
                brokers: BTreeMap::new(),
                shared_cluster_id: None,
                security: SecurityState::default(),
            },
            Err(e) => return Err(e.into()),
        };
        let owned: BTreeMap<String, Uuid> =
            file.topics.iter().flat_map(|t| (0..t.partitions).map(move |i| (format!("{}-{i}", t.name), t.id))).collect();
        remove_orphaned_dirs(&config, &owned)?;
        let mut topics = BTreeMap::new();
        for record in &file.topics {
            let partitions = (0..record.partitions)
                .map(|i| open_partition(&config, &replicas, record.id, &record.name, i, &record.configs, start_offset(&record.start_offsets, i)))
                .collect::<Result<Vec<_>, _>>()?;
            info!(topic = %record.name, partitions = partitions.len(), "opened topic");
            let start_offsets = record.start_offsets.clone();
            topics.insert(
                record.name.clone(),
                Arc::new(Topic { name: record.name.clone(), id: record.id, configs: record.configs.clone(), partitions, start_offsets }),
            );
        }
        let cluster = Cluster {
            cluster_id: file.cluster_id.clone(),
            shared_cluster_id: RwLock::new(file.shared_cluster_id.clone()),
            producer_ids: Mutex::new(ProducerIds { block_end: file.producer_id_block_end }),
            topics: RwLock::new(topics),
            write_lock: Mutex::new(()),
            config,
            replicas,
            local_producer_ids: Mutex::new((0, 0)),
            applied_index: std::sync::atomic::AtomicU64::new(file.applied_index),
            persisted_index: std::sync::atomic::AtomicU64::new(file.applied_index),
            retention_changed: tokio::sync::Notify::new(),
            brokers: RwLock::new(file.brokers.clone()),
            security: arc_swap::ArcSwap::from_pointee(file.security.clone()),
        };
        cluster.persist()?;
        Ok(cluster)
    }

    /// The cluster's id, generated at first start.
    pub fn cluster_id(&self) -> String {
        self.shared_cluster_id.read().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_else(|| self.cluster_id.clone())
    }

    /// Replicated: adopts the cluster id the metadata group chose first; later proposals (from
    /// nodes that started at the same time) change nothing. Returns the id in effect.
    pub fn adopt_cluster_id(&self, id: &str) -> Result<String, Error> {
        let _writer = self.lock_writer();
        {
            let mut shared = self.shared_cluster_id.write().unwrap_or_else(|p| p.into_inner());
            if let Some(existing) = shared.as_ref() {
                return Ok(existing.clone());
            }
            *shared = Some(id.to_string());
        }
        self.persist()?;
        Ok(id.to_string())
    }

    /// The node configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// One topic by name.
    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.read_topics().get(name).cloned()
    }

    /// One topic by id.
    pub fn topic_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.read_topics().values().find(|t| t.id == id).cloned()
    }

    /// All topics, by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.read_topics().values().cloned().collect()
    }

    /// One partition.
    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        let topic = self.topic(topic)?;
        usize::try_from(index).ok().and_then(|i| topic.partitions.get(i).cloned())
    }

    /// Checks a create request without doing it: name, counts, configs.
    pub fn validate_new_topic(&self, name: &str, partitions: i32, replication_factor: i16, configs: &BTreeMap<String, String>) -> Result<(), Error> {
        validate_topic_name(name)?;
        if self.read_topics().contains_key(name) {
            return Err(Error::TopicExists(name.to_string()));
        }
        let max = self.config.kafka.max_partitions_per_topic;
        if partitions < 1 || partitions > max {
            return Err(Error::InvalidPartitions(format!("partition count {partitions} is outside 1..={max}")));
        }
        let nodes = self.replicas.voters.len();
        if replication_factor != -1 && replication_factor as i64 != nodes as i64 {
            return Err(Error::InvalidReplicationFactor(replication_factor, nodes));
        }
        for (k, v) in configs {
            topic_config::validate(k, v).map_err(Error::InvalidConfig)?;
        }
        Ok(())
    }

    /// Creates a topic; `partitions` and `replication_factor` are already defaulted. (Nodes
    /// create topics by applying the metadata group's entries; tests create them directly.)
    #[cfg(test)]
    pub fn create_topic(&self, name: &str, partitions: i32, replication_factor: i16, configs: BTreeMap<String, String>) -> Result<Arc<Topic>, Error> {
        self.create_topic_with_id(name, Uuid::new_v4(), partitions, replication_factor, configs, Vec::new())
    }

    /// Creates a topic whose id was chosen by the proposer (the same on every node), its
    /// partitions' logs starting at `start_offsets` (missing ones at 0).
    pub fn create_topic_with_id(&self, name: &str, id: Uuid, partitions: i32, replication_factor: i16, configs: BTreeMap<String, String>, start_offsets: Vec<i64>) -> Result<Arc<Topic>, Error> {
        let _writer = self.lock_writer();
        self.validate_new_topic(name, partitions, replication_factor, &configs)?;
        if start_offsets.len() > partitions as usize || start_offsets.iter().any(|&o| o < 0) {
            return Err(Error::InvalidPartitions(format!("start offsets {start_offsets:?} do not fit {partitions} partitions")));
        }
        let opened = (0..partitions)
            .map(|i| open_partition(&self.config, &self.replicas, id, name, i, &configs, start_offset(&start_offsets, i)))
            .collect::<Result<Vec<_>, _>>()?;
        let topic = Arc::new(Topic { name: name.to_string(), id, configs, partitions: opened, start_offsets });
        self.write_topics().insert(name.to_string(), Arc::clone(&topic));
        if let Err(e) = self.persist() {
            self.write_topics().remove(name);
            close_and_remove(&topic.partitions);
            return Err(e);
        }
        info!(topic = name, partitions, "created topic");
        Ok(topic)
    }

    /// Deletes a topic and its data.
    pub fn delete_topic(&self, name: &str) -> Result<(), Error> {
        let _writer = self.lock_writer();
        let topic = self.write_topics().remove(name).ok_or_else(|| Error::UnknownTopic(name.to_string()))?;
        if let Err(e) = self.persist() {
            self.write_topics().insert(name.to_string(), topic);
            return Err(e);
        }
        // The topic is gone from durable metadata; its files are now garbage, removed best-effort.
        close_and_remove(&topic.partitions);
        info!(topic = name, "deleted topic");
        Ok(())
    }

    /// Grows a topic to `count` partitions.
    pub fn create_partitions(&self, name: &str, count: i32, validate_only: bool) -> Result<(), Error> {
        let _writer = self.lock_writer();
        let topic = self.topic(name).ok_or_else(|| Error::UnknownTopic(name.to_string()))?;
        let current = topic.partitions.len() as i32;
        let max = self.config.kafka.max_partitions_per_topic;
        if count <= current {
            return Err(Error::InvalidPartitions(format!("topic {name} has {current} partitions; the new count {count} must be larger")));
        }
        if count > max {
            return Err(Error::InvalidPartitions(format!("partition count {count} exceeds {max}")));
        }
        if validate_only {
            return Ok(());
        }
        let mut partitions = topic.partitions.clone();
        let added = (current..count)
            .map(|i| open_partition(&self.config, &self.replicas, topic.id, name, i, &topic.configs, 0))
            .collect::<Result<Vec<_>, _>>()?;
        partitions.extend(added.iter().cloned());
        let grown = Arc::new(Topic { name: topic.name.clone(), id: topic.id, configs: topic.configs.clone(), partitions, start_offsets: topic.start_offsets.clone() });
        self.write_topics().insert(name.to_string(), grown);
        if let Err(e) = self.persist() {
            self.write_topics().insert(name.to_string(), topic);
            close_and_remove(&added);
            return Err(e);
        }
        Ok(())
    }

    /// Replaces a topic's config overrides (already validated) and applies them to its partitions.
    pub fn set_topic_configs(&self, name: &str, configs: BTreeMap<String, String>) -> Result<(), Error> {
        let _writer = self.lock_writer();
        let topic = self.topic(name).ok_or_else(|| Error::UnknownTopic(name.to_string()))?;
        for (k, v) in &configs {
            topic_config::validate(k, v).map_err(Error::InvalidConfig)?;
        }
        let updated = Arc::new(Topic { name: topic.name.clone(), id: topic.id, configs, partitions: topic.partitions.clone(), start_offsets: topic.start_offsets.clone() });
        self.write_topics().insert(name.to_string(), Arc::clone(&updated));
        if let Err(e) = self.persist() {
            self.write_topics().insert(name.to_string(), topic);
            return Err(e);
        }
        let settings = partition_config(&self.config, &updated.configs);
        for p in &updated.partitions {
            p.set_max_message_bytes(settings.max_message_bytes);
            p.set_log_config(settings.log.clone());
        }
        // New retention configs or a new policy binding take effect now, not at the next pass.
        self.retention_changed.notify_one();
        Ok(())
    }

    /// Takes the next block of producer ids for the node that asked (in a cluster every node
    /// applies this, so blocks never overlap). Returns the block's first id.
    pub fn take_producer_id_block(&self) -> Result<i64, Error> {
        let _writer = self.lock_writer();
        let mut ids = self.producer_ids.lock().unwrap_or_else(|p| p.into_inner());
        let start = ids.block_end;
        self.write_metadata(start + PRODUCER_ID_BLOCK)?;
        ids.block_end = start + PRODUCER_ID_BLOCK;
        Ok(start)
    }

    /// Hands out ids from a block this node was granted, if any are left.
    pub fn next_local_producer_id(&self) -> Option<i64> {
        let mut local = self.local_producer_ids.lock().unwrap_or_else(|p| p.into_inner());
        let (next, end) = *local;
        (next < end).then(|| {
            local.0 += 1;
            next
        })
    }

    /// A block granted to this node.
    pub fn grant_producer_ids(&self, start: i64) {
        *self.local_producer_ids.lock().unwrap_or_else(|p| p.into_inner()) = (start, start + PRODUCER_ID_BLOCK);
    }

    /// Notified when topic configs or retention bindings change.
    pub fn retention_changed(&self) -> &tokio::sync::Notify {
        &self.retention_changed
    }

    /// Replicated: the last metadata entry applied.
    pub fn applied_index(&self) -> u64 {
        self.applied_index.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Replicated: applies metadata entry `index` with `apply` and records the index in the same
    /// durable write of `metadata.json` as the change, so a crash leaves both or neither and
    /// no entry is ever applied twice. (In a cluster only the Raft driver changes metadata,
    /// one entry at a time, so no other write can record the index before its change.)
    pub fn apply_entry<T>(&self, index: u64, apply: impl FnOnce() -> T) -> Result<T, Error> {
        self.applied_index.store(index, std::sync::atomic::Ordering::SeqCst);
        let outcome = apply();
        let _writer = self.lock_writer();
        if self.persisted_index.load(std::sync::atomic::Ordering::SeqCst) != index {
            // The entry changed nothing in metadata.json (or failed): record the index alone.
            self.persist()?;
        }
        Ok(outcome)
    }

    /// The replicated state as of the last applied entry (call it between applies).
    pub fn replicated_state(&self) -> ReplicatedState {
        let _writer = self.lock_writer();
        ReplicatedState {
            cluster_id: self.shared_cluster_id.read().unwrap_or_else(|p| p.into_inner()).clone(),
            producer_id_block_end: self.producer_ids.lock().unwrap_or_else(|p| p.into_inner()).block_end,
            topics: self.topic_records(),
            brokers: self.brokers(),
            security: SecurityState::clone(&self.security()),
        }
    }

    fn topic_records(&self) -> Vec<TopicRecord> {
        self.read_topics()
            .values()
            .map(|t| TopicRecord { name: t.name.clone(), id: t.id, partitions: t.partitions.len() as i32, configs: t.configs.clone(), start_offsets: t.start_offsets.clone() })
            .collect()
    }

    /// Replicated: brings the state to a snapshot's at `index` with `restore` (which applies
    /// the commands that get there), and only then records `index` as applied: a crash part
    /// way leaves the old applied index, and installing the snapshot again converges.
    pub fn restore_to<T, E>(&self, index: u64, producer_id_block_end: i64, restore: impl FnOnce() -> Result<T, E>) -> Result<Result<T, E>, Error> {
        let outcome = restore();
        if outcome.is_err() {
            return Ok(outcome);
        }
        let _writer = self.lock_writer();
        {
            let mut ids = self.producer_ids.lock().unwrap_or_else(|p| p.into_inner());
            ids.block_end = ids.block_end.max(producer_id_block_end);
        }
        self.applied_index.store(index, std::sync::atomic::Ordering::SeqCst);
        self.persist()?;
        Ok(outcome)
    }

    /// Replicated: records a node's Kafka address.
    pub fn register_broker(&self, node: i32, addr: String) -> Result<(), Error> {
        let _writer = self.lock_writer();
        self.brokers.write().unwrap_or_else(|p| p.into_inner()).insert(node, addr);
        self.persist()
    }

    /// Replicated: SCRAM users and ACLs as of the last applied entry.
    pub fn security(&self) -> Arc<SecurityState> {
        self.security.load_full()
    }

    /// Replicated: applies a change to users or ACLs.
    pub fn change_security(&self, change: &SecurityChange) -> Result<(), Error> {
        let _writer = self.lock_writer();
        let mut state = SecurityState::clone(&self.security());
        state.apply(change);
        self.security.store(Arc::new(state));
        self.persist()
    }

    /// Replicated: every node's Kafka address.
    pub fn brokers(&self) -> BTreeMap<i32, String> {
        self.brokers.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Closes every partition (final fsync and checkpoint).
    pub fn close(&self) {
        for topic in self.topics() {
            for p in &topic.partitions {
                if let Err(e) = p.close() {
                    warn!(topic = %topic.name, partition = p.index(), cause = %e, "close failed");
                }
            }
        }
    }

    fn persist(&self) -> Result<(), Error> {
        let block_end = self.producer_ids.lock().unwrap_or_else(|p| p.into_inner()).block_end;
        self.write_metadata(block_end)
    }

    fn write_metadata(&self, producer_id_block_end: i64) -> Result<(), Error> {
        let file = MetadataFile {
            cluster_id: self.cluster_id.clone(),
            shared_cluster_id: self.shared_cluster_id.read().unwrap_or_else(|p| p.into_inner()).clone(),
            producer_id_block_end,
            applied_index: self.applied_index(),
            brokers: self.brokers(),
            topics: self.topic_records(),
            security: SecurityState::clone(&self.security()),
        };
        // Serialising strings and integers cannot fail.
        let bytes = serde_json::to_vec_pretty(&file).expect("metadata serialises");
        crate::durable::replace_file(&self.config.data_dir, METADATA_TMP_FILE, METADATA_FILE, &bytes)?;
        self.persisted_index.store(file.applied_index, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    fn read_topics(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Topic>>> {
        // Writers only insert or remove whole entries, so a poisoned map is still consistent.
        self.topics.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_topics(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Topic>>> {
        self.topics.write().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write_lock.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Storage settings for a topic's partitions: node defaults overridden by topic configs.
pub fn partition_config(config: &Config, overrides: &BTreeMap<String, String>) -> PartitionConfig {
    let d = &config.log;
    let get = |k| topic_config::effective_i64(overrides, d, k);
    PartitionConfig {
        log: LogConfig {
            segment_bytes: get("segment.bytes").max(1024) as u64,
            segment_ms: get("segment.ms").max(1) as u64,
            index_interval_bytes: d.index_interval_bytes,
            max_entry_bytes: config.kafka.max_request_bytes,
        },
        max_message_bytes: get("max.message.bytes").clamp(0, i64::from(u32::MAX)) as u32,
        flush_policy: d.flush_policy,
        flush_interval: Duration::from_millis(d.flush_interval_ms),
        checkpoint_interval: Duration::from_millis(d.checkpoint_interval_ms),
        producer_expiration_ms: i64::try_from(d.producer_id_expiration_ms).unwrap_or(i64::MAX),
        fs: crate::log::fs::StdFs::shared(),
    }
}

fn partition_dir(config: &Config, topic: &str, index: i32) -> PathBuf {
    config.data_dir.join(PARTITIONS_DIR).join(format!("{topic}-{index}"))
}

/// Makes `dir` a partition directory of topic `id`. A directory that belongs to another topic
/// of the same name (left behind by a deletion a crash interrupted) is removed first, so a
/// re-created topic never adopts an old one's log or Raft state.
fn claim_partition_dir(dir: &Path, id: Uuid) -> Result<(), Error> {
    match dir_owner(dir)? {
        Some(owner) if owner == id => return Ok(()),
        Some(owner) => {
            warn!(dir = %dir.display(), %owner, topic_id = %id, "removing a partition directory of an earlier topic of the same name");
            std::fs::remove_dir_all(dir)?;
        }
        // No owner file: a new directory, or one from a version that did not write it.
        None if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) => {
            info!(dir = %dir.display(), topic_id = %id, "adopting a partition directory written before topic ids were recorded");
        }
        None => {}
    }
    std::fs::create_dir_all(dir)?;
    crate::durable::replace_file(dir, TOPIC_ID_TMP_FILE, TOPIC_ID_FILE, id.to_string().as_bytes())?;
    Ok(())
}

/// Removes partition directories no topic owns (a deletion interrupted by a crash, or one whose
/// files could not be removed then), logging each. `owned` maps directory names to topic ids.
fn remove_orphaned_dirs(config: &Config, owned: &BTreeMap<String, Uuid>) -> Result<(), Error> {
    for entry in std::fs::read_dir(config.data_dir.join(PARTITIONS_DIR))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let kept = match (owned.get(&name), dir_owner(&entry.path())?) {
            (Some(id), Some(owner)) => owner == *id,
            // Written before topic ids were recorded: `claim_partition_dir` adopts it.
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !kept {
            warn!(dir = %entry.path().display(), "removing a partition directory no topic owns");
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}

/// The topic id recorded in a partition directory, `None` if it has none. An unreadable id is
/// an error, never a reason to remove the directory.
fn dir_owner(dir: &Path) -> Result<Option<Uuid>, Error> {
    let path = dir.join(TOPIC_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Uuid::parse_str(text.trim()).map(Some).map_err(|e| Error::CorruptTopicId(path, e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(Error::CorruptTopicId(path, e.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// Where partition `index`'s log started, of a topic's start offsets.
fn start_offset(start_offsets: &[i64], index: i32) -> i64 {
    usize::try_from(index).ok().and_then(|i| start_offsets.get(i)).copied().unwrap_or(0)
}

fn open_partition(config: &Config, replicas: &Replicas, id: Uuid, topic: &str, index: i32, overrides: &BTreeMap<String, String>, start_offset: i64) -> Result<Arc<Partition>, Error> {
    let dir = partition_dir(config, topic, index);
    claim_partition_dir(&dir, id)?;
    let settings = partition_config(config, overrides);
    if start_offset > 0 {
        crate::log::PartitionLog::start_new_at(&*settings.fs, &dir, crate::log::Offset(start_offset)).map_err(partition::Error::from)?;
    }
    // The offsets topic's state machine keeps its snapshot beside the log: it stands where
    // that snapshot does (nowhere without one), and a snapshot install it never reached is void.
    let applied = if topic == crate::groups::offsets::OFFSETS_TOPIC {
        let kept = partition::kept_state::KeptState::read(&*settings.fs, &dir).map_err(|e| Error::Partition(partition::Error::Log(crate::log::Error::Io { path: dir.clone(), source: e })))?;
        Some(kept.map_or(0, |k| k.index))
    } else {
        None
    };
    let setup = partition::replica::ReplicaSetup {
        group: group_of(id, index),
        voters: replicas.voters.clone(),
        proposals: replicas.proposals.clone(),
        cache_bytes: replicas.cache_bytes,
        offsets_on_write: false,
        applied,
    };
    Ok(Partition::open_replica(topic, index, &dir, settings, setup)?)
}

fn close_and_remove(partitions: &[Arc<Partition>]) {
    for p in partitions {
        let _ = p.close();
        // Renamed first, in one step: a crash part way through removing the files then never
        // leaves a directory under the partition's name (start-up removes the renamed one).
        let name = p.dir().file_name().unwrap_or_default().to_string_lossy();
        let doomed = p.dir().with_file_name(format!("{name}.{}.deleted", uuid::Uuid::new_v4().simple()));
        let removed = std::fs::rename(p.dir(), &doomed).and_then(|()| std::fs::remove_dir_all(&doomed));
        if let Err(e) = removed {
            warn!(dir = %p.dir().display(), cause = %e, "could not remove partition directory");
        }
    }
}

/// Kafka's topic name rules: 1..=249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), Error> {
    let invalid = |why| Err(Error::InvalidTopic(name.to_string(), why));
    if name.is_empty() {
        return invalid("empty");
    }
    if name.len() > 249 {
        return invalid("longer than 249 characters");
    }
    if name == "." || name == ".." {
        return invalid("'.' and '..' are reserved");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
        return invalid("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::batch::tests::batch;
    use crate::partition::replica::tests::data_entry;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_test-2").is_ok());
        for bad in ["", ".", "..", "a/b", "sp ace", "ünï", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn metadata_applied_twice_cannot_happen_an_entry_and_its_index_are_one_write() {
        let dir = tempfile::tempdir().unwrap();
        let config = Arc::new(Config { data_dir: dir.path().to_path_buf(), ..Config::default() });
        let first = {
            let cluster = Cluster::open(Arc::clone(&config), sole_voter()).unwrap();
            let on_disk = || -> MetadataFile { serde_json::from_slice(&std::fs::read(dir.path().join(METADATA_FILE)).unwrap()).unwrap() };
            let (first, seen) = cluster
                .apply_entry(5, || {
                    let first = cluster.take_producer_id_block().unwrap();
                    // What is on disk right after the command's own write is what a crash
                    // before anything else leaves: the change and its index together.
                    (first, on_disk())
                })
                .unwrap();
            assert_eq!((seen.applied_index, seen.producer_id_block_end), (5, first + PRODUCER_ID_BLOCK));
            // An entry that changes nothing still records its index.
            cluster.apply_entry(6, || cluster.delete_topic("missing")).unwrap().unwrap_err();
            first
        };
        let cluster = Cluster::open(config, sole_voter()).unwrap();
        assert_eq!(cluster.applied_index(), 6);
        let next = cluster.apply_entry(7, || cluster.take_producer_id_block()).unwrap().unwrap();
        assert_eq!(next, first + PRODUCER_ID_BLOCK, "a block is handed out once");
    }

    #[tokio::test]
    async fn a_re_created_topic_does_not_adopt_the_old_ones_files() {
        let dir = tempfile::tempdir().unwrap();
        let config = Arc::new(Config { data_dir: dir.path().to_path_buf(), ..Config::default() });
        let saved = dir.path().join("saved");
        {
            let cluster = Cluster::open(Arc::clone(&config), sole_voter()).unwrap();
            let topic = cluster.create_topic("orders", 1, -1, BTreeMap::new()).unwrap();
            let p = &topic.partitions[0];
            p.write_entries(&[data_entry(1, 1, 0, batch(5, -1, -1, -1))], 0).unwrap();
            p.commit_to(1);
            cluster.close();
            // A deletion that a crash interrupts after metadata.json forgot the topic leaves its
            // files behind: keep a copy and put it back once the deletion is done.
            copy_dir(p.dir(), &saved);
            cluster.delete_topic("orders").unwrap();
            std::fs::rename(&saved, p.dir()).unwrap();
        }
        let cluster = Cluster::open(Arc::clone(&config), sole_voter()).unwrap();
        assert!(!dir.path().join(PARTITIONS_DIR).join("orders-0").exists(), "the orphaned directory is removed at start");
        let topic = cluster.create_topic("orders", 1, -1, BTreeMap::new()).unwrap();
        let p = &topic.partitions[0];
        assert_eq!(p.high_watermark(), 0, "the new topic starts empty");
        p.write_entries(&[data_entry(1, 1, 0, batch(3, -1, -1, -1))], 0).unwrap();
        p.commit_to(1);
        cluster.close();
        // A directory under the name whose owner is another topic id is not adopted either.
        std::fs::write(p.dir().join(TOPIC_ID_FILE), Uuid::new_v4().to_string()).unwrap();
        let again = Cluster::open(config, sole_voter()).unwrap();
        assert_eq!(again.partition("orders", 0).unwrap().high_watermark(), 0);
        again.close();
    }

    #[test]
    fn an_unreadable_topic_id_is_an_error_and_removes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let config = Arc::new(Config { data_dir: dir.path().to_path_buf(), ..Config::default() });
        let stray = dir.path().join(PARTITIONS_DIR).join("orders-0");
        std::fs::create_dir_all(&stray).unwrap();
        std::fs::write(stray.join(TOPIC_ID_FILE), "not a topic id").unwrap();
        std::fs::write(stray.join("00000000000000000000.log"), b"records").unwrap();
        let refused = Cluster::open(config, sole_voter()).err().expect("a start that refuses the directory");
        assert!(matches!(refused, Error::CorruptTopicId(..)), "{refused}");
        assert!(stray.join("00000000000000000000.log").exists(), "nothing was removed");
    }

    /// A node's partitions as a sole voter's replicas; no driver runs in these tests.
    fn sole_voter() -> Replicas {
        Replicas { voters: vec![1], proposals: tokio::sync::mpsc::channel(16).0, cache_bytes: 1 << 20 }
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}
