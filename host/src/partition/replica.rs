//! A partition replica that is a member of a Raft group. Its log is the Raft log: every Raft
//! entry is one log entry (term and index kept in the entry header), so data reaches the disk
//! once. This module adds what Raft needs on top of the log:
//!
//! - an in-memory table from Raft index to (term, Kafka offsets), so `term()` and the offset of
//!   any entry are known without disk reads, plus a bounded cache of recent entries that serves
//!   replication and apply without reading back what was just written;
//! - the hard state (term, vote, commit) in a small fixed-size file rewritten in place;
//! - the leader's view: offsets are assigned when a leader proposes (entries of one leadership
//!   are contiguous in its log), and sequence checks see in-flight proposals too;
//! - the raft-rs [`Storage`] over all of it.
//!
//! A Raft entry's data is `base offset (i64) | record count (u32) | max timestamp (i64)`
//! followed by the record batches with offsets and leader epoch already written, so every
//! replica stores identical bytes. An entry with empty data is a leader's no-op.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use tokio::sync::mpsc;

use super::batch::{BatchHeader, parse_batches};
use super::producer_state::ProducerStates;
use super::{Appended, Error, Partition, check_sequences, stamp};
use crate::log::{EntryKind, EntryMeta, Offset, PartitionLog, RaftIndex, RecoveryPoint, Term};

/// Bytes before the record batches in a data entry.
pub const ENTRY_PREFIX: usize = 20;

const STATE_FILE: &str = "raft-state";
const STATE_MAGIC: u32 = 0x534c_5253; // "SLRS"
const STATE_SIZE: usize = 32;

/// A leader's proposal on its way to the Raft driver.
#[derive(Debug)]
pub struct Proposal {
    /// The Raft group.
    pub group: u64,
    /// The leadership it was built under; dropped if that has ended.
    pub lease: u64,
    /// The entry's data.
    pub data: Vec<u8>,
}

/// How a replica joins its group.
#[derive(Debug, Clone)]
pub struct ReplicaSetup {
    /// The Raft group id.
    pub group: u64,
    /// Node ids of the group's voters.
    pub voters: Vec<u64>,
    /// Where proposals go.
    pub proposals: mpsc::Sender<Proposal>,
    /// Bytes of recent entries kept in memory.
    pub cache_bytes: usize,
    /// Entries are numbered when written, not by the proposer (the metadata group, whose
    /// entries are proposed from any node and count one offset each).
    pub offsets_on_write: bool,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    term: u64,
    base: i64,
    end: i64,
}

struct LeaderView {
    lease: u64,
    term: u64,
    next_offset: i64,
    /// What was written plus what is in flight.
    producers: ProducerStates,
}

/// The Raft side of a replica's state; lives under the partition lock.
pub(crate) struct RaftLog {
    group: u64,
    voters: Vec<u64>,
    /// Raft index of `slots[0]` (the next index when `slots` is empty).
    first_index: u64,
    /// Term of the entry before `first_index`.
    prev_term: u64,
    slots: VecDeque<Slot>,
    cache: VecDeque<Entry>,
    cache_bytes: usize,
    cache_limit: usize,
    hard_state: HardState,
    state_file: File,
    leader: Option<LeaderView>,
    proposals: mpsc::Sender<Proposal>,
    leases: u64,
    offsets_on_write: bool,
    last_checkpoint: std::time::Instant,
}

/// Encodes a data entry: base offset at bytes 0..8, record count at 8..12, max timestamp at
/// 12..20, then the batches.
pub fn encode_entry(base_offset: i64, record_count: u32, max_timestamp: i64, batches: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(ENTRY_PREFIX + batches.len());
    data.extend_from_slice(&base_offset.to_be_bytes());
    data.extend_from_slice(&record_count.to_be_bytes());
    data.extend_from_slice(&max_timestamp.to_be_bytes());
    data.extend_from_slice(batches);
    data
}

/// Splits a data entry into (base offset, record count, max timestamp, batches).
pub fn decode_entry(data: &[u8]) -> Option<(i64, u32, i64, &[u8])> {
    if data.len() < ENTRY_PREFIX {
        return None;
    }
    let base = i64::from_be_bytes(data[0..8].try_into().ok()?);
    let count = u32::from_be_bytes(data[8..12].try_into().ok()?);
    let max_ts = i64::from_be_bytes(data[12..20].try_into().ok()?);
    Some((base, count, max_ts, &data[ENTRY_PREFIX..]))
}

