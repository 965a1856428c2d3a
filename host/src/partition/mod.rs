//! One partition replica: its log, its high watermark and its idempotent-producer state. The
//! Kafka handlers talk to this type; the on-disk format lives in [`crate::log`].
//!
//! Every partition is a replica of a Raft group ([`replica`]), on a single node too (a group of
//! one voter): the leader validates and numbers a produce request and proposes it; the Raft
//! driver writes and fsyncs entries (one fsync per replica per round, group commit), and the high
//! watermark is the commit point. Producers with acks=all wait for the high watermark to pass
//! their batch, acks=1 for the leader's own fsync; consumers never see data above the high
//! watermark, so nothing a consumer read can vanish in a crash.

pub mod batch;
mod batch_records;
pub mod descriptor;
pub mod kept_state;
pub mod producer_state;
pub mod replica;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tracing::warn;

use crate::config::FlushPolicy;
use crate::log::fs::FileSystem;
use crate::log::{EntryKind, LogConfig, Offset, PartitionLog};
use crate::raft::entry::{ENTRY_PREFIX, records_entry, write_prefix};
pub use batch::ProduceChecks;
use batch::{BatchError, BatchHeader, parse_batches};
use producer_state::{ProducerStates, SequenceCheck};

/// Why a partition operation failed; the Kafka layer maps each to an error code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The log refused or failed the operation.
    #[error(transparent)]
    Log(#[from] crate::log::Error),
    /// The produce payload was malformed or too large.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// The idempotent producer's sequence check failed.
    #[error("sequence check failed: {0:?}")]
    Sequence(SequenceCheck),
    /// A duplicate inside a multi-batch record set: DUPLICATE_SEQUENCE_NUMBER.
    #[error("duplicate batch inside a multi-batch record set")]
    DuplicateInSet,
    /// An fsync failed earlier: the partition no longer accepts writes (KAFKA_STORAGE_ERROR).
    #[error("partition storage failed: {0}")]
    StorageFailed(String),
    /// The partition was closed (shutdown or topic deletion).
    #[error("partition is closed")]
    Closed,
    /// This replica is not (or no longer) the partition's leader.
    #[error("this node is not the partition's leader")]
    NotLeader,
    /// Too many proposals are queued for replication.
    #[error("replication queue full")]
    Busy,
}

/// Storage settings of one partition, from the topic's configs.
#[derive(Debug, Clone)]
pub struct PartitionConfig {
    /// Passed to the log.
    pub log: LogConfig,
    /// Largest batch accepted.
    pub max_message_bytes: u32,
    /// When to fsync: `interval` is write caching (see [`Partition::write_caching`]).
    pub flush_policy: FlushPolicy,
    /// Period of the `interval` policy's fsyncs.
    pub flush_interval: Duration,
    /// How often the recovery checkpoint is rewritten.
    pub checkpoint_interval: Duration,
    /// How long an idempotent producer's state is kept after its last write.
    pub producer_expiration_ms: i64,
    /// Where the replica's files live (the real file system, or a faulty one in tests).
    pub fs: Arc<dyn FileSystem>,
}

/// Where a leader's proposal landed in the Raft log: the driver records the index once raft-rs
/// took the entry; it stays unset for a proposal that was dropped. Shared by the proposal and
/// its waiter, so a waiter that learns late that its leadership ended can still tell whether
/// the committed entry at that index is its own.
#[derive(Debug, Clone, Default)]
pub struct Placement(Arc<std::sync::atomic::AtomicU64>);

impl Placement {
    /// Records the Raft index the proposal's entry got.
    pub fn set(&self, index: u64) {
        self.0.store(index, Ordering::SeqCst);
    }

    /// The Raft index the proposal's entry got, if it got one.
    pub fn index(&self) -> Option<u64> {
        Some(self.0.load(Ordering::SeqCst)).filter(|&i| i != 0)
    }
}

