//! The object store snapshots and plugin components are kept in, and the snapshot format on it:
//! chunks of at most [`MAX_CHUNK_BYTES`] raw bytes, each sealed by the bound codec plugin and
//! checksummed (CRC32 of the stored bytes), then the manifest. Reading checks every chunk's
//! length and CRC before decoding it, and the decoded length after.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Error;
use super::manifest::{self, ChunkRef, CodecRef, GroupKind, Manifest};
use crate::config::SnapshotConfig;
use crate::plugins::{Params, Plugin, Plugins};

/// The largest raw chunk: one codec call stays well inside a plugin's memory and output limits.
pub const MAX_CHUNK_BYTES: usize = 1 << 20;
/// The largest manifest read (a corrupt or hostile one is refused, not parsed).
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;
/// Where the default store lives in the data dir.
pub const LOCAL_STORE_DIR: &str = "object-store";

/// What a snapshot is of, besides its state.
#[derive(Debug, Clone)]
pub struct Head {
    /// The Raft group.
    pub group: u64,
    /// What it is.
    pub kind: GroupKind,
    /// `topic-partition`.
    pub name: String,
    /// The last entry the state includes.
    pub index: u64,
    /// Its term.
    pub term: u64,
    /// The voters at that index.
    pub voters: Vec<u64>,
    /// Plugin components the state refers to.
    pub plugins: Vec<String>,
    /// The offset after entry `index` in the group's log.
    pub log_offset: i64,
}

/// The object store of this node's cluster.
pub struct SnapshotStore {
    store: Arc<dyn ObjectStore>,
    url: String,
    shared: bool,
    permits: Arc<Semaphore>,
    chunk_bytes: usize,
    max_snapshot_bytes: u64,
}

impl SnapshotStore {
    /// Opens the store `config` names, or `<data_dir>/object-store`.
    pub fn open(config: &SnapshotConfig, data_dir: &Path) -> Result<SnapshotStore, Error> {
        let (store, url, shared): (Arc<dyn ObjectStore>, String, bool) = match config.store.as_deref() {
            None | Some("") => {
                let dir = data_dir.join(LOCAL_STORE_DIR);
                (local(&dir)?, format!("file://{}", dir.display()), false)
            }
            Some(url) if url.starts_with("file://") => (local(Path::new(&url["file://".len()..]))?, url.to_string(), config.shared),
            Some(url) if url.starts_with("memory://") => (Arc::new(object_store::memory::InMemory::new()), url.to_string(), false),
            Some(url) if url.starts_with("s3://") => (s3(url, config)?, url.to_string(), true),
            Some(other) => return Err(Error::Config(format!("snapshot.store {other:?}: expected file://, memory:// or s3://"))),
        };
        Ok(SnapshotStore {
            store,
            url,
            shared: shared || config.shared,
            permits: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
            chunk_bytes: config.chunk_bytes.clamp(1, MAX_CHUNK_BYTES),
            max_snapshot_bytes: config.max_snapshot_bytes,
        })
    }

    /// A store over `store` (tests wrap a real store, e.g. to slow it down).
    pub fn over(store: Arc<dyn ObjectStore>, config: &SnapshotConfig) -> SnapshotStore {
        SnapshotStore {
            store,
            url: "test://".into(),
            shared: config.shared,
            permits: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
            chunk_bytes: config.chunk_bytes.clamp(1, MAX_CHUNK_BYTES),
            max_snapshot_bytes: config.max_snapshot_bytes,
        }
    }

    /// Where it is.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether every node of the cluster sees the same store (a follower then reads a leader's
    /// snapshot from it rather than from the leader).
    pub fn shared(&self) -> bool {
        self.shared
    }

    /// Waits for one of the `snapshot.max-concurrent` transfers.
    pub async fn permit(&self) -> OwnedSemaphorePermit {
        Arc::clone(&self.permits).acquire_owned().await.expect("the semaphore is never closed")
    }

