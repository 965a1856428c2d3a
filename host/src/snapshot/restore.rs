//! Bringing a new, empty cluster back from the newest metadata snapshot in a store: its topics
//! (same ids, partition counts and configs), plugins and bindings are re-created through the
//! metadata group, as the commands that made them would have. Records are not restored (they
//! are not in the store): each partition starts empty, at the high watermark of its newest
//! descriptor or the highest offset committed for it, whichever is larger, so consumers resume
//! where they were and no offset they saw is handed out again. The committed offsets of the
//! newest offsets snapshots are handed back for the caller to commit.

use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use tracing::{info, warn};

use super::manifest::Manifest;
use super::store::SnapshotStore;
use super::Error;
use crate::cluster::control::Control;
use crate::cluster::metadata_snapshot::MetadataState;
use crate::cluster::{Cluster, group_of};
use crate::groups::offsets::{self, OFFSETS_TOPIC, OffsetRecord};
use crate::partition::descriptor::Descriptor;
use crate::plugins::{PluginKind, Plugins};
use crate::raft::METADATA_GROUP;

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    /// The snapshot restored from.
    pub manifest: Manifest,
    /// Topics created.
    pub topics: usize,
    /// Plugins loaded.
    pub plugins: usize,
    /// Metadata commands applied in all.
    pub commands: usize,
    /// The lost cluster's committed offsets, for the caller to commit.
    pub commits: Vec<OffsetRecord>,
}

/// Restores this cluster's metadata from the newest readable metadata snapshot in `store`
/// (older ones are tried when the newest is damaged). Refused unless the cluster has no
/// topics of its own yet.
pub async fn restore_cluster(store: &SnapshotStore, plugins: &Arc<Plugins>, cluster: &Cluster, control: &Control, max_component_bytes: u64) -> Result<Restored, Error> {
    let existing: Vec<String> = cluster.topics().iter().map(|t| t.name.clone()).filter(|n| n != OFFSETS_TOPIC).collect();
    if !existing.is_empty() {
        return Err(Error::Restore(format!("a restore needs a new, empty cluster; this one has topics {existing:?}")));
    }
    let lost = Lost { store, plugins, control, max_component_bytes };
    let (manifest, bytes) = lost.newest(METADATA_GROUP).await?.ok_or_else(|| Error::Restore(format!("no metadata snapshot in {}", store.url())))?;
    let mut target = MetadataState::decode(&bytes).map_err(Error::Restore)?;
    let mut current = MetadataState::capture(cluster, plugins);
    let commits = match target.cluster.topics.iter().find(|t| t.name == OFFSETS_TOPIC) {
        Some(offsets_topic) => lost.committed_offsets(offsets_topic.id, offsets_topic.partitions).await,
        None => Vec::new(),
    };
    // The offsets topic is the new cluster's own; committed offsets are committed anew.
    target.cluster.topics.retain(|t| t.name != OFFSETS_TOPIC);
    for topic in &mut target.cluster.topics {
        topic.start_offsets = lost.start_offsets(topic.id, &topic.name, topic.partitions, &commits).await;
    }
    current.cluster.topics.retain(|t| t.name != OFFSETS_TOPIC);
    let mut components = HashMap::new();
    for plugin in &target.plugins {
        if plugins.resolve_sha256(&plugin.sha256).is_err() {
            components.insert(plugin.sha256.clone(), store.get_plugin(&plugin.sha256, max_component_bytes).await?);
        }
    }
    let commands = target
        .commands_from(&current, false, |sha| components.get(sha).cloned().ok_or_else(|| format!("plugin {sha} is neither loaded nor stored")))
        .map_err(Error::Restore)?;
    let topics = target.cluster.topics.len();
    let plugins_loaded = commands.iter().filter(|c| matches!(c, crate::cluster::metadata::Command::LoadPlugin { .. })).count();
    let applied = control.apply_all(commands).await.map_err(|e| Error::Restore(format!("applying the snapshot's metadata: {e}")))?;
    info!(snapshot = %manifest.key(), topics, plugins = plugins_loaded, commands = applied, "cluster metadata restored");
    Ok(Restored { manifest, topics, plugins: plugins_loaded, commands: applied, commits })
}