impl PartialEq for Placement {
    fn eq(&self, other: &Placement) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Placement {}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the first record (of the original write, for a duplicate).
    pub base_offset: i64,
    /// Offset after the last record; the append is durable once the high watermark reaches it.
    pub end_offset: i64,
    /// A retried idempotent batch that was already stored: nothing new was written.
    pub duplicate: bool,
    /// The leadership it was proposed under; the acknowledgement fails if that leadership ends
    /// first, unless the committed entry at its index is its own.
    pub lease: u64,
    /// Where the proposal landed (unset for duplicates).
    pub placement: Placement,
}

/// Records read for a fetch.
#[derive(Debug, Clone)]
pub struct ReadResult {
    /// Whole record batches, bytes as stored.
    pub records: Vec<u8>,
    /// High watermark at the time of the read.
    pub high_watermark: i64,
    /// Earliest offset still stored.
    pub log_start_offset: i64,
}

/// What consumers and waiting producers observe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Durability {
    /// Invariant: high_watermark <= log end offset; everything below it is committed (on a
    /// majority's disks, or page caches under write caching).
    high_watermark: i64,
    /// The leadership this replica holds and serves writes under (0: none).
    lease: u64,
    /// Leader: the end of what is fsynced here (written, under write caching), for acks=1.
    persisted: i64,
    /// Record bytes of the log through the high watermark, from an arbitrary origin: how much
    /// a waiting fetch has been sent since it last read.
    committed_bytes: u64,
}

impl Durability {
    /// Record bytes committed, from an arbitrary origin (only differences mean anything).
    pub(crate) fn committed_bytes(&self) -> u64 {
        self.committed_bytes
    }

    /// The leadership served under (0: none).
    pub(crate) fn lease(&self) -> u64 {
        self.lease
    }
}

struct Inner {
    /// `None` once closed.
    log: Option<PartitionLog>,
    /// The state of everything written to `log`.
    producers: ProducerStates,
    /// The Raft side; `None` once closed.
    raft: Option<replica::RaftLog>,
}

/// A partition replica on this node.
pub struct Partition {
    topic: String,
    index: i32,
    dir: PathBuf,
    policy: FlushPolicy,
    flush_interval: Duration,
    checkpoint_interval: Duration,
    producer_expiration_ms: i64,
    max_message_bytes: AtomicU32,
    inner: Mutex<Inner>,
    durability: watch::Sender<Durability>,
    closing: AtomicBool,
    /// Held while a checkpoint file is written, so the driver's and `close`'s never interleave.
    /// Lock order: before `inner`.
    checkpoint_lock: Mutex<()>,
}