    /// Writes `state` as a snapshot described by `head`, compressed by `codec`: the chunks,
    /// then the manifest. Until the manifest is written nothing of it is visible. A snapshot
    /// written again at the same point replaces the manifest, then the old chunks go.
    pub async fn write(&self, plugins: &Arc<Plugins>, codec: (Arc<Plugin>, Params), head: Head, state: Vec<u8>) -> Result<Manifest, Error> {
        if state.len() as u64 > self.max_snapshot_bytes {
            return Err(Error::TooLarge { bytes: state.len() as u64, limit: self.max_snapshot_bytes });
        }
        let _permit = self.permit().await;
        let (plugin, params) = codec;
        let chunk_bytes = self.chunk_bytes;
        let sealing = Arc::clone(plugins);
        let codec_params = params.clone();
        let codec_plugin = Arc::clone(&plugin);
        let (name, sealed) = tokio::task::spawn_blocking(move || -> Result<_, Error> {
            let name = codec_plugin.codec_name(&codec_params)?;
            let sealed = state
                .chunks(chunk_bytes)
                .map(|raw| Ok((sealing.seal(&codec_plugin, &codec_params, raw)?, raw.len() as u64)))
                .collect::<Result<Vec<_>, Error>>()?;
            Ok((name, sealed))
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))??;
        let replaced = match self.manifest(&manifest::manifest_key(head.group, head.index, head.term)).await {
            Ok(old) => old.chunks,
            Err(_) => Vec::new(),
        };
        let write = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let mut chunks = Vec::with_capacity(sealed.len());
        for (n, (stored, raw_len)) in sealed.into_iter().enumerate() {
            let key = manifest::chunk_key(head.group, head.index, head.term, &write, n);
            chunks.push(ChunkRef { key: key.clone(), stored_len: stored.len() as u64, raw_len, crc32: crc32fast::hash(&stored) });
            self.put(&key, stored).await?;
        }
        let manifest = Manifest {
            format: manifest::FORMAT_VERSION,
            group: head.group,
            kind: head.kind,
            name: head.name,
            index: head.index,
            term: head.term,
            voters: head.voters,
            codec: CodecRef { name, version: plugin.info().version.clone(), sha256: plugin.info().sha256.clone(), params },
            chunks,
            plugins: head.plugins,
            created_ms: crate::clock::now_ms(),
            log_offset: head.log_offset,
        };
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Corrupt { key: manifest.key(), why: e.to_string() })?;
        self.put(&manifest.key(), json).await?;
        for old in replaced {
            // Left behind if this fails: the next start's sweep removes it.
            let _ = self.store.delete(&Key::from(old.key.as_str())).await;
        }
        Ok(manifest)
    }

    /// Reads and checks the snapshot whose manifest is `key`, and decodes its state.
    pub async fn read(&self, plugins: &Arc<Plugins>, key: &str) -> Result<(Manifest, Vec<u8>), Error> {
        let _permit = self.permit().await;
        let manifest = self.manifest(key).await?;
        let mut chunks = Vec::with_capacity(manifest.chunks.len());
        for chunk in &manifest.chunks {
            chunks.push(self.get(&chunk.key, chunk.stored_len).await?);
        }
        let state = decode(plugins, &manifest, chunks).await?;
        Ok((manifest, state))
    }

    /// Reads and checks a manifest.
    pub async fn manifest(&self, key: &str) -> Result<Manifest, Error> {
        let bytes = self.get(key, MAX_MANIFEST_BYTES).await?;
        parse_manifest(key, &bytes, self.max_snapshot_bytes)
    }

    /// An object's bytes, refused beyond `limit` (what its manifest says it holds).
    pub async fn get(&self, key: &str, limit: u64) -> Result<Bytes, Error> {
        let location = Key::from(key);
        let got = self.store.get(&location).await.map_err(|e| Error::store("reading", key, e))?;
        if got.meta.size > limit {
            return Err(Error::Corrupt { key: key.into(), why: format!("{} bytes, expected at most {limit}", got.meta.size) });
        }
        got.bytes().await.map_err(|e| Error::store("reading", key, e))
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), Error> {
        self.store.put(&Key::from(key), PutPayload::from(bytes)).await.map_err(|e| Error::store("writing", key, e))?;
        Ok(())
    }

    /// Stores a plugin component once, under its sha256.
    pub async fn put_plugin(&self, sha256: &str, bytes: &[u8]) -> Result<(), Error> {
        let key = manifest::plugin_key(sha256);
        if self.store.head(&Key::from(key.as_str())).await.is_ok() {
            return Ok(());
        }
        self.put(&key, bytes.to_vec()).await
    }

    /// A plugin component, checked against its sha256.
    pub async fn get_plugin(&self, sha256: &str, limit: u64) -> Result<Vec<u8>, Error> {
        let key = manifest::plugin_key(sha256);
        let bytes = self.get(&key, limit).await?;
        if crate::plugins::registry::sha256_hex(&bytes) != sha256 {
            return Err(Error::Corrupt { key, why: "its sha256 differs from its name".into() });
        }
        Ok(bytes.to_vec())
    }

    /// Every snapshot with a readable manifest (of `group`, or all), oldest first per group.
    /// Unreadable manifests are left out and reported by [`SnapshotStore::manifest`].
    pub async fn list(&self, group: Option<u64>) -> Result<Vec<Manifest>, Error> {
        let mut out = Vec::new();
        for (g, index, term) in self.manifest_ids(group).await? {
            if let Ok(m) = self.manifest(&manifest::manifest_key(g, index, term)).await {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// `(group, index, term)` of every manifest key, sorted.
    async fn manifest_ids(&self, group: Option<u64>) -> Result<Vec<(u64, u64, u64)>, Error> {
        let prefix = group.map_or_else(|| manifest::SNAPSHOTS_DIR.to_string(), manifest::group_dir);
        let objects: Vec<_> = self.store.list(Some(&Key::from(prefix.as_str()))).try_collect().await.map_err(|e| Error::store("listing", &prefix, e))?;
        let mut ids: Vec<_> = objects
            .iter()
            .filter_map(|o| manifest::parse_key(o.location.as_ref()))
            .filter(|&(_, _, _, is_manifest)| is_manifest)
            .map(|(g, i, t, _)| (g, i, t))
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Keeps the newest `keep` snapshots of `group`: each older one loses its manifest first,
    /// then its chunks. Returns how many were deleted.
    pub async fn retain(&self, group: u64, keep: usize) -> Result<usize, Error> {
        let ids = self.manifest_ids(Some(group)).await?;
        let doomed = ids.len().saturating_sub(keep.max(1));
        for &(g, index, term) in &ids[..doomed] {
            let key = manifest::manifest_key(g, index, term);
            self.store.delete(&Key::from(key.as_str())).await.map_err(|e| Error::store("deleting", &key, e))?;
            self.delete_dir(&manifest::snapshot_dir(g, index, term)).await?;
        }
        Ok(doomed)
    }

    /// Deletes chunks no manifest refers to (an upload that died before its manifest, or the
    /// old chunks of a snapshot written again), when older than `grace` (another node may be
    /// uploading them into a shared store). Returns how many objects were deleted.
    pub async fn sweep_orphans(&self, grace: Duration) -> Result<usize, Error> {
        let prefix = manifest::SNAPSHOTS_DIR;
        let objects: Vec<_> = self.store.list(Some(&Key::from(prefix))).try_collect().await.map_err(|e| Error::store("listing", prefix, e))?;
        let (mut referenced, mut unreadable) = (std::collections::HashSet::new(), std::collections::HashSet::new());
        for object in &objects {
            let key = object.location.as_ref();
            let Some((g, i, t, true)) = manifest::parse_key(key) else { continue };
            referenced.insert(key.to_string());
            match self.manifest(key).await {
                Ok(m) => referenced.extend(m.chunks.into_iter().map(|c| c.key)),
                // Whatever keeps it from being read now, its chunks are not for this pass to judge.
                Err(_) => {
                    unreadable.insert((g, i, t));
                }
            }
        }
        let cutoff = crate::clock::now_ms() - i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        let mut deleted = 0;
        for object in objects {
            let Some((g, i, t, _)) = manifest::parse_key(object.location.as_ref()) else { continue };
            if referenced.contains(object.location.as_ref()) || unreadable.contains(&(g, i, t)) || object.last_modified.timestamp_millis() > cutoff {
                continue;
            }
            self.store.delete(&object.location).await.map_err(|e| Error::store("deleting", object.location.as_ref(), e))?;
            deleted += 1;
        }
        Ok(deleted)
    }

    async fn delete_dir(&self, dir: &str) -> Result<(), Error> {
        let objects: Vec<_> = self.store.list(Some(&Key::from(dir))).try_collect().await.map_err(|e| Error::store("listing", dir, e))?;
        for object in objects {
            self.store.delete(&object.location).await.map_err(|e| Error::store("deleting", object.location.as_ref(), e))?;
        }
        Ok(())
    }
}

/// Parses and checks a manifest's bytes.
pub fn parse_manifest(key: &str, bytes: &[u8], max_snapshot_bytes: u64) -> Result<Manifest, Error> {
    let corrupt = |why: String| Error::Corrupt { key: key.into(), why };
    let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| corrupt(format!("unreadable manifest: {e}")))?;
    if manifest.format != manifest::FORMAT_VERSION {
        return Err(corrupt(format!("manifest format {} (this node reads {})", manifest.format, manifest::FORMAT_VERSION)));
    }
    if manifest.key() != key {
        return Err(corrupt(format!("the manifest describes {}", manifest.key())));
    }
    if manifest.chunks.is_empty() && manifest.raw_bytes() > 0 {
        return Err(corrupt("no chunks".into()));
    }
    let dir = manifest::snapshot_dir(manifest.group, manifest.index, manifest.term);
    for chunk in &manifest.chunks {
        if !chunk.key.starts_with(&dir) || chunk.raw_len > MAX_CHUNK_BYTES as u64 {
            return Err(corrupt(format!("chunk {} is outside the snapshot or larger than a chunk may be", chunk.key)));
        }
    }
    if manifest.raw_bytes() > max_snapshot_bytes {
        return Err(Error::TooLarge { bytes: manifest.raw_bytes(), limit: max_snapshot_bytes });
    }
    Ok(manifest)
}

/// Checks every chunk against its manifest entry, then decodes it with the codec that wrote it.
pub async fn decode(plugins: &Arc<Plugins>, manifest: &Manifest, chunks: Vec<Bytes>) -> Result<Vec<u8>, Error> {
    if chunks.len() != manifest.chunks.len() {
        return Err(Error::Corrupt { key: manifest.key(), why: format!("{} chunks, the manifest lists {}", chunks.len(), manifest.chunks.len()) });
    }
    for (chunk, bytes) in manifest.chunks.iter().zip(&chunks) {
        if bytes.len() as u64 != chunk.stored_len {
            return Err(Error::Corrupt { key: chunk.key.clone(), why: format!("{} bytes, the manifest says {}", bytes.len(), chunk.stored_len) });
        }
        if crc32fast::hash(bytes) != chunk.crc32 {
            return Err(Error::Corrupt { key: chunk.key.clone(), why: "CRC32 mismatch".into() });
        }
    }
    let plugins = Arc::clone(plugins);
    let refs = manifest.chunks.clone();
    tokio::task::spawn_blocking(move || {
        let mut state = Vec::with_capacity(refs.iter().map(|c| c.raw_len as usize).sum());
        for (chunk, bytes) in refs.iter().zip(&chunks) {
            let raw = plugins.unseal(bytes).map_err(|e| Error::Corrupt { key: chunk.key.clone(), why: e.to_string() })?;
            if raw.len() as u64 != chunk.raw_len {
                return Err(Error::Corrupt { key: chunk.key.clone(), why: format!("decodes to {} bytes, the manifest says {}", raw.len(), chunk.raw_len) });
            }
            state.extend_from_slice(&raw);
        }
        Ok(state)
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))?
}

fn local(dir: &Path) -> Result<Arc<dyn ObjectStore>, Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Config(format!("creating the snapshot store {}: {e}", dir.display())))?;
    let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
        .map_err(|e| Error::Config(format!("snapshot store {}: {e}", dir.display())))?
        // A deleted snapshot leaves no empty folders behind.
        .with_automatic_cleanup(true);
    Ok(Arc::new(store))
}

