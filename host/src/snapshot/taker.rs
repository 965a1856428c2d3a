//! Taking snapshots: a background loop asks each group's bound snapshot trigger whether to
//! snapshot now; a snapshot is the group's state captured by the Raft loop between two
//! applies, written to the store with the bound codec, after which older snapshots beyond
//! `snapshot.retain` are deleted. The metadata group is snapshotted this way. A data
//! partition's snapshot is its descriptor at the entry before its log's first: its leader
//! writes one whenever retention (or an installed snapshot) moved its log start past its newest,
//! so a follower behind the log always has one to catch up from. `__consumer_offsets`
//! partitions are not snapshotted yet.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::manifest::{GroupKind, Manifest, SnapshotRef};
use super::store::{Head, SnapshotStore};
use super::Error;
use crate::cluster::metadata_snapshot::MetadataState;
use crate::cluster::{Cluster, Topic, group_of};
use crate::config::SnapshotConfig;
use crate::groups::offsets::OFFSETS_TOPIC;
use crate::metrics::Metrics;
use crate::partition::Partition;
use crate::plugins::wit::latest::trigger::exports::sluice::plugins::snapshot_trigger::{Decision, GroupId, GroupStats};
use crate::plugins::{PluginKind, Plugins};
use crate::raft::{METADATA_GROUP, Replication};

/// How long a chunk without a manifest in a shared store is left alone: another node may
/// still be uploading it.
const SHARED_ORPHAN_GRACE: Duration = Duration::from_secs(15 * 60);

/// Where a group stood at its last snapshot.
#[derive(Debug, Clone, Copy)]
struct Last {
    index: u64,
    at: Instant,
    log_bytes: u64,
}

/// The node's snapshots: the store, what each group last snapshotted, and the trigger loop.
pub struct Snapshots {
    store: Arc<SnapshotStore>,
    plugins: Arc<Plugins>,
    replication: Arc<Replication>,
    metrics: Arc<Metrics>,
    cluster: Arc<Cluster>,
    metadata_log: Arc<Partition>,
    retain: usize,
    keep_entries: u64,
    last: Mutex<HashMap<u64, Last>>,
    /// The age of a group never snapshotted counts from here.
    started: Instant,
    /// One snapshot at a time per node; uploads and downloads are bounded by the store.
    taking: tokio::sync::Mutex<()>,
}

impl Snapshots {
    /// The snapshots of this node, kept in `store`.
    pub fn new(store: Arc<SnapshotStore>, plugins: Arc<Plugins>, replication: Arc<Replication>, metrics: Arc<Metrics>, cluster: Arc<Cluster>, metadata_log: Arc<Partition>, config: &SnapshotConfig) -> Snapshots {
        let (retain, keep_entries) = (config.retain, config.keep_entries);
        Snapshots { store, plugins, replication, metrics, cluster, metadata_log, retain, keep_entries, last: Mutex::new(HashMap::new()), started: Instant::now(), taking: tokio::sync::Mutex::new(()) }
    }

    /// The store.
    pub fn store(&self) -> &Arc<SnapshotStore> {
        &self.store
    }

    /// Removes what uploads that died left behind and learns where each group's newest
    /// snapshot stands.
    pub async fn recover(&self) -> Result<(), Error> {
        let grace = if self.store.shared() { SHARED_ORPHAN_GRACE } else { Duration::ZERO };
        let swept = self.store.sweep_orphans(grace).await?;
        if swept > 0 {
            info!(objects = swept, "removed chunks of unfinished snapshots");
        }
        let mut newest: BTreeMap<u64, Manifest> = BTreeMap::new();
        for m in self.store.list(None).await? {
            newest.insert(m.group, m);
        }
        for manifest in newest.values() {
            self.serve(manifest);
        }
        let log_bytes = self.log_bytes();
        let mut last = self.lock_last();
        for (group, index) in newest.into_iter().map(|(g, m)| (g, m.index)) {
            self.metrics.snapshot.last_index.with_label_values(&[group_label(group).as_str()]).set(index as i64);
            last.insert(group, Last { index, at: Instant::now(), log_bytes });
        }
        Ok(())
    }

