//! Taking snapshots: a background loop asks each group's bound snapshot trigger whether to
//! snapshot now; a snapshot is the group's state captured by the Raft loop between two
//! applies, written to the store with the bound codec, after which older snapshots beyond
//! `snapshot.retain` are deleted and the group's log is compacted below it. The metadata group
//! and the `__consumer_offsets` partitions are snapshotted this way (an offsets partition's
//! snapshot is also kept beside its log, which a restart starts from). A data partition's
//! snapshot is its descriptor at the entry before its log's first: its leader writes one
//! whenever retention (or an installed snapshot) moved its log start past the one it serves,
//! so a follower behind the log always has one to catch up from.

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
use crate::partition::kept_state::KeptState;
use crate::plugins::wit::latest::trigger::exports::sluice::plugins::snapshot_trigger::{Decision, GroupId, GroupStats, TopicPartition};
use crate::plugins::{PluginKind, Plugins};
use crate::raft::{GroupStatus, METADATA_GROUP, Replication};

/// How long a chunk without a manifest in a shared store is left alone: another node may
/// still be uploading it.
const SHARED_ORPHAN_GRACE: Duration = Duration::from_secs(15 * 60);

/// Where a group stood at its last snapshot.
#[derive(Debug, Clone, Copy)]
struct Last {
    index: u64,
    /// The group's applied index then (past `index` for a data partition's descriptor).
    applied: u64,
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
        for (group, index) in newest.into_iter().map(|(g, m)| (g, m.index)) {
            self.metrics.snapshot.last_index.with_label_values(&[group_label(group).as_str()]).set(index as i64);
            let log_bytes = self.target(group).map_or(0, |t| log_bytes(&t.log));
            self.lock_last().insert(group, Last { index, applied: index, at: Instant::now(), log_bytes });
        }
        Ok(())
    }

    /// Snapshots `group` now: captures its applied state, writes it with the bound codec,
    /// then deletes snapshots beyond `snapshot.retain` and compacts the group's log (not a data
    /// partition's: retention decides what it keeps).
    pub async fn take(&self, group: u64) -> Result<Manifest, Error> {
        let target = self.target(group).ok_or_else(|| Error::State(format!("group {group} is not on this node")))?;
        let kind = target.kind;
        let _one = self.taking.lock().await;
        let started = Instant::now();
        let written = match kind {
            GroupKind::Metadata => self.write_metadata().await.map(|m| (m.index, m)),
            GroupKind::Offsets | GroupKind::Partition => self.write_partition(&target).await,
        };
        let (applied, manifest) = match written {
            Ok(written) => written,
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
        let log_bytes = log_bytes(&target.log);
        self.lock_last().insert(group, Last { index: manifest.index, applied, at: Instant::now(), log_bytes });
        info!(group, index = manifest.index, raw = manifest.raw_bytes(), stored = manifest.stored_bytes(), codec = %manifest.codec.name, "snapshot taken");
        match self.store.retain(group, self.retain).await {
            Ok(deleted) => m.deleted.inc_by(deleted as u64),
            Err(e) => warn!(group, cause = %e, "deleting old snapshots failed"),
        }
        if kind != GroupKind::Partition {
            // Never past the state this node keeps (a shared store's newest may be ahead).
            self.compact(&target, manifest.index.min(applied)).await;
        }
        Ok(manifest)
    }

    /// Compacts this node's log of `target` below `index` (a snapshot it can send a follower,
    /// at most its applied index, whose state a restart finds), keeping `snapshot.keep-entries`
    /// entries before it so a follower a little behind still catches up from the log; one
    /// further behind gets the snapshot. Every node compacts its own log.
    async fn compact(&self, target: &Target, index: u64) {
        let Some(upto) = index.checked_sub(self.keep_entries) else { return };
        if upto < target.log.first_index() {
            return;
        }
        let Some(start) = target.log.offset_after(upto) else { return };
        let log = Arc::clone(&target.log);
        let group = target.group;
        match tokio::task::spawn_blocking(move || log.delete_before(start)).await {
            Ok(Ok(deleted)) => debug!(group, upto, deleted, "log compacted"),
            Ok(Err(e)) => warn!(group, cause = %e, "compacting the log failed"),
            Err(e) => warn!(group, cause = %e, "compacting the log failed"),
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

    /// Writes the snapshot of a partition's group (an offsets partition's commits, kept beside
    /// its log first; a data partition's descriptor), bound to its topic's codec. A shared store
    /// may already hold a newer one (written by whichever node led before): that one is served
    /// instead. Returns the group's applied index when its state was captured, with the manifest.
    async fn write_partition(&self, target: &Target) -> Result<(u64, Manifest), Error> {
        let topic = target.topic.as_ref().ok_or_else(|| Error::State(format!("group {} has no topic", target.group)))?;
        let captured = self.replication.capture(target.group).await.map_err(Error::State)?;
        if target.kind == GroupKind::Offsets {
            let kept = KeptState { index: captured.index, offset: captured.offset, state: captured.state.clone() };
            let log = Arc::clone(&target.log);
            tokio::task::spawn_blocking(move || log.keep_state(&kept)).await.map_err(|e| Error::Task(e.to_string()))?.map_err(|e| Error::State(e.to_string()))?;
        }
        // (One at the same index is written again: it may be the one a follower could not read.)
        if self.store.shared()
            && let Some(newest) = self.store.list(Some(target.group)).await?.pop()
            && newest.index > captured.index
        {
            self.serve(&newest);
            return Ok((captured.applied, newest));
        }
        let codec = self.plugins.binding(PluginKind::Codec, &topic.configs)?;
        let head = Head {
            group: target.group,
            kind: target.kind,
            name: format!("{}-{}", topic.name, target.log.index()),
            index: captured.index,
            term: captured.term,
            voters: captured.voters,
            plugins: Vec::new(),
            log_offset: captured.offset,
        };
        let manifest = self.store.write(&self.plugins, codec, head, captured.state).await?;
        self.serve(&manifest);
        Ok((captured.applied, manifest))
    }

    /// The group `group` of this node, with its log.
    fn target(&self, group: u64) -> Option<Target> {
        if group == METADATA_GROUP {
            return Some(Target { group, kind: GroupKind::Metadata, log: Arc::clone(&self.metadata_log), topic: None });
        }
        self.cluster.topics().into_iter().find_map(|topic| {
            let log = topic.partitions.iter().find(|p| group_of(topic.id, p.index()) == group).cloned()?;
            let kind = if topic.name == OFFSETS_TOPIC { GroupKind::Offsets } else { GroupKind::Partition };
            Some(Target { group, kind, log, topic: Some(topic) })
        })
    }

    /// Every group this node may snapshot: the metadata group, the offsets partitions, and the
    /// data partitions it leads.
    fn targets(&self) -> Vec<Target> {
        let mut targets = vec![Target { group: METADATA_GROUP, kind: GroupKind::Metadata, log: Arc::clone(&self.metadata_log), topic: None }];
        for topic in self.cluster.topics() {
            let kind = if topic.name == OFFSETS_TOPIC { GroupKind::Offsets } else { GroupKind::Partition };
            for log in topic.partitions.iter().filter(|p| kind == GroupKind::Offsets || p.is_leader()) {
                targets.push(Target { group: group_of(topic.id, log.index()), kind, log: Arc::clone(log), topic: Some(Arc::clone(&topic)) });
            }
        }
        targets
    }

    /// Offers `manifest` to followers whose log is too far behind this node's, when it covers
    /// every entry the log no longer holds.
    fn serve(&self, manifest: &Manifest) {
        if manifest.index == 0 {
            // A descriptor of a log that never dropped an entry: nothing to catch up from.
            return;
        }
        let mut snapshot = raft::prelude::Snapshot::default();
        let meta = snapshot.mut_metadata();
        meta.index = manifest.index;
        meta.term = manifest.term;
        meta.mut_conf_state().voters = manifest.voters.clone();
        let named = SnapshotRef { key: manifest.key(), offset: manifest.log_offset };
        // A key and an offset always serialise.
        snapshot.data = serde_json::to_vec(&named).expect("snapshot reference serialises").into();
        if let Some(target) = self.target(manifest.group) {
            target.log.set_serving_snapshot(snapshot);
        }
    }

    /// A follower's part with a shared store, where only leaders write: it serves the newest
    /// snapshot of `target` (should it lead) and compacts below it once applied that far; an
    /// offsets partition first keeps that snapshot's state beside its log.
    async fn follow_shared(&self, target: &Target, applied: u64) {
        let newest = match self.store.list(Some(target.group)).await {
            Ok(mut listed) => match listed.pop() {
                Some(newest) => newest,
                None => return,
            },
            Err(e) => {
                debug!(group = target.group, cause = %e, "listing snapshots failed");
                return;
            }
        };
        self.serve(&newest);
        if newest.index > applied {
            return;
        }
        let adopted = self.lock_last().get(&target.group).is_some_and(|l| l.index >= newest.index);
        if target.kind == GroupKind::Offsets && !adopted {
            let kept = match self.store.read(&self.plugins, &newest.key()).await {
                Ok((_, state)) => KeptState { index: newest.index, offset: newest.log_offset, state },
                Err(e) => {
                    warn!(group = target.group, cause = %e, "reading the newest snapshot failed");
                    return;
                }
            };
            let log = Arc::clone(&target.log);
            match tokio::task::spawn_blocking(move || log.keep_state(&kept)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return warn!(group = target.group, cause = %e, "keeping the newest snapshot failed"),
                Err(e) => return warn!(group = target.group, cause = %e, "keeping the newest snapshot failed"),
            }
        }
        let log_bytes = log_bytes(&target.log);
        self.lock_last().insert(target.group, Last { index: newest.index, applied: newest.index, at: Instant::now(), log_bytes });
        self.compact(target, newest.index).await;
    }

    /// Asks the triggers of the metadata group, the offsets partitions and the data partitions
    /// this node leads every `interval` until `stop`, and snapshots what they say; a group is
    /// snapshotted at once when its leader could not catch up a follower behind its log
    /// otherwise.
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
            let statuses = self.replication.status().await;
            let mut due = Vec::new();
            for target in self.targets() {
                if let Some(status) = statuses.iter().find(|s| s.group == target.group)
                    && self.due(&target, status).await
                {
                    due.push(target.group);
                }
            }
            for group in due {
                if let Err(e) = self.take(group).await {
                    warn!(group, cause = %e, "snapshot failed");
                }
            }
        }
    }

    /// Whether `target`'s trigger (or, if it fails, the built-in thresholds) says to snapshot:
    /// the cluster's for the metadata group and the offsets partitions, the topic's for a data
    /// partition (only its leader writes its descriptor).
    async fn due(&self, target: &Target, status: &GroupStatus) -> bool {
        let is_leader = status.leader == self.replication.me();
        if target.kind == GroupKind::Partition && !is_leader {
            return false;
        }
        // Into a shared store only the leader writes; each node keeps its own otherwise.
        if self.store.shared() && !is_leader {
            self.follow_shared(target, status.applied).await;
            return false;
        }
        // The log starts past the snapshot this node serves (it installed the leader's, or
        // compacted below a shared one): it could not catch a follower up if it led.
        if target.log.needs_snapshot_to_serve() && status.applied + 1 >= target.log.first_index() {
            return true;
        }
        let last = self.lock_last().get(&target.group).copied();
        let log_bytes = log_bytes(&target.log);
        let group = match &target.topic {
            None => GroupId::Metadata,
            Some(topic) => GroupId::Partition(TopicPartition { topic: topic.name.clone(), partition: target.log.index() as u32 }),
        };
        let stats = GroupStats {
            group,
            applied_index: status.applied,
            entries_since_snapshot: status.applied.saturating_sub(last.map_or(0, |l| l.applied)),
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
        let configs = match (&target.topic, target.kind) {
            (Some(topic), GroupKind::Partition) => topic.configs.clone(),
            _ => BTreeMap::new(),
        };
        let decided = tokio::task::spawn_blocking(move || {
            let bound = plugins.binding(PluginKind::Trigger, &configs).ok();
            crate::plugins::trigger::decide(bound.as_ref().map(|(p, params)| (p.as_ref(), params)), &stats)
        })
        .await;
        debug!(group = target.group, ?decided, "snapshot trigger asked");
        matches!(decided, Ok(Decision::Snapshot))
    }

    fn lock_last(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Last>> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A group this node snapshots, with its log.
struct Target {
    group: u64,
    kind: GroupKind,
    log: Arc<Partition>,
    /// Its topic (none for the metadata group).
    topic: Option<Arc<Topic>>,
}

/// The bytes of a group's log on disk.
fn log_bytes(log: &Partition) -> u64 {
    log.retention_view().map_or(0, |(_, _, bytes, _)| bytes)
}

/// The `group` label of a group's snapshot metrics.
fn group_label(group: u64) -> String {
    if group == METADATA_GROUP { "__cluster_metadata".to_string() } else { group.to_string() }
}
