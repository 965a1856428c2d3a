//! One partition replica: its log, its high watermark, its idempotent-producer state and the
//! group-commit flusher that makes appends durable. The Kafka handlers talk to this type; the
//! on-disk format lives in [`crate::log`].
//!
//! Durability (flush policy `on-ack`): an append goes to the page cache under the partition lock;
//! the flusher task runs one `fdatasync` for every append that arrived while the previous one ran
//! (group commit) and then raises the high watermark. Producers with acks=1/-1 wait for the high
//! watermark to pass their batch; consumers never see data above it, so nothing a consumer read
//! can vanish in a crash.
//!
//! In a cluster the partition is a Raft replica instead ([`replica`]): there is no flusher, the
//! Raft driver writes and fsyncs entries, and the high watermark is the commit point.

pub mod batch;
pub mod producer_state;
pub mod replica;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tracing::{error, warn};

use crate::config::FlushPolicy;
use crate::log::{EntryKind, EntryMeta, LogConfig, Offset, PartitionLog, Term};
use batch::{BatchError, BatchHeader, parse_batches};
use producer_state::{ProducerStates, SequenceCheck};

/// The term of every entry a single-node broker writes; the leader epoch clients see equals it.
pub const SINGLE_NODE_TERM: Term = Term(1);

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
    /// When to fsync.
    pub flush_policy: FlushPolicy,
    /// Period of the `interval` policy.
    pub flush_interval: Duration,
    /// How often the recovery checkpoint is rewritten.
    pub checkpoint_interval: Duration,
    /// How long an idempotent producer's state is kept after its last write.
    pub producer_expiration_ms: i64,
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
    /// The leadership it was proposed under (0 on a single node); the acknowledgement fails if
    /// that leadership ends first, unless the committed entry at its index is its own.
    pub lease: u64,
    /// Where the proposal landed (unset on a single node, and for duplicates).
    pub placement: Placement,
}

/// What [`Partition::retain_from`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retained {
    /// Whole segments deleted at once (a single node).
    Deleted(usize),
    /// A log start proposed through Raft (at most what was asked: never past an entry some
    /// replica lacks); replicas delete when they apply it.
    Proposed(i64),
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
    /// Invariant: high_watermark <= log end offset; with `on-ack`, everything below it is fsynced.
    /// Replicated: everything below it is committed (on a majority's disks).
    high_watermark: i64,
    failed: bool,
    /// Replicated: the leadership this replica holds and serves writes under (0: none).
    lease: u64,
    /// Replicated leader: the end of what is fsynced here, for acks=1.
    persisted: i64,
}

struct Inner {
    /// `None` once closed.
    log: Option<PartitionLog>,
    /// Replicated: the state of everything written to `log`. Single node: also what appends
    /// check against.
    producers: ProducerStates,
    /// `Some` for a replica of a Raft group.
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
    /// Woken on every append that waits for an fsync; a stored permit means none is lost.
    flush_wanted: Notify,
    closing: AtomicBool,
    failure: Mutex<Option<String>>,
    /// Held while a checkpoint file is written, so the flusher's and `close`'s never interleave.
    /// Lock order: before `inner`.
    checkpoint_lock: Mutex<()>,
}

impl Partition {
    /// Opens (recovering) or creates the partition in `dir` and starts its flusher.
    pub fn open(topic: &str, index: i32, dir: &Path, config: PartitionConfig) -> Result<Arc<Partition>, Error> {
        Partition::open_with(topic, index, dir, config, None)
    }