    /// Snapshots `group` now: captures its applied state, writes it with the bound codec,
    /// then deletes snapshots beyond `snapshot.retain`.
    pub async fn take(&self, group: u64) -> Result<Manifest, Error> {
        let kind = if group == METADATA_GROUP { GroupKind::Metadata } else { GroupKind::Partition };
        let _one = self.taking.lock().await;
        let started = Instant::now();
        let written = if group == METADATA_GROUP { self.write_metadata().await } else { self.write_partition(group).await };
        let manifest = match written {
            Ok(m) => m,
            Err(e) => {
                self.metrics.snapshot.failed.with_label_values(&[kind.name(), e.reason()]).inc();
                return Err(e);
            }
        };
        let m = &self.metrics.snapshot;
        m.taken.with_label_values(&[kind.name()]).inc();
        m.seconds.with_label_values(&[kind.name()]).observe(started.elapsed().as_secs_f64());
        m.raw_bytes.with_label_values(&[kind.name()]).inc_by(manifest.raw_bytes());
        m.stored_bytes.with_label_values(&[kind.name()]).inc_by(manifest.stored_bytes());
        m.last_index.with_label_values(&[group_label(group).as_str()]).set(manifest.index as i64);
        let log_bytes = self.log_bytes();
        self.lock_last().insert(group, Last { index: manifest.index, at: Instant::now(), log_bytes });
        info!(group, index = manifest.index, raw = manifest.raw_bytes(), stored = manifest.stored_bytes(), codec = %manifest.codec.name, "snapshot taken");
        match self.store.retain(group, self.retain).await {
            Ok(deleted) => m.deleted.inc_by(deleted as u64),
            Err(e) => warn!(group, cause = %e, "deleting old snapshots failed"),
        }
        if group == METADATA_GROUP {
            self.compact(&manifest).await;
        }
        Ok(manifest)
    }

    /// Compacts this node's metadata log below a snapshot it can send a follower (its own, or
    /// the shared store's newest, at most its applied index), keeping `snapshot.keep-entries`
    /// entries before it so a follower a little behind still catches up from the log; one
    /// further behind gets the snapshot. Every node compacts its own log.
    async fn compact(&self, manifest: &Manifest) {
        let Some(upto) = manifest.index.checked_sub(self.keep_entries) else { return };
        if upto < self.metadata_log.first_index() {
            return;
        }
        let Some(start) = self.metadata_log.offset_after(upto) else { return };
        let log = Arc::clone(&self.metadata_log);
        match tokio::task::spawn_blocking(move || log.delete_before(start)).await {
            Ok(Ok(deleted)) => debug!(group = manifest.group, upto, deleted, "metadata log compacted"),
            Ok(Err(e)) => warn!(group = manifest.group, cause = %e, "compacting the metadata log failed"),
            Err(e) => warn!(group = manifest.group, cause = %e, "compacting the metadata log failed"),
        }
    }

    async fn write_metadata(&self) -> Result<Manifest, Error> {
        let captured = self.replication.capture(METADATA_GROUP).await.map_err(Error::State)?;
        let state = MetadataState::decode(&captured.state).map_err(Error::State)?;
        let mut plugins = Vec::new();
        for info in &state.plugins {
            let bytes = self.plugins.component(&info.sha256)?;
            self.store.put_plugin(&info.sha256, &bytes).await?;
            plugins.push(info.sha256.clone());
        }
        let codec = self.plugins.binding(PluginKind::Codec, &BTreeMap::new())?;
        let head = Head {
            group: METADATA_GROUP,
            kind: GroupKind::Metadata,
            name: format!("{}-0", self.metadata_log.topic()),
            index: captured.index,
            term: captured.term,
            voters: captured.voters,
            plugins,
            log_offset: captured.offset,
        };
        let manifest = self.store.write(&self.plugins, codec, head, captured.state).await?;
        self.serve(&manifest);
        Ok(manifest)
    }

    /// Writes the descriptor of the data partition of `group`, bound to its topic's codec. A
    /// shared store may already hold it (written by whichever node led before): that one is
    /// served instead.
    async fn write_partition(&self, group: u64) -> Result<Manifest, Error> {
        let (topic, partition) = self.partition_of(group).ok_or_else(|| Error::State(format!("group {group} is not a data partition of this node")))?;
        let captured = self.replication.capture(group).await.map_err(Error::State)?;
        if self.store.shared()
            && let Some(newest) = self.store.list(Some(group)).await?.pop()
            && newest.index >= captured.index
        {
            self.serve(&newest);
            return Ok(newest);
        }
        let codec = self.plugins.binding(PluginKind::Codec, &topic.configs)?;
        let head = Head {
            group,
            kind: GroupKind::Partition,
            name: format!("{}-{}", topic.name, partition.index()),
            index: captured.index,
            term: captured.term,
            voters: captured.voters,
            plugins: Vec::new(),
            log_offset: captured.offset,
        };
        let manifest = self.store.write(&self.plugins, codec, head, captured.state).await?;
        self.serve(&manifest);
        Ok(manifest)
    }

    /// The topic and replica of data partition `group` on this node (not `__consumer_offsets`).
    fn partition_of(&self, group: u64) -> Option<(Arc<Topic>, Arc<Partition>)> {
        self.cluster.topics().into_iter().filter(|t| t.name != OFFSETS_TOPIC).find_map(|t| {
            let found = t.partitions.iter().find(|p| group_of(t.id, p.index()) == group).cloned();
            found.map(|p| (t, p))
        })
    }