impl Partition {
    /// Opens (recovering) or creates the replica in `dir` ([`Partition::open_replica`]).
    fn open_with(topic: &str, index: i32, dir: &Path, config: PartitionConfig, setup: replica::ReplicaSetup) -> Result<Arc<Partition>, Error> {
        let mut tail: Vec<(BatchHeader, i64)> = Vec::new();
        let (log, extra) = PartitionLog::open_on(Arc::clone(&config.fs), dir, config.log.clone(), |meta, payload| {
            if meta.kind != EntryKind::Data {
                return;
            }
            // Entries were validated when produced; a batch that no longer parses only loses its
            // producer-state update, never data.
            if let Ok(headers) = parse_batches(payload, u32::MAX) {
                let mut offset = meta.base_offset.0;
                for h in headers {
                    tail.push((h, offset));
                    offset += i64::from(h.offset_count);
                }
            }
        })?;
        let from_checkpoint = match ProducerStates::from_bytes(&extra) {
            Ok(states) if !extra.is_empty() => Some(states),
            Ok(_) => None,
            Err(e) => {
                warn!(topic, partition = index, cause = %e, "producer state in the checkpoint is unreadable; replaying the whole log");
                None
            }
        };
        let now = crate::clock::now_ms();
        let mut replayed = match from_checkpoint {
            Some(states) => states,
            // Without a checkpoint recovery replayed only the last segment: producers whose
            // batches all sit in older segments would be forgotten, and their retries stored
            // twice. Read the segments before it; the last one's batches are already at hand.
            None => {
                // A log replaced by a leader's snapshot starts with the producers before it.
                let mut states = installed_producers(&*config.fs, dir);
                let tail_start = tail.first().map_or(log.next_offset(), |&(_, offset)| Offset(offset));
                replay_producers(&log, &mut states, log.log_start_offset(), tail_start, usize::MAX, now)?;
                states
            }
        };
        // Replayed producers count as seen now: they get a full expiry period.
        for (header, offset) in &tail {
            replayed.record(header, *offset, now);
        }
        // Recovered bytes may sit only in the page cache (after kill -9): make them durable
        // before they count as committed, so a power loss now cannot take back what we serve.
        let (file, point) = log.sync_target();
        file.sync_data().map_err(|source| crate::log::Error::Io { path: dir.to_path_buf(), source })?;
        let (durability, _) = watch::channel(Durability { high_watermark: point.next_offset.0, lease: 0, persisted: 0, committed_bytes: 0 });
        let partition = Arc::new(Partition {
            topic: topic.to_string(),
            index,
            dir: dir.to_path_buf(),
            policy: config.flush_policy,
            flush_interval: config.flush_interval,
            checkpoint_interval: config.checkpoint_interval,
            producer_expiration_ms: config.producer_expiration_ms,
            max_message_bytes: AtomicU32::new(config.max_message_bytes),
            inner: Mutex::new(Inner { log: Some(log), producers: replayed, raft: None }),
            durability,
            closing: AtomicBool::new(false),
            checkpoint_lock: Mutex::new(()),
        });
        partition.attach_raft(setup)?;
        Ok(partition)
    }

    /// The topic this partition belongs to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition's index in its topic.
    pub fn index(&self) -> i32 {
        self.index
    }

    /// The partition's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Applies a changed `max.message.bytes`.
    pub fn set_max_message_bytes(&self, limit: u32) {
        self.max_message_bytes.store(limit, Ordering::Relaxed);
    }

    /// Applies changed segment settings to segments rolled from now on.
    pub fn set_log_config(&self, config: LogConfig) {
        if let Some(log) = self.lock().log.as_mut()
            && let Err(e) = log.set_config(config)
        {
            warn!(topic = %self.topic, partition = self.index, cause = %e, "segment settings not applied");
        }
    }

    /// Validates and appends a Produce record set, assigning offsets.
    ///
    /// Nothing is stored unless every batch is valid and passes the sequence checks.
    pub fn append(&self, records: &[u8], now_ms: i64) -> Result<Appended, Error> {
        self.append_batches(records, now_ms, None)
    }

    /// [`Partition::append`] of a Produce request's records for this partition, which Produce
    /// v3+ allows to be exactly one batch, checked as `checks` say.
    pub fn append_produced(&self, records: &[u8], now_ms: i64, checks: &ProduceChecks) -> Result<Appended, Error> {
        self.append_batches(records, now_ms, Some(checks))
    }

    fn append_batches(&self, records: &[u8], now_ms: i64, produced: Option<&ProduceChecks>) -> Result<Appended, Error> {
        let headers = parse_batches(records, self.max_message_bytes.load(Ordering::Relaxed))?;
        if produced.is_some() && headers.len() != 1 {
            return Err(BatchError::NotOneBatch(headers.len()).into());
        }
        batch::check_records(records, &headers, produced.unwrap_or(&ProduceChecks::INTERNAL))?;
        let mut inner = self.lock();
        let inner = &mut *inner;
        let max_entry_bytes = inner.log.as_ref().ok_or(Error::Closed)?.max_entry_bytes();
        let raft = inner.raft.as_mut().ok_or(Error::Closed)?;
        raft.propose(records, &headers, now_ms, max_entry_bytes)
    }