    fn open_with(topic: &str, index: i32, dir: &Path, config: PartitionConfig, raft: Option<replica::ReplicaSetup>) -> Result<Arc<Partition>, Error> {
        let mut tail: Vec<(BatchHeader, i64)> = Vec::new();
        let (log, extra) = PartitionLog::open(dir, config.log.clone(), |meta, payload| {
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
                let mut states = ProducerStates::default();
                let tail_start = tail.first().map_or(log.next_offset(), |&(_, offset)| Offset(offset));
                replay_producers(&log, &mut states, log.log_start_offset(), tail_start, now)?;
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
        let (durability, _) = watch::channel(Durability { high_watermark: point.next_offset.0, failed: false, lease: 0, persisted: 0 });
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
            flush_wanted: Notify::new(),
            closing: AtomicBool::new(false),
            failure: Mutex::new(None),
            checkpoint_lock: Mutex::new(()),
        });
        match raft {
            Some(setup) => partition.attach_raft(setup)?,
            None => {
                tokio::spawn(Arc::clone(&partition).flush_loop());
            }
        }
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
        self.check_healthy()?;
        let headers = parse_batches(records, self.max_message_bytes.load(Ordering::Relaxed))?;
        let mut inner = self.lock();
        let inner = &mut *inner;
        if let Some(raft) = inner.raft.as_mut() {
            let max_entry_bytes = inner.log.as_ref().ok_or(Error::Closed)?.max_entry_bytes();
            return raft.propose(records, &headers, now_ms, max_entry_bytes);
        }
        let log = inner.log.as_mut().ok_or(Error::Closed)?;
        let next = log.next_offset().0;
        if let Some(duplicate) = check_sequences(&inner.producers, &headers, next, now_ms)? {
            return Ok(duplicate);
        }
        let stamped = stamp(records, &headers, next, SINGLE_NODE_TERM.0 as i32)?;
        let meta = EntryMeta {
            kind: EntryKind::Data,
            term: SINGLE_NODE_TERM,
            index: log.next_index(),
            base_offset: Offset(next),
            record_count: stamped.record_count,
            max_timestamp: stamped.max_timestamp,
        };
        log.append(meta, &stamped.payload, now_ms)?;
        let mut at = next;
        for h in &headers {
            inner.producers.record(h, at, now_ms);
            at += i64::from(h.offset_count);
        }
        let offset = stamped.end_offset;
        match self.policy {
            FlushPolicy::OnAck => self.flush_wanted.notify_one(),
            FlushPolicy::Interval => self.durability.send_modify(|d| d.high_watermark = offset),
        }
        Ok(Appended { base_offset: next, end_offset: offset, duplicate: false, lease: 0, placement: Placement::default() })
    }

    /// Waits until an append is acknowledged: committed (`all_replicas`, or on a single node:
    /// durable per the flush policy) or persisted by this leader under the leadership it was
    /// proposed in (acks=1). If that leadership ends first, only a committed entry at the
    /// proposal's index with the proposal's term acknowledges it (either acks); anything else
    /// fails with [`Error::NotLeader`], which producers retry.
    pub async fn wait_durable(&self, appended: &Appended, all_replicas: bool) -> Result<(), Error> {
        let mut rx = self.durability.subscribe();
        let end = appended.end_offset;
        let replicated = appended.lease != 0;
        let seen = *rx
            .wait_for(|d| {
                let reached = if replicated && !all_replicas { d.persisted >= end || d.high_watermark >= end } else { d.high_watermark >= end };
                d.failed || reached || (replicated && d.lease != appended.lease)
            })
            .await
            .map_err(|_| Error::Closed)?;
        if seen.failed {
            return Err(self.storage_failure());
        }
        if !replicated {
            return Ok(());
        }
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
        let inner = self.lock();
        let log = inner.log.as_ref().ok_or(Error::Closed)?;
        let log_start_offset = log.log_start_offset().0;
        let records = if from >= high_watermark {
            Vec::new()
        } else {
            log.read(Offset(from), Offset(high_watermark), max_bytes)?
        };
        Ok(ReadResult { records, high_watermark, log_start_offset })
    }

    /// First offset whose batch holds a timestamp >= `timestamp`, with that batch's max
    /// timestamp (read from the batch header).
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, Error> {
        let high_watermark = self.high_watermark();
        let inner = self.lock();
        let log = inner.log.as_ref().ok_or(Error::Closed)?;
        let Some(offset) = log.offset_for_timestamp(timestamp, Offset(high_watermark))? else {
            return Ok(None);
        };
        let first = log.read(offset, Offset(high_watermark), 1)?;
        let batch_timestamp = parse_batches(&first, u32::MAX)
            .ok()
            .and_then(|headers| headers.first().map(|h| h.max_timestamp))
            .unwrap_or(-1);
        Ok(Some((offset.0, batch_timestamp)))
    }

