//! A partition replica that is a member of a Raft group. Its log is the Raft log: every Raft
//! entry is one log entry (term and index kept in the entry header), so data reaches the disk
//! once. This module writes Raft's entries into the log and keeps Raft's storage
//! ([`crate::raft::storage`]: index table, entry cache, hard state) in step with it under the
//! partition lock; and it holds the leader's view: offsets are assigned when a leader proposes
//! (entries of one leadership are contiguous in its log), and sequence checks see in-flight
//! proposals too.
//!
//! Entries are encoded by [`crate::raft::entry`]: record batches with offsets and leader epoch
//! already written, so every replica stores identical bytes; a leader's no-op; or a new log
//! start chosen by the leader's retention policy, applied by every replica at the same index.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use raft::prelude::{Entry, HardState};
use tokio::sync::mpsc;

use super::batch::{BatchHeader, parse_batches};
use super::descriptor::Descriptor;
use super::kept_state::KeptState;
use super::producer_state::ProducerStates;
use super::{Appended, Error, Partition, check_sequences, stamp};
use crate::config::FlushPolicy;
use crate::log::fs::FileHandle;
use crate::log::{EntryKind, EntryMeta, Offset, PartitionLog, RaftIndex, RecoveryPoint, Term};
use crate::raft::storage::{RaftStore, SnapshotPoint};

pub use crate::raft::entry::{ENTRY_PREFIX, decode_entry, encode_entry};
use crate::raft::entry::{decode_log_start, encode_log_start};

/// A lease is `term << LEASE_TERM_SHIFT | leaderships served in this process`.
pub const LEASE_TERM_SHIFT: u32 = 20;

/// A leader's proposal on its way to the Raft driver.
#[derive(Debug)]
pub struct Proposal {
    /// The Raft group.
    pub group: u64,
    /// The leadership it was built under; dropped if that has ended.
    pub lease: u64,
    /// The entry's data.
    pub data: Vec<u8>,
    /// Told the entry's Raft index once raft-rs has it (one per write merged into the entry).
    pub placements: Vec<super::Placement>,
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
    /// Where the group's state machine stands, if its state lives outside the log (the
    /// metadata group, the offsets topic): a snapshot whose install the state never reached is
    /// void.
    pub applied: Option<u64>,
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
    /// What raft-rs reads.
    store: RaftStore,
    leader: Option<LeaderView>,
    proposals: mpsc::Sender<Proposal>,
    leases: u64,
    offsets_on_write: bool,
    last_checkpoint: std::time::Instant,
    /// After a truncation: the producer state being rebuilt, until it is done.
    rebuild: Option<Rebuild>,
}

impl RaftLog {
    fn load(dir: &Path, log: &mut PartitionLog, setup: ReplicaSetup) -> Result<RaftLog, Error> {
        let store = RaftStore::open(dir, log, setup.voters, setup.cache_bytes, setup.applied)?;
        Ok(RaftLog {
            group: setup.group,
            store,
            leader: None,
            proposals: setup.proposals,
            leases: 0,
            offsets_on_write: setup.offsets_on_write,
            last_checkpoint: std::time::Instant::now(),
            rebuild: None,
        })
    }

    /// Makes the saved hard state durable (at close: the commit index is saved lazily).
    pub(crate) fn sync_hard_state(&self) -> Result<(), Error> {
        self.store.state_file.sync()
    }

    /// Whether entry `index` has `term` and holds offsets `base..end`.
    pub(crate) fn holds(&self, index: u64, term: u64, base: i64, end: i64) -> bool {
        self.store.index.holds(index, term, base, end)
    }

    /// Validates, stamps and proposes a produce record set (the caller holds the partition lock,
    /// so proposals leave in offset order).
    pub(crate) fn propose(&mut self, records: &[u8], headers: &[BatchHeader], now_ms: i64, max_entry_bytes: u32) -> Result<Appended, Error> {
        let group = self.group;
        let leader = self.leader.as_mut().ok_or(Error::NotLeader)?;
        if let Some(duplicate) = check_sequences(&leader.producers, headers, leader.next_offset, now_ms)? {
            return Ok(Appended { lease: leader.lease, ..duplicate });
        }
        let next = leader.next_offset;
        let epoch = i32::try_from(leader.term).unwrap_or(i32::MAX);
        let stamped = stamp(records, headers, next, epoch)?;
        // Every replica would refuse to log it (and stop): refuse it here instead.
        let size = stamped.entry.len() - ENTRY_PREFIX;
        if size > max_entry_bytes as usize {
            return Err(Error::Log(crate::log::Error::EntryTooLarge { size, max: max_entry_bytes }));
        }
        let data = stamped.entry;
        let placement = super::Placement::default();
        hand_over(&self.proposals, Proposal { group, lease: leader.lease, data, placements: vec![placement.clone()] })?;
        let mut at = next;
        for h in headers {
            leader.producers.record(h, at, now_ms);
            at += i64::from(h.offset_count);
        }
        leader.next_offset = stamped.end_offset;
        Ok(Appended { base_offset: next, end_offset: stamped.end_offset, duplicate: false, lease: leader.lease, placement })
    }

    /// Proposes that the log start at `offset` (the leader's retention decision). A follower
    /// that still lacks entries below it catches up through a snapshot of the partition.
    pub(crate) fn propose_log_start(&mut self, offset: i64) -> Result<(), Error> {
        let leader = self.leader.as_ref().ok_or(Error::NotLeader)?;
        hand_over(&self.proposals, Proposal { group: self.group, lease: leader.lease, data: encode_log_start(offset), placements: Vec::new() })
    }

    /// Forgets the entries wholly below `log_start` (dropped by retention): Raft sees them as
    /// compacted; a follower that still needs them gets a snapshot.
    pub(crate) fn forget_before(&mut self, log_start: i64) {
        self.store.forget_before(log_start);
    }

    /// Makes the compacted prefix durable as the point the log stands on.
    pub(crate) fn record_compaction(&mut self, dir: &Path, log: &PartitionLog, log_start: i64) -> Result<(), Error> {
        self.store.record_compaction(dir, log, log_start)
    }
}