    /// Waits until an append is acknowledged: committed (`all_replicas`) or persisted by this
    /// leader under the leadership it was proposed in (acks=1). If that leadership ends first, only a committed entry at the
    /// proposal's index with the proposal's term acknowledges it (either acks); anything else
    /// fails with [`Error::NotLeader`], which producers retry.
    pub async fn wait_durable(&self, appended: &Appended, all_replicas: bool) -> Result<(), Error> {
        let mut rx = self.durability.subscribe();
        let end = appended.end_offset;
        let seen = *rx
            .wait_for(|d| {
                let reached = if all_replicas { d.high_watermark >= end } else { d.persisted >= end || d.high_watermark >= end };
                reached || d.lease != appended.lease
            })
            .await
            .map_err(|_| Error::Closed)?;
        if seen.lease == appended.lease {
            // Still leading as when proposed: our log holds the entry, so reaching it is enough.
            return Ok(());
        }
        // Committed as proposed is more than acks=1 asks for too.
        if seen.high_watermark >= end && self.committed_as_proposed(appended) {
            return Ok(());
        }
        Err(Error::NotLeader)
    }

    /// Whether the entry at the proposal's Raft index has the term it was proposed in and holds
    /// its offsets: another leader's entry at the same offsets is not this write.
    fn committed_as_proposed(&self, appended: &Appended) -> bool {
        let Some(index) = appended.placement.index() else { return false };
        let inner = self.lock();
        inner.raft.as_ref().is_some_and(|raft| raft.holds(index, appended.lease >> replica::LEASE_TERM_SHIFT, appended.base_offset, appended.end_offset))
    }

    /// A receiver that changes whenever the high watermark moves (for long-poll fetches).
    pub(crate) fn watch_high_watermark(&self) -> watch::Receiver<Durability> {
        self.durability.subscribe()
    }

    /// The log start and log end offsets.
    pub fn offset_range(&self) -> Result<(i64, i64), Error> {
        let inner = self.lock();
        let log = inner.log.as_ref().ok_or(Error::Closed)?;
        Ok((log.log_start_offset().0, log.next_offset().0))
    }

    /// The high watermark: consumers read below it.
    pub fn high_watermark(&self) -> i64 {
        self.durability.borrow().high_watermark
    }

    /// The earliest offset still stored.
    pub fn log_start_offset(&self) -> Result<i64, Error> {
        Ok(self.lock().log.as_ref().ok_or(Error::Closed)?.log_start_offset().0)
    }

    /// Reads whole batches from `from` up to the high watermark, at most `max_bytes` (but at least
    /// one batch when any is available).
    pub fn read(&self, from: i64, max_bytes: usize) -> Result<ReadResult, Error> {
        let high_watermark = self.high_watermark();
        // Planned under the lock, read without it: produce and replication do not wait for
        // the disk behind a fetch.
        let (planned, log_start_offset) = {
            let inner = self.lock();
            let log = inner.log.as_ref().ok_or(Error::Closed)?;
            let planned = if from >= high_watermark { None } else { Some(log.plan_read(Offset(from), Offset(high_watermark), max_bytes)?) };
            (planned, log.log_start_offset().0)
        };
        let records = match planned {
            Some(planned) => planned.read()?,
            None => Vec::new(),
        };
        Ok(ReadResult { records, high_watermark, log_start_offset })
    }

