//! A replica's Raft storage: the hard-state file, the index table (Raft index → term and Kafka
//! offsets of every entry in the log), the cache of recent entries, and raft-rs's [`Storage`]
//! over them and the replica's log. The entries themselves live in the partition log, written
//! once ([`crate::partition::replica`] writes them); what lives here is what Raft needs to know
//! about them.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

use super::entry::encode_entry;
use crate::log::fs::{FileHandle, FileSystem, replace_file};
use crate::log::{EntryKind, EntryMeta, Offset, PartitionLog, RaftIndex};
use crate::partition::{Error, Partition};

/// The hard state file: magic, format version, term, vote, commit, crc32c of what precedes it
/// (big-endian). Version 0 had no version field (32 bytes); it is still read.
const STATE_FILE: &str = "raft-state";
const STATE_TMP_FILE: &str = "raft-state.tmp";
const STATE_MAGIC: u32 = 0x534c_5253; // "SLRS"
const STATE_VERSION: u32 = 1;
const STATE_SIZE: usize = 36;
const STATE_SIZE_V0: usize = 32;

/// The point a replica's log stands on: magic, index, term, offset, crc32c of what precedes it
/// (big-endian). Written before a snapshot replaces the log, and before compaction deletes the
/// segment holding the entry before the first one kept.
const POINT_FILE: &str = "raft-snapshot";
const POINT_TMP_FILE: &str = "raft-snapshot.tmp";
const POINT_MAGIC: u32 = 0x534c_5350; // "SLSP"
const POINT_SIZE: usize = 32;

/// Where a replica's log stands: the entries through `index` (of `term`) are in a snapshot or
/// compacted, not in the log; `offset` is the offset after them (an installed snapshot) or
/// the log start (compaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPoint {
    /// The snapshot's last entry.
    pub index: u64,
    /// Its term.
    pub term: u64,
    /// The offset after it.
    pub offset: i64,
}