    /// What a retention policy needs: log start, high watermark, total bytes and the segments.
    pub fn retention_view(&self) -> Result<(i64, i64, u64, Vec<crate::log::SegmentInfo>), Error> {
        let high_watermark = self.high_watermark();
        let inner = self.lock();
        let log = inner.log.as_ref().ok_or(Error::Closed)?;
        Ok((log.log_start_offset().0, high_watermark, log.size_bytes(), log.segments()?))
    }

    /// Retention's decision that the log start at `new_start`. A replica of a Raft group proposes
    /// it (leader only) and every replica deletes the same prefix when it applies the entry
    /// ([`Partition::delete_before`]); a single node deletes at once.
    pub fn retain_from(&self, new_start: i64) -> Result<Retained, Error> {
        let mut inner = self.lock();
        if let Some(raft) = inner.raft.as_mut() {
            return raft.propose_log_start(new_start).map(Retained::Proposed);
        }
        drop(inner);
        self.delete_before(new_start).map(Retained::Deleted)
    }

    /// Leader: the highest Raft index every voter holds, which bounds retention.
    pub fn set_replicated(&self, index: u64) {
        if let Some(raft) = self.lock().raft.as_mut() {
            raft.set_replicated(index);
        }
    }

    /// Moves the log start to `new_start` (at most the high watermark) and deletes the whole
    /// segments below it. Returns how many segments were deleted.
    pub fn delete_before(&self, new_start: i64) -> Result<usize, Error> {
        let new_start = new_start.min(self.high_watermark());
        let mut inner = self.lock();
        let inner = &mut *inner;
        let log = inner.log.as_mut().ok_or(Error::Closed)?;
        let before = log.segments()?.len();
        log.drop_prefix(Offset(new_start))?;
        let start = log.log_start_offset().0;
        if let Some(raft) = inner.raft.as_mut() {
            raft.forget_before(start);
        }
        Ok(before.saturating_sub(log.segments()?.len()))
    }