/// The lost cluster's store, and what reading it needs.
struct Lost<'a> {
    store: &'a SnapshotStore,
    plugins: &'a Arc<Plugins>,
    control: &'a Control,
    max_component_bytes: u64,
}

impl Lost<'_> {
    /// The newest snapshot of `group` that reads cleanly (`None` if it has none): a damaged one,
    /// or one whose codec cannot be loaded, is logged and an older one read.
    async fn newest(&self, group: u64) -> Result<Option<(Manifest, Vec<u8>)>, Error> {
        let mut manifests = self.store.list(Some(group)).await?;
        let mut last_error = None;
        while let Some(manifest) = manifests.pop() {
            let read = match ensure_codec(self.store, self.plugins, self.control, &manifest, self.max_component_bytes).await {
                Ok(()) => self.store.read(self.plugins, &manifest.key()).await,
                Err(e) => Err(e),
            };
            match read {
                Ok(found) => return Ok(Some(found)),
                Err(e) => {
                    warn!(snapshot = %manifest.key(), cause = %e, "unreadable; trying an older snapshot");
                    last_error = Some(e);
                }
            }
        }
        last_error.map_or(Ok(None), Err)
    }

    /// Every live commit of the lost cluster's offsets topic (id `id`), from the newest snapshot
    /// of each of its partitions.
    async fn committed_offsets(&self, id: Uuid, partitions: i32) -> Vec<OffsetRecord> {
        let mut commits = Vec::new();
        for p in 0..partitions {
            let decoded = self.newest(group_of(id, p)).await.and_then(|found| found.map(|(_, state)| offsets::decode_snapshot(&state).map_err(Error::Restore)).transpose());
            match decoded {
                Ok(found) => commits.extend(found.into_iter().flatten().filter(|(_, v)| v.is_some())),
                Err(e) => warn!(partition = p, cause = %e, "no commits of this offsets partition are restored"),
            }
        }
        commits
    }

    /// Where each partition of a restored topic starts: the high watermark of its newest
    /// descriptor, or the highest offset committed for it, whichever is larger.
    async fn start_offsets(&self, id: Uuid, name: &str, partitions: i32, commits: &[OffsetRecord]) -> Vec<i64> {
        let mut starts = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            let decoded = self.newest(group_of(id, p)).await.and_then(|found| found.map(|(_, state)| Descriptor::decode(&state).map_err(Error::Restore)).transpose());
            let described = match decoded {
                Ok(d) => d.map_or(0, |d| d.high_watermark),
                Err(e) => {
                    warn!(topic = name, partition = p, cause = %e, "no partition descriptor to resume from");
                    0
                }
            };
            let committed = commits.iter().filter(|(k, _)| k.topic == name && k.partition == p).filter_map(|(_, v)| v.as_ref().map(|v| v.offset)).max().unwrap_or(0);
            starts.push(described.max(committed).max(0));
        }
        if starts.iter().all(|&s| s == 0) { Vec::new() } else { starts }
    }
}

/// Loads the codec that wrote `manifest` from the store if this cluster lacks it.
async fn ensure_codec(store: &SnapshotStore, plugins: &Arc<Plugins>, control: &Control, manifest: &Manifest, max_component_bytes: u64) -> Result<(), Error> {
    let sha = &manifest.codec.sha256;
    if plugins.resolve_sha256(sha).is_ok() {
        return Ok(());
    }
    let bytes = store.get_plugin(sha, max_component_bytes).await?;
    control.load_plugin(bytes, Some(PluginKind::Codec), manifest.codec.name.clone(), manifest.codec.version.clone()).await.map_err(Error::Restore)?;
    Ok(())
}