impl SnapshotPoint {
    fn encode(&self) -> [u8; POINT_SIZE] {
        let mut out = [0u8; POINT_SIZE];
        out[0..4].copy_from_slice(&POINT_MAGIC.to_be_bytes());
        out[4..12].copy_from_slice(&self.index.to_be_bytes());
        out[12..20].copy_from_slice(&self.term.to_be_bytes());
        out[20..28].copy_from_slice(&self.offset.to_be_bytes());
        let crc = crc32c::crc32c(&out[0..28]);
        out[28..32].copy_from_slice(&crc.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<SnapshotPoint> {
        let field = |at: usize| bytes.get(at..at + 8).and_then(|b| b.try_into().ok());
        if bytes.len() != POINT_SIZE || bytes[0..4] != POINT_MAGIC.to_be_bytes() || bytes[28..32] != crc32c::crc32c(&bytes[0..28]).to_be_bytes() {
            return None;
        }
        Some(SnapshotPoint { index: u64::from_be_bytes(field(4)?), term: u64::from_be_bytes(field(12)?), offset: i64::from_be_bytes(field(20)?) })
    }

    /// Reads `dir`'s point, if a snapshot was ever installed there. A damaged file is an error:
    /// without it the log cannot tell what its first entry stands on.
    pub fn read(fs: &dyn FileSystem, dir: &Path) -> Result<Option<SnapshotPoint>, Error> {
        let path = dir.join(POINT_FILE);
        let io = |source| Error::Log(crate::log::Error::Io { path: path.clone(), source });
        let file = match fs.open_read(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let bytes = file.read_to_end(POINT_SIZE as u64).map_err(io)?;
        SnapshotPoint::decode(&bytes).map(Some).ok_or_else(|| io(std::io::Error::new(std::io::ErrorKind::InvalidData, "damaged snapshot point")))
    }

    /// Removes `dir`'s point durably (an install that never reached the state machine).
    pub fn remove(fs: &dyn FileSystem, dir: &Path) -> Result<(), Error> {
        let path = dir.join(POINT_FILE);
        let io = |source| Error::Log(crate::log::Error::Io { path: path.clone(), source });
        match fs.remove_file(&path) {
            Ok(()) => fs.sync_dir(dir).map_err(io),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(e)),
        }
    }

    /// Replaces `dir`'s point durably.
    pub fn write(&self, fs: &dyn FileSystem, dir: &Path) -> Result<(), Error> {
        replace_file(fs, dir, POINT_TMP_FILE, POINT_FILE, &self.encode()).map_err(|source| Error::Log(crate::log::Error::Io { path: dir.join(POINT_FILE), source }))
    }
}

/// The file holding a replica's term, vote and commit index, rewritten in place.
pub struct HardStateFile {
    path: PathBuf,
    file: Arc<dyn FileHandle>,
}

impl HardStateFile {
    /// Opens (creating) `dir`'s hard state file and reads it; a file of an older format is
    /// converted first. What is read is made durable before it is returned: after a kill -9
    /// it may sit only in the page cache, and the replica is about to act on it. The flag says
    /// whether the file was created now.
    pub fn open(fs: &dyn FileSystem, dir: &Path) -> Result<(HardStateFile, HardState, bool), Error> {
        let path = dir.join(STATE_FILE);
        let io = |source| crate::log::Error::Io { path: path.clone(), source };
        let existed = fs.open_read(&path).is_ok();
        let open = || fs.open_write(&path, false);
        let mut file = open().map_err(io)?;
        if !existed {
            // The file's name must survive a power loss too, or a vote fsynced into it could vanish.
            fs.sync_dir(dir).map_err(io)?;
        }
        let hard_state = read_hard_state(&*file).map_err(|e| Error::StorageFailed(format!("{}: {e}", path.display())))?;
        if file.len().map_err(io)? == STATE_SIZE_V0 as u64 {
            // An older format: replaced whole, so a crash leaves one format or the other, never
            // a mix that reads as corrupt; later writes rewrite the current format in place.
            replace_file(fs, dir, STATE_TMP_FILE, STATE_FILE, &encode_hard_state(&hard_state)).map_err(io)?;
            file = open().map_err(io)?;
        }
        file.sync_all().map_err(io)?;
        Ok((HardStateFile { path, file }, hard_state, !existed))
    }

    /// Writes `hs` in place (page cache); [`HardStateFile::sync_handle`] makes it durable.
    pub fn save(&self, hs: &HardState) -> Result<(), Error> {
        self.file.write_all_at(&encode_hard_state(hs), 0).map_err(|source| Error::Log(crate::log::Error::Io { path: self.path.clone(), source }))
    }

    /// Makes what was saved durable.
    pub fn sync(&self) -> Result<(), Error> {
        self.file.sync_all().map_err(|source| Error::Log(crate::log::Error::Io { path: self.path.clone(), source }))
    }

    /// A handle to fsync the file with, off the lock that guards it.
    pub fn sync_handle(&self) -> Arc<dyn FileHandle> {
        Arc::clone(&self.file)
    }
}

fn read_hard_state(file: &dyn FileHandle) -> std::io::Result<HardState> {
    let invalid = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("raft state file: {why}"));
    let len = file.len()?;
    // The fields start after the magic (version 0) or after magic and version.
    let fields_at = match len {
        0 => return Ok(HardState::default()),
        l if l == STATE_SIZE_V0 as u64 => 4,
        l if l == STATE_SIZE as u64 => 8,
        l => return Err(invalid(format!("{l} bytes, neither {STATE_SIZE_V0} nor {STATE_SIZE}"))),
    };
    let mut bytes = [0u8; STATE_SIZE];
    let buf = &mut bytes[..len as usize];
    file.read_exact_at(buf, 0)?;
    let word = |at: usize| u32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
    let crc_at = buf.len() - 4;
    if word(0) != STATE_MAGIC || crc32c::crc32c(&buf[..crc_at]) != word(crc_at) {
        return Err(invalid("corrupt (bad magic or checksum)".into()));
    }
    if fields_at == 8 && word(4) != STATE_VERSION {
        return Err(invalid(format!("format version {} is not {STATE_VERSION}, the one this build reads", word(4))));
    }
    let field = |at: usize| u64::from_be_bytes(buf[fields_at + at..fields_at + at + 8].try_into().expect("8 bytes"));
    Ok(HardState { term: field(0), vote: field(8), commit: field(16), ..Default::default() })
}

fn encode_hard_state(hs: &HardState) -> [u8; STATE_SIZE] {
    let mut buf = [0u8; STATE_SIZE];
    buf[0..4].copy_from_slice(&STATE_MAGIC.to_be_bytes());
    buf[4..8].copy_from_slice(&STATE_VERSION.to_be_bytes());
    buf[8..16].copy_from_slice(&hs.term.to_be_bytes());
    buf[16..24].copy_from_slice(&hs.vote.to_be_bytes());
    buf[24..32].copy_from_slice(&hs.commit.to_be_bytes());
    let crc = crc32c::crc32c(&buf[0..32]);
    buf[32..36].copy_from_slice(&crc.to_be_bytes());
    buf
}

/// One entry of the log as Raft sees it: its term and the Kafka offsets it holds (`base..end`;
/// empty for control entries).
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    /// The entry's term.
    pub term: u64,
    /// Its first offset.
    pub base: i64,
    /// The offset after its last record.
    pub end: i64,
    /// Record bytes of the log through this entry, counted from an arbitrary origin: the
    /// difference between two slots is the record bytes between them (what a waiting fetch
    /// needs to know how much has arrived).
    pub bytes_end: u64,
}