impl RaftLog {
    fn load(dir: &Path, log: &PartitionLog, setup: ReplicaSetup) -> Result<RaftLog, Error> {
        let io = |source| crate::log::Error::Io { path: dir.join(STATE_FILE), source };
        let existed = dir.join(STATE_FILE).exists();
        let state_file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(dir.join(STATE_FILE)).map_err(io)?;
        if !existed {
            // The file's name must survive a power loss too, or a vote fsynced into it could vanish.
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        let hard_state = read_hard_state(&state_file).map_err(|e| Error::StorageFailed(format!("{}: {e}", dir.join(STATE_FILE).display())))?;
        let mut slots = VecDeque::new();
        let mut first_index = None;
        log.scan_metas(|meta: &EntryMeta| {
            first_index.get_or_insert(meta.index.0);
            slots.push_back(Slot { term: meta.term.0, base: meta.base_offset.0, end: meta.next_offset().0 });
        })?;
        let first_index = first_index.unwrap_or(log.next_index().0);
        let prev_term = 0;
        Ok(RaftLog {
            group: setup.group,
            voters: setup.voters,
            first_index,
            prev_term,
            slots,
            cache: VecDeque::new(),
            cache_bytes: 0,
            cache_limit: setup.cache_bytes,
            hard_state,
            state_file,
            leader: None,
            proposals: setup.proposals,
            leases: 0,
            offsets_on_write: setup.offsets_on_write,
            last_checkpoint: std::time::Instant::now(),
        }
        .forgetting_before(log.log_start_offset().0))
    }

    fn forgetting_before(mut self, log_start: i64) -> RaftLog {
        // Entries retention dropped may still sit in the first segment: the same cut as at run time.
        self.forget_before(log_start);
        self
    }

    fn last_index(&self) -> u64 {
        self.first_index + self.slots.len() as u64 - 1
    }

    fn slot(&self, index: u64) -> Option<Slot> {
        index.checked_sub(self.first_index).and_then(|i| self.slots.get(i as usize).copied())
    }

    /// Validates, stamps and proposes a produce record set (the caller holds the partition lock,
    /// so proposals leave in offset order).
    pub(crate) fn propose(&mut self, records: &[u8], headers: &[BatchHeader], now_ms: i64) -> Result<Appended, Error> {
        let group = self.group;
        let leader = self.leader.as_mut().ok_or(Error::NotLeader)?;
        if let Some(duplicate) = check_sequences(&leader.producers, headers, leader.next_offset, now_ms)? {
            return Ok(Appended { lease: leader.lease, ..duplicate });
        }
        let next = leader.next_offset;
        let epoch = i32::try_from(leader.term).unwrap_or(i32::MAX);
        let stamped = stamp(records, headers, next, epoch)?;
        let data = encode_entry(next, stamped.record_count, stamped.max_timestamp, &stamped.payload);
        match self.proposals.try_send(Proposal { group, lease: leader.lease, data }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(Error::Busy),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Error::Closed),
        }
        let mut at = next;
        for h in headers {
            leader.producers.record(h, at, now_ms);
            at += i64::from(h.offset_count);
        }
        leader.next_offset = stamped.end_offset;
        Ok(Appended { base_offset: next, end_offset: stamped.end_offset, duplicate: false, lease: leader.lease })
    }

    /// Forgets the entries wholly below `log_start` (dropped by retention): Raft sees them as
    /// compacted. A follower that still needs them cannot catch up until snapshots exist.
    pub(crate) fn forget_before(&mut self, log_start: i64) {
        while let Some(front) = self.slots.front().copied() {
            if front.end > log_start || (front.end == log_start && front.base == log_start) {
                break;
            }
            self.slots.pop_front();
            self.prev_term = front.term;
            self.first_index += 1;
        }
        while self.cache.front().is_some_and(|e| e.index < self.first_index) {
            if let Some(e) = self.cache.pop_front() {
                self.cache_bytes -= e.data.len();
            }
        }
    }

