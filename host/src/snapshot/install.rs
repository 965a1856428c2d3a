//! Where a follower gets the snapshot a leader's Raft message names: from the object store, when
//! every node shares it, or else from the leader itself over the rpc port, object by object, on
//! a stream of its own (never inside a Raft message). Either way every chunk is checked
//! against its CRC and decoded with the codec its manifest names.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use super::manifest::{self, Manifest, SnapshotRef};
use super::store::{self, MAX_CHUNK_BYTES, MAX_MANIFEST_BYTES, SnapshotStore};
use super::Error;
use crate::admin::proto::ReadObjectRequest;
use crate::admin::proto::admin_client::AdminClient;
use crate::config::Config;
use crate::plugins::{PluginKind, Plugins};
use crate::raft::state_machine::{FetchedSnapshot, SnapshotSource};

/// Bytes per message of an object sent to a follower.
pub const PART_BYTES: usize = 256 << 10;

/// The most bytes the object `key` may hold, if it is one a follower may read: a snapshot's
/// manifest or chunk, or a plugin component.
pub fn readable_limit(key: &str, config: &Config) -> Option<u64> {
    if key.contains("..") {
        return None;
    }
    if let Some((_, _, _, is_manifest)) = manifest::parse_key(key) {
        // A chunk is sealed: its codec may make it a little larger than its raw bytes.
        return Some(if is_manifest { MAX_MANIFEST_BYTES } else { 2 * MAX_CHUNK_BYTES as u64 + 4096 });
    }
    let sha = key.strip_prefix(manifest::PLUGINS_DIR)?.strip_prefix('/')?.strip_suffix(".wasm")?;
    (sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit())).then_some(config.plugins.max_component_bytes as u64)
}

/// Fetches snapshots for this node's driver.
pub struct Fetcher {
    store: Arc<SnapshotStore>,
    plugins: Arc<Plugins>,
    /// Every node's rpc address, by node id.
    peers: HashMap<u64, SocketAddr>,
    config: Arc<Config>,
    /// Mutual TLS towards the leader, when on.
    tls: Option<Arc<crate::rpc_tls::RpcTls>>,
}

impl Fetcher {
    /// A fetcher reading `store` (when shared) or the peers' stores through their rpc ports.
    pub fn new(store: Arc<SnapshotStore>, plugins: Arc<Plugins>, peers: HashMap<u64, SocketAddr>, config: Arc<Config>, tls: Option<Arc<crate::rpc_tls::RpcTls>>) -> Fetcher {
        Fetcher { store, plugins, peers, config, tls }
    }

    async fn fetch_snapshot(&self, group: u64, leader: u64, data: &[u8]) -> Result<FetchedSnapshot, Error> {
        let named: SnapshotRef = serde_json::from_slice(data).map_err(|e| Error::Corrupt { key: "snapshot message".into(), why: e.to_string() })?;
        let _permit = self.store.permit().await;
        let source = if self.store.shared() { Source::Store(&self.store) } else { Source::Leader(self.leader(leader).await?) };
        let limit = |key: &str| readable_limit(key, &self.config).ok_or_else(|| Error::Corrupt { key: key.into(), why: "not a snapshot object".into() });
        let manifest_bytes = source.get(&named.key, limit(&named.key)?).await?;
        let manifest: Manifest = store::parse_manifest(&named.key, &manifest_bytes, self.config.snapshot.max_snapshot_bytes)?;
        if manifest.group != group {
            return Err(Error::Corrupt { key: named.key, why: format!("it is group {}'s snapshot, not group {group}'s", manifest.group) });
        }
        let mut components = HashMap::new();
        for sha in &manifest.plugins {
            if self.plugins.resolve_sha256(sha).is_err() {
                let key = manifest::plugin_key(sha);
                let bytes = source.get(&key, limit(&key)?).await?;
                if crate::plugins::registry::sha256_hex(&bytes) != *sha {
                    return Err(Error::Corrupt { key, why: "its sha256 differs from its name".into() });
                }
                components.insert(sha.clone(), bytes.to_vec());
            }
        }
        // The codec that wrote the chunks must be here before they are decoded.
        if self.plugins.resolve_sha256(&manifest.codec.sha256).is_err() {
            let bytes = components.get(&manifest.codec.sha256).ok_or_else(|| Error::Restore(format!("codec {} (sha256 {}) is neither loaded nor stored", manifest.codec.name, manifest.codec.sha256)))?.clone();
            let (plugins, name, version) = (Arc::clone(&self.plugins), manifest.codec.name.clone(), manifest.codec.version.clone());
            tokio::task::spawn_blocking(move || plugins.load(&bytes, Some(PluginKind::Codec), &name, &version))
                .await
                .map_err(|e| Error::Task(e.to_string()))??;
        }
        let mut chunks = Vec::with_capacity(manifest.chunks.len());
        for chunk in &manifest.chunks {
            chunks.push(source.get(&chunk.key, chunk.stored_len).await?);
        }
        let state = store::decode(&self.plugins, &manifest, chunks).await?;
        Ok(FetchedSnapshot { state, offset: named.offset, components })
    }

    async fn leader(&self, leader: u64) -> Result<AdminClient<tonic::transport::Channel>, Error> {
        let addr = self.peers.get(&leader).ok_or_else(|| Error::Restore(format!("node {leader} is not a peer")))?;
        let limit = self.config.plugins.max_component_bytes + (1 << 20);
        let connecting = |e: tonic::transport::Error| Error::Restore(format!("connecting to node {leader} at {addr}: {e}"));
        let channel = crate::rpc_tls::endpoint(self.tls.as_deref(), *addr, Some(leader)).map_err(connecting)?.connect().await.map_err(connecting)?;
        Ok(AdminClient::new(channel).max_decoding_message_size(limit))
    }
}

/// Where the objects come from.
enum Source<'a> {
    Store(&'a SnapshotStore),
    Leader(AdminClient<tonic::transport::Channel>),
}

impl Source<'_> {
    async fn get(&self, key: &str, limit: u64) -> Result<Bytes, Error> {
        match self {
            Source::Store(store) => store.get(key, limit).await,
            Source::Leader(client) => {
                let failed = |e: tonic::Status| Error::Restore(format!("reading {key} from the leader: {}", e.message()));
                let mut stream = client.clone().read_object(ReadObjectRequest { key: key.to_string() }).await.map_err(failed)?.into_inner();
                let mut out = Vec::new();
                while let Some(part) = stream.message().await.map_err(failed)? {
                    out.extend_from_slice(&part.data);
                    if out.len() as u64 > limit {
                        return Err(Error::Corrupt { key: key.into(), why: format!("more than {limit} bytes") });
                    }
                }
                Ok(Bytes::from(out))
            }
        }
    }
}

impl SnapshotSource for Fetcher {
    fn fetch(&self, group: u64, leader: u64, data: Vec<u8>) -> Pin<Box<dyn Future<Output = Result<FetchedSnapshot, String>> + Send>> {
        let fetcher = Fetcher { store: Arc::clone(&self.store), plugins: Arc::clone(&self.plugins), peers: self.peers.clone(), config: Arc::clone(&self.config), tls: self.tls.clone() };
        Box::pin(async move { fetcher.fetch_snapshot(group, leader, &data).await.map_err(|e| e.to_string()) })
    }
}