/// Raft index → [`Slot`] of every entry in the log, kept in memory (rebuilt from the segments'
/// entry headers at start).
pub struct IndexTable {
    /// Raft index of `slots[0]` (the next index when `slots` is empty).
    first_index: u64,
    /// Term of the entry before `first_index`.
    prev_term: u64,
    /// `bytes_end` of the entry before `first_index`.
    bytes_before: u64,
    slots: VecDeque<Slot>,
}

impl IndexTable {
    /// Reads the entry headers of `log`, skipping the entries wholly below its log start and
    /// those an installed snapshot (`point`) stands for.
    pub fn load(log: &PartitionLog, point: Option<SnapshotPoint>) -> Result<IndexTable, crate::log::Error> {
        let mut table = IndexTable { first_index: log.next_index().0, prev_term: 0, bytes_before: 0, slots: VecDeque::new() };
        log.scan_metas(|meta: &EntryMeta, payload_len| {
            let record_bytes = if meta.kind == EntryKind::Data { u64::from(payload_len) } else { 0 };
            table.push(meta.index.0, meta.term.0, meta.base_offset.0, meta.next_offset().0, record_bytes);
        })?;
        // Entries retention dropped may still sit in the first segment: the same cut as at run time.
        table.forget_before(log.log_start_offset().0);
        if let Some(point) = point {
            table.forget_through(point);
        }
        Ok(table)
    }

    /// Forgets the entries a snapshot through `point` stands for (the log keeps one entry at
    /// the point itself, so it knows its next index): Raft sees them as compacted, the
    /// snapshot's term as the one before the first.
    fn forget_through(&mut self, point: SnapshotPoint) {
        while self.first_index <= point.index
            && let Some(front) = self.slots.pop_front()
        {
            self.bytes_before = front.bytes_end;
            self.first_index += 1;
        }
        if self.first_index <= point.index {
            self.first_index = point.index + 1;
        }
        if self.first_index == point.index + 1 {
            self.prev_term = point.term;
        }
    }

    /// The first index Raft may read.
    pub fn first_index(&self) -> u64 {
        self.first_index
    }

    /// The last index in the log (`first_index - 1` when empty).
    pub fn last_index(&self) -> u64 {
        self.first_index + self.slots.len() as u64 - 1
    }

    /// Entry `index`, if the table holds it.
    pub fn slot(&self, index: u64) -> Option<Slot> {
        index.checked_sub(self.first_index).and_then(|i| self.slots.get(i as usize).copied())
    }

    /// Whether entry `index` has `term` and holds offsets `base..end`.
    pub fn holds(&self, index: u64, term: u64, base: i64, end: i64) -> bool {
        self.slot(index).is_some_and(|s| s.term == term && s.base <= base && end <= s.end)
    }