fn hand_over(proposals: &mpsc::Sender<Proposal>, proposal: Proposal) -> Result<(), Error> {
    proposals.try_send(proposal).map_err(|e| match e {
        mpsc::error::TrySendError::Full(_) => Error::Busy,
        mpsc::error::TrySendError::Closed(_) => Error::Closed,
    })
}

/// Bytes of log a producer-state rebuild reads per round of the Raft driver, so a truncation
/// never stalls the other groups of the node for long.
pub const REBUILD_BYTES_PER_ROUND: usize = 1 << 20;

/// Producer state being rebuilt after a truncation took entries back: from the newest
/// checkpoint (which a truncation never leaves above the cut; the log start when there is none)
/// through the batches up to the cut, a bounded read at a time. Batches written after the cut
/// meanwhile wait in `since`. A replica does not start leading before it is done.
pub(crate) struct Rebuild {
    states: ProducerStates,
    next: Offset,
    upto: Offset,
    since: Vec<(BatchHeader, i64, i64)>,
}

impl Rebuild {
    /// Starts rebuilding after a truncation of `log`, whose producer state was `producers`.
    fn start(log: &PartitionLog, producers: &ProducerStates) -> Result<Rebuild, Error> {
        // Without a checkpoint: from the log start, onto the producers whose batches retention
        // (or a snapshot that replaced the log) already took: their retries are still known.
        let from_start = || (producers.before(log.log_start_offset().0), log.log_start_offset());
        let (states, next) = match log.checkpoint()? {
            Some((at, bytes)) => match ProducerStates::from_bytes(&bytes) {
                Ok(states) => (states, at),
                Err(_) => from_start(),
            },
            None => from_start(),
        };
        Ok(Rebuild { states, next, upto: log.next_offset(), since: Vec::new() })
    }
}

/// What the driver fsyncs for a replica: the log's active segment and the hard state file.
pub struct SyncTarget {
    /// Active segment.
    pub log: Arc<dyn FileHandle>,
    /// Where the log stood.
    pub point: RecoveryPoint,
    /// The hard state file.
    pub state: Arc<dyn FileHandle>,
    /// Producer state exactly at `point`, when a checkpoint is due: read under the same lock as
    /// the point, so a checkpoint never vouches for a batch the synced log lacks.
    pub checkpoint: Option<Vec<u8>>,
}

impl Partition {
    /// Opens (recovering) or creates a replica of a Raft group in `dir`.
    pub fn open_replica(topic: &str, index: i32, dir: &Path, config: super::PartitionConfig, setup: ReplicaSetup) -> Result<Arc<Partition>, Error> {
        Partition::open_with(topic, index, dir, config, setup)
    }