    /// Flushes, writes the final checkpoint and closes the files. Waiting producers get `Closed`.
    pub fn close(&self) -> Result<(), Error> {
        self.closing.store(true, Ordering::SeqCst);
        self.flush_wanted.notify_one();
        let _writing = self.checkpoint_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut inner = self.lock();
        let extra = inner.producers.to_bytes();
        let raft = inner.raft.take();
        if let Some(Err(e)) = raft.as_ref().map(replica::RaftLog::sync_hard_state) {
            // Only the commit index can be missing from it (terms and votes are fsynced when
            // they change): a restart then re-applies a few entries.
            warn!(topic = %self.topic, partition = self.index, cause = %e, "raft state not synced at close");
        }
        let replicated = raft.is_some();
        if let Some(log) = inner.log.take() {
            let end = log.next_offset().0;
            log.close(&extra)?;
            if replicated {
                // Synced is not committed: waiting producers learn the leadership ended.
                self.durability.send_modify(|d| d.lease = 0);
            } else {
                // Everything is fsynced now: producers still waiting get their acknowledgement.
                self.durability.send_modify(|d| d.high_watermark = d.high_watermark.max(end));
            }
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock would be a bug already reported; the state it protects
        // is only ever changed after the fallible I/O succeeded, so it stays usable.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn check_healthy(&self) -> Result<(), Error> {
        if self.durability.borrow().failed {
            return Err(self.storage_failure());
        }
        Ok(())
    }

    fn storage_failure(&self) -> Error {
        let failure = self.failure.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Error::StorageFailed(failure.unwrap_or_else(|| "unknown".into()))
    }

    fn fail(&self, cause: String) {
        error!(topic = %self.topic, partition = self.index, %cause, "fsync failed; partition taken offline");
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(cause);
        self.durability.send_modify(|d| d.failed = true);
    }

    /// Group commit: one fsync per round covers every append made before it started.
    async fn flush_loop(self: Arc<Self>) {
        let mut last_checkpoint = Instant::now();
        loop {
            match self.policy {
                FlushPolicy::OnAck => self.flush_wanted.notified().await,
                FlushPolicy::Interval => {
                    tokio::select! {
                        _ = tokio::time::sleep(self.flush_interval) => {}
                        _ = self.flush_wanted.notified() => {}
                    }
                }
            }
            if self.closing.load(Ordering::SeqCst) {
                return;
            }
            let checkpoint_due = last_checkpoint.elapsed() >= self.checkpoint_interval;
            let (file, point, extra) = {
                let mut inner = self.lock();
                let Some((file, point)) = inner.log.as_ref().map(|log| log.sync_target()) else { return };
                let extra = checkpoint_due.then(|| {
                    inner.producers.expire(crate::clock::now_ms(), self.producer_expiration_ms);
                    inner.producers.to_bytes()
                });
                (file, point, extra)
            };
            let synced = tokio::task::spawn_blocking(move || file.sync_data()).await;
            match synced {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return self.fail(e.to_string()),
                Err(e) => return self.fail(e.to_string()),
            }
            if self.policy == FlushPolicy::OnAck {
                let end = point.next_offset.0;
                self.durability.send_if_modified(|d| {
                    let raised = end > d.high_watermark;
                    d.high_watermark = d.high_watermark.max(end);
                    raised
                });
            }
            if let Some(extra) = extra {
                last_checkpoint = Instant::now();
                // The checkpoint's fsyncs run without the partition lock, so appends go on.
                let writer = match self.lock().log.as_ref().map(|log| log.checkpoint_writer(&point)) {
                    Some(Ok(writer)) => writer,
                    Some(Err(e)) => {
                        warn!(topic = %self.topic, partition = self.index, cause = %e, "checkpoint skipped");
                        continue;
                    }
                    None => return,
                };
                let this = Arc::clone(&self);
                let written = tokio::task::spawn_blocking(move || {
                    let _writing = this.checkpoint_lock.lock().unwrap_or_else(|p| p.into_inner());
                    // After `close` wrote the final checkpoint, an older one must not replace it.
                    if this.closing.load(Ordering::SeqCst) {
                        return Ok(());
                    }
                    writer.write(&extra)
                })
                .await;
                let confirmed = match written {
                    Ok(Ok(())) => self.lock().log.as_ref().map_or(Ok(()), |log| log.checkpoint_written(&point)),
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(crate::log::Error::Io { path: self.dir.clone(), source: std::io::Error::other(e.to_string()) }),
                };
                if let Err(e) = confirmed {
                    warn!(topic = %self.topic, partition = self.index, cause = %e, "checkpoint write failed");
                }
            }
        }
    }
}

/// Records in `states` every batch of `log` from offset `from` up to `end` (replayed producers
/// count as seen at `now_ms`).
pub(crate) fn replay_producers(log: &PartitionLog, states: &mut ProducerStates, mut from: Offset, end: Offset, now_ms: i64) -> Result<(), Error> {
    while from < end {
        let bytes = match log.read(from, end, 4 << 20) {
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
    }
    Ok(())
}

/// A produce record set with offsets and leader epoch written in.
pub(crate) struct Stamped {
    pub payload: Vec<u8>,
    pub end_offset: i64,
    pub record_count: u32,
    pub max_timestamp: i64,
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

/// Copies `records` and writes each batch's base offset (from `next` on) and leader epoch.
pub(crate) fn stamp(records: &[u8], headers: &[BatchHeader], next: i64, leader_epoch: i32) -> Result<Stamped, Error> {
    let mut payload = records.to_vec();
    let mut offset = next;
    let mut max_timestamp = i64::MIN;
    for h in headers {
        batch::assign_offset(&mut payload[h.position..h.position + h.size], offset, leader_epoch);
        offset += i64::from(h.offset_count);
        max_timestamp = max_timestamp.max(h.max_timestamp);
    }
    let record_count = u32::try_from(offset - next).map_err(|_| BatchError::Corrupt(format!("{} records in one request", offset - next)))?;
    Ok(Stamped { payload, end_offset: offset, record_count, max_timestamp })
}