    /// The term of entry `index`, as raft-rs asks for it.
    pub fn term(&self, index: u64) -> raft::Result<u64> {
        if index + 1 == self.first_index {
            return Ok(self.prev_term);
        }
        if index < self.first_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.slot(index).map(|s| s.term).ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    /// The offset after entry `prev` when it has `prev_term` (a peer's append builds on it);
    /// `log_end` stands for the end of an empty table. `None` when the table cannot tell.
    pub fn end_of(&self, prev: u64, prev_term: u64, log_end: i64) -> Option<i64> {
        match self.slot(prev) {
            Some(slot) if slot.term == prev_term => Some(slot.end),
            None if prev + 1 == self.first_index && self.prev_term == prev_term => Some(self.slots.front().map_or(log_end, |s| s.base)),
            _ => None,
        }
    }

    /// Records entry `index`, the next one after the last, of `term`, holding offsets
    /// `base..end` in `record_bytes`.
    pub fn push(&mut self, index: u64, term: u64, base: i64, end: i64, record_bytes: u64) {
        if self.slots.is_empty() {
            self.first_index = index;
        }
        let bytes_end = self.slots.back().map_or(self.bytes_before, |s| s.bytes_end) + record_bytes;
        self.slots.push_back(Slot { term, base, end, bytes_end });
    }

    /// Forgets entries from `index` on (a new leader replaced them).
    pub fn truncate_from(&mut self, index: u64) {
        self.slots.truncate(index.saturating_sub(self.first_index) as usize);
    }

    /// Forgets the entries wholly below `log_start` (dropped by retention): Raft sees them as
    /// compacted.
    pub fn forget_before(&mut self, log_start: i64) {
        while let Some(front) = self.slots.front().copied() {
            if front.end > log_start || (front.end == log_start && front.base == log_start) {
                break;
            }
            self.slots.pop_front();
            self.prev_term = front.term;
            self.bytes_before = front.bytes_end;
            self.first_index += 1;
        }
    }
}

/// The newest entries, kept in memory up to a byte budget (at least one), so leaders send
/// recent entries to followers without reading the log.
pub struct EntryCache {
    entries: VecDeque<Entry>,
    bytes: usize,
    limit: usize,
}

impl EntryCache {
    /// An empty cache holding up to `limit` bytes of entry data.
    pub fn new(limit: usize) -> EntryCache {
        EntryCache { entries: VecDeque::new(), bytes: 0, limit }
    }

    /// Adds the next entry, evicting the oldest beyond the budget.
    pub fn push(&mut self, entry: Entry) {
        self.bytes += entry.data.len();
        self.entries.push_back(entry);
        while self.bytes > self.limit && self.entries.len() > 1 {
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= old.data.len();
            }
        }
    }

    /// Drops entries from `index` on.
    pub fn truncate_from(&mut self, index: u64) {
        while self.entries.back().is_some_and(|e| e.index >= index) {
            if let Some(e) = self.entries.pop_back() {
                self.bytes -= e.data.len();
            }
        }
    }

    /// Drops entries below `index`.
    pub fn forget_before(&mut self, index: u64) {
        while self.entries.front().is_some_and(|e| e.index < index) {
            if let Some(e) = self.entries.pop_front() {
                self.bytes -= e.data.len();
            }
        }
    }

    /// Entries `low..high` if the cache holds `low`, up to `max_size` bytes (at least one).
    fn range(&self, low: u64, high: u64, max_size: u64) -> Option<Vec<Entry>> {
        let cached_from = self.entries.front()?.index;
        if low < cached_from {
            return None;
        }
        let mut out = Vec::new();
        let mut size = 0u64;
        for e in self.entries.iter().skip((low - cached_from) as usize).take((high - low) as usize) {
            size += e.data.len() as u64;
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(e.clone());
        }
        Some(out)
    }
}

/// What raft-rs reads of a replica besides the entries: the cluster's voters, the hard state,
/// the index table and the entry cache. Lives under the partition lock.
pub struct RaftStore {
    /// The group's voters.
    pub voters: Vec<u64>,
    /// Term, vote and commit as last saved.
    pub hard_state: HardState,
    /// Where they are saved.
    pub state_file: HardStateFile,
    /// Index → term and offsets.
    pub index: IndexTable,
    /// Recent entries.
    pub cache: EntryCache,
    /// The snapshot installed last, if the log stands on one.
    pub point: Option<SnapshotPoint>,
    /// The newest snapshot this replica can send a follower: its metadata, and its data (what
    /// the follower needs to fetch it).
    pub serving: Option<Snapshot>,
}