    pub(super) fn attach_raft(&self, setup: ReplicaSetup) -> Result<(), Error> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let log = inner.log.as_mut().ok_or(Error::Closed)?;
        let raft = RaftLog::load(&self.dir, log, setup)?;
        let commit = raft.store.commit();
        let committed = raft.store.index.slot(commit);
        let hw = committed.map_or(log.log_start_offset().0, |s| s.end);
        inner.raft = Some(raft);
        self.durability.send_modify(|d| {
            d.high_watermark = hw;
            d.committed_bytes = committed.map_or(0, |s| s.bytes_end);
        });
        Ok(())
    }

    /// Whether this replica leads and serves reads and writes.
    pub fn is_leader(&self) -> bool {
        let inner = self.lock();
        inner.raft.as_ref().is_some_and(|r| r.leader.is_some())
    }

    /// Write caching (`flush-policy = interval`): the fsync period, if this replica acknowledges
    /// entries once they are in the page cache. Like Kafka's default, a power loss can take
    /// back acknowledged writes; a process crash cannot.
    pub fn write_caching(&self) -> Option<Duration> {
        (self.policy == FlushPolicy::Interval).then_some(self.flush_interval)
    }

    /// Write caching: everything written so far counts as persisted (acks=1 on a leader).
    pub fn written(&self) {
        let inner = self.lock();
        let Some(end) = inner.log.as_ref().map(|log| log.next_offset().0) else { return };
        self.raise_persisted(end);
    }

    /// Raises what acks=1 waits for (the caller holds the partition lock, so no truncation
    /// lowers it in between).
    fn raise_persisted(&self, end: i64) {
        self.durability.send_if_modified(|d| {
            let raised = end > d.persisted;
            d.persisted = d.persisted.max(end);
            raised
        });
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
            raft.store.index.truncate_from(first.index);
            // What was fsynced of the cut suffix is gone: acks=1 must wait for the new bytes.
            let cut = log.next_offset().0;
            self.durability.send_if_modified(|d| {
                let lowered = d.persisted > cut;
                d.persisted = d.persisted.min(cut);
                lowered
            });
            raft.store.cache.truncate_from(first.index);
            // Replaces a rebuild still running: the new one reads up to the new cut.
            raft.rebuild = Some(Rebuild::start(log, &inner.producers)?);
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
            let batches = match meta.kind {
                EntryKind::Data => &entry.data[ENTRY_PREFIX..],
                // A log-start entry is kept as it is: a follower may need it from this log later.
                EntryKind::Control if decode_log_start(&entry.data).is_some() => &entry.data[..],
                EntryKind::Control => &[][..],
            };
            log.append(meta, batches, now_ms)?;
            if meta.kind == EntryKind::Data
                && let Ok(headers) = parse_batches(batches, u32::MAX)
            {
                let mut at = meta.base_offset.0;
                for h in &headers {
                    match raft.rebuild.as_mut() {
                        Some(rebuild) => rebuild.since.push((*h, at, now_ms)),
                        None => inner.producers.record(h, at, now_ms),
                    }
                    at += i64::from(h.offset_count);
                }
            }
            let record_bytes = if meta.kind == EntryKind::Data { batches.len() as u64 } else { 0 };
            raft.store.index.push(entry.index, entry.term, meta.base_offset.0, meta.next_offset().0, record_bytes);
            raft.store.cache.push(entry.clone());
        }
        Ok(())
    }

    /// Checks that the data entries of a peer's append continue each other's offsets and, when
    /// this log holds the entry they build on (`prev` of `prev_term`, as the leader's log does),
    /// this log after it; an entry the log would refuse must never reach it, or the node would
    /// stop. (Entries raft-rs accepted but this log has not written yet anchor nothing.)
    pub fn check_offsets(&self, prev: u64, prev_term: u64, entries: &[Entry]) -> Result<(), String> {
        let inner = self.lock();
        let (Some(log), Some(raft)) = (inner.log.as_ref(), inner.raft.as_ref()) else { return Ok(()) };
        if raft.offsets_on_write {
            return Ok(()); // entries are numbered when written
        }
        let mut expected = raft.store.index.end_of(prev, prev_term, log.next_offset().0);
        for e in entries {
            let Some((base, count, _, _)) = decode_entry(&e.data).filter(|&(_, count, _, _)| count > 0) else { continue };
            let end = base.checked_add(i64::from(count)).filter(|_| base >= 0).ok_or_else(|| format!("entry {} has offsets {base}+{count}", e.index))?;
            if let Some(at) = expected
                && at != base
            {
                return Err(format!("entry {} starts at offset {base}, not at {at}", e.index));
            }
            expected = Some(end);
        }
        Ok(())
    }

    /// Writes the hard state in place (page cache); the driver fsyncs it when Raft requires.
    pub fn save_hard_state(&self, hs: &HardState) -> Result<(), Error> {
        let mut inner = self.lock();
        let raft = inner.raft.as_mut().ok_or(Error::Closed)?;
        raft.store.save_hard_state(hs)
    }

    /// What to fsync for everything written so far, with the producer state at that point
    /// when a checkpoint is due.
    pub fn sync_target(&self) -> Result<SyncTarget, Error> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let log = inner.log.as_ref().ok_or(Error::Closed)?;
        let raft = inner.raft.as_mut().ok_or(Error::Closed)?;
        let (file, point) = log.sync_target();
        let state = raft.store.state_file.sync_handle();
        // While producer state is rebuilt there is none to vouch for the point with.
        let checkpoint = (raft.rebuild.is_none() && raft.last_checkpoint.elapsed() >= self.checkpoint_interval).then(|| {
            raft.last_checkpoint = std::time::Instant::now();
            let now = crate::clock::now_ms();
            inner.producers.expire(now, self.producer_expiration_ms);
            if let Some(leader) = raft.leader.as_mut() {
                // The leader's view is a copy: it expires by the same rule, on the same rounds.
                leader.producers.expire(now, self.producer_expiration_ms);
            }
            inner.producers.to_bytes()
        });
        Ok(SyncTarget { log: file, point, state, checkpoint })
    }

    /// Records that everything before `point` is on disk here (acks=1 on a leader). A point
    /// taken before a truncation says nothing about the log that replaced the cut suffix.
    pub fn persisted(&self, point: &RecoveryPoint) {
        let inner = self.lock();
        if inner.log.as_ref().is_none_or(|log| log.generation() != point.generation()) {
            return;
        }
        self.raise_persisted(point.next_offset.0);
    }

    /// Writes the recovery checkpoint for a synced `point` with the producer state captured
    /// with it ([`SyncTarget::checkpoint`]), so a restart scans only the tail. Blocking (fsyncs);
    /// the driver calls it from its persist round.
    pub fn write_checkpoint(&self, point: &RecoveryPoint, producers: &[u8]) {
        let writer = match self.lock().log.as_ref().map(|log| log.checkpoint_writer(point)) {
            Some(Ok(writer)) => writer,
            // Closed, or truncated meanwhile: the next due round writes a fresh one.
            None | Some(Err(_)) => return,
        };
        let _writing = self.checkpoint_lock.lock().unwrap_or_else(|p| p.into_inner());
        // After `close` wrote the final checkpoint, an older one must not replace it.
        if self.closing.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let written = writer.write(producers).and_then(|()| self.lock().log.as_ref().map_or(Ok(()), |log| log.checkpoint_written(point)));
        match written {
            // A new leader's entries cut the log meanwhile: the next round writes a fresh one.
            Ok(()) | Err(crate::log::Error::StaleRecoveryPoint) => {}
            Err(e) => tracing::warn!(topic = %self.topic, partition = self.index, cause = %e, "checkpoint write failed"),
        }
    }

    /// Raises the high watermark to the end of committed entry `index`.
    pub fn commit_to(&self, index: u64) {
        let slot = self.lock().raft.as_ref().and_then(|r| r.store.index.slot(index));
        if let Some(slot) = slot {
            self.durability.send_if_modified(|d| {
                let raised = slot.end > d.high_watermark;
                if raised {
                    d.high_watermark = slot.end;
                    d.committed_bytes = slot.bytes_end;
                }
                raised
            });
        }
    }

    /// Starts serving writes as leader of `term`: called once everything before the leader's
    /// first entry is applied, so the log end and producer state are exact.
    /// Returns false (and changes nothing) while producer state is still being rebuilt.
    pub fn become_leader(&self, term: u64) -> bool {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let (Some(log), Some(raft)) = (inner.log.as_ref(), inner.raft.as_mut()) else { return false };
        if raft.rebuild.is_some() {
            return false;
        }
        raft.leases += 1;
        let lease = (term << LEASE_TERM_SHIFT) | (raft.leases & ((1 << LEASE_TERM_SHIFT) - 1));
        raft.leader = Some(LeaderView { lease, term, next_offset: log.next_offset().0, producers: inner.producers.clone() });
        let end = log.next_offset().0;
        self.durability.send_modify(|d| {
            d.lease = lease;
            d.persisted = d.persisted.min(end);
        });
        true
    }

    /// Goes on with a producer-state rebuild for at most `budget` bytes of log; true once none
    /// is left to do.
    pub fn rebuild_producers(&self, budget: usize) -> Result<bool, Error> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let (Some(log), Some(raft)) = (inner.log.as_ref(), inner.raft.as_mut()) else { return Ok(true) };
        let Some(rebuild) = raft.rebuild.as_mut() else { return Ok(true) };
        // Retention may have moved the log start meanwhile: what it deleted is not replayed.
        rebuild.next = rebuild.next.max(log.log_start_offset());
        rebuild.next = super::replay_producers(log, &mut rebuild.states, rebuild.next, rebuild.upto, budget, crate::clock::now_ms())?;
        if rebuild.next < rebuild.upto {
            return Ok(false);
        }
        let Some(Rebuild { mut states, since, .. }) = raft.rebuild.take() else { return Ok(true) };
        for (h, at, seen_ms) in &since {
            states.record(h, *at, *seen_ms);
        }
        inner.producers = states;
        Ok(true)
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

    /// The leader epoch (Raft term) this replica serves under, if it leads.
    pub fn leader_epoch(&self) -> Option<i32> {
        let lease = self.lease();
        (lease != 0).then(|| i32::try_from(lease >> LEASE_TERM_SHIFT).unwrap_or(i32::MAX))
    }

    /// Records that a snapshot at `point` is being installed, before the state machine takes
    /// it: the state machine's applied index then tells, after a crash, whether it did.
    pub fn begin_install(&self, point: SnapshotPoint) -> Result<(), Error> {
        let inner = self.lock();
        let log = inner.log.as_ref().ok_or(Error::Closed)?;
        point.write(&**log.fs(), &self.dir)
    }

    /// Replaces this replica's log with a snapshot installed at `point` (the group's state
    /// machine already holds the state, or the state is `producers`, a data partition's): the
    /// log keeps only a marker at the point and the high watermark moves to it.
    pub fn install_snapshot(&self, point: SnapshotPoint, producers: ProducerStates) -> Result<(), Error> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let (Some(log), Some(raft)) = (inner.log.as_mut(), inner.raft.as_mut()) else { return Err(Error::Closed) };
        raft.store.install(&self.dir, log, point)?;
        raft.leader = None;
        raft.rebuild = None;
        inner.producers = producers;
        self.durability.send_modify(|d| {
            d.high_watermark = d.high_watermark.max(point.offset);
            d.lease = 0;
        });
        Ok(())
    }

    /// A data partition's snapshot, taken by its leader: where the log stands before its first
    /// entry (the entries before it were deleted by retention, or replaced by a snapshot; index
    /// 0 while the log still holds entry 1) and the descriptor a follower behind it installs.
    /// `None` once closed.
    pub fn describe(&self) -> Option<(SnapshotPoint, Descriptor)> {
        let inner = self.lock();
        let (log, raft) = (inner.log.as_ref()?, inner.raft.as_ref()?);
        let index = raft.store.index.first_index().saturating_sub(1);
        let term = if index == 0 { 0 } else { raft.store.index.term(index).ok()? };
        let offset = raft.store.offset_after(index, log.next_offset().0)?;
        // The follower replays every entry from `offset` onto these.
        let producers = inner.producers.before(offset);
        let descriptor = Descriptor { log_start_offset: log.log_start_offset().0, high_watermark: self.high_watermark(), producers };
        Some((SnapshotPoint { index, term, offset }, descriptor))
    }

    /// Installs a leader's data-partition snapshot at `point`: the descriptor is kept beside the
    /// log first (a restart before the next checkpoint starts from its producers), then the
    /// point, then the log is replaced.
    pub fn install_descriptor(&self, point: SnapshotPoint, descriptor: Descriptor) -> Result<(), Error> {
        self.keep_state(&KeptState { index: point.index, offset: point.offset, state: descriptor.encode() })?;
        self.begin_install(point)?;
        self.install_snapshot(point, descriptor.producers)
    }

    /// Keeps a state-machine snapshot beside the log ([`KeptState`]), durably.
    pub fn keep_state(&self, kept: &KeptState) -> Result<(), Error> {
        let fs = Arc::clone(self.lock().log.as_ref().ok_or(Error::Closed)?.fs());
        kept.write(&*fs, &self.dir).map_err(|source| Error::Log(crate::log::Error::Io { path: self.dir.clone(), source }))
    }

    /// The state-machine snapshot kept beside the log, if any.
    pub fn kept_state(&self) -> Result<Option<KeptState>, Error> {
        let fs = Arc::clone(self.lock().log.as_ref().ok_or(Error::Closed)?.fs());
        KeptState::read(&*fs, &self.dir).map_err(|source| Error::Log(crate::log::Error::Io { path: self.dir.clone(), source }))
    }

    /// Whether this replica, leading, could not catch up a follower behind its log: the log
    /// starts past the snapshot it serves (or it serves none).
    pub fn needs_snapshot_to_serve(&self) -> bool {
        self.with_raft_store(|store, _| {
            let first = store.index.first_index();
            first > 1 && store.serving.as_ref().is_none_or(|s| s.get_metadata().index + 1 < first)
        })
        .unwrap_or(false)
    }

    /// The newest snapshot this replica can send a follower whose log is too far behind.
    pub fn set_serving_snapshot(&self, snapshot: raft::prelude::Snapshot) {
        if let Some(raft) = self.lock().raft.as_mut() {
            raft.store.serving = Some(snapshot);
        }
    }

    /// Stops offering the snapshot served so far (a follower could not install it): until a
    /// new one is served, followers behind the log wait.
    pub fn stop_serving_snapshot(&self) {
        if let Some(raft) = self.lock().raft.as_mut() {
            raft.store.serving = None;
        }
    }

    /// The first index of the log (the entries before it are compacted).
    pub fn first_index(&self) -> u64 {
        self.with_raft_store(|store, _| store.index.first_index()).unwrap_or(1)
    }

    /// The offset after entry `index`, if the log holds it (or it is the entry just before the
    /// first).
    pub fn offset_after(&self, index: u64) -> Option<i64> {
        self.with_raft_store(|store, log| store.offset_after(index, log.map_or(0, |l| l.next_offset().0))).flatten()
    }

    /// Runs `read` on the replica's Raft storage and log (`None`: not a replica, or closed).
    pub(crate) fn with_raft_store<T>(&self, read: impl FnOnce(&RaftStore, Option<&PartitionLog>) -> T) -> Option<T> {
        let inner = self.lock();
        inner.raft.as_ref().map(|raft| read(&raft.store, inner.log.as_ref()))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::FlushPolicy;
    use crate::raft::storage::ReplicaStorage;
    use raft::{GetEntriesContext, Storage, StorageError};
    use std::fs::OpenOptions;
    use crate::log::LogConfig;
    use crate::partition::PartitionConfig;
    use crate::partition::batch;
    use crate::partition::batch::tests::batch;

    pub(crate) fn settings(segment_bytes: u64) -> PartitionConfig {
        PartitionConfig {
            log: LogConfig { segment_bytes, segment_ms: 3_600_000, index_interval_bytes: 256, max_entry_bytes: 1 << 20 },
            max_message_bytes: 1 << 20,
            flush_policy: FlushPolicy::OnAck,
            flush_interval: Duration::from_secs(1),
            checkpoint_interval: Duration::from_secs(3600),
            producer_expiration_ms: i64::MAX,
            fs: crate::log::fs::StdFs::shared(),
        }
    }

    fn open(dir: &Path, cache_bytes: usize) -> (Arc<Partition>, mpsc::Receiver<Proposal>) {
        open_with(dir, cache_bytes, settings(4096))
    }

    fn open_with(dir: &Path, cache_bytes: usize, config: PartitionConfig) -> (Arc<Partition>, mpsc::Receiver<Proposal>) {
        let (tx, rx) = mpsc::channel(16);
        let setup = ReplicaSetup { group: 7, voters: vec![1, 2, 3], proposals: tx, cache_bytes, offsets_on_write: false, applied: None };
        (Partition::open_replica("t", 0, dir, config, setup).unwrap(), rx)
    }

    /// A data entry at `index` of `term` holding `batch_bytes` (one batch) at offset `base`.
    pub(crate) fn data_entry(index: u64, term: u64, base: i64, mut batch_bytes: Vec<u8>) -> Entry {
        let count = batch::parse_batches(&batch_bytes, u32::MAX).unwrap()[0].offset_count;
        batch::assign_offset(&mut batch_bytes, base, term as i32);
        let mut e = Entry::default();
        e.index = index;
        e.term = term;
        e.data = encode_entry(base, count, 1_700_000_000_000, &batch_bytes).into();
        e
    }

    /// An entry as the driver would log it for a proposal raft-rs put at `index`.
    fn proposed_entry(proposal: &Proposal, index: u64, term: u64) -> Entry {
        for placement in &proposal.placements {
            placement.set(index);
        }
        let mut e = Entry::default();
        e.index = index;
        e.term = term;
        e.data = proposal.data.clone().into();
        e
    }

    /// Whether a wait has already finished, and how.
    fn poll_now(p: &Partition, appended: &Appended, all_replicas: bool) -> Option<Result<(), Error>> {
        use futures::FutureExt;
        p.wait_durable(appended, all_replicas).now_or_never()
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
    fn an_installed_snapshot_replaces_the_log_and_survives_a_restart_and_a_crash_part_way() {
        let dir = tempfile::tempdir().unwrap();
        let point = SnapshotPoint { index: 100, term: 5, offset: 500 };
        let after = vec![data_entry(101, 5, 500, batch(3, -1, -1, -1)), data_entry(102, 6, 503, batch(2, -1, -1, -1))];
        {
            let (p, _rx) = open(dir.path(), 1 << 20);
            p.write_entries(&entries(60, 2, 3), 0).unwrap();
            p.install_snapshot(point, ProducerStates::default()).unwrap();
            let storage = ReplicaStorage(Arc::clone(&p));
            assert_eq!((storage.first_index().unwrap(), storage.last_index().unwrap()), (101, 100));
            assert_eq!(storage.term(100).unwrap(), 5, "the snapshot's term stands before the first entry");
            assert!(matches!(storage.term(99), Err(raft::Error::Store(StorageError::Compacted))));
            assert!(storage.initial_state().unwrap().hard_state.commit >= 100);
            assert_eq!(p.high_watermark(), 500);
            p.write_entries(&after, 0).unwrap();
            assert_eq!(p.offset_range().unwrap().1, 505);
            p.close().unwrap();
        }
        let check = |p: Arc<Partition>| {
            let storage = ReplicaStorage(p);
            assert_eq!((storage.first_index().unwrap(), storage.last_index().unwrap()), (101, 102));
            assert_eq!(storage.term(100).unwrap(), 5);
            assert_eq!(storage.entries(101, 103, None, GetEntriesContext::empty(false)).unwrap(), after);
        };
        check(open(dir.path(), 1 << 20).0);

        // A crash after the point was written but before the log was replaced: the replica
        // finishes the install when it opens.
        let other = tempfile::tempdir().unwrap();
        {
            let (p, _rx) = open(other.path(), 1 << 20);
            p.write_entries(&entries(60, 2, 3), 0).unwrap();
            p.close().unwrap();
        }
        point.write(&crate::log::fs::StdFs, other.path()).unwrap();
        let (p, _rx) = open(other.path(), 1 << 20);
        let storage = ReplicaStorage(Arc::clone(&p));
        assert_eq!((storage.first_index().unwrap(), storage.last_index().unwrap(), storage.term(100).unwrap()), (101, 100, 5));
        p.write_entries(&after, 0).unwrap();
        assert_eq!(storage.entries(101, 103, None, GetEntriesContext::empty(false)).unwrap(), after);
    }

    #[test]
    fn a_partition_snapshot_carries_producer_state_through_an_install_and_a_crash() {
        // The leader: producer 9's first batch, then records that retention deletes with it.
        let leader_dir = tempfile::tempdir().unwrap();
        let (leader, _rx) = open_with(leader_dir.path(), 1 << 20, settings(200));
        assert_eq!(leader.describe().unwrap().0, SnapshotPoint { index: 0, term: 0, offset: 0 }, "nothing was dropped from the log yet");
        let mut written = vec![data_entry(1, 2, 0, batch(1, 9, 0, 0))];
        written.extend((2..=20).map(|i| data_entry(i, 2, i as i64 - 1, batch(1, -1, -1, -1))));
        leader.write_entries(&written, 0).unwrap();
        leader.commit_to(20);
        assert!(leader.delete_before(15).unwrap() > 0);
        let (point, descriptor) = leader.describe().unwrap();
        assert!(point.index >= 2 && point.index < 20 && point.term == 2, "{point:?}");
        assert_eq!(point.offset, leader.offset_after(point.index).unwrap());
        assert_eq!((descriptor.log_start_offset, descriptor.high_watermark), (15, 20));
        let descriptor = Descriptor::decode(&descriptor.encode()).unwrap();

        // A follower whose log ended at entry 3 installs it and crashes before any checkpoint.
        let dir = tempfile::tempdir().unwrap();
        {
            let (p, _rx) = open(dir.path(), 1 << 20);
            p.write_entries(&written[..3], 0).unwrap();
            p.install_descriptor(point, descriptor).unwrap();
            let rest: Vec<Entry> = written.iter().filter(|e| e.index > point.index).cloned().collect();
            p.write_entries(&rest, 0).unwrap();
            p.commit_to(20);
        }
        let (p, _rx) = open(dir.path(), 1 << 20);
        assert_eq!(p.log_start_offset().unwrap(), point.offset);
        assert!(p.become_leader(3));
        let retried = p.append(&batch(1, 9, 0, 0), 0).unwrap();
        assert!(retried.duplicate && retried.base_offset == 0, "producer 9's first batch stored again: {retried:?}");
        let next = p.append(&batch(1, 9, 0, 1), 0).unwrap();
        assert!(!next.duplicate && next.base_offset == 20, "{next:?}");
    }

    #[test]
    fn the_term_before_the_first_entry_survives_a_restart_when_whole_segments_were_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let first = {
            let (p, _rx) = open(dir.path(), 1 << 20);
            p.write_entries(&entries(60, 2, 3), 0).unwrap();
            p.commit_to(60);
            // Exactly at a segment boundary: the entry before the new first one sits in a
            // segment that is deleted.
            let (_, _, _, segments) = p.retention_view().unwrap();
            let last = segments.last().unwrap().base_offset.0;
            assert!(p.delete_before(last).unwrap() >= 1);
            let storage = ReplicaStorage(Arc::clone(&p));
            let first = storage.first_index().unwrap();
            assert_eq!(storage.term(first - 1).unwrap(), 2);
            p.close().unwrap();
            first
        };
        let storage = ReplicaStorage(open(dir.path(), 1 << 20).0);
        assert_eq!(storage.first_index().unwrap(), first);
        assert_eq!(storage.term(first - 1).unwrap(), 2, "the term before the first entry was lost with its segment");
    }

    #[test]
    fn a_sole_voters_log_without_raft_state_was_written_without_raft_and_counts_as_committed() {
        let dir = tempfile::tempdir().unwrap();
        let sole = |dir: &Path| {
            let (tx, rx) = mpsc::channel(16);
            let setup = ReplicaSetup { group: 7, voters: vec![1], proposals: tx, cache_bytes: 1 << 20, offsets_on_write: false, applied: None };
            (Partition::open_replica("t", 0, dir, settings(4096), setup).unwrap(), rx)
        };
        {
            let (p, _rx) = sole(dir.path());
            p.write_entries(&entries(10, 1, 2), 0).unwrap();
            p.close().unwrap();
        }
        std::fs::remove_file(dir.path().join("raft-state")).unwrap();
        let (p, _rx) = sole(dir.path());
        let state = ReplicaStorage(Arc::clone(&p)).initial_state().unwrap();
        assert_eq!((state.hard_state.term, state.hard_state.commit), (1, 10));
        assert_eq!(p.high_watermark(), 18, "the whole log is served, as it was before");
        p.close().unwrap();
        // In a group of several voters the same files say nothing about what committed.
        std::fs::remove_file(dir.path().join("raft-state")).unwrap();
        let (p, _rx) = open(dir.path(), 1 << 20);
        assert_eq!(ReplicaStorage(p).initial_state().unwrap().hard_state.commit, 0);
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

    /// A replica that led term 5, proposed [4, 14), which raft-rs put at index 4 and the replica
    /// logged, and then lost its leadership before the write committed.
    fn deposed_leader_with_a_logged_write(dir: &Path) -> (Arc<Partition>, mpsc::Receiver<Proposal>, Appended) {
        let (p, mut rx) = open(dir, 1 << 20);
        p.write_entries(&entries(3, 4, 2), 0).unwrap();
        p.commit_to(3);
        p.become_leader(5);
        let appended = p.append(&batch(10, -1, -1, -1), 0).unwrap();
        assert_eq!((appended.base_offset, appended.end_offset), (4, 14));
        let proposal = rx.try_recv().unwrap();
        p.write_entries(&[proposed_entry(&proposal, 4, 5)], 0).unwrap();
        p.step_down();
        (p, rx, appended)
    }

    #[test]
    fn acks_all_for_an_overwritten_write_fails() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _rx, appended) = deposed_leader_with_a_logged_write(dir.path());
        // B leads term 6, commits its own [4, 34) at index 4; A takes it over.
        p.write_entries(&[data_entry(4, 6, 4, batch(30, -1, -1, -1))], 0).unwrap();
        p.commit_to(4);
        assert_eq!(p.high_watermark(), 34);
        // A waiter that looks only now sees the high watermark past its end, but not its entry.
        assert!(matches!(poll_now(&p, &appended, true), Some(Err(Error::NotLeader))));
    }

    #[test]
    fn acks_all_for_a_write_committed_after_its_leadership_ended_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let (p, mut rx, appended) = deposed_leader_with_a_logged_write(dir.path());
        // The next leader keeps A's entry and commits it.
        p.commit_to(4);
        assert!(matches!(poll_now(&p, &appended, true), Some(Ok(()))));
        // A write whose proposal never reached raft-rs has no entry of its own.
        p.become_leader(5);
        let dropped = p.append(&batch(1, -1, -1, -1), 0).unwrap();
        let _ = rx.try_recv().unwrap();
        p.step_down();
        p.write_entries(&[data_entry(5, 7, 14, batch(1, -1, -1, -1))], 0).unwrap();
        p.commit_to(5);
        assert!(matches!(poll_now(&p, &dropped, true), Some(Err(Error::NotLeader))));
    }

    #[test]
    fn acks_1_after_truncation_waits_for_the_new_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (p, mut rx) = open(dir.path(), 1 << 20);
        // Entries 1..=10 of term 1 (offsets 0..18) are fsynced here.
        p.write_entries(&entries(10, 1, 2), 0).unwrap();
        let synced = p.sync_target().unwrap();
        synced.log.sync_data().unwrap();
        p.persisted(&synced.point);
        let before_cut = p.sync_target().unwrap();
        // A term-3 leader replaced entries 7.. with one entry [10, 15), committed.
        p.write_entries(&[data_entry(7, 3, 10, batch(5, -1, -1, -1))], 0).unwrap();
        p.commit_to(7);
        // A point taken before the cut vouches for nothing after it.
        p.persisted(&before_cut.point);
        // Re-elected, this replica's next write [15, 18) is not on its disk yet.
        while !p.rebuild_producers(usize::MAX).unwrap() {}
        assert!(p.become_leader(4));
        let appended = p.append(&batch(3, -1, -1, -1), 0).unwrap();
        assert_eq!((appended.base_offset, appended.end_offset), (15, 18));
        let proposal = rx.try_recv().unwrap();
        p.write_entries(&[proposed_entry(&proposal, 8, 4)], 0).unwrap();
        assert!(poll_now(&p, &appended, false).is_none(), "acknowledged before it was fsynced");
        let synced = p.sync_target().unwrap();
        synced.log.sync_data().unwrap();
        p.persisted(&synced.point);
        assert!(matches!(poll_now(&p, &appended, false), Some(Ok(()))));
    }

    #[test]
    fn producer_state_ahead_of_the_recovery_point_is_not_checkpointed() {
        let dir = tempfile::tempdir().unwrap();
        let config = PartitionConfig { checkpoint_interval: Duration::ZERO, ..settings(1 << 20) };
        let point = {
            let (p, _rx) = open_with(dir.path(), 1 << 20, config.clone());
            p.write_entries(&entries(3, 1, 2), 0).unwrap();
            let target = p.sync_target().unwrap();
            target.log.sync_data().unwrap();
            // Producer 77's first batch is written after the point and never fsynced ...
            p.write_entries(&[data_entry(4, 1, 4, batch(2, 77, 0, 0))], 0).unwrap();
            // ... while the checkpoint for the point is written.
            p.write_checkpoint(&target.point, target.checkpoint.as_deref().unwrap());
            target.point
            // Crash: no close.
        };
        // The crash takes what was not fsynced.
        let segment = dir.path().join(format!("{:020}.log", point.segment_base.0));
        OpenOptions::new().write(true).open(&segment).unwrap().set_len(point.position).unwrap();
        let (p, mut rx) = open_with(dir.path(), 1 << 20, config);
        assert_eq!(ReplicaStorage(Arc::clone(&p)).last_index().unwrap(), 3);
        p.commit_to(3);
        p.become_leader(2);
        // The producer's retry is a new write, not a duplicate of a batch the log lacks.
        let retried = p.append(&batch(2, 77, 0, 0), 0).unwrap();
        assert!(!retried.duplicate, "acknowledged as a duplicate of a lost write at {}", retried.base_offset);
        assert_eq!(retried.base_offset, 4);
        assert!(rx.try_recv().is_ok());
    }

    #[test]
    fn a_truncation_at_the_checkpoint_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = PartitionConfig { checkpoint_interval: Duration::ZERO, ..settings(1 << 20) };
        let has_checkpoint = || dir.path().join(crate::log::RECOVERY_POINT_FILE_NAME).exists();
        let (p, _rx) = open_with(dir.path(), 1 << 20, config);
        p.write_entries(&entries(5, 1, 2), 0).unwrap();
        let target = p.sync_target().unwrap();
        target.log.sync_data().unwrap();
        p.write_checkpoint(&target.point, target.checkpoint.as_deref().unwrap());
        assert!(has_checkpoint());
        p.write_entries(&[data_entry(6, 1, 8, batch(1, -1, -1, -1))], 0).unwrap();
        // A leader of term 3 cuts at index 6, exactly where the checkpoint stands.
        p.write_entries(&[data_entry(6, 3, 8, batch(4, -1, -1, -1))], 0).unwrap();
        assert!(!has_checkpoint());
    }

    #[test]
    fn leader_producer_state_expires() {
        let dir = tempfile::tempdir().unwrap();
        let config = PartitionConfig { checkpoint_interval: Duration::ZERO, producer_expiration_ms: 60_000, ..settings(1 << 20) };
        let (p, mut rx) = open_with(dir.path(), 1 << 20, config);
        p.write_entries(&entries(3, 1, 2), 0).unwrap();
        p.commit_to(3);
        p.become_leader(2);
        // Producer 77 last wrote long ago (its clock reads 0 ms since the epoch).
        let first = p.append(&batch(2, 77, 0, 0), 0).unwrap();
        let proposal = rx.try_recv().unwrap();
        p.write_entries(&[proposed_entry(&proposal, 4, 2)], 0).unwrap();
        p.commit_to(4);
        assert!(p.append(&batch(2, 77, 0, 0), 0).unwrap().duplicate);
        // A persist round with a checkpoint due expires it in the leader's view too.
        let _ = p.sync_target().unwrap();
        let again = p.append(&batch(2, 77, 0, 0), crate::clock::now_ms()).unwrap();
        assert!(!again.duplicate, "producer 77 expired, yet its batch at {} still counts", first.base_offset);
    }

    #[test]
    fn retention_runs_on_the_leader_and_its_log_start_is_an_entry_like_any_other() {
        let dir = tempfile::tempdir().unwrap();
        let (p, mut rx) = open(dir.path(), 300);
        p.write_entries(&entries(60, 2, 3), 0).unwrap();
        p.commit_to(60);
        // A follower decides nothing: its leader's decision reaches it through the log.
        assert!(matches!(p.retain_from(150), Err(Error::NotLeader)));
        p.become_leader(3);
        // Even past what a follower holds: it catches up through a snapshot.
        p.retain_from(150).unwrap();
        assert_eq!(p.log_start_offset().unwrap(), 0, "nothing is deleted before the entry commits");
        let proposal = rx.try_recv().unwrap();
        assert_eq!(decode_log_start(&proposal.data), Some(150));
        p.write_entries(&[proposed_entry(&proposal, 61, 3)], 0).unwrap();
        for (i, base) in (62..67).zip((177..).step_by(4)) {
            p.write_entries(&[data_entry(i, 3, base, batch(4, -1, -1, -1))], 0).unwrap();
        }
        // Read back from the segment (no longer cached), it is intact for a follower that needs it.
        let storage = ReplicaStorage(Arc::clone(&p));
        let read = storage.entries(61, 62, None, GetEntriesContext::empty(false)).unwrap();
        assert_eq!(read[0].data, proposal.data);
        // Applying it is the same prefix deletion on every replica.
        p.commit_to(66);
        assert!(p.delete_before(150).unwrap() > 0);
        assert_eq!(p.log_start_offset().unwrap(), 150);
    }

    #[test]
    fn a_truncation_rebuilds_producer_state_from_the_checkpoint_and_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        // Segments of one entry each, so retention can drop the first.
        let config = PartitionConfig { checkpoint_interval: Duration::ZERO, ..settings(200) };
        let (p, mut rx) = open_with(dir.path(), 1 << 20, config);
        p.write_entries(&entries(1, 1, 1), 0).unwrap();
        p.write_entries(&[data_entry(2, 1, 0, batch(2, 69, 0, 0)), data_entry(3, 1, 2, batch(2, 70, 0, 0))], 0).unwrap();
        p.commit_to(3);
        // Producer 69's batch is gone from the log; its state lives on in the checkpoint only.
        assert!(p.delete_before(2).unwrap() > 0);
        let target = p.sync_target().unwrap();
        target.log.sync_data().unwrap();
        p.write_checkpoint(&target.point, target.checkpoint.as_deref().unwrap());
        p.write_entries(&[data_entry(4, 1, 4, batch(2, 71, 0, 0)), data_entry(5, 1, 6, batch(2, 73, 0, 0)), data_entry(6, 1, 8, batch(2, 72, 0, 0))], 0).unwrap();
        // A term-2 leader keeps entries 4 and 5 and replaces entry 6.
        p.write_entries(&[data_entry(6, 2, 8, batch(1, -1, -1, -1))], 0).unwrap();
        p.commit_to(6);
        // The rebuild reads a bounded amount per call (the driver makes one call per round);
        // until it is done the replica does not lead.
        assert!(!p.become_leader(3), "led with producer state still being rebuilt");
        let mut calls = 1;
        while !p.rebuild_producers(1).unwrap() {
            calls += 1;
        }
        assert!(calls > 1, "the rebuild was not done in steps");
        assert!(p.become_leader(3));
        assert!(p.append(&batch(2, 69, 0, 0), 0).unwrap().duplicate, "in the checkpoint, deleted from the log");
        assert!(p.append(&batch(2, 70, 0, 0), 0).unwrap().duplicate, "before the checkpoint");
        assert!(p.append(&batch(2, 71, 0, 0), 0).unwrap().duplicate, "between the checkpoint and the cut");
        assert!(p.append(&batch(2, 73, 0, 0), 0).unwrap().duplicate, "between the checkpoint and the cut");
        assert!(!p.append(&batch(2, 72, 0, 0), 0).unwrap().duplicate, "cut away");
        assert!(rx.try_recv().is_ok());
    }

    /// A batch of `count` records at `base`, 10 ms apart, the last at `max_timestamp`.
    fn batch_at(base: i64, count: i32, max_timestamp: i64) -> Vec<u8> {
        let mut b = batch(count, -1, -1, -1);
        let base_timestamp = max_timestamp - 10 * i64::from(count - 1);
        b[27..35].copy_from_slice(&base_timestamp.to_be_bytes());
        b[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
        for i in 0..count as usize {
            // Each record is 7 bytes: length, attributes, then the timestamp delta (zigzag).
            b[batch::BATCH_HEADER_BYTES + 7 * i + 2] = (20 * i) as u8;
        }
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        batch::assign_offset(&mut b, base, 1);
        b
    }

    #[test]
    fn a_timestamp_lookup_answers_the_first_record_at_or_after_it_inside_a_merged_entry() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _rx) = open(dir.path(), 1 << 20);
        // One Raft entry holding two producers' batches (proposals of one round are merged).
        let mut merged = batch_at(0, 2, 1_000);
        merged.extend(batch_at(2, 3, 2_000));
        let mut e = Entry::default();
        e.index = 1;
        e.term = 1;
        e.data = encode_entry(0, 5, 2_000, &merged).into();
        p.write_entries(&[e], 0).unwrap();
        p.commit_to(1);
        // Records at 990, 1000 | 1980, 1990, 2000.
        assert_eq!(p.offset_for_timestamp(500).unwrap(), Some((0, 990)));
        assert_eq!(p.offset_for_timestamp(995).unwrap(), Some((1, 1_000)), "inside the first batch");
        assert_eq!(p.offset_for_timestamp(1_500).unwrap(), Some((2, 1_980)), "the first batch of the entry is older than asked");
        assert_eq!(p.offset_for_timestamp(1_985).unwrap(), Some((3, 1_990)));
        assert_eq!(p.offset_for_timestamp(2_500).unwrap(), None);
    }
}