    fn cache_push(&mut self, entry: Entry) {
        self.cache_bytes += entry.data.len();
        self.cache.push_back(entry);
        while self.cache_bytes > self.cache_limit && self.cache.len() > 1 {
            if let Some(old) = self.cache.pop_front() {
                self.cache_bytes -= old.data.len();
            }
        }
    }

    fn cache_truncate(&mut self, from: u64) {
        while self.cache.back().is_some_and(|e| e.index >= from) {
            if let Some(e) = self.cache.pop_back() {
                self.cache_bytes -= e.data.len();
            }
        }
    }
}

fn read_hard_state(file: &File) -> std::io::Result<HardState> {
    let mut buf = [0u8; STATE_SIZE];
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(HardState::default());
    }
    file.read_exact_at(&mut buf, 0)?;
    let magic = u32::from_be_bytes(buf[0..4].try_into().expect("4 bytes"));
    let crc = u32::from_be_bytes(buf[28..32].try_into().expect("4 bytes"));
    if magic != STATE_MAGIC || crc32c::crc32c(&buf[0..28]) != crc {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "raft state file is corrupt"));
    }
    let field = |at: usize| u64::from_be_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
    let mut hs = HardState::default();
    hs.term = field(4);
    hs.vote = field(12);
    hs.commit = field(20);
    Ok(hs)
}

fn encode_hard_state(hs: &HardState) -> [u8; STATE_SIZE] {
    let mut buf = [0u8; STATE_SIZE];
    buf[0..4].copy_from_slice(&STATE_MAGIC.to_be_bytes());
    buf[4..12].copy_from_slice(&hs.term.to_be_bytes());
    buf[12..20].copy_from_slice(&hs.vote.to_be_bytes());
    buf[20..28].copy_from_slice(&hs.commit.to_be_bytes());
    let crc = crc32c::crc32c(&buf[0..28]);
    buf[28..32].copy_from_slice(&crc.to_be_bytes());
    buf
}

/// Rebuilds producer state from every batch in the log (after a truncation took entries back).
fn replay_producers(log: &PartitionLog, now_ms: i64) -> Result<ProducerStates, Error> {
    let mut states = ProducerStates::default();
    let end = log.next_offset();
    let mut from = log.log_start_offset();
    while from < end {
        let bytes = log.read(from, end, 4 << 20)?;
        let Ok(headers) = parse_batches(&bytes, u32::MAX) else { break };
        if headers.is_empty() {
            break;
        }
        for h in &headers {
            let base = i64::from_be_bytes(bytes[h.position..h.position + 8].try_into().expect("a batch header has 8 bytes of base offset"));
            states.record(h, base, now_ms);
            from = Offset(base + i64::from(h.offset_count));
        }
    }
    Ok(states)
}

/// What the driver fsyncs for a replica: the log's active segment and the hard state file.
pub struct SyncTarget {
    /// Active segment.
    pub log: Arc<File>,
    /// Where the log stood.
    pub point: RecoveryPoint,
    /// The hard state file.
    pub state: File,
}

impl Partition {
    /// Opens a replica of a Raft group (no flusher: the driver runs group commit).
    pub fn open_replica(topic: &str, index: i32, dir: &Path, config: super::PartitionConfig, setup: ReplicaSetup) -> Result<Arc<Partition>, Error> {
        Partition::open_with(topic, index, dir, config, Some(setup))
    }