impl RaftStore {
    /// Opens the Raft storage of the replica in `dir` whose log is `log`.
    /// A snapshot whose installation a crash interrupted is finished first.
    /// `applied`: where the group's state machine stands, if its state lives outside the log;
    /// a snapshot it never reached was not installed, and its point is void.
    pub fn open(dir: &Path, log: &mut PartitionLog, voters: Vec<u64>, cache_bytes: usize, applied: Option<u64>) -> Result<RaftStore, Error> {
        let (state_file, hard_state, created) = HardStateFile::open(&**log.fs(), dir)?;
        let mut point = SnapshotPoint::read(&**log.fs(), dir)?;
        if let (Some(p), Some(applied)) = (point, applied)
            && applied < p.index
        {
            tracing::warn!(dir = %dir.display(), index = p.index, applied, "a snapshot install did not finish; the log stays as it was");
            SnapshotPoint::remove(&**log.fs(), dir)?;
            point = None;
        }
        if let Some(p) = point
            && log.next_index().0 <= p.index
        {
            log.reset_to(RaftIndex(p.index), crate::log::Term(p.term), Offset(p.offset), crate::clock::now_ms())?;
        }
        let index = IndexTable::load(log, point)?;
        let mut store = RaftStore { voters, hard_state, state_file, index, cache: EntryCache::new(cache_bytes), point, serving: None };
        let last = store.index.last_index();
        if created && store.voters.len() == 1 && last >= store.index.first_index() {
            // A sole voter's log with entries but no Raft state was written without Raft (a
            // single node of an earlier version), which served all of it as committed. Nobody
            // else could ever replace a sole voter's entries, so they are.
            let mut hs = store.hard_state.clone();
            (hs.term, hs.commit) = (store.index.term(last).unwrap_or(0), last);
            store.state_file.save(&hs)?;
            store.state_file.sync()?;
            store.hard_state = hs;
        }
        Ok(store)
    }

    /// The commit index to start from. The saved one is written lazily: it never exceeds what
    /// the log holds, and never falls below what retention already deleted (only committed
    /// entries are ever deleted, and Raft must not think it has to apply them again).
    pub fn commit(&self) -> u64 {
        self.hard_state.commit.clamp(self.index.first_index().saturating_sub(1), self.index.last_index())
    }

    /// Saves `hs` (page cache) and remembers it.
    pub fn save_hard_state(&mut self, hs: &HardState) -> Result<(), Error> {
        self.state_file.save(hs)?;
        self.hard_state = hs.clone();
        Ok(())
    }

    /// Replaces the log with the installed snapshot `point` (its entries are gone; Raft sees
    /// them as compacted): the point first, then the log, then the commit, each durable.
    pub fn install(&mut self, dir: &Path, log: &mut PartitionLog, point: SnapshotPoint) -> Result<(), Error> {
        point.write(&**log.fs(), dir)?;
        log.reset_to(RaftIndex(point.index), crate::log::Term(point.term), Offset(point.offset), crate::clock::now_ms())?;
        self.index = IndexTable { first_index: point.index + 1, prev_term: point.term, bytes_before: self.index.bytes_before, slots: VecDeque::new() };
        self.cache.truncate_from(0);
        let mut hs = self.hard_state.clone();
        hs.commit = hs.commit.max(point.index);
        hs.term = hs.term.max(point.term);
        self.save_hard_state(&hs)?;
        self.state_file.sync()?;
        self.point = Some(point);
        Ok(())
    }

    /// Records, durably, the entry before the first one Raft still reads (compacted by
    /// retention or after a snapshot), with its term: that entry may sit in a segment that is
    /// about to be deleted, and after a restart Raft must still know its term.
    pub fn record_compaction(&mut self, dir: &Path, log: &PartitionLog, log_start: i64) -> Result<(), Error> {
        let index = self.index.first_index().saturating_sub(1);
        if index == 0 || self.point.is_some_and(|p| p.index >= index) {
            return Ok(());
        }
        let point = SnapshotPoint { index, term: self.index.prev_term, offset: log_start };
        point.write(&**log.fs(), dir)?;
        self.point = Some(point);
        Ok(())
    }

    /// The offset after entry `index`, while the log holds it or it is the entry just before
    /// the first (the log's end, `log_end`, when the log holds nothing after it).
    pub fn offset_after(&self, index: u64, log_end: i64) -> Option<i64> {
        if let Some(slot) = self.index.slot(index) {
            return Some(slot.end);
        }
        (index + 1 == self.index.first_index()).then(|| self.index.slot(index + 1).map_or(log_end, |s| s.base))
    }

    /// Forgets what retention dropped below `log_start`.
    pub fn forget_before(&mut self, log_start: i64) {
        self.index.forget_before(log_start);
        self.cache.forget_before(self.index.first_index());
    }

