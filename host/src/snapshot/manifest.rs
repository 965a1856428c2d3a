//! A snapshot's manifest and the keys of its objects. The manifest is written last: a snapshot
//! whose manifest is missing does not exist.
//!
//! ```text
//! plugins/<sha256>.wasm
//! snapshots/<group>/<index:020>-<term:010>/chunk-<n:06>
//! snapshots/<group>/<index:020>-<term:010>/manifest.json
//! ```

use serde::{Deserialize, Serialize};

/// The manifest format this node writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Where every group's snapshots live.
pub const SNAPSHOTS_DIR: &str = "snapshots";
/// Where plugin components live, by sha256.
pub const PLUGINS_DIR: &str = "plugins";
const MANIFEST_FILE: &str = "manifest.json";

/// Which state machine a snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupKind {
    /// The metadata group's whole state.
    Metadata,
    /// A `__consumer_offsets` partition's latest committed offsets.
    Offsets,
    /// A data partition's descriptor (no records).
    Partition,
}

impl GroupKind {
    /// The label metrics and tables use.
    pub fn name(self) -> &'static str {
        match self {
            GroupKind::Metadata => "metadata",
            GroupKind::Offsets => "offsets",
            GroupKind::Partition => "partition",
        }
    }
}

/// The codec that compressed every chunk (each chunk also names it in its own header, so the
/// exact version decodes it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodecRef {
    /// The codec's name.
    pub name: String,
    /// The plugin version it was loaded as.
    #[serde(default)]
    pub version: String,
    /// Its component's sha256.
    pub sha256: String,
    /// The parameters it was bound with.
    pub params: Vec<(String, String)>,
}

/// One stored chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// Its object key, relative to the cluster's prefix.
    pub key: String,
    /// Bytes as stored (compressed).
    pub stored_len: u64,
    /// Bytes once decoded.
    pub raw_len: u64,
    /// CRC32 (IEEE) of the stored bytes.
    pub crc32: u32,
}

/// Describes one snapshot of one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT_VERSION`] when written.
    pub format: u32,
    /// The Raft group.
    pub group: u64,
    /// What the group is.
    pub kind: GroupKind,
    /// `topic-partition` of the group (`__cluster_metadata-0` for the metadata group).
    pub name: String,
    /// The last entry the state includes.
    pub index: u64,
    /// That entry's term.
    pub term: u64,
    /// The group's voters at that index.
    pub voters: Vec<u64>,
    /// The codec of every chunk.
    pub codec: CodecRef,
    /// The chunks, in order.
    pub chunks: Vec<ChunkRef>,
    /// Plugin components (sha256) the state refers to, stored under `plugins/`.
    #[serde(default)]
    pub plugins: Vec<String>,
    /// When it was written (ms since the epoch).
    pub created_ms: i64,
    /// The offset after the snapshot's entry in the group's log (where a follower that
    /// installs it continues).
    #[serde(default)]
    pub log_offset: i64,
}

impl Manifest {
    /// Bytes of the state once decoded.
    pub fn raw_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.raw_len).sum()
    }

    /// Bytes as stored.
    pub fn stored_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.stored_len).sum()
    }

    /// Its key.
    pub fn key(&self) -> String {
        manifest_key(self.group, self.index, self.term)
    }
}

/// The folder of snapshot `index`/`term` of `group`.
pub fn snapshot_dir(group: u64, index: u64, term: u64) -> String {
    format!("{SNAPSHOTS_DIR}/{group}/{index:020}-{term:010}")
}

/// The folder of every snapshot of `group`.
pub fn group_dir(group: u64) -> String {
    format!("{SNAPSHOTS_DIR}/{group}")
}

/// The key of a snapshot's manifest.
pub fn manifest_key(group: u64, index: u64, term: u64) -> String {
    format!("{}/{MANIFEST_FILE}", snapshot_dir(group, index, term))
}

/// The key of chunk `n` of a snapshot written by write `write` (unique per write: a snapshot
/// written again at the same point, a data partition's refreshed descriptor, never overwrites
/// the chunks its previous manifest names).
pub fn chunk_key(group: u64, index: u64, term: u64, write: &str, n: usize) -> String {
    format!("{}/chunk-{write}-{n:06}", snapshot_dir(group, index, term))
}

/// What a Raft snapshot message carries: which snapshot to fetch, not the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRef {
    /// The manifest's key.
    pub key: String,
    /// The offset after the snapshot's entry in the group's log.
    pub offset: i64,
}

/// The key of a plugin component.
pub fn plugin_key(sha256: &str) -> String {
    format!("{PLUGINS_DIR}/{sha256}.wasm")
}

/// `(group, index, term, is_manifest)` of a key under `snapshots/`, if it is one of ours.
pub fn parse_key(key: &str) -> Option<(u64, u64, u64, bool)> {
    let mut parts = key.strip_prefix(SNAPSHOTS_DIR)?.strip_prefix('/')?.split('/');
    let group = parts.next()?.parse().ok()?;
    let (index, term) = parts.next()?.split_once('-')?;
    let file = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    Some((group, index.parse().ok()?, term.parse().ok()?, file == MANIFEST_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_index_and_parse_back() {
        assert_eq!(manifest_key(3, 42, 7), "snapshots/3/00000000000000000042-0000000007/manifest.json");
        assert!(manifest_key(3, 9, 1) < manifest_key(3, 10, 1), "zero padding keeps listing order = index order");
        assert_eq!(parse_key(&manifest_key(3, 42, 7)), Some((3, 42, 7, true)));
        assert_eq!(parse_key(&chunk_key(3, 42, 7, "a1b2", 5)), Some((3, 42, 7, false)));
        assert_eq!(parse_key("snapshots/x/1-1/manifest.json"), None);
        assert_eq!(parse_key("plugins/ab.wasm"), None);
    }
}
