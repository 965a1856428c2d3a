//! Cluster changes as the Kafka handlers and the admin API make them: applied directly on a
//! single node, proposed to the metadata group (and awaited until applied here) in a cluster.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use uuid::Uuid;

use super::Replication;
use super::metadata::{Command, Outcome};
use crate::cluster::{Cluster, Error, Topic};
use crate::plugins::{Params, PluginInfo, PluginKind, Plugins};

/// The way this node changes cluster metadata.
pub struct Control {
    cluster: Arc<Cluster>,
    replication: Option<Arc<Replication>>,
}

impl Control {
    /// `replication` is `None` on a single node.
    pub fn new(cluster: Arc<Cluster>, replication: Option<Arc<Replication>>) -> Control {
        Control { cluster, replication }
    }

    /// The replication handle, in a cluster.
    pub fn replication(&self) -> Option<&Arc<Replication>> {
        self.replication.as_ref()
    }

    /// Creates a topic; returns it as applied here.
    pub async fn create_topic(&self, name: &str, partitions: i32, replication_factor: i16, configs: BTreeMap<String, String>) -> Result<Arc<Topic>, Error> {
        let Some(r) = &self.replication else {
            return self.cluster.create_topic(name, partitions, replication_factor, configs);
        };
        // Checked here first so the common refusals need no round through the metadata group.
        self.cluster.validate_new_topic(name, partitions, replication_factor, &configs)?;
        let id = Uuid::new_v4();
        let command = Command::CreateTopic { name: name.to_string(), id, partitions, replication_factor, configs };
        r.propose(command).await?;
        self.cluster.topic_by_id(id).ok_or_else(|| Error::UnknownTopic(name.to_string()))
    }

    /// Deletes a topic.
    pub async fn delete_topic(&self, name: &str) -> Result<(), Error> {
        match &self.replication {
            None => self.cluster.delete_topic(name),
            Some(r) => r.propose(Command::DeleteTopic { name: name.to_string() }).await.map(drop),
        }
    }

    /// Grows a topic.
    pub async fn create_partitions(&self, name: &str, count: i32, validate_only: bool) -> Result<(), Error> {
        match &self.replication {
            Some(r) if !validate_only => r.propose(Command::CreatePartitions { name: name.to_string(), count }).await.map(drop),
            _ => self.cluster.create_partitions(name, count, validate_only),
        }
    }

    /// Replaces a topic's config overrides (already validated).
    pub async fn set_topic_configs(&self, name: &str, configs: BTreeMap<String, String>) -> Result<(), Error> {
        match &self.replication {
            None => self.cluster.set_topic_configs(name, configs),
            Some(r) => r.propose(Command::SetTopicConfigs { name: name.to_string(), configs }).await.map(drop),
        }
    }

    /// Loads a plugin: here, or through the metadata group on every node.
    pub async fn load_plugin(&self, plugins: &Arc<Plugins>, component: Vec<u8>, kind: Option<PluginKind>, name: String, version: String) -> Result<PluginInfo, String> {
        let Some(r) = &self.replication else {
            let plugins = Arc::clone(plugins);
            // Compiling a component takes tens of milliseconds of CPU: not on the async workers.
            return tokio::task::spawn_blocking(move || plugins.load(&component, kind, &name, &version))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string());
        };
        let sha256 = crate::plugins::registry::sha256_hex(&component);
        let component = base64::engine::general_purpose::STANDARD.encode(&component);
        match r.propose(Command::LoadPlugin { name, version, kind, sha256, component }).await {
            Ok(Outcome::PluginLoaded(info)) => Ok(info),
            Ok(other) => Err(format!("unexpected outcome {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Sets the cluster-wide default binding of a kind.
    pub async fn set_default_binding(&self, plugins: &Arc<Plugins>, kind: PluginKind, plugin: String, params: Params) -> Result<(), String> {
        let Some(r) = &self.replication else {
            let plugins = Arc::clone(plugins);
            return tokio::task::spawn_blocking(move || plugins.set_default(kind, &plugin, params))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string());
        };
        r.propose(Command::SetDefaultBinding { kind, plugin, params }).await.map(drop).map_err(|e| e.to_string())
    }

    /// A new producer id, unique in the cluster.
    pub async fn allocate_producer_id(&self) -> Result<i64, Error> {
        let Some(r) = &self.replication else {
            return self.cluster.allocate_producer_id();
        };
        loop {
            if let Some(id) = self.cluster.next_local_producer_id() {
                return Ok(id);
            }
            match r.propose(Command::AllocateProducerIds).await? {
                Outcome::ProducerIds(start) => self.cluster.grant_producer_ids(start),
                other => return Err(Error::NotApplied(format!("unexpected outcome {other:?}"))),
            }
        }
    }
}