    fn initial_state(&self) -> RaftState {
        let mut hs = self.hard_state.clone();
        hs.commit = self.commit();
        RaftState::new(hs, ConfState { voters: self.voters.clone(), ..Default::default() })
    }

    fn entries(&self, log: Option<&PartitionLog>, low: u64, high: u64, max_size: u64) -> raft::Result<Vec<Entry>> {
        if low < self.index.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.index.last_index() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if let Some(cached) = self.cache.range(low, high, max_size) {
            return Ok(cached);
        }
        let log = log.ok_or_else(|| storage_error("closed"))?;
        let hint = self.index.slot(low).map_or(Offset(0), |s| Offset(s.base));
        let limit = usize::try_from(max_size).unwrap_or(usize::MAX);
        let read = log.read_entries(RaftIndex(low), hint, RaftIndex(high), limit).map_err(storage_error)?;
        Ok(read
            .into_iter()
            .map(|(meta, payload)| {
                let data = match meta.kind {
                    EntryKind::Data => encode_entry(meta.base_offset.0, meta.record_count, meta.max_timestamp, &payload),
                    EntryKind::Control => payload,
                };
                Entry { term: meta.term.0, index: meta.index.0, data: data.into(), ..Default::default() }
            })
            .collect())
    }
}

fn storage_error(e: impl std::fmt::Display) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(std::io::Error::other(e.to_string()))))
}

/// raft-rs storage over a replica.
pub struct ReplicaStorage(pub Arc<Partition>);

impl ReplicaStorage {
    fn read<T>(&self, read: impl FnOnce(&RaftStore, Option<&PartitionLog>) -> raft::Result<T>) -> raft::Result<T> {
        self.0.with_raft_store(read).unwrap_or_else(|| Err(storage_error("not a replica (or closed)")))
    }
}