    /// The offset and timestamp of the first record whose timestamp is >= `timestamp`, as
    /// Kafka answers ListOffsets: the log finds the entry, the batch headers the batch, and the
    /// batch's records (decompressed as a stream when compressed) the record.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, Error> {
        let high_watermark = self.high_watermark();
        let entry = {
            let inner = self.lock();
            let log = inner.log.as_ref().ok_or(Error::Closed)?;
            let Some(offset) = log.offset_for_timestamp(timestamp, Offset(high_watermark))? else {
                return Ok(None);
            };
            (offset, log.plan_read(offset, Offset(high_watermark), 1)?)
        };
        let (offset, planned) = entry;
        let entry = planned.read()?;
        // An entry may hold several batches (proposals of one round are merged).
        let headers = parse_batches(&entry, u32::MAX).unwrap_or_default();
        let Some(h) = headers.iter().find(|h| h.max_timestamp >= timestamp) else {
            return Ok(Some((offset.0, -1)));
        };
        let batch = &entry[h.position..h.position + h.size];
        let base_offset = i64::from_be_bytes(batch[0..8].try_into().expect("a batch header has 8 bytes of base offset"));
        let found = batch::first_record_at_or_after(batch, h.offset_count, timestamp);
        Ok(Some(match found {
            Some((offset_delta, record_timestamp)) => (base_offset + offset_delta, record_timestamp),
            // Log-append-time batches, or records the walk cannot read: the batch's answer.
            None => (base_offset, h.max_timestamp),
        }))
    }

    /// What a retention policy needs: log start, high watermark, total bytes and the segments.
    pub fn retention_view(&self) -> Result<(i64, i64, u64, Vec<crate::log::SegmentInfo>), Error> {
        let high_watermark = self.high_watermark();
        let inner = self.lock();
        let log = inner.log.as_ref().ok_or(Error::Closed)?;
        Ok((log.log_start_offset().0, high_watermark, log.size_bytes(), log.segments()?))
    }

    /// Retention's decision that the log start at `new_start`: the leader proposes it and every
    /// replica deletes the same prefix when it applies the entry ([`Partition::delete_before`]).
    pub fn retain_from(&self, new_start: i64) -> Result<(), Error> {
        self.lock().raft.as_mut().ok_or(Error::Closed)?.propose_log_start(new_start)
    }

    /// Moves the log start to `new_start` (at most the high watermark) and deletes the whole
    /// segments below it. Returns how many segments were deleted.
    pub fn delete_before(&self, new_start: i64) -> Result<usize, Error> {
        let new_start = new_start.min(self.high_watermark());
        let mut inner = self.lock();
        let inner = &mut *inner;
        let log = inner.log.as_mut().ok_or(Error::Closed)?;
        let before = log.segments()?.len();
        let start = new_start.max(log.log_start_offset().0);
        if let Some(raft) = inner.raft.as_mut() {
            // What Raft sees as compacted, and the term before the first entry left, are
            // recorded before any segment goes: the entry holding that term may be in one.
            raft.forget_before(start);
            raft.record_compaction(&self.dir, log, start)?;
        }
        log.drop_prefix(Offset(new_start))?;
        Ok(before.saturating_sub(log.segments()?.len()))
    }

    /// Flushes, writes the final checkpoint and closes the files. Waiting producers get `Closed`.
    pub fn close(&self) -> Result<(), Error> {
        // The final checkpoint vouches for the producer state: finish rebuilding it first.
        while !self.rebuild_producers(usize::MAX)? {}
        self.closing.store(true, Ordering::SeqCst);
        let _writing = self.checkpoint_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut inner = self.lock();
        let extra = inner.producers.to_bytes();
        let raft = inner.raft.take();
        if let Some(Err(e)) = raft.as_ref().map(replica::RaftLog::sync_hard_state) {
            // Only the commit index can be missing from it (terms and votes are fsynced when
            // they change): a restart then re-applies a few entries.
            warn!(topic = %self.topic, partition = self.index, cause = %e, "raft state not synced at close");
        }
        if let Some(log) = inner.log.take() {
            log.close(&extra)?;
            // Synced is not committed: waiting producers learn the leadership ended.
            self.durability.send_modify(|d| d.lease = 0);
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock would be a bug already reported; the state it protects
        // is only ever changed after the fallible I/O succeeded, so it stays usable.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The producers of the data-partition snapshot last installed in `dir` (kept beside the log),
/// if any. A damaged one is reported and forgotten; another group's kept state (the offsets
/// topic's) holds no producers.
fn installed_producers(fs: &dyn FileSystem, dir: &Path) -> ProducerStates {
    match kept_state::KeptState::read(fs, dir) {
        Ok(kept) => kept.and_then(|k| descriptor::Descriptor::decode(&k.state).ok()).map(|d| d.producers).unwrap_or_default(),
        Err(e) => {
            warn!(dir = %dir.display(), cause = %e, "ignoring the installed snapshot");
            ProducerStates::default()
        }
    }
}

/// Records in `states` the batches of `log` from offset `from` up to `end`, reading about
/// `budget` bytes at most (replayed producers count as seen at `now_ms`). Returns where it
/// stopped: `end` once done (also past damage it cannot read through).
pub(crate) fn replay_producers(log: &PartitionLog, states: &mut ProducerStates, mut from: Offset, end: Offset, budget: usize, now_ms: i64) -> Result<Offset, Error> {
    let mut left = budget;
    while from < end {
        if left == 0 {
            return Ok(from);
        }
        let bytes = match log.read(from, end, left.min(4 << 20)) {
            Ok(bytes) => bytes,
            // Damaged records are never served; producer state past them is lost, not the node.
            Err(e @ crate::log::Error::Corruption { .. }) => {
                warn!(cause = %e, "producer state not replayed past a corrupt entry");
                break;
            }
            Err(e) => return Err(e.into()),
        };
        let Ok(headers) = parse_batches(&bytes, u32::MAX) else { break };
        if headers.is_empty() {
            break;
        }
        for h in &headers {
            let base = i64::from_be_bytes(bytes[h.position..h.position + 8].try_into().expect("a batch header has 8 bytes of base offset"));
            states.record(h, base, now_ms);
            from = Offset(base + i64::from(h.offset_count));
        }
        left = left.saturating_sub(bytes.len());
    }
    Ok(end)
}

/// A produce record set with offsets and leader epoch written in, as a records entry.
pub(crate) struct Stamped {
    pub entry: Vec<u8>,
    pub end_offset: i64,
}

/// Checks idempotent sequences of a record set that would start at offset `next`. Returns the
/// answer for a retried single batch that is already stored (or in flight).
pub(crate) fn check_sequences(producers: &ProducerStates, headers: &[BatchHeader], next: i64, now_ms: i64) -> Result<Option<Appended>, Error> {
    if let [single] = headers {
        return match producers.check(single) {
            SequenceCheck::Append => Ok(None),
            SequenceCheck::Duplicate { base_offset } => {
                let end_offset = base_offset + i64::from(single.offset_count);
                Ok(Some(Appended { base_offset, end_offset, duplicate: true, lease: 0, placement: Placement::default() }))
            }
            failed => Err(Error::Sequence(failed)),
        };
    }
    // Each batch is checked against the state its predecessors in this set leave.
    let mut staged = producers.clone();
    let mut offset = next;
    for h in headers {
        match staged.check(h) {
            SequenceCheck::Append => staged.record(h, offset, now_ms),
            SequenceCheck::Duplicate { .. } => return Err(Error::DuplicateInSet),
            failed => return Err(Error::Sequence(failed)),
        }
        offset += i64::from(h.offset_count);
    }
    Ok(None)
}

/// Copies `records` into a records entry once, writing each batch's base offset (from `next`
/// on) and leader epoch, and the entry's prefix.
pub(crate) fn stamp(records: &[u8], headers: &[BatchHeader], next: i64, leader_epoch: i32) -> Result<Stamped, Error> {
    let mut entry = records_entry(records);
    let mut offset = next;
    let mut max_timestamp = i64::MIN;
    for h in headers {
        let at = ENTRY_PREFIX + h.position;
        batch::assign_offset(&mut entry[at..at + h.size], offset, leader_epoch);
        offset += i64::from(h.offset_count);
        max_timestamp = max_timestamp.max(h.max_timestamp);
    }
    let record_count = u32::try_from(offset - next).map_err(|_| BatchError::Corrupt(format!("{} records in one request", offset - next)))?;
    write_prefix(&mut entry, next, record_count, max_timestamp);
    Ok(Stamped { entry, end_offset: offset })
}