    pub(super) fn attach_raft(&self, setup: ReplicaSetup) -> Result<(), Error> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let log = inner.log.as_ref().ok_or(Error::Closed)?;
        let raft = RaftLog::load(&self.dir, log, setup)?;
        let commit = raft.hard_state.commit.min(raft.last_index());
        let hw = raft.slot(commit).map_or(log.log_start_offset().0, |s| s.end);
        inner.raft = Some(raft);
        self.durability.send_modify(|d| d.high_watermark = hw);
        Ok(())
    }

    /// Whether this replica may serve reads and writes (always, on a single node).
    pub fn is_leader(&self) -> bool {
        let inner = self.lock();
        inner.raft.as_ref().is_none_or(|r| r.leader.is_some())
    }

    /// Writes entries Raft handed over (new ones, or a leader's that replace a conflicting
    /// suffix) to the page cache; the driver fsyncs them.
    pub fn write_entries(&self, entries: &[Entry], now_ms: i64) -> Result<(), Error> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let log = inner.log.as_mut().ok_or(Error::Closed)?;
        let raft = inner.raft.as_mut().ok_or(Error::Closed)?;
        let Some(first) = entries.first() else { return Ok(()) };
        if first.index < log.next_index().0 {
            // A new leader overrides our uncommitted suffix.
            log.truncate_from(RaftIndex(first.index))?;
            let keep = first.index.saturating_sub(raft.first_index) as usize;
            raft.slots.truncate(keep);
            raft.cache_truncate(first.index);
            inner.producers = replay_producers(log, now_ms)?;
        }
        for entry in entries {
            let next = log.next_offset().0;
            let meta = match decode_entry(&entry.data) {
                Some((base, count, max_ts, _)) if count > 0 => {
                    let base = if raft.offsets_on_write { next } else { base };
                    if base != next {
                        return Err(Error::StorageFailed(format!("entry {} starts at offset {base}, the log ends at {next}", entry.index)));
                    }
                    EntryMeta { kind: EntryKind::Data, term: Term(entry.term), index: RaftIndex(entry.index), base_offset: Offset(base), record_count: count, max_timestamp: max_ts }
                }
                _ => EntryMeta { kind: EntryKind::Control, term: Term(entry.term), index: RaftIndex(entry.index), base_offset: Offset(next), record_count: 0, max_timestamp: 0 },
            };
            let batches = if meta.kind == EntryKind::Data { &entry.data[ENTRY_PREFIX..] } else { &[][..] };
            log.append(meta, batches, now_ms)?;
            if meta.kind == EntryKind::Data
                && let Ok(headers) = parse_batches(batches, u32::MAX)
            {
                let mut at = meta.base_offset.0;
                for h in &headers {
                    inner.producers.record(h, at, now_ms);
                    at += i64::from(h.offset_count);
                }
            }
            if raft.slots.is_empty() {
                raft.first_index = entry.index;
            }
            raft.slots.push_back(Slot { term: entry.term, base: meta.base_offset.0, end: meta.next_offset().0 });
            raft.cache_push(entry.clone());
        }
        Ok(())
    }

    /// Writes the hard state in place (page cache); the driver fsyncs it when Raft requires.
    pub fn save_hard_state(&self, hs: &HardState) -> Result<(), Error> {
        let mut inner = self.lock();
        let raft = inner.raft.as_mut().ok_or(Error::Closed)?;
        raft.state_file
            .write_all_at(&encode_hard_state(hs), 0)
            .map_err(|source| crate::log::Error::Io { path: self.dir.join(STATE_FILE), source })?;
        raft.hard_state = hs.clone();
        Ok(())
    }

    /// What to fsync for everything written so far.
    pub fn sync_target(&self) -> Result<SyncTarget, Error> {
        let inner = self.lock();
        let log = inner.log.as_ref().ok_or(Error::Closed)?;
        let raft = inner.raft.as_ref().ok_or(Error::Closed)?;
        let (file, point) = log.sync_target();
        let state = raft.state_file.try_clone().map_err(|source| crate::log::Error::Io { path: self.dir.join(STATE_FILE), source })?;
        Ok(SyncTarget { log: file, point, state })
    }

    /// Records that everything before `point` is on disk here (acks=1 on a leader), and
    /// checkpoints when due.
    pub fn persisted(&self, point: &RecoveryPoint) {
        let end = point.next_offset.0;
        self.durability.send_if_modified(|d| {
            let raised = end > d.persisted;
            d.persisted = d.persisted.max(end);
            raised
        });
    }

    /// Writes the recovery checkpoint for a synced `point` if one is due, so a restart scans
    /// only the tail. Blocking (fsyncs); the driver calls it from its persist round.
    pub fn checkpoint_if_due(&self, point: &RecoveryPoint) {
        let (writer, extra) = {
            let mut inner = self.lock();
            let inner = &mut *inner;
            let Some(raft) = inner.raft.as_mut() else { return };
            if raft.last_checkpoint.elapsed() < self.checkpoint_interval {
                return;
            }
            raft.last_checkpoint = std::time::Instant::now();
            let Some(log) = inner.log.as_ref() else { return };
            inner.producers.expire(crate::clock::now_ms(), self.producer_expiration_ms);
            match log.checkpoint_writer(point) {
                Ok(w) => (w, inner.producers.to_bytes()),
                Err(_) => return, // truncated meanwhile: the next round writes one
            }
        };
        let _writing = self.checkpoint_lock.lock().unwrap_or_else(|p| p.into_inner());
        let written = writer.write(&extra).and_then(|()| self.lock().log.as_ref().map_or(Ok(()), |log| log.checkpoint_written(point)));
        match written {
            // A new leader's entries cut the log meanwhile: the next round writes a fresh one.
            Ok(()) | Err(crate::log::Error::StaleRecoveryPoint) => {}
            Err(e) => tracing::warn!(topic = %self.topic, partition = self.index, cause = %e, "checkpoint write failed"),
        }
    }

    /// Raises the high watermark to the end of committed entry `index`.
    pub fn commit_to(&self, index: u64) {
        let end = self.lock().raft.as_ref().and_then(|r| r.slot(index)).map(|s| s.end);
        if let Some(end) = end {
            self.durability.send_if_modified(|d| {
                let raised = end > d.high_watermark;
                d.high_watermark = d.high_watermark.max(end);
                raised
            });
        }
    }

    /// Starts serving writes as leader of `term`: called once everything before the leader's
    /// first entry is applied, so the log end and producer state are exact.
    pub fn become_leader(&self, term: u64) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let (Some(log), Some(raft)) = (inner.log.as_ref(), inner.raft.as_mut()) else { return };
        raft.leases += 1;
        let lease = (term << 20) | (raft.leases & 0xF_FFFF);
        raft.leader = Some(LeaderView { lease, term, next_offset: log.next_offset().0, producers: inner.producers.clone() });
        self.durability.send_modify(|d| d.lease = lease);
    }

    /// Stops serving writes; producers waiting on this leadership are failed.
    pub fn step_down(&self) {
        let mut inner = self.lock();
        if let Some(raft) = inner.raft.as_mut()
            && raft.leader.take().is_some()
        {
            self.durability.send_modify(|d| d.lease = 0);
        }
    }

    /// The leadership proposals must carry to be accepted (0: none).
    pub fn lease(&self) -> u64 {
        self.durability.borrow().lease
    }

    fn raft_storage_error(e: impl std::fmt::Display) -> raft::Error {
        raft::Error::Store(StorageError::Other(Box::new(std::io::Error::other(e.to_string()))))
    }
}