impl Storage for ReplicaStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.read(|store, _| Ok(store.initial_state()))
    }

    fn entries(&self, low: u64, high: u64, max_size: impl Into<Option<u64>>, _context: GetEntriesContext) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into().unwrap_or(u64::MAX);
        self.read(|store, log| store.entries(log, low, high, max_size))
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.read(|store, _| store.index.term(idx))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.0.with_raft_store(|store, _| store.index.first_index()).unwrap_or(1))
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.0.with_raft_store(|store, _| store.index.last_index()).unwrap_or(0))
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        // The newest snapshot this node took that covers every compacted entry; a follower
        // asking for one before it exists is asked again later by raft-rs.
        self.read(|store, _| match &store.serving {
            Some(s) if s.get_metadata().index + 1 >= store.index.first_index() => Ok(s.clone()),
            _ => Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_file(dir: &Path) -> Arc<dyn FileHandle> {
        crate::log::fs::StdFs.open_write(&dir.join("s"), false).unwrap()
    }

    #[test]
    fn hard_state_round_trips_and_corruption_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let file = state_file(dir.path());
        assert_eq!(read_hard_state(&file).unwrap(), HardState::default());
        let mut hs = HardState::default();
        hs.term = 9;
        hs.vote = 2;
        hs.commit = 1234;
        file.write_all_at(&encode_hard_state(&hs), 0).unwrap();
        assert_eq!(read_hard_state(&file).unwrap(), hs);
        file.write_all_at(&[0xff], 13).unwrap();
        assert!(read_hard_state(&file).is_err());
        // A newer format is refused by name, not misread.
        let mut newer = encode_hard_state(&hs);
        newer[4..8].copy_from_slice(&2u32.to_be_bytes());
        let crc = crc32c::crc32c(&newer[0..32]);
        newer[32..36].copy_from_slice(&crc.to_be_bytes());
        file.write_all_at(&newer, 0).unwrap();
        assert!(read_hard_state(&file).unwrap_err().to_string().contains("format version 2"));
    }

    #[test]
    fn a_version_0_hard_state_file_is_read_and_converted_at_open() {
        let dir = tempfile::tempdir().unwrap();
        // Version 0: magic, term 9, vote 2, commit 1234, crc.
        let mut v0 = Vec::new();
        v0.extend_from_slice(&STATE_MAGIC.to_be_bytes());
        for field in [9u64, 2, 1234] {
            v0.extend_from_slice(&field.to_be_bytes());
        }
        let crc = crc32c::crc32c(&v0);
        v0.extend_from_slice(&crc.to_be_bytes());
        std::fs::write(dir.path().join(STATE_FILE), &v0).unwrap();
        let (file, hs, created) = HardStateFile::open(&crate::log::fs::StdFs, dir.path()).unwrap();
        assert!(!created);
        assert_eq!((hs.term, hs.vote, hs.commit), (9, 2, 1234));
        assert_eq!(std::fs::metadata(dir.path().join(STATE_FILE)).unwrap().len(), STATE_SIZE as u64);
        let mut next = hs.clone();
        next.term = 10;
        file.save(&next).unwrap();
        drop(file);
        assert_eq!(HardStateFile::open(&crate::log::fs::StdFs, dir.path()).unwrap().1, next);
    }

    #[test]
    fn the_index_table_answers_terms_and_offsets_across_truncation_and_retention() {
        let mut table = IndexTable { first_index: 1, prev_term: 0, bytes_before: 0, slots: VecDeque::new() };
        for (i, term) in [(1u64, 1u64), (2, 1), (3, 2), (4, 2)] {
            let base = (i as i64 - 1) * 10;
            table.push(i, term, base, base + 10, 100);
        }
        assert_eq!((table.first_index(), table.last_index()), (1, 4));
        assert!(table.holds(3, 2, 20, 30) && !table.holds(3, 1, 20, 30));
        assert_eq!(table.end_of(2, 1, 0), Some(20));
        assert_eq!(table.end_of(2, 2, 0), None, "a term conflict anchors nothing");
        table.truncate_from(4);
        assert_eq!(table.last_index(), 3);
        table.forget_before(20);
        assert_eq!((table.first_index(), table.term(2).unwrap()), (3, 1));
        assert!(matches!(table.term(1), Err(raft::Error::Store(StorageError::Compacted))));
        assert!(matches!(table.term(4), Err(raft::Error::Store(StorageError::Unavailable))));
        assert_eq!(table.end_of(2, 1, 99), Some(20), "the entry before the first still anchors");
        // Record bytes keep counting up across truncation and retention, even once empty.
        assert_eq!(table.slot(3).unwrap().bytes_end, 300);
        table.push(4, 3, 30, 40, 50);
        assert_eq!(table.slot(4).unwrap().bytes_end, 350);
        table.forget_before(40);
        table.push(5, 3, 40, 41, 7);
        assert_eq!(table.slot(5).unwrap().bytes_end, 357);
    }

    #[test]
    fn the_commit_to_start_from_covers_what_retention_deleted_and_never_passes_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (state_file, mut hard_state, _) = HardStateFile::open(&crate::log::fs::StdFs, dir.path()).unwrap();
        hard_state.commit = 2;
        let mut index = IndexTable { first_index: 1, prev_term: 0, bytes_before: 0, slots: VecDeque::new() };
        for i in 1..=10u64 {
            index.push(i, 1, (i as i64 - 1) * 10, i as i64 * 10, 100);
        }
        // Retention deleted entries 1..=5 after they committed; the saved commit lags (a power
        // loss took its last rewrite).
        index.forget_before(50);
        let mut store = RaftStore { voters: vec![1], hard_state, state_file, index, cache: EntryCache::new(0), point: None, serving: None };
        assert_eq!(store.commit(), 5);
        store.hard_state.commit = 99;
        assert_eq!(store.commit(), 10);
    }

    #[test]
    fn the_entry_cache_keeps_the_newest_entries_within_its_budget() {
        let entry = |index: u64| {
            let mut e = Entry::default();
            e.index = index;
            e.data = vec![0u8; 10].into();
            e
        };
        let mut cache = EntryCache::new(25);
        for i in 1..=4 {
            cache.push(entry(i));
        }
        assert!(cache.range(2, 5, u64::MAX).is_none(), "evicted");
        assert_eq!(cache.range(3, 5, u64::MAX).unwrap().len(), 2);
        assert_eq!(cache.range(3, 5, 5).unwrap().len(), 1, "at least one, then the size limit");
        cache.truncate_from(4);
        assert_eq!(cache.range(3, 5, u64::MAX).unwrap().len(), 1);
        cache.forget_before(4);
        assert!(cache.range(3, 4, u64::MAX).is_none());
    }
}