#[cfg(feature = "s3")]
fn s3(url: &str, config: &SnapshotConfig) -> Result<Arc<dyn ObjectStore>, Error> {
    let rest = &url["s3://".len()..];
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Some(endpoint) = &config.s3_endpoint {
        builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
    }
    let store = builder.build().map_err(|e| Error::Config(format!("snapshot.store {url}: {e}")))?;
    let store: Arc<dyn ObjectStore> = Arc::new(store);
    Ok(if prefix.trim_matches('/').is_empty() { store } else { Arc::new(object_store::prefix::PrefixStore::new(store, prefix.trim_matches('/'))) })
}

#[cfg(not(feature = "s3"))]
fn s3(url: &str, _config: &SnapshotConfig) -> Result<Arc<dyn ObjectStore>, Error> {
    Err(Error::Config(format!("snapshot.store {url}: this build has no S3 support (build with `--features s3`)")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::plugins::PluginKind;

    struct Fixture {
        _dir: tempfile::TempDir,
        root: std::path::PathBuf,
        plugins: Arc<Plugins>,
        store: SnapshotStore,
    }

    fn fixture(config: SnapshotConfig) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let plugins = Arc::new(Plugins::open(dir.path(), &crate::config::PluginsConfig::default(), Arc::new(Metrics::new(1))).unwrap());
        let store = SnapshotStore::open(&config, dir.path()).unwrap();
        Fixture { root: dir.path().join(LOCAL_STORE_DIR), _dir: dir, plugins, store }
    }

    fn small_chunks() -> SnapshotConfig {
        SnapshotConfig { chunk_bytes: 4096, ..SnapshotConfig::default() }
    }

    fn head(index: u64) -> Head {
        Head { group: 0, kind: GroupKind::Metadata, name: "__cluster_metadata-0".into(), index, term: 2, voters: vec![1, 2, 3], plugins: vec![], log_offset: 0 }
    }

    /// Compressible, and several chunks long.
    fn state(seed: u8) -> Vec<u8> {
        (0..20_000u32).map(|i| (i % 251) as u8 ^ seed).collect()
    }

    fn codec(f: &Fixture, name: &str) -> (Arc<Plugin>, Params) {
        (f.plugins.resolve(PluginKind::Codec, name).unwrap(), Params::new())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn every_codec_round_trips_a_chunked_state_and_the_manifest_says_what_was_written() {
        let f = fixture(small_chunks());
        for (i, name) in ["lz4", "deflate", "gzip", "zstd"].into_iter().enumerate() {
            let m = f.store.write(&f.plugins, codec(&f, name), head(10 + i as u64), state(i as u8)).await.unwrap();
            assert_eq!(m.codec.name, name);
            assert_eq!(m.chunks.len(), 5, "20,000 bytes in 4 KiB chunks");
            assert_eq!(m.raw_bytes(), 20_000);
            assert!(m.stored_bytes() < m.raw_bytes(), "{name} compressed nothing");
            let (read, restored) = f.store.read(&f.plugins, &m.key()).await.unwrap();
            assert_eq!(read, m);
            assert_eq!(restored, state(i as u8), "{name}");
        }
        let listed: Vec<u64> = f.store.list(Some(0)).await.unwrap().iter().map(|m| m.index).collect();
        assert_eq!(listed, [10, 11, 12, 13]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_damaged_snapshot_is_refused_with_the_object_to_blame() {
        let f = fixture(small_chunks());
        let m = f.store.write(&f.plugins, codec(&f, "lz4"), head(7), state(1)).await.unwrap();
        let chunk = |n: usize| f.root.join(&m.chunks[n].key);
        let original = std::fs::read(chunk(2)).unwrap();

        let mut flipped = original.clone();
        flipped[original.len() / 2] ^= 0x10;
        std::fs::write(chunk(2), &flipped).unwrap();
        let e = f.store.read(&f.plugins, &m.key()).await.unwrap_err();
        assert!(e.to_string().contains(&m.chunks[2].key) && e.to_string().contains("CRC32"), "{e}");

        std::fs::write(chunk(2), &original[..original.len() - 3]).unwrap();
        let e = f.store.read(&f.plugins, &m.key()).await.unwrap_err();
        assert!(e.to_string().contains(&m.chunks[2].key), "{e}");

        std::fs::remove_file(chunk(2)).unwrap();
        let e = f.store.read(&f.plugins, &m.key()).await.unwrap_err();
        assert!(e.is_not_found() && e.to_string().contains(&m.chunks[2].key), "{e}");

        // A manifest whose chunks never made it.
        let lonely = f.store.write(&f.plugins, codec(&f, "lz4"), head(8), state(2)).await.unwrap();
        for c in &lonely.chunks {
            std::fs::remove_file(f.root.join(&c.key)).unwrap();
        }
        assert!(f.store.read(&f.plugins, &lonely.key()).await.unwrap_err().is_not_found());

        // A manifest that is not one, or describes another snapshot.
        std::fs::write(f.root.join(lonely.key()), b"{\"format\": 1").unwrap();
        assert!(f.store.manifest(&lonely.key()).await.unwrap_err().to_string().contains("unreadable manifest"));
        std::fs::write(f.root.join(lonely.key()), serde_json::to_vec(&m).unwrap()).unwrap();
        assert!(f.store.manifest(&lonely.key()).await.unwrap_err().to_string().contains("describes"));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_newest_snapshots_are_kept_and_unfinished_uploads_are_swept() {
        let f = fixture(small_chunks());
        for index in 1..=5 {
            f.store.write(&f.plugins, codec(&f, "lz4"), head(index), state(index as u8)).await.unwrap();
        }
        assert_eq!(f.store.retain(0, 3).await.unwrap(), 2);
        let kept: Vec<u64> = f.store.list(Some(0)).await.unwrap().iter().map(|m| m.index).collect();
        assert_eq!(kept, [3, 4, 5]);
        assert!(!f.root.join(snapshot_dir_of(1)).exists() && !f.root.join(snapshot_dir_of(2)).exists(), "old chunks are gone too");

        // An upload that died before its manifest: chunks only.
        let dead = f.store.write(&f.plugins, codec(&f, "lz4"), head(6), state(6)).await.unwrap();
        std::fs::remove_file(f.root.join(dead.key())).unwrap();
        assert_eq!(f.store.list(Some(0)).await.unwrap().len(), 3, "a snapshot without a manifest does not exist");
        assert_eq!(f.store.sweep_orphans(Duration::from_secs(3600)).await.unwrap(), 0, "young chunks may still be uploading");
        assert_eq!(f.store.sweep_orphans(Duration::ZERO).await.unwrap(), dead.chunks.len());
        for index in 3..=5 {
            f.store.read(&f.plugins, &manifest::manifest_key(0, index, 2)).await.unwrap();
        }

        // Written again at the same point (a refreshed descriptor): the new manifest names new
        // chunks, and the old ones go.
        let first = f.store.list(Some(0)).await.unwrap().pop().unwrap();
        let again = f.store.write(&f.plugins, codec(&f, "lz4"), head(5), state(9)).await.unwrap();
        assert_eq!(again.key(), first.key());
        assert!(first.chunks.iter().all(|c| !f.root.join(&c.key).exists()), "the replaced chunks are gone");
        assert_eq!(f.store.read(&f.plugins, &again.key()).await.unwrap().1, state(9));
        // Chunks a manifest no longer names (a rewrite that died before deleting them) are
        // swept; the ones it names are not.
        let stray = f.root.join(manifest::chunk_key(0, 5, 2, "deadbeef0000", 0));
        std::fs::write(&stray, b"stray").unwrap();
        assert_eq!(f.store.sweep_orphans(Duration::ZERO).await.unwrap(), 1);
        assert!(!stray.exists());
        assert_eq!(f.store.read(&f.plugins, &again.key()).await.unwrap().1, state(9));
    }

    fn snapshot_dir_of(index: u64) -> String {
        manifest::snapshot_dir(0, index, 2)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn transfers_beyond_max_concurrent_wait_for_a_slow_store() {
        let config = SnapshotConfig { max_concurrent: 2, ..small_chunks() };
        let f = fixture(config.clone());
        let slow = object_store::throttle::ThrottledStore::new(
            object_store::memory::InMemory::new(),
            object_store::throttle::ThrottleConfig { wait_put_per_call: Duration::from_millis(20), ..Default::default() },
        );
        let store = Arc::new(SnapshotStore::over(Arc::new(slow), &config));
        let writers: Vec<_> = (0..6u64)
            .map(|i| {
                let (store, plugins, codec) = (Arc::clone(&store), Arc::clone(&f.plugins), codec(&f, "lz4"));
                tokio::spawn(async move {
                    let mut h = head(i + 1);
                    h.group = i;
                    store.write(&plugins, codec, h, state(1)).await.unwrap();
                })
            })
            .collect();
        // Sample while they run: never more than max-concurrent permits out.
        let mut seen = 0;
        while writers.iter().any(|w| !w.is_finished()) {
            seen = seen.max(config.max_concurrent - store.permits.available_permits());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for w in writers {
            w.await.unwrap();
        }
        assert_eq!(seen, 2, "two transfers ran at once, and no more");
        assert_eq!(store.list(None).await.unwrap().len(), 6);
    }
}