/// raft-rs storage over a replica's log.
pub struct ReplicaStorage(pub Arc<Partition>);

impl Storage for ReplicaStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let inner = self.0.lock();
        let raft = inner.raft.as_ref().ok_or_else(|| Partition::raft_storage_error("not a replica"))?;
        let mut hs = raft.hard_state.clone();
        // The commit index is written lazily; it can never exceed what the log holds.
        hs.commit = hs.commit.min(raft.last_index());
        let mut cs = ConfState::default();
        cs.voters = raft.voters.clone();
        Ok(RaftState::new(hs, cs))
    }

    fn entries(&self, low: u64, high: u64, max_size: impl Into<Option<u64>>, _context: GetEntriesContext) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let inner = self.0.lock();
        let raft = inner.raft.as_ref().ok_or_else(|| Partition::raft_storage_error("not a replica"))?;
        if low < raft.first_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > raft.last_index() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut out = Vec::new();
        let mut size = 0u64;
        let cached_from = raft.cache.front().map_or(u64::MAX, |e| e.index);
        if low >= cached_from {
            for e in raft.cache.iter().skip((low - cached_from) as usize).take((high - low) as usize) {
                size += e.data.len() as u64;
                if !out.is_empty() && size > max_size {
                    break;
                }
                out.push(e.clone());
            }
            return Ok(out);
        }
        let log = inner.log.as_ref().ok_or_else(|| Partition::raft_storage_error("closed"))?;
        let hint = raft.slot(low).map_or(Offset(0), |s| Offset(s.base));
        let limit = usize::try_from(max_size).unwrap_or(usize::MAX);
        let read = log.read_entries(RaftIndex(low), hint, RaftIndex(high), limit).map_err(Partition::raft_storage_error)?;
        for (meta, payload) in read {
            let mut e = Entry::default();
            e.term = meta.term.0;
            e.index = meta.index.0;
            if meta.kind == EntryKind::Data {
                e.data = encode_entry(meta.base_offset.0, meta.record_count, meta.max_timestamp, &payload).into();
            }
            out.push(e);
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let inner = self.0.lock();
        let raft = inner.raft.as_ref().ok_or_else(|| Partition::raft_storage_error("not a replica"))?;
        if idx + 1 == raft.first_index {
            return Ok(raft.prev_term);
        }
        if idx < raft.first_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        raft.slot(idx).map(|s| s.term).ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        let inner = self.0.lock();
        Ok(inner.raft.as_ref().map_or(1, |r| r.first_index))
    }

    fn last_index(&self) -> raft::Result<u64> {
        let inner = self.0.lock();
        Ok(inner.raft.as_ref().map_or(0, |r| r.last_index()))
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        // Snapshots come with a later change; until then a follower catches up from the log.
        Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::FlushPolicy;
    use crate::log::LogConfig;
    use crate::partition::PartitionConfig;
    use crate::partition::batch::tests::batch;

    fn settings(segment_bytes: u64) -> PartitionConfig {
        PartitionConfig {
            log: LogConfig { segment_bytes, segment_ms: 3_600_000, index_interval_bytes: 256, max_entry_bytes: 1 << 20 },
            max_message_bytes: 1 << 20,
            flush_policy: FlushPolicy::OnAck,
            flush_interval: Duration::from_secs(1),
            checkpoint_interval: Duration::from_secs(3600),
            producer_expiration_ms: i64::MAX,
        }
    }

    fn open(dir: &Path, cache_bytes: usize) -> (Arc<Partition>, mpsc::Receiver<Proposal>) {
        let (tx, rx) = mpsc::channel(16);
        let setup = ReplicaSetup { group: 7, voters: vec![1, 2, 3], proposals: tx, cache_bytes, offsets_on_write: false };
        (Partition::open_replica("t", 0, dir, settings(4096), setup).unwrap(), rx)
    }

    /// Entries 1..=n: a leader no-op at 1, then data entries of `records` records each.
    fn entries(n: u64, term: u64, records: i32) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut next = 0i64;
        for index in 1..=n {
            let mut e = Entry::default();
            e.index = index;
            e.term = term;
            if index > 1 {
                let mut b = batch(records, -1, -1, -1);
                crate::partition::batch::assign_offset(&mut b, next, term as i32);
                e.data = encode_entry(next, records as u32, 1_700_000_000_000, &b).into();
                next += i64::from(records);
            }
            out.push(e);
        }
        out
    }

    #[test]
    fn hard_state_round_trips_and_corruption_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(dir.path().join("s")).unwrap();
        assert_eq!(read_hard_state(&file).unwrap(), HardState::default());
        let mut hs = HardState::default();
        hs.term = 9;
        hs.vote = 2;
        hs.commit = 1234;
        file.write_all_at(&encode_hard_state(&hs), 0).unwrap();
        assert_eq!(read_hard_state(&file).unwrap(), hs);
        file.write_all_at(&[0xff], 13).unwrap();
        assert!(read_hard_state(&file).is_err());
    }

    #[test]
    fn storage_serves_written_entries_from_cache_log_and_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let written = entries(60, 2, 3);
        {
            // A tiny cache: most reads go to the segments (4 KiB each, so several).
            let (p, _rx) = open(dir.path(), 300);
            p.write_entries(&written, 0).unwrap();
            let storage = ReplicaStorage(Arc::clone(&p));
            assert_eq!((storage.first_index().unwrap(), storage.last_index().unwrap()), (1, 60));
            for low in [1, 2, 17, 59] {
                let got = storage.entries(low, 61, None, GetEntriesContext::empty(false)).unwrap();
                assert_eq!(got, written[low as usize - 1..], "from {low}");
            }
            assert_eq!(storage.term(0).unwrap(), 0);
            assert_eq!(storage.term(60).unwrap(), 2);
            assert!(storage.term(61).is_err());
            p.close().unwrap();
        }
        let (p, _rx) = open(dir.path(), 1 << 20);
        let storage = ReplicaStorage(p);
        assert_eq!(storage.last_index().unwrap(), 60);
        assert_eq!(storage.entries(1, 61, None, GetEntriesContext::empty(false)).unwrap(), written);
        // max_size bounds the answer but never below one entry.
        assert_eq!(storage.entries(5, 61, Some(1), GetEntriesContext::empty(false)).unwrap().len(), 1);
    }

    #[test]
    fn a_new_leaders_entries_replace_a_conflicting_suffix() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _rx) = open(dir.path(), 1 << 20);
        p.write_entries(&entries(10, 1, 2), 0).unwrap();
        // The new leader (term 3) agrees up to index 6 and has its own entries after.
        let replacement: Vec<Entry> = entries(8, 3, 5).split_off(6).into_iter().map(|mut e| {
            let (_, count, ts, b) = decode_entry(&e.data).unwrap();
            let mut b = b.to_vec();
            crate::partition::batch::assign_offset(&mut b, 10, 3);
            e.data = encode_entry(10, count, ts, &b).into();
            e
        }).collect();
        p.write_entries(&replacement[..1], 0).unwrap();
        let storage = ReplicaStorage(Arc::clone(&p));
        assert_eq!(storage.last_index().unwrap(), 7);
        assert_eq!(storage.term(6).unwrap(), 1);
        assert_eq!(storage.term(7).unwrap(), 3);
        assert_eq!(storage.entries(7, 8, None, GetEntriesContext::empty(false)).unwrap(), replacement[..1]);
        // The offsets continue from entry 6: 5 data entries of 2 records, then 5 records.
        p.commit_to(7);
        assert_eq!(p.high_watermark(), 15);
    }

    #[test]
    fn only_a_serving_leader_proposes_and_it_numbers_the_batches() {
        let dir = tempfile::tempdir().unwrap();
        let (p, mut rx) = open(dir.path(), 1 << 20);
        p.write_entries(&entries(3, 4, 2), 0).unwrap();
        let records = batch(3, 11, 0, 0);
        assert!(matches!(p.append(&records, 0), Err(Error::NotLeader)));
        p.become_leader(5);
        let appended = p.append(&records, 0).unwrap();
        assert_eq!((appended.base_offset, appended.end_offset), (4, 7));
        assert_ne!(appended.lease, 0);
        let proposal = rx.try_recv().unwrap();
        assert_eq!((proposal.group, proposal.lease), (7, appended.lease));
        let (base, count, _, batches) = decode_entry(&proposal.data).unwrap();
        assert_eq!((base, count), (4, 3));
        assert_eq!(i64::from_be_bytes(batches[0..8].try_into().unwrap()), 4);
        assert_eq!(i32::from_be_bytes(batches[12..16].try_into().unwrap()), 5, "leader epoch is the term");
        // A retry while the first is in flight is a duplicate of it, not a second write.
        let retry = p.append(&records, 0).unwrap();
        assert!(retry.duplicate);
        assert_eq!(retry.base_offset, 4);
        p.step_down();
        assert!(matches!(p.append(&batch(1, 11, 0, 3), 0), Err(Error::NotLeader)));
    }

    #[test]
    fn entries_dropped_by_retention_are_compacted_for_raft_also_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let written = entries(60, 2, 3);
        let first_kept = {
            let (p, _rx) = open(dir.path(), 1 << 20);
            p.write_entries(&written, 0).unwrap();
            p.commit_to(60);
            assert!(p.delete_before(150).unwrap() > 0, "whole segments below offset 150 are deleted");
            let storage = ReplicaStorage(Arc::clone(&p));
            let first = storage.first_index().unwrap();
            assert_eq!(first, 52, "entry 52 is the first to start at or after offset 150");
            assert!(matches!(storage.entries(first - 1, 61, None, GetEntriesContext::empty(false)), Err(raft::Error::Store(StorageError::Compacted))));
            assert_eq!(storage.entries(first, 61, None, GetEntriesContext::empty(false)).unwrap(), written[first as usize - 1..]);
            p.close().unwrap();
            first
        };
        let (p, _rx) = open(dir.path(), 1 << 20);
        let storage = ReplicaStorage(p);
        assert_eq!(storage.first_index().unwrap(), first_kept);
        assert_eq!(storage.entries(first_kept, 61, None, GetEntriesContext::empty(false)).unwrap(), written[first_kept as usize - 1..]);
    }
}
