//! Retention: every `plugins.retention-check-interval-ms`, each partition of each topic whose
//! `cleanup.policy` includes `delete` asks its bound retention policy (topic config
//! `sluice.retention.policy`, else the cluster default `time-and-size`) where its log should
//! start, and whole segments below that are deleted. The host clamps the answer to the high
//! watermark; a policy that fails, traps or times out deletes nothing. In a cluster only a
//! partition's leader asks its policy, and proposes the answer through Raft: every replica
//! deletes the same prefix when it applies that entry. A changed topic config or retention
//! binding runs a pass at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use super::{Cluster, Topic, topic_config};
use crate::clock::now_ms;
use crate::plugins::retention::clamp;
use crate::plugins::wit::latest::retention::exports::sluice::plugins::retention_policy::{PartitionInfo, SegmentInfo};
use crate::plugins::{Params, PluginKind, Plugins};

/// Runs retention until `stop` turns true.
pub async fn run(cluster: Arc<Cluster>, plugins: Arc<Plugins>, mut stop: watch::Receiver<bool>) {
    let period = Duration::from_millis(cluster.config().plugins.retention_check_interval_ms);
    let mut ticks = tokio::time::interval(period);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = cluster.retention_changed().notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let (cluster, plugins) = (Arc::clone(&cluster), Arc::clone(&plugins));
        // Policies run guest code and deletion touches files: keep both off the async workers.
        let _ = tokio::task::spawn_blocking(move || run_once(&cluster, &plugins)).await;
    }
}

/// One pass over every partition.
pub fn run_once(cluster: &Cluster, plugins: &Plugins) {
    for topic in cluster.topics() {
        let policy = topic.configs.get("cleanup.policy").map(String::as_str).unwrap_or("delete");
        if !policy.split(',').any(|p| p.trim() == "delete") {
            continue;
        }
        let (plugin, params) = match plugins.binding(PluginKind::Retention, &topic.configs) {
            Ok(bound) => bound,
            Err(e) => {
                warn!(topic = %topic.name, cause = %e, "no usable retention policy; deleting nothing");
                continue;
            }
        };
        let configs = effective_configs(cluster, &topic);
        // Only a leader decides; its replicas delete the same prefix when they apply its decision.
        for partition in topic.partitions.iter().filter(|p| p.is_leader()) {
            if let Err(e) = apply(&topic, partition, &plugin, &params, &configs) {
                warn!(topic = %topic.name, partition = partition.index(), cause = %e, "retention deleted nothing");
            }
        }
    }
}

fn apply(
    topic: &Topic,
    partition: &crate::partition::Partition,
    plugin: &crate::plugins::Plugin,
    params: &Params,
    configs: &Params,
) -> Result<(), String> {
    let (log_start, high_watermark, total_bytes, segments) = partition.retention_view().map_err(|e| e.to_string())?;
    let info = PartitionInfo {
        topic: topic.name.clone(),
        partition: partition.index() as u32,
        log_start_offset: log_start,
        high_watermark,
        total_bytes,
        now_ms: now_ms(),
    };
    let segments: Vec<SegmentInfo> = segments
        .iter()
        .map(|s| SegmentInfo {
            base_offset: s.base_offset.0,
            last_offset: s.last_offset.map_or(s.base_offset.0 - 1, |o| o.0),
            size_bytes: s.size_bytes,
            first_timestamp: s.first_timestamp.unwrap_or(-1),
            max_timestamp: s.max_timestamp.unwrap_or(-1),
        })
        .collect();
    let answer = plugin.retain(params, &info, configs, &segments).map_err(|e| e.to_string())?;
    if let Some(new_start) = clamp(&answer, log_start, high_watermark) {
        partition.retain_from(new_start).map_err(|e| e.to_string())?;
        info!(topic = %topic.name, partition = partition.index(), policy = %plugin.info().label(), new_start, "retention proposed a new log start");
    }
    Ok(())
}

/// The topic's configs as a policy sees them: every known key with its effective value.
fn effective_configs(cluster: &Cluster, topic: &Topic) -> Params {
    topic_config::effective(&topic.configs, &cluster.config().log).into_iter().map(|e| (e.name, e.value)).collect()
}
