//! What a snapshot of the metadata group holds, and the commands that bring another node's
//! metadata to it. A follower installing a snapshot and a new cluster restored from one apply
//! the same commands as the log would have: one way to change metadata.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::metadata::Command;
use super::{Cluster, ReplicatedState};
use crate::plugins::registry::BindingSpec;
use crate::plugins::{PluginInfo, PluginKind, Plugins};

/// The metadata group's state at one index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetadataState {
    /// Topics, brokers, cluster id, producer-id blocks.
    pub cluster: ReplicatedState,
    /// Plugins loaded beyond the shipped ones, in load order (their bytes are stored once, by
    /// sha256, beside the snapshots).
    pub plugins: Vec<PluginInfo>,
    /// The cluster-wide default binding of each kind.
    pub defaults: BTreeMap<PluginKind, BindingSpec>,
}

impl MetadataState {
    /// The state of `cluster` and `plugins` now (call it between applies).
    pub fn capture(cluster: &Cluster, plugins: &Plugins) -> MetadataState {
        let table = plugins.registry().snapshot();
        MetadataState {
            cluster: cluster.replicated_state(),
            plugins: table.entries().iter().filter(|e| !e.builtin()).map(|e| e.info().clone()).collect(),
            defaults: table.defaults().clone(),
        }
    }

    /// The state as stored.
    pub fn encode(&self) -> Vec<u8> {
        // Strings, integers and maps with string keys always serialise.
        serde_json::to_vec(self).expect("metadata state serialises")
    }

    /// Reads a stored state.
    pub fn decode(bytes: &[u8]) -> Result<MetadataState, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("unreadable metadata snapshot: {e}"))
    }

    /// The commands that turn `current` into this state, in an order that applies: plugins
    /// before the bindings and topic configs that name them, deletions before re-creations.
    /// `component` gives a plugin's bytes by sha256. Brokers are left out unless asked for (a
    /// restored cluster's nodes announce themselves).
    pub fn commands_from(&self, current: &MetadataState, with_brokers: bool, mut component: impl FnMut(&str) -> Result<Vec<u8>, String>) -> Result<Vec<Command>, String> {
        let mut commands = Vec::new();
        if current.cluster.cluster_id.is_none()
            && let Some(id) = &self.cluster.cluster_id
        {
            commands.push(Command::InitCluster { cluster_id: id.clone() });
        }
        if with_brokers {
            for (node, addr) in &self.cluster.brokers {
                if current.cluster.brokers.get(node) != Some(addr) {
                    commands.push(Command::RegisterBroker { node: *node, addr: addr.clone() });
                }
            }
        }
        for plugin in &self.plugins {
            if current.plugins.iter().any(|p| p.sha256 == plugin.sha256) {
                continue;
            }
            let bytes = component(&plugin.sha256)?;
            commands.push(Command::LoadPlugin {
                name: plugin.name.clone(),
                version: plugin.version.clone(),
                kind: Some(plugin.kind),
                sha256: plugin.sha256.clone(),
                component: base64::engine::general_purpose::STANDARD.encode(bytes),
            });
        }
        for (kind, spec) in &self.defaults {
            if current.defaults.get(kind) != Some(spec) {
                commands.push(Command::SetDefaultBinding { kind: *kind, plugin: spec.plugin.clone(), params: spec.params.clone() });
            }
        }
        commands.extend(self.cluster.security.changes_from(&current.cluster.security).into_iter().map(Command::Security));
        let wanted: BTreeMap<&str, _> = self.cluster.topics.iter().map(|t| (t.name.as_str(), t)).collect();
        for topic in &current.cluster.topics {
            if wanted.get(topic.name.as_str()).is_none_or(|t| t.id != topic.id) {
                commands.push(Command::DeleteTopic { name: topic.name.clone() });
            }
        }
        let have: BTreeMap<&str, _> = current.cluster.topics.iter().map(|t| (t.name.as_str(), t)).collect();
        for topic in &self.cluster.topics {
            match have.get(topic.name.as_str()) {
                Some(old) if old.id == topic.id => {
                    if old.partitions < topic.partitions {
                        commands.push(Command::CreatePartitions { name: topic.name.clone(), count: topic.partitions });
                    }
                    if old.configs != topic.configs {
                        commands.push(Command::SetTopicConfigs { name: topic.name.clone(), configs: topic.configs.clone() });
                    }
                }
                _ => commands.push(Command::CreateTopic {
                    name: topic.name.clone(),
                    id: topic.id,
                    partitions: topic.partitions,
                    replication_factor: -1,
                    configs: topic.configs.clone(),
                    start_offsets: topic.start_offsets.clone(),
                }),
            }
        }
        Ok(commands)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::TopicRecord;

    fn topic(name: &str, id: u128, partitions: i32, retention: &str) -> TopicRecord {
        let configs = BTreeMap::from([("retention.ms".to_string(), retention.to_string())]);
        TopicRecord { name: name.into(), id: uuid::Uuid::from_u128(id), partitions, configs, start_offsets: Vec::new() }
    }

    fn state(topics: Vec<TopicRecord>, plugins: Vec<PluginInfo>) -> MetadataState {
        let cluster = ReplicatedState { cluster_id: Some("c".into()), producer_id_block_end: 0, topics, brokers: BTreeMap::new(), security: Default::default() };
        MetadataState { cluster, plugins, defaults: BTreeMap::new() }
    }

    #[test]
    fn the_commands_create_grow_reconfigure_replace_and_delete_topics_and_load_missing_plugins() {
        let plugin = PluginInfo { name: "p".into(), version: "1".into(), sha256: "ab".into(), kind: PluginKind::Trigger };
        let current = state(vec![topic("kept", 1, 1, "1"), topic("gone", 2, 1, "1"), topic("replaced", 3, 1, "1")], vec![]);
        let target = state(vec![topic("kept", 1, 3, "2"), topic("replaced", 4, 2, "1"), topic("new", 5, 1, "1")], vec![plugin]);
        let commands = target.commands_from(&current, false, |sha| Ok(sha.as_bytes().to_vec())).unwrap();
        let names: Vec<String> = commands
            .iter()
            .map(|c| match c {
                Command::LoadPlugin { sha256, .. } => format!("load {sha256}"),
                Command::DeleteTopic { name } => format!("delete {name}"),
                Command::CreateTopic { name, partitions, .. } => format!("create {name} {partitions}"),
                Command::CreatePartitions { name, count } => format!("grow {name} {count}"),
                Command::SetTopicConfigs { name, .. } => format!("configure {name}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(names, ["load ab", "delete gone", "delete replaced", "grow kept 3", "configure kept", "create replaced 2", "create new 1"]);
        assert!(target.commands_from(&target, true, |_| Err("not needed".into())).unwrap().is_empty(), "a state needs nothing to reach itself");
    }

    #[test]
    fn a_state_round_trips_and_garbage_is_refused() {
        let s = state(vec![topic("t", 9, 2, "5")], vec![]);
        assert_eq!(MetadataState::decode(&s.encode()).unwrap(), s);
        assert!(MetadataState::decode(b"{not json").is_err());
    }
}
