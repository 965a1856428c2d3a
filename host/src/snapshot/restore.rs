//! Bringing a new, empty cluster back from the newest metadata snapshot in a store: its topics
//! (same ids, partition counts and configs), plugins and bindings are re-created through the
//! metadata group, as the commands that made them would have. Records are not restored (they
//! are not in the store), nor yet consumer offsets: each partition starts empty.

use std::collections::HashMap;
use std::sync::Arc;

use tracing::{info, warn};

use super::manifest::Manifest;
use super::store::SnapshotStore;
use super::Error;
use crate::cluster::Cluster;
use crate::cluster::control::Control;
use crate::cluster::metadata_snapshot::MetadataState;
use crate::groups::offsets::OFFSETS_TOPIC;
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
}

/// Restores this cluster's metadata from the newest readable metadata snapshot in `store`
/// (older ones are tried when the newest is damaged). Refused unless the cluster has no
/// topics of its own yet.
pub async fn restore_cluster(store: &SnapshotStore, plugins: &Arc<Plugins>, cluster: &Cluster, control: &Control, max_component_bytes: u64) -> Result<Restored, Error> {
    let existing: Vec<String> = cluster.topics().iter().map(|t| t.name.clone()).filter(|n| n != OFFSETS_TOPIC).collect();
    if !existing.is_empty() {
        return Err(Error::Restore(format!("a restore needs a new, empty cluster; this one has topics {existing:?}")));
    }
    let mut manifests = store.list(Some(METADATA_GROUP)).await?;
    if manifests.is_empty() {
        return Err(Error::Restore(format!("no metadata snapshot in {}", store.url())));
    }
    let mut last_error = None;
    let mut found = None;
    while let Some(manifest) = manifests.pop() {
        if let Err(e) = ensure_codec(store, plugins, control, &manifest, max_component_bytes).await {
            warn!(snapshot = %manifest.key(), cause = %e, "its codec is unavailable; trying an older snapshot");
            last_error = Some(e);
            continue;
        }
        match store.read(plugins, &manifest.key()).await {
            Ok(read) => {
                found = Some(read);
                break;
            }
            Err(e) => {
                warn!(snapshot = %manifest.key(), cause = %e, "unreadable; trying an older snapshot");
                last_error = Some(e);
            }
        }
    }
    let Some((manifest, bytes)) = found else { return Err(last_error.unwrap_or_else(|| Error::Restore("no readable metadata snapshot".into()))) };
    let mut target = MetadataState::decode(&bytes).map_err(Error::Restore)?;
    let mut current = MetadataState::capture(cluster, plugins);
    // The offsets topic is the new cluster's own; committed offsets are not in this snapshot.
    target.cluster.topics.retain(|t| t.name != OFFSETS_TOPIC);
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
    Ok(Restored { manifest, topics, plugins: plugins_loaded, commands: applied })
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