    /// Offers `manifest` to followers whose log is too far behind this node's, when it covers
    /// every entry the log no longer holds.
    fn serve(&self, manifest: &Manifest) {
        let mut snapshot = raft::prelude::Snapshot::default();
        let meta = snapshot.mut_metadata();
        meta.index = manifest.index;
        meta.term = manifest.term;
        meta.mut_conf_state().voters = manifest.voters.clone();
        let named = SnapshotRef { key: manifest.key(), offset: manifest.log_offset };
        // A key and an offset always serialise.
        snapshot.data = serde_json::to_vec(&named).expect("snapshot reference serialises").into();
        let log = if manifest.group == METADATA_GROUP { Some(Arc::clone(&self.metadata_log)) } else { self.partition_of(manifest.group).map(|(_, p)| p) };
        if let Some(log) = log {
            log.set_serving_snapshot(snapshot);
        }
    }

    /// The newest metadata snapshot in the store, offered to followers (a shared store: the
    /// leader's, whichever node led when it was taken).
    async fn serve_newest(&self) -> Option<Manifest> {
        match self.store.list(Some(METADATA_GROUP)).await {
            Ok(mut listed) => {
                let newest = listed.pop()?;
                self.serve(&newest);
                Some(newest)
            }
            Err(e) => {
                debug!(cause = %e, "listing snapshots failed");
                None
            }
        }
    }

    /// Asks the metadata group's trigger every `interval` until `stop`, and snapshots when it
    /// says so.
    pub async fn run(self: Arc<Self>, interval: Duration, mut stop: watch::Receiver<bool>) {
        if let Err(e) = self.recover().await {
            warn!(cause = %e, store = self.store.url(), "reading the snapshot store failed");
        }
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if self.due(METADATA_GROUP).await
                && let Err(e) = self.take(METADATA_GROUP).await
            {
                warn!(group = METADATA_GROUP, cause = %e, "snapshot failed");
            }
            for group in self.partitions_needing_one() {
                if let Err(e) = self.take(group).await {
                    warn!(group, cause = %e, "snapshot failed");
                }
            }
        }
    }

    /// The data partitions this node leads whose log starts past their newest snapshot: a
    /// follower behind the log could not catch up without a new one.
    fn partitions_needing_one(&self) -> Vec<u64> {
        let last = self.lock_last();
        let mut due = Vec::new();
        for topic in self.cluster.topics().into_iter().filter(|t| t.name != OFFSETS_TOPIC) {
            for p in topic.partitions.iter().filter(|p| p.is_leader()) {
                let group = group_of(topic.id, p.index());
                let first = p.first_index();
                if first > 1 && last.get(&group).is_none_or(|l| l.index + 1 < first) {
                    due.push(group);
                }
            }
        }
        due
    }

    /// Whether the group's trigger (or, if it fails, the built-in thresholds) says to snapshot.
    async fn due(&self, group: u64) -> bool {
        let Some(status) = self.replication.status().await.into_iter().find(|s| s.group == group) else { return false };
        let is_leader = status.leader == self.replication.me();
        // Into a shared store only the leader writes; each node keeps its own otherwise.
        if self.store.shared() && !is_leader {
            if let Some(newest) = self.serve_newest().await
                && newest.index <= status.applied
            {
                self.compact(&newest).await;
            }
            return false;
        }
        let last = self.lock_last().get(&group).copied();
        // The log starts past this node's newest snapshot (it installed the leader's): without
        // one of its own, this node could not catch a follower up if it led.
        let first = self.metadata_log.first_index();
        if first > 1 && last.is_none_or(|l| l.index + 1 < first) && status.applied + 1 >= first {
            return true;
        }
        let log_bytes = self.log_bytes();
        let stats = GroupStats {
            group: GroupId::Metadata,
            applied_index: status.applied,
            entries_since_snapshot: status.applied.saturating_sub(last.map_or(0, |l| l.index)),
            bytes_since_snapshot: log_bytes.saturating_sub(last.map_or(0, |l| l.log_bytes)),
            millis_since_snapshot: last.map_or(self.started, |l| l.at).elapsed().as_millis() as u64,
            log_bytes,
            is_leader,
            slowest_follower_lag: status.lag.iter().map(|(_, lag)| *lag).max().unwrap_or(0),
        };
        if stats.entries_since_snapshot == 0 {
            return false;
        }
        let plugins = Arc::clone(&self.plugins);
        let decided = tokio::task::spawn_blocking(move || {
            let bound = plugins.binding(PluginKind::Trigger, &BTreeMap::new()).ok();
            crate::plugins::trigger::decide(bound.as_ref().map(|(p, params)| (p.as_ref(), params)), &stats)
        })
        .await;
        debug!(group, ?decided, "snapshot trigger asked");
        matches!(decided, Ok(Decision::Snapshot))
    }

    fn log_bytes(&self) -> u64 {
        self.metadata_log.retention_view().map_or(0, |(_, _, bytes, _)| bytes)
    }

    fn lock_last(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Last>> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The `group` label of a group's snapshot metrics.
fn group_label(group: u64) -> String {
    if group == METADATA_GROUP { "__cluster_metadata".to_string() } else { group.to_string() }
}
