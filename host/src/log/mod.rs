//! The on-disk partition log, which is also the partition's Raft log.
//!
//! This module owns one partition directory: segment files of *entries* (each one Raft entry:
//! term, raft index, Kafka base offset, record count, max timestamp and an opaque payload of
//! record batches, never parsed here), their sparse offset and time indexes, the recovery
//! checkpoint and the log start offset. It appends, reads whole entries back by offset, finds
//! offsets by timestamp, truncates an uncommitted suffix by raft index, drops a prefix for
//! retention, and recovers after a crash by scanning only the tail written since the last
//! checkpoint.
//!
//! It does not own: deciding what is committed (the high watermark is passed in as `upto`),
//! fsync scheduling (group commit runs `sync_data` on the handle from
//! [`PartitionLog::sync_target`] outside any lock), retention policy (callers pick the new
//! start), or the meaning of payloads and checkpoint bytes.
//!
//! Durability: appends go to the page cache. A segment is fsynced (log and indexes) when it is
//! rolled and the directory when a segment is created, so every segment but the last is trusted
//! after a crash without being read. The last segment is scanned from the checkpoint.
//!
//! Files: `format.rs` (byte layouts), `segment.rs` (one segment), `index.rs` (sparse indexes),
//! `recovery.rs` (open), `checkpoint.rs` (small files replaced atomically), `error.rs`.
#![warn(missing_docs)]
// Suffix truncation, prefix drops and segment facts are there for Raft and retention, which are
// built on this log next; the unit tests below exercise them already.
#![cfg_attr(not(test), allow(dead_code))]

mod checkpoint;
pub mod fs;
mod error;
mod format;
mod index;
mod recovery;
mod segment;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::warn;

pub use error::Error;
use fs::{FileHandle, FileSystem, StdFs};
pub use format::{EntryKind, EntryMeta, Offset, RaftIndex, RecoveryPoint, Term};
#[cfg(test)]
pub(crate) use format::RECOVERY_POINT_FILE_NAME;

use error::io_err;
use format::{ENTRY_HEADER_SIZE, FILE_HEADER_SIZE};
use index::{IndexPolicy, IndexWriter, OffsetEntry, TimeEntry};
use segment::{ActiveSegment, HeaderReader, Probe, Segment, probe, read_payload, verify_payload};

/// Sizes and ages of a partition log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A segment is rolled before an append would make it larger than this (an entry larger
    /// than a whole segment goes alone into a fresh one). At most `u32::MAX`, since index
    /// positions are 32-bit.
    ///
    /// Default: "1GiB"
    pub segment_bytes: u64,
    /// A segment holding data is rolled once it is this old (from its creation, or from its
    /// first entry's timestamp if it was created by an earlier process).
    ///
    /// Default: "7d"
    pub segment_ms: u64,
    /// Bytes of entries between two offset index records.
    ///
    /// Default: "4KiB"
    pub index_interval_bytes: u32,
    /// Largest payload `append` accepts. Entries already on disk stay readable if it is lowered:
    /// a longer one is crc-checked before its payload is allocated.
    ///
    /// Default: "1MiB" plus 12 bytes, Kafka's `message.max.bytes`
    pub max_entry_bytes: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            index_interval_bytes: 4096,
            max_entry_bytes: (1 << 20) + 12,
        }
    }
}

impl LogConfig {
    /// Rejects unusable combinations.
    pub fn validate(&self) -> Result<(), Error> {
        let min_segment = FILE_HEADER_SIZE + ENTRY_HEADER_SIZE as u64;
        if self.segment_bytes < min_segment || self.segment_bytes > u64::from(u32::MAX) {
            return Err(Error::InvalidConfig(format!(
                "segment-bytes must be in {min_segment}..={}, got {}",
                u32::MAX,
                self.segment_bytes
            )));
        }
        if self.segment_ms == 0 {
            return Err(Error::InvalidConfig("segment-ms must be > 0".into()));
        }
        if self.max_entry_bytes == 0 || self.max_entry_bytes > u32::MAX - ENTRY_HEADER_SIZE as u32 {
            return Err(Error::InvalidConfig(format!(
                "max-entry-bytes out of range: {}",
                self.max_entry_bytes
            )));
        }
        Ok(())
    }
}

/// Facts about one segment, for retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// First offset of the segment (in its file name).
    pub base_offset: Offset,
    /// Offset after its last data entry; the next segment's base.
    pub next_offset: Offset,
    /// Last offset in the segment, `None` if it holds no records.
    pub last_offset: Option<Offset>,
    /// Length of the segment's log file.
    pub size_bytes: u64,
    /// Max timestamp of its first data entry.
    pub first_timestamp: Option<i64>,
    /// Largest timestamp in it.
    pub max_timestamp: Option<i64>,
    /// When this process created it; `None` for segments found on disk.
    pub created_ms: Option<i64>,
}

/// A checkpoint being written outside the log's lock (see [`PartitionLog::checkpoint_writer`]).
#[derive(Debug)]
pub struct CheckpointWriter {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    point: RecoveryPoint,
    index_files: Vec<(Arc<dyn FileHandle>, PathBuf)>,
}

impl CheckpointWriter {
    /// Syncs the active segment's indexes and replaces the checkpoint file with the caller's bytes.
    pub fn write(self, extra: &[u8]) -> Result<(), Error> {
        for (file, path) in &self.index_files {
            file.sync_all().map_err(|source| Error::Io { path: path.clone(), source })?;
        }
        checkpoint::write_checkpoint(&*self.fs, &self.dir, &self.point, extra)
    }
}

/// The log of one partition. `Send`; the caller serialises access (a `Mutex`).
#[derive(Debug)]
pub struct PartitionLog {
    /// Where every file of the log lives.
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    config: LogConfig,
    /// Segments before the active one, oldest first.
    /// Invariant: `sealed[i].next_offset == sealed[i + 1].base` (and the last one's equals
    /// `active.seg.base`); each has at least one data entry and was fsynced when rolled.
    sealed: Vec<Segment>,
    /// The segment appended to. Its `next_offset` is the log end offset.
    active: ActiveSegment,
    /// Invariant: `first segment base <= log_start <= next_offset()`.
    log_start: Offset,
    /// Raft index the next entry gets.
    /// Invariant: one more than the last entry's index, or the first index if there is none.
    next_index: RaftIndex,
    /// Term of the last entry (0 if none).
    last_term: Term,
    /// Bumped by every truncation; recovery points from an older generation are stale.
    generation: u64,
    /// `next_index` of the checkpoint on disk, 0 if none. Atomic because `write_checkpoint`
    /// takes `&self`.
    checkpoint_index: AtomicU64,
}

/// Where `truncate_from` cuts a segment.
struct Cut {
    position: u64,
    next_offset: Offset,
    last_term: Option<Term>,
    scanned_max: Option<(i64, Offset)>,
    kept_offset_records: usize,
    hint_position: u64,
}

impl PartitionLog {
    /// Opens or creates the log in `dir`, running crash recovery.
    ///
    /// `on_recovered` is called, in order, for every entry after the checkpoint (or, without a
    /// usable checkpoint, for every entry of the last segment), with its payload, so the caller
    /// can rebuild derived state. Returns the log and the caller's bytes from the checkpoint
    /// (empty if there is none or it could not be used).
    pub fn open(
        dir: &Path,
        config: LogConfig,
        on_recovered: impl FnMut(&EntryMeta, &[u8]),
    ) -> Result<(PartitionLog, Vec<u8>), Error> {
        recovery::open(StdFs::shared(), dir, config, on_recovered)
    }

    /// Makes the log in `dir`, if it has no segments yet, start at `offset` when it is first
    /// opened (a partition restored from a lost cluster's snapshots resumes at its offsets).
    /// A log that already has segments is left as it is.
    pub fn start_new_at(fs: &dyn FileSystem, dir: &Path, offset: Offset) -> Result<(), Error> {
        fs.create_dir_all(dir).map_err(io_err(dir))?;
        if recovery::list_segments(fs, dir)?.is_empty() {
            checkpoint::write_log_start(fs, dir, offset)?;
        }
        Ok(())
    }

    /// [`PartitionLog::open`] on the file system `fs`.
    pub fn open_on(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        config: LogConfig,
        on_recovered: impl FnMut(&EntryMeta, &[u8]),
    ) -> Result<(PartitionLog, Vec<u8>), Error> {
        recovery::open(fs, dir, config, on_recovered)
    }

    /// The file system the log's files live on.
    pub fn fs(&self) -> &Arc<dyn FileSystem> {
        &self.fs
    }

    /// The log end offset: the offset the next record gets.
    pub fn next_offset(&self) -> Offset {
        self.active.seg.next_offset
    }

    /// The raft index the next entry gets.
    pub fn next_index(&self) -> RaftIndex {
        self.next_index
    }

    /// Term of the last entry, 0 if the log has none.
    pub fn last_term(&self) -> Term {
        self.last_term
    }

    /// The first offset that may be read.
    pub fn log_start_offset(&self) -> Offset {
        self.log_start
    }

    /// Replaces the segment settings (a changed topic config); they apply from the next append.
    pub fn set_config(&mut self, config: LogConfig) -> Result<(), Error> {
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// Appends one entry to the page cache. `meta.base_offset` must be [`Self::next_offset`]
    /// and `meta.index` [`Self::next_index`]. Rolls first if the active segment would exceed
    /// `segment_bytes` or is older than `segment_ms` at `now_ms`; a roll fsyncs the old segment.
    pub fn append(&mut self, meta: EntryMeta, payload: &[u8], now_ms: i64) -> Result<(), Error> {
        if payload.len() > self.config.max_entry_bytes as usize {
            return Err(Error::EntryTooLarge {
                size: payload.len(),
                max: self.config.max_entry_bytes,
            });
        }
        meta.check().map_err(Error::InvalidEntry)?;
        if meta.base_offset != self.next_offset() || meta.index != self.next_index {
            return Err(Error::NotContiguous {
                offset: meta.base_offset,
                index: meta.index,
                expected_offset: self.next_offset(),
                expected_index: self.next_index,
            });
        }
        if meta.term < self.last_term {
            return Err(Error::InvalidEntry(format!(
                "term {} is below the last term {}",
                meta.term, self.last_term
            )));
        }
        let next_index = meta
            .index
            .0
            .checked_add(1)
            .ok_or_else(|| Error::InvalidEntry("raft index overflow".into()))?;
        if self.should_roll(&meta, payload.len(), now_ms) {
            self.roll(now_ms)?;
        }
        if !self.active.seg.has_entries() && self.active.seg.created_ms.is_none() {
            self.active.seg.created_ms = Some(now_ms);
        }
        self.active.append(&meta, payload)?;
        self.next_index = RaftIndex(next_index);
        self.last_term = meta.term;
        Ok(())
    }

    fn should_roll(&self, meta: &EntryMeta, payload_len: usize, now_ms: i64) -> bool {
        let seg = &self.active.seg;
        // Without data the next segment would get the same base offset, hence the same name.
        if seg.next_offset == seg.base {
            return false;
        }
        let full = seg.size + (ENTRY_HEADER_SIZE + payload_len) as u64 > self.config.segment_bytes;
        let span_overflows = meta.next_offset().0 - seg.base.0 > i64::from(u32::MAX);
        let started = seg.created_ms.or(self.active.timestamps().0);
        let segment_ms = i64::try_from(self.config.segment_ms).unwrap_or(i64::MAX);
        let old = started.is_some_and(|t| now_ms.saturating_sub(t) >= segment_ms);
        full || span_overflows || old
    }

    fn roll(&mut self, now_ms: i64) -> Result<(), Error> {
        // The old segment is sealed (final time record, fsync of log and indexes) before the
        // new one exists, so every segment but the last is always trusted by recovery.
        self.active.prepare_seal()?;
        let new = ActiveSegment::create(
            &self.fs,
            &self.dir,
            self.next_offset(),
            Some(now_ms),
            self.config.index_interval_bytes,
        )?;
        let old = std::mem::replace(&mut self.active, new);
        self.sealed.push(old.into_sealed());
        Ok(())
    }

    /// A handle for group commit: the active segment's file and the point it is durable up to
    /// once the caller has run `sync_data()` on it (outside any lock). Rolled segments were
    /// fsynced at roll, so syncing this file makes everything before the point durable.
    pub fn sync_target(&self) -> (Arc<dyn FileHandle>, RecoveryPoint) {
        (Arc::clone(&self.active.file), self.recovery_point())
    }

    /// The checkpoint this log last wrote (or recovered from), if it still describes a prefix
    /// of the log: the offset it stands at and the caller's bytes in it. After a truncation this
    /// lets the caller rebuild its state from the checkpoint plus the tail, not the whole log.
    pub fn checkpoint(&self) -> Result<Option<(Offset, Vec<u8>)>, Error> {
        let known = self.checkpoint_index.load(Ordering::Relaxed);
        let Some((point, extra)) = checkpoint::read_checkpoint(&*self.fs, &self.dir)? else { return Ok(None) };
        let usable = known != 0 && point.next_index.0 == known && point.next_index <= self.next_index && point.next_offset >= self.log_start;
        Ok(usable.then_some((point.next_offset, extra)))
    }

    /// The largest entry payload [`Self::append`] accepts.
    pub fn max_entry_bytes(&self) -> u32 {
        self.config.max_entry_bytes
    }

    /// Bumped by every truncation: a recovery point of another generation is stale.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn recovery_point(&self) -> RecoveryPoint {
        RecoveryPoint {
            segment_base: self.active.seg.base,
            position: self.active.seg.size,
            next_offset: self.next_offset(),
            next_index: self.next_index,
            last_term: self.last_term,
            segment_max_timestamp: self.active.policy.max_timestamp,
            generation: self.generation,
        }
    }

    /// Writes the checkpoint for `point`, which the caller has made durable, with the caller's
    /// bytes (crc-protected, at most 64 MiB). Fails with [`Error::StaleRecoveryPoint`] if the log
    /// was truncated after the point was taken.
    pub fn write_checkpoint(&self, point: &RecoveryPoint, extra: &[u8]) -> Result<(), Error> {
        self.checkpoint_writer(point)?.write(extra)?;
        self.checkpoint_written(point)
    }

    /// The first step of a checkpoint written without holding the log: everything that must be
    /// synced and written, for [`CheckpointWriter::write`] to do outside any lock; then
    /// [`Self::checkpoint_written`] confirms it. Fails for a point taken before a truncation.
    pub fn checkpoint_writer(&self, point: &RecoveryPoint) -> Result<CheckpointWriter, Error> {
        if point.generation != self.generation {
            return Err(Error::StaleRecoveryPoint);
        }
        // Recovery keeps the index records before the point without checking them; they must
        // be as durable as the entries they point at. (A sealed segment's were synced when it
        // was rolled.)
        let index_files = if point.segment_base == self.active.seg.base {
            vec![self.active.offsets.handle(), self.active.times.handle()]
        } else {
            Vec::new()
        };
        Ok(CheckpointWriter { fs: Arc::clone(&self.fs), dir: self.dir.clone(), point: point.clone(), index_files })
    }

    /// Records that a checkpoint from [`Self::checkpoint_writer`] is on disk. If the log was
    /// truncated meanwhile the checkpoint may point past the cut, so it is removed instead.
    pub fn checkpoint_written(&self, point: &RecoveryPoint) -> Result<(), Error> {
        if point.generation != self.generation {
            checkpoint::remove_checkpoint(&*self.fs, &self.dir)?;
            return Err(Error::StaleRecoveryPoint);
        }
        self.checkpoint_index.store(point.next_index.0, Ordering::Relaxed);
        Ok(())
    }

    fn segment_count(&self) -> usize {
        self.sealed.len() + 1
    }

    fn segment(&self, i: usize) -> &Segment {
        self.sealed.get(i).unwrap_or(&self.active.seg)
    }

    /// Index of the segment holding `offset`: the last one whose base is at or below it.
    fn segment_for(&self, offset: Offset) -> usize {
        let n = self.sealed.partition_point(|s| s.base <= offset);
        if n < self.sealed.len() || self.active.seg.base > offset {
            n.saturating_sub(1)
        } else {
            self.sealed.len()
        }
    }

    fn offset_records(&self, i: usize) -> Result<&[OffsetEntry], Error> {
        match self.sealed.get(i) {
            Some(seg) => Ok(&seg.sealed_indexes()?.offsets),
            None => Ok(self.active.offsets.entries()),
        }
    }

    fn time_records(&self, i: usize) -> Result<&[TimeEntry], Error> {
        match self.sealed.get(i) {
            Some(seg) => Ok(&seg.sealed_indexes()?.times),
            None => Ok(self.active.times.entries()),
        }
    }

    /// (first data entry's timestamp, largest timestamp) of segment `i`.
    fn timestamps(&self, i: usize) -> Result<(Option<i64>, Option<i64>), Error> {
        match self.sealed.get(i) {
            Some(seg) => seg.sealed_timestamps(),
            None => Ok(self.active.timestamps()),
        }
    }

    /// A position in segment `i` at or before the entry holding `offset`.
    fn position_hint(&self, i: usize, offset: Offset) -> Result<u64, Error> {
        let seg = self.segment(i);
        let rel = u32::try_from(offset.0 - seg.base.0).unwrap_or(u32::MAX);
        Ok(index::floor_offset(self.offset_records(i)?, rel)
            .map_or(FILE_HEADER_SIZE, |e| u64::from(e.position)))
    }

    /// A position in segment `i` before every entry with base offset `offset` or more. The
    /// index record at `offset` itself may not do: control entries before that data entry
    /// carry the same base offset.
    fn position_before(&self, i: usize, offset: Offset) -> Result<u64, Error> {
        let rel = offset.0.saturating_sub(self.segment(i).base.0);
        if rel <= 0 {
            return Ok(FILE_HEADER_SIZE);
        }
        let below = u32::try_from(rel - 1).unwrap_or(u32::MAX);
        Ok(index::floor_offset(self.offset_records(i)?, below)
            .map_or(FILE_HEADER_SIZE, |e| u64::from(e.position)))
    }

    /// Reads whole entries starting with the one containing `from` and stopping before `upto`
    /// (exclusive; an entry is returned only if it lies wholly below it), returning their
    /// concatenated payloads. Stops before exceeding `max_bytes`, but returns at least one entry
    /// if any qualifies (KIP-74). Control entries are skipped. Every crc is checked: on a bad
    /// entry returns what was read before it, or [`Error::Corruption`] if it is the first.
    ///
    /// `from` below the log start or past the log end is [`Error::OffsetOutOfRange`];
    /// `from >= upto` reads nothing.
    pub fn read(&self, from: Offset, upto: Offset, max_bytes: usize) -> Result<Vec<u8>, Error> {
        self.plan_read(from, upto, max_bytes)?.read()
    }

    /// [`Self::read`] in two steps: what to read, decided here (under the partition lock), and
    /// the reading, by [`PlannedRead::read`] without the lock. Only whole entries below `upto`
    /// are read; callers take it from the high watermark, so those entries are committed and no
    /// truncation rewrites them, and the planned segments' files stay readable through their
    /// handles even if retention deletes them meanwhile.
    pub fn plan_read(&self, from: Offset, upto: Offset, max_bytes: usize) -> Result<PlannedRead, Error> {
        let end = self.next_offset();
        if from < self.log_start || from > end {
            return Err(Error::OffsetOutOfRange {
                offset: from,
                log_start: self.log_start,
                log_end: end,
            });
        }
        let upto = upto.min(end);
        let mut plan = PlannedRead { from, upto, max_bytes, max_entry_bytes: self.config.max_entry_bytes, segments: Vec::new() };
        if from >= upto {
            return Ok(plan);
        }
        let first = self.segment_for(from);
        let mut planned = 0u64;
        for i in first..self.segment_count() {
            let seg = self.segment(i);
            let start = if i == first { self.position_hint(i, from)? } else { FILE_HEADER_SIZE };
            plan.segments.push(PlannedSegment { file: Arc::clone(seg.file()?), path: seg.paths.log.clone(), start, size: seg.size });
            planned += seg.size.saturating_sub(start);
            // The read stops at `max_bytes` (one entry past it at most) and before `upto`.
            let next_base = (i + 1 < self.segment_count()).then(|| self.segment(i + 1).base);
            if planned >= max_bytes as u64 || next_base.is_none_or(|base| base >= upto) {
                break;
            }
        }
        Ok(plan)
    }

    /// Calls `f` with the header and payload length of every stored entry, oldest first:
    /// start-up builds its raft index -> (term, offset) table from this without reading the
    /// log's data.
    ///
    /// Only headers are read, through a buffer, skipping payloads, so payload crcs are not
    /// checked here (reading an entry checks its own). Each header must decode, fit in its
    /// segment and follow the one before (raft index, base offset, term); the first that does
    /// not is [`Error::Corruption`], after `f` has seen those before it.
    ///
    /// Entries below the log start are included as long as their segment exists (the first
    /// segment usually begins before the start, and `drop_prefix` may keep a segment wholly
    /// below it): they are intact, and the log start bounds Kafka reads, not Raft's first index.
    /// Callers that want only readable offsets compare `base_offset` with
    /// [`Self::log_start_offset`].
    pub fn scan_metas(&self, mut f: impl FnMut(&EntryMeta, u32)) -> Result<(), Error> {
        let mut follows = None;
        for i in 0..self.segment_count() {
            let seg = self.segment(i);
            let mut reader = HeaderReader::new(seg.file()?, seg.size);
            // The first entry of a segment starts at its base, so this also checks that
            // segments join up.
            let mut next_offset = seg.base;
            let mut pos = FILE_HEADER_SIZE;
            loop {
                let h = match reader.probe(pos).map_err(io_err(&seg.paths.log))? {
                    Probe::End => break,
                    Probe::Bad(reason) => return Err(corruption(seg, pos, reason)),
                    Probe::Entry(h) => h,
                };
                let m = h.meta;
                if let Err(reason) = recovery::check_follows(&m, next_offset, follows) {
                    return Err(corruption(seg, pos, reason));
                }
                f(&m, h.payload_len);
                next_offset = m.next_offset();
                follows = Some((RaftIndex(m.index.0.saturating_add(1)), m.term));
                pos += h.entry_len();
            }
        }
        Ok(())
    }

    /// The entries with raft index in `from..upto`, in order, each with its payload (crc
    /// checked): what Raft sends to followers and applies. Stops before the payloads would
    /// exceed `max_bytes` in total, but returns at least entry `from`. `upto` past the log end
    /// reads to the end; `from >= upto` reads nothing.
    ///
    /// `hint` is the base offset of entry `from` (from the table built with
    /// [`Self::scan_metas`]), which the offset index turns into a position shortly before the
    /// entry. Like [`Self::scan_metas`], entries below the log start are served while stored.
    ///
    /// [`Error::EntryNotFound`] if `from` is not stored: dropped, at or past
    /// [`Self::next_index`], or not where `hint` says. A bad entry after the first returned
    /// ends the answer early (the next read starts at it and reports it); a bad first entry is
    /// [`Error::Corruption`].
    pub fn read_entries(
        &self,
        from: RaftIndex,
        hint: Offset,
        upto: RaftIndex,
        max_bytes: usize,
    ) -> Result<Vec<(EntryMeta, Vec<u8>)>, Error> {
        let mut out: Vec<(EntryMeta, Vec<u8>)> = Vec::new();
        if from >= upto {
            return Ok(out);
        }
        if from >= self.next_index {
            return Err(Error::EntryNotFound { index: from });
        }
        // Control entries carry the base offset of the data entry after them, so entry `from`
        // may end the segment before the one whose base is `hint`: start in the last segment
        // below `hint`, before its last data entry below `hint`.
        let first = self.segment_for(Offset(hint.0.saturating_sub(1)));
        let mut bytes = 0usize;
        let mut scratch = Vec::new();
        for i in first..self.segment_count() {
            let seg = self.segment(i);
            let file = seg.file()?;
            let mut pos = if i == first {
                self.position_before(i, hint)?
            } else {
                FILE_HEADER_SIZE
            };
            loop {
                let h = match probe(file, pos, seg.size).map_err(io_err(&seg.paths.log))? {
                    Probe::End => break,
                    Probe::Bad(reason) => return corrupt_or_partial(out, &seg.paths.log, pos, reason),
                    Probe::Entry(h) => h,
                };
                let m = h.meta;
                match out.last() {
                    // Before `from`: skipped unread.
                    None if m.index < from => {
                        pos += h.entry_len();
                        continue;
                    }
                    None if m.index > from => return Err(Error::EntryNotFound { index: from }),
                    None => {}
                    Some((prev, _)) if m.index.0 != prev.index.0.saturating_add(1) => {
                        let reason =
                            format!("raft index {} does not follow {}", m.index, prev.index);
                        return corrupt_or_partial(out, &seg.paths.log, pos, reason);
                    }
                    Some(_) => {}
                }
                if m.index >= upto {
                    return Ok(out);
                }
                let len = h.payload_len as usize;
                if !out.is_empty() && bytes.saturating_add(len) > max_bytes {
                    return Ok(out);
                }
                let mut payload = Vec::new();
                let ok = read_payload(
                    file,
                    pos,
                    &h,
                    self.config.max_entry_bytes,
                    &mut payload,
                    &mut scratch,
                )
                .map_err(io_err(&seg.paths.log))?;
                if !ok {
                    return corrupt_or_partial(out, &seg.paths.log, pos, "crc mismatch".into());
                }
                bytes = bytes.saturating_add(len);
                out.push((m, payload));
                pos += h.entry_len();
            }
        }
        if out.is_empty() {
            return Err(Error::EntryNotFound { index: from });
        }
        Ok(out)
    }

    /// The first offset below `upto` whose entry's max timestamp is `>= ts` (Kafka ListOffsets
    /// by timestamp), at or after the log start; `None` if there is none. Answers at entry
    /// granularity: the entry's base offset.
    pub fn offset_for_timestamp(&self, ts: i64, upto: Offset) -> Result<Option<Offset>, Error> {
        let upto = upto.min(self.next_offset());
        let mut scratch = Vec::new();
        for i in self.segment_for(self.log_start)..self.segment_count() {
            let seg = self.segment(i);
            if seg.base >= upto {
                break;
            }
            if self.timestamps(i)?.1.is_none_or(|max| max < ts) {
                continue;
            }
            // Every entry up to the one named by the last record below `ts` is older than `ts`.
            let (mut pos, older_through) = match index::last_time_below(self.time_records(i)?, ts) {
                Some(t) => {
                    let offset = Offset(seg.base.0 + i64::from(t.relative_offset));
                    (self.position_hint(i, offset)?, Some(offset))
                }
                None => (FILE_HEADER_SIZE, None),
            };
            let file = seg.file()?;
            loop {
                let h = match probe(file, pos, seg.size).map_err(io_err(&seg.paths.log))? {
                    Probe::End => break,
                    Probe::Bad(reason) => return Err(corruption(seg, pos, reason)),
                    Probe::Entry(h) => h,
                };
                if !verify_payload(file, pos, &h, &mut scratch).map_err(io_err(&seg.paths.log))? {
                    return Err(corruption(seg, pos, "crc mismatch".into()));
                }
                let m = h.meta;
                if m.kind == EntryKind::Data {
                    if m.next_offset() > upto {
                        return Ok(None);
                    }
                    let older = older_through.is_some_and(|o| m.base_offset <= o);
                    if !older && m.next_offset() > self.log_start && m.max_timestamp >= ts {
                        return Ok(Some(m.base_offset.max(self.log_start)));
                    }
                }
                pos += h.entry_len();
            }
        }
        Ok(None)
    }

    /// Raft index of the first entry of segment `i`, `None` if it has none.
    fn first_index_of(&self, i: usize) -> Result<Option<RaftIndex>, Error> {
        let seg = self.segment(i);
        if !seg.has_entries() {
            return Ok(None);
        }
        match probe(seg.file()?, FILE_HEADER_SIZE, seg.size).map_err(io_err(&seg.paths.log))? {
            Probe::Entry(h) => Ok(Some(h.meta.index)),
            Probe::End => Ok(None),
            Probe::Bad(reason) => Err(corruption(seg, FILE_HEADER_SIZE, reason)),
        }
    }

    /// Raft index of the first entry in the log (`next_index` if it has none).
    fn first_index(&self) -> Result<RaftIndex, Error> {
        for i in 0..self.segment_count() {
            if let Some(index) = self.first_index_of(i)? {
                return Ok(index);
            }
        }
        Ok(self.next_index)
    }

    /// Removes every entry with raft index `>= from` (an uncommitted suffix, for a new leader).
    /// The cut is fsynced before this returns, and a checkpoint past it is removed.
    ///
    /// Fails with [`Error::TruncateOutOfRange`] if `from` is below the first entry, or would
    /// remove every entry of a log that does not start at raft index 1 (an empty log could not
    /// tell its next index after a restart).
    pub fn truncate_from(&mut self, from: RaftIndex) -> Result<(), Error> {
        if from >= self.next_index {
            return Ok(());
        }
        let first_index = self.first_index()?;
        if from < first_index || (from == first_index && first_index != RaftIndex(1)) {
            return Err(Error::TruncateOutOfRange {
                from,
                first_index,
                next_index: self.next_index,
            });
        }
        // A checkpoint at the cut itself goes too: its bytes were written by the caller, and only
        // a checkpoint below every removed entry is sure to describe none of them.
        if self.checkpoint_index.load(Ordering::Relaxed) >= from.0 {
            checkpoint::remove_checkpoint(&*self.fs, &self.dir)?;
            self.checkpoint_index.store(0, Ordering::Relaxed);
        }
        self.generation += 1;
        let mut k = 0;
        for i in (0..self.segment_count()).rev() {
            if self.first_index_of(i)?.is_some_and(|f| f < from) {
                k = i;
                break;
            }
        }
        let cut = self.locate(k, from)?;
        // Newest first, so a crash part way leaves a log that ends earlier but has no hole.
        if k < self.sealed.len() {
            self.active.seg.paths.remove(&*self.fs)?;
            while self.sealed.len() > k + 1 {
                if let Some(seg) = self.sealed.pop() {
                    seg.paths.remove(&*self.fs)?;
                }
            }
            let seg = self.sealed.remove(k);
            let new_active = self.reactivate(seg)?;
            // The removed active segment's handles close here.
            self.active = new_active;
        }
        let base = self.active.seg.base;
        let kept_times = self
            .active
            .times
            .entries()
            .partition_point(|t| i64::from(t.relative_offset) < cut.next_offset.0 - base.0);
        self.active.offsets.truncate(cut.kept_offset_records)?;
        self.active.times.truncate(kept_times)?;
        let indexed_max = self
            .active
            .times
            .entries()
            .last()
            .map(|t| (t.timestamp, Offset(base.0 + i64::from(t.relative_offset))));
        let max_timestamp = match (indexed_max, cut.scanned_max) {
            (Some(a), Some(b)) => Some(if b.0 > a.0 { b } else { a }),
            (a, b) => a.or(b),
        };
        let file = &self.active.file;
        file.set_len(cut.position)
            .map_err(io_err(&self.active.seg.paths.log))?;
        // The cut must be durable before entries are appended again at the same raft indexes,
        // or a crash could bring back the old suffix behind them.
        self.active.sync_all()?;
        self.fs.sync_dir(&self.dir).map_err(error::io_err(&self.dir))?;
        self.active.seg.size = cut.position;
        self.active.seg.next_offset = cut.next_offset;
        self.active.policy = IndexPolicy::new(
            base,
            self.config.index_interval_bytes,
            cut.position - cut.hint_position,
            max_timestamp,
        );
        self.next_index = from;
        self.last_term = cut.last_term.unwrap_or_default();
        self.log_start = self.log_start.min(cut.next_offset);
        Ok(())
    }

    /// Finds where entry `from` starts in segment `k` (its end if `from` is not in it).
    fn locate(&self, k: usize, from: RaftIndex) -> Result<Cut, Error> {
        let seg = self.segment(k);
        let file = seg.file()?;
        let offsets = self.offset_records(k)?;
        let index_at = |pos: u64| -> Result<RaftIndex, Error> {
            match probe(file, pos, seg.size).map_err(io_err(&seg.paths.log))? {
                Probe::Entry(h) => Ok(h.meta.index),
                Probe::End => Err(corruption(seg, pos, "index points at end of file".into())),
                Probe::Bad(reason) => Err(corruption(seg, pos, reason)),
            }
        };
        // Index records before the cut: raft indexes grow with positions, so binary search.
        let (mut lo, mut hi) = (0, offsets.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if index_at(u64::from(offsets[mid].position))? < from {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let hint = lo.checked_sub(1).map(|i| offsets[i]);
        let hint_position = hint.map_or(FILE_HEADER_SIZE, |h| u64::from(h.position));
        let mut cut = Cut {
            position: hint_position,
            next_offset: hint.map_or(seg.base, |h| {
                Offset(seg.base.0 + i64::from(h.relative_offset))
            }),
            last_term: None,
            scanned_max: None,
            kept_offset_records: lo,
            hint_position,
        };
        let mut scratch = Vec::new();
        loop {
            let h = match probe(file, cut.position, seg.size).map_err(io_err(&seg.paths.log))? {
                Probe::End => break,
                Probe::Bad(reason) => return Err(corruption(seg, cut.position, reason)),
                Probe::Entry(h) => h,
            };
            if h.meta.index >= from {
                break;
            }
            if !verify_payload(file, cut.position, &h, &mut scratch)
                .map_err(io_err(&seg.paths.log))?
            {
                return Err(corruption(seg, cut.position, "crc mismatch".into()));
            }
            cut.last_term = Some(h.meta.term);
            cut.next_offset = h.meta.next_offset();
            if h.meta.kind == EntryKind::Data
                && cut
                    .scanned_max
                    .is_none_or(|(t, _)| h.meta.max_timestamp > t)
            {
                cut.scanned_max = Some((h.meta.max_timestamp, h.meta.base_offset));
            }
            cut.position += h.entry_len();
        }
        Ok(cut)
    }

    /// Makes a sealed segment appendable again (after the segments behind it were truncated away).
    fn reactivate(&self, mut seg: Segment) -> Result<ActiveSegment, Error> {
        let ix = ActiveSegment::take_sealed_indexes(&mut seg)?;
        let file = self.fs.open_write(&seg.paths.log, false).map_err(io_err(&seg.paths.log))?;
        let offsets = IndexWriter::resume(&*self.fs, &seg.paths.offset_index, ix.offsets)?;
        let times = IndexWriter::resume(&*self.fs, &seg.paths.time_index, ix.times)?;
        let policy = IndexPolicy::new(seg.base, self.config.index_interval_bytes, 0, None);
        Ok(ActiveSegment::from_parts(
            seg,
            file,
            offsets,
            times,
            policy,
        ))
    }

    /// Moves the log start to `new_start` and deletes the segments wholly below it. The new
    /// start is durable before any file is deleted. Moving it back is a no-op; past the log end
    /// is [`Error::OffsetOutOfRange`].
    ///
    /// The segment holding the last entry is kept even if it lies below the start, so the log
    /// still knows its next raft index after a restart.
    pub fn drop_prefix(&mut self, new_start: Offset) -> Result<(), Error> {
        let end = self.next_offset();
        if new_start > end {
            return Err(Error::OffsetOutOfRange {
                offset: new_start,
                log_start: self.log_start,
                log_end: end,
            });
        }
        if new_start <= self.log_start {
            return Ok(());
        }
        // Durable before any deletion: replicas agree on the start through Raft, and a restart
        // must never serve offsets below it once their neighbours' files are gone.
        checkpoint::write_log_start(&*self.fs, &self.dir, new_start)?;
        self.log_start = new_start;
        self.delete_segments_below_start()
    }

    /// Replaces the whole log with one empty control entry at `index` and `term`, at `offset`,
    /// which is also the new log start (a snapshot of everything up to `index` was installed
    /// instead of the entries). The entry lets the log know its next index and last term after
    /// a restart; the caller records that it stands for the snapshot. Durable on return.
    pub fn reset_to(&mut self, index: RaftIndex, term: Term, offset: Offset, now_ms: i64) -> Result<(), Error> {
        checkpoint::remove_checkpoint(&*self.fs, &self.dir)?;
        self.checkpoint_index.store(0, Ordering::Relaxed);
        self.generation += 1;
        // The new log start first: a crash part way leaves a start no old entry is above, and
        // the caller's record of the snapshot tells it to reset again.
        checkpoint::write_log_start(&*self.fs, &self.dir, offset)?;
        // Newest first, like a truncation.
        self.active.seg.paths.remove(&*self.fs)?;
        while let Some(seg) = self.sealed.pop() {
            seg.paths.remove(&*self.fs)?;
        }
        self.active = ActiveSegment::create(&self.fs, &self.dir, offset, Some(now_ms), self.config.index_interval_bytes)?;
        self.log_start = offset;
        (self.next_index, self.last_term) = (index, Term(0));
        let marker = EntryMeta { kind: EntryKind::Control, term, index, base_offset: offset, record_count: 0, max_timestamp: -1 };
        self.append(marker, &[], now_ms)?;
        self.active.file.sync_data().map_err(error::io_err(&self.active.seg.paths.log))?;
        self.fs.sync_dir(&self.dir).map_err(error::io_err(&self.dir))
    }

    /// Deletes sealed segments wholly below the log start, oldest first.
    fn delete_segments_below_start(&mut self) -> Result<(), Error> {
        let mut deletable = self
            .sealed
            .partition_point(|s| s.next_offset <= self.log_start);
        if !self.active.seg.has_entries() && deletable == self.sealed.len() {
            // The last sealed segment holds the last entry.
            deletable = deletable.saturating_sub(1);
        }
        if deletable == 0 {
            return Ok(());
        }
        for seg in self.sealed.drain(..deletable) {
            seg.paths.remove(&*self.fs)?;
        }
        // Not needed for correctness (a resurrected old segment lies below the durable log
        // start and is deleted again at open), but keeps the directory listing honest.
        self.fs.sync_dir(&self.dir).map_err(error::io_err(&self.dir))
    }

    /// Per-segment facts for retention, oldest first. Loads sealed segments' time indexes.
    pub fn segments(&self) -> Result<Vec<SegmentInfo>, Error> {
        (0..self.segment_count())
            .map(|i| {
                let seg = self.segment(i);
                let (first_timestamp, max_timestamp) = self.timestamps(i)?;
                Ok(SegmentInfo {
                    base_offset: seg.base,
                    next_offset: seg.next_offset,
                    last_offset: (seg.next_offset > seg.base)
                        .then(|| Offset(seg.next_offset.0 - 1)),
                    size_bytes: seg.size,
                    first_timestamp,
                    max_timestamp,
                    created_ms: seg.created_ms,
                })
            })
            .collect()
    }

    /// Total bytes of the segments' log files.
    pub fn size_bytes(&self) -> u64 {
        self.sealed.iter().map(|s| s.size).sum::<u64>() + self.active.seg.size
    }

    /// Clean shutdown: fsyncs everything and writes the checkpoint at the log end with `extra`.
    pub fn close(self, extra: &[u8]) -> Result<(), Error> {
        // Everything appended must be durable before a checkpoint that vouches for it.
        self.active.sync_all()?;
        checkpoint::write_checkpoint(&*self.fs, &self.dir, &self.recovery_point(), extra)
    }
}

fn corruption(seg: &Segment, position: u64, reason: String) -> Error {
    corruption_in(&seg.paths.log, position, reason)
}

fn corruption_in(segment: &Path, position: u64, reason: String) -> Error {
    warn!(segment = %segment.display(), position, %reason, "corrupt log entry");
    Error::Corruption {
        segment: segment.to_path_buf(),
        position,
        reason,
    }
}

/// What was read before a corrupt entry, or the corruption if nothing was.
fn corrupt_or_partial<T>(
    out: Vec<T>,
    segment: &Path,
    position: u64,
    reason: String,
) -> Result<Vec<T>, Error> {
    let err = corruption_in(segment, position, reason);
    if out.is_empty() { Err(err) } else { Ok(out) }
}

/// Most bytes a read allocates up front; a larger one grows as it goes.
const MAX_READ_PREALLOCATION: usize = 64 << 20;

/// A read planned by [`PartitionLog::plan_read`].
pub struct PlannedRead {
    from: Offset,
    upto: Offset,
    max_bytes: usize,
    max_entry_bytes: u32,
    segments: Vec<PlannedSegment>,
}

/// One segment of a planned read: its file, where to start, its size when planned.
struct PlannedSegment {
    file: Arc<dyn FileHandle>,
    path: PathBuf,
    start: u64,
    size: u64,
}

impl PlannedRead {
    /// Reads the planned entries; see [`PartitionLog::read`].
    pub fn read(self) -> Result<Vec<u8>, Error> {
        // Sized once for what the read may return, so it never grows by copying (a fetch's
        // memory is what it reads); pages past what is read are never touched.
        let planned: u64 = self.segments.iter().map(|s| s.size.saturating_sub(s.start)).sum();
        let mut out = Vec::with_capacity(self.max_bytes.min(usize::try_from(planned).unwrap_or(usize::MAX)).min(MAX_READ_PREALLOCATION));
        let mut scratch = Vec::new();
        for seg in &self.segments {
            let file = seg.file.as_ref();
            let mut pos = seg.start;
            loop {
                let h = match probe(file, pos, seg.size).map_err(io_err(&seg.path))? {
                    Probe::End => break,
                    Probe::Bad(reason) => return corrupt_or_partial(out, &seg.path, pos, reason),
                    Probe::Entry(h) => h,
                };
                let m = h.meta;
                if m.kind == EntryKind::Data && m.next_offset() > self.from {
                    if m.next_offset() > self.upto {
                        return Ok(out);
                    }
                    if !out.is_empty() && out.len() + h.payload_len as usize > self.max_bytes {
                        return Ok(out);
                    }
                    let ok = read_payload(file, pos, &h, self.max_entry_bytes, &mut out, &mut scratch).map_err(io_err(&seg.path))?;
                    if !ok {
                        return corrupt_or_partial(out, &seg.path, pos, "crc mismatch".into());
                    }
                } else if !verify_payload(file, pos, &h, &mut scratch).map_err(io_err(&seg.path))? {
                    return corrupt_or_partial(out, &seg.path, pos, "crc mismatch".into());
                }
                pos += h.entry_len();
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::fs;
    use std::os::unix::fs::FileExt;

    use format::{
        LOG_FILE_SUFFIX, OFFSET_INDEX_FILE_SUFFIX, RECOVERY_POINT_FILE_NAME, TIME_INDEX_FILE_SUFFIX,
    };

    fn cfg() -> LogConfig {
        LogConfig {
            segment_bytes: 1024,
            segment_ms: 1_000_000,
            index_interval_bytes: 128,
            max_entry_bytes: 4096,
        }
    }

    fn payload_for(index: RaftIndex) -> Vec<u8> {
        format!("payload-of-entry-{:06}/", index.0)
            .repeat(2)
            .into_bytes()
    }

    /// Appends `n` entries: data entries with 3 records (timestamp 1000 + 10 * index), and a
    /// control entry at every index divisible by 7. Returns (meta, payload) of each.
    fn append_n(
        log: &mut PartitionLog,
        n: usize,
        term: Term,
        now_ms: i64,
    ) -> Vec<(EntryMeta, Vec<u8>)> {
        let mut out = Vec::new();
        for _ in 0..n {
            let index = log.next_index();
            let control = index.0.is_multiple_of(7);
            let meta = EntryMeta {
                kind: if control {
                    EntryKind::Control
                } else {
                    EntryKind::Data
                },
                term,
                index,
                base_offset: log.next_offset(),
                record_count: if control { 0 } else { 3 },
                max_timestamp: 1000 + 10 * index.0 as i64,
            };
            let payload = payload_for(index);
            log.append(meta, &payload, now_ms).unwrap();
            out.push((meta, payload));
        }
        out
    }

    fn open(dir: &Path) -> (PartitionLog, Vec<u8>, Vec<EntryMeta>) {
        open_with(dir, cfg())
    }

    fn open_with(dir: &Path, config: LogConfig) -> (PartitionLog, Vec<u8>, Vec<EntryMeta>) {
        let mut seen = Vec::new();
        let (log, extra) = PartitionLog::open(dir, config, |m, p| {
            assert_eq!(p, payload_for(m.index));
            seen.push(*m);
        })
        .unwrap();
        (log, extra, seen)
    }

    #[test]
    fn a_new_log_told_where_to_start_starts_there_and_an_existing_one_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        PartitionLog::start_new_at(&StdFs, dir.path(), Offset(500)).unwrap();
        {
            let (mut log, _, _) = open(dir.path());
            assert_eq!((log.log_start_offset(), log.next_offset(), log.next_index()), (Offset(500), Offset(500), RaftIndex(1)));
            let written = append_n(&mut log, 3, Term(1), 0);
            assert_eq!(written[0].0.base_offset, Offset(500));
            assert_eq!(log.next_offset(), Offset(509));
        }
        PartitionLog::start_new_at(&StdFs, dir.path(), Offset(9000)).unwrap();
        let (log, _, _) = open(dir.path());
        assert_eq!((log.log_start_offset(), log.next_offset()), (Offset(500), Offset(509)));
    }

    /// Concatenated payloads of the data entries wholly inside `[from, upto)`, or starting with
    /// the one containing `from`.
    fn expected(entries: &[(EntryMeta, Vec<u8>)], from: i64, upto: i64) -> Vec<u8> {
        entries
            .iter()
            .filter(|(m, _)| {
                m.kind == EntryKind::Data && m.next_offset().0 > from && m.next_offset().0 <= upto
            })
            .flat_map(|(_, p)| p.clone())
            .collect()
    }

    fn entries_in(path: &Path) -> Vec<(u64, EntryMeta)> {
        let file = StdFs.open_read(path).unwrap();
        let len = file.len().unwrap();
        let mut pos = FILE_HEADER_SIZE;
        let mut out = Vec::new();
        while let Probe::Entry(h) = probe(&file, pos, len).unwrap() {
            out.push((pos, h.meta));
            pos += h.entry_len();
        }
        out
    }

    fn log_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_str().unwrap().ends_with(LOG_FILE_SUFFIX))
            .collect();
        v.sort();
        v
    }

    fn flip_byte(path: &Path, pos: u64) {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut b = [0u8];
        f.read_exact_at(&mut b, pos).unwrap();
        f.write_all_at(&[b[0] ^ 0x40], pos).unwrap();
    }

    #[test]
    fn partition_log_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<PartitionLog>();
    }

    #[test]
    fn empty_dir_creates_segment_zero() {
        let dir = tempfile::tempdir().unwrap();
        let (log, extra, seen) = open(dir.path());
        assert!(extra.is_empty() && seen.is_empty());
        assert_eq!(
            (log.next_offset(), log.next_index(), log.last_term()),
            (Offset(0), RaftIndex(1), Term(0))
        );
        assert_eq!(log_files(dir.path()).len(), 1);
        assert_eq!(
            log.read(Offset(0), Offset(10), 100).unwrap(),
            Vec::<u8>::new()
        );
    }

    #[test]
    fn round_trip_across_rolls_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = open(dir.path());
        let entries = append_n(&mut log, 80, Term(1), 0);
        assert!(
            log.segments().unwrap().len() >= 5,
            "{:?}",
            log.segments().unwrap()
        );
        let end = log.next_offset();
        assert_eq!(log.next_index(), RaftIndex(81));
        let all = expected(&entries, 0, end.0);
        assert_eq!(log.read(Offset(0), end, usize::MAX).unwrap(), all);
        let sizes: u64 = log_files(dir.path())
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum();
        assert_eq!(log.size_bytes(), sizes);
        log.close(b"bye").unwrap();

        let (log, extra, seen) = open(dir.path());
        assert_eq!(extra, b"bye");
        assert!(seen.is_empty(), "a clean close leaves nothing to replay");
        assert!(
            log.sealed.iter().all(Segment::untouched),
            "open reads nothing of sealed segments"
        );
        assert_eq!(
            (log.next_offset(), log.next_index(), log.last_term()),
            (end, RaftIndex(81), Term(1))
        );
        assert_eq!(log.read(Offset(0), end, usize::MAX).unwrap(), all);
        for from in 0..end.0 {
            assert_eq!(
                log.read(Offset(from), end, usize::MAX).unwrap(),
                expected(&entries, from, end.0),
                "from {from}"
            );
        }
        let infos = log.segments().unwrap();
        for w in infos.windows(2) {
            assert_eq!(w[0].next_offset, w[1].base_offset);
            assert!(w[0].max_timestamp.unwrap() < w[1].first_timestamp.unwrap());
        }
    }

    #[test]
    fn read_from_middle_of_entry_returns_whole_entry() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = open(dir.path());
        let entries = append_n(&mut log, 5, Term(1), 0);
        // Entry 2 holds offsets 3..6.
        let got = log.read(Offset(4), log.next_offset(), 1).unwrap();
        assert_eq!(got, entries[1].1);
    }

    #[test]
    fn max_bytes_returns_at_least_one_entry() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = open(dir.path());
        let entries = append_n(&mut log, 5, Term(1), 0);
        let one = entries[0].1.len();
        assert_eq!(
            log.read(Offset(0), log.next_offset(), 0).unwrap(),
            entries[0].1
        );
        assert_eq!(
            log.read(Offset(0), log.next_offset(), 2 * one - 1).unwrap(),
            entries[0].1
        );
        assert_eq!(
            log.read(Offset(0), log.next_offset(), 2 * one).unwrap(),
            [entries[0].1.clone(), entries[1].1.clone()].concat()
        );
    }

    #[test]
    fn upto_bounds_reads() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = open(dir.path());
        let entries = append_n(&mut log, 10, Term(1), 0);
        let end = log.next_offset();
        assert_eq!(
            log.read(Offset(0), Offset(9), usize::MAX).unwrap(),
            expected(&entries, 0, 9)
        );
        // An entry straddling `upto` is not returned.
        assert_eq!(
            log.read(Offset(0), Offset(8), usize::MAX).unwrap(),
            expected(&entries, 0, 6)
        );
        assert!(
            log.read(Offset(5), Offset(5), usize::MAX)
                .unwrap()
                .is_empty()
        );
        assert!(
            log.read(end, Offset(i64::MAX), usize::MAX)
                .unwrap()
                .is_empty()
        );
        assert!(matches!(
            log.read(Offset(end.0 + 1), Offset(i64::MAX), 10),
            Err(Error::OffsetOutOfRange { .. })
        ));
    }

    #[test]
    fn append_rejects_gaps_and_oversize() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = open(dir.path());
        append_n(&mut log, 2, Term(2), 0);
        let mut meta = EntryMeta {
            kind: EntryKind::Data,
            term: Term(2),
            index: RaftIndex(3),
            base_offset: Offset(7),
            record_count: 1,
            max_timestamp: 0,
        };
        assert!(matches!(
            log.append(meta, b"x", 0),
            Err(Error::NotContiguous { .. })
        ));
        meta.base_offset = log.next_offset();
        assert!(matches!(
            log.append(meta, &vec![0; 4097], 0),
            Err(Error::EntryTooLarge { .. })
        ));
        meta.term = Term(1);
        assert!(matches!(
            log.append(meta, b"x", 0),
            Err(Error::InvalidEntry(_))
        ));
        meta.term = Term(2);
        log.append(meta, b"x", 0).unwrap();
    }

    #[test]
    fn entry_larger_than_segment_goes_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = open(dir.path());
        append_n(&mut log, 1, Term(1), 0);
        let big = vec![7u8; 3000];
        let meta = EntryMeta {
            kind: EntryKind::Data,
            term: Term(1),
            index: log.next_index(),
            base_offset: log.next_offset(),
            record_count: 1,
            max_timestamp: 0,
        };
        log.append(meta, &big, 0).unwrap();
        append_n(&mut log, 1, Term(1), 0);
        let segs = log.segments().unwrap();
        assert_eq!(segs.len(), 3);
        assert_eq!(
            segs[1].size_bytes,
            FILE_HEADER_SIZE + ENTRY_HEADER_SIZE as u64 + 3000
        );
        assert_eq!(
            log.read(meta.base_offset, log.next_offset(), 1).unwrap(),
            big
        );
    }

    #[test]
    fn torn_tail_is_cut_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = open(dir.path());
        let entries = append_n(&mut log, 30, Term(1), 0);
        drop(log); // crash: no close, no checkpoint
        let last = log_files(dir.path()).pop().unwrap();
        let on_disk = entries_in(&last);
        let (pos, torn) = on_disk[on_disk.len() - 1];
        fs::OpenOptions::new()
            .write(true)
            .open(&last)
            .unwrap()
            .set_len(pos + 20)
            .unwrap();

        let (mut log, extra, seen) = open(dir.path());
        assert!(extra.is_empty());
        assert_eq!(
            seen.len(),
            on_disk.len() - 1,
            "every whole entry of the last segment is replayed"
        );
        assert_eq!(log.next_index(), torn.index);
        assert_eq!(log.next_offset(), torn.base_offset);
        assert_eq!(fs::metadata(&last).unwrap().len(), pos);
        let kept = &entries[..entries.len() - 1];
        assert_eq!(
            log.read(Offset(0), log.next_offset(), usize::MAX).unwrap(),
            expected(kept, 0, i64::MAX)
        );
        let more = append_n(&mut log, 3, Term(2), 0);
        assert_eq!(more[0].0.index, torn.index);
        let all: Vec<_> = kept.iter().chain(more.iter()).cloned().collect();
        assert_eq!(
            log.read(Offset(0), log.next_offset(), usize::MAX).unwrap(),
            expected(&all, 0, i64::MAX)
        );
    }

    #[test]
    fn flipped_byte_in_tail_cuts_there() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = open(dir.path());
        append_n(&mut log, 30, Term(1), 0);
        drop(log);
        let last = log_files(dir.path()).pop().unwrap();
        let on_disk = entries_in(&last);
        let (pos, bad) = on_disk[1];
        flip_byte(&last, pos + ENTRY_HEADER_SIZE as u64 + 3);
        let (log, _, seen) = open(dir.path());
        assert_eq!(seen.len(), 1);
        assert_eq!(log.next_index(), bad.index);
        assert_eq!(fs::metadata(&last).unwrap().len(), pos);
    }

    #[test]
    fn flipped_byte_in_sealed_segment_is_reported_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = open(dir.path());
        let entries = append_n(&mut log, 40, Term(1), 0);
        let end = log.next_offset();
        drop(log);
        let second = log_files(dir.path())[1].clone();
        let on_disk = entries_in(&second);
        let (pos, bad) = *on_disk
            .iter()
            .find(|(_, m)| m.kind == EntryKind::Data && m.index.0 > on_disk[0].1.index.0 + 1)
            .unwrap();
        flip_byte(&second, pos + ENTRY_HEADER_SIZE as u64 + 1);

        let (log, _, _) = open(dir.path());
        assert_eq!(
            log.next_offset(),
            end,
            "sealed segments are trusted at open"
        );
        match log.read(bad.base_offset, end, usize::MAX) {
            Err(Error::Corruption {
                segment, position, ..
            }) => {
                assert_eq!(segment, second);
                assert_eq!(position, pos);
            }
            other => panic!("expected corruption, got {other:?}"),
        }
        // Reads before it return the entries before it and stop there.
        assert_eq!(
            log.read(Offset(0), end, usize::MAX).unwrap(),
            expected(&entries, 0, bad.base_offset.0)
        );
        // Reads after it work.
        let after = bad.next_offset();
        assert_eq!(
            log.read(after, end, usize::MAX).unwrap(),
            expected(&entries, after.0, end.0)
        );
    }

    #[test]
    fn huge_length_prefix_does_not_allocate() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = open(dir.path());
        append_n(&mut log, 40, Term(1), 0);
        let end = log.next_offset();
        drop(log);
        let files = log_files(dir.path());
        // In a sealed segment: a length far past the file is reported, not allocated.
        let (pos, m) = entries_in(&files[0])[2];
        let f = OpenOptions::new().write(true).open(&files[0]).unwrap();
        f.write_all_at(&0xFFFF_FFF0u32.to_le_bytes(), pos).unwrap();
        // In the tail: the same is cut at recovery.
        let last = files.last().unwrap();
        let (tail_pos, tail_meta) = entries_in(last)[1];
        let f = OpenOptions::new().write(true).open(last).unwrap();
        f.write_all_at(&0xFFFF_FFF0u32.to_le_bytes(), tail_pos)
            .unwrap();

        let (log, _, _) = open(dir.path());
        assert_eq!(log.next_index(), tail_meta.index);
        assert!(log.next_offset() < end);
        assert!(matches!(
            log.read(m.base_offset, log.next_offset(), usize::MAX),
            Err(Error::Corruption { .. })
        ));
    }

    #[test]
    fn length_above_max_entry_bytes_is_verified_before_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes: 1 << 20,
            ..cfg()
        };
        let (mut log, _, _) = open_with(dir.path(), config.clone());
        let big = vec![1u8; 4000];
        let meta = EntryMeta {
            kind: EntryKind::Data,
            term: Term(1),
            index: RaftIndex(1),
            base_offset: Offset(0),
            record_count: 1,
            max_timestamp: 0,
        };
        log.append(meta, &big, 0).unwrap();
        log.close(b"").unwrap();
        // Lowering max-entry-bytes keeps the entry: it is crc-checked in chunks, then read.
        let (log, _) = PartitionLog::open(
            dir.path(),
            LogConfig {
                max_entry_bytes: 100,
                ..config
            },
            |_, _| {},
        )
        .unwrap();
        assert_eq!(log.read(Offset(0), Offset(1), 1).unwrap(), big);
    }

    #[test]
    fn garbage_indexes_are_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = open(dir.path());
        let entries = append_n(&mut log, 60, Term(1), 0);
        let end = log.next_offset();
        let ts_answers: Vec<_> = (990..1700)
            .step_by(7)
            .map(|ts| log.offset_for_timestamp(ts, end).unwrap())
            .collect();
        drop(log);
        let files = log_files(dir.path());
        for path in [&files[0], files.last().unwrap()] {
            let stem = path
                .to_str()
                .unwrap()
                .strip_suffix(LOG_FILE_SUFFIX)
                .unwrap();
            fs::write(format!("{stem}{OFFSET_INDEX_FILE_SUFFIX}"), vec![0xAB; 300]).unwrap();
            let time_index = format!("{stem}{TIME_INDEX_FILE_SUFFIX}");
            let mut t = fs::read(&time_index).unwrap();
            t.truncate(FILE_HEADER_SIZE as usize + 5); // torn record
            fs::write(&time_index, t).unwrap();
        }
        let (log, _, _) = open(dir.path());
        for from in 0..end.0 {
            assert_eq!(
                log.read(Offset(from), end, usize::MAX).unwrap(),
                expected(&entries, from, end.0)
            );
        }
        let again: Vec<_> = (990..1700)
            .step_by(7)
            .map(|ts| log.offset_for_timestamp(ts, end).unwrap())
            .collect();
        assert_eq!(again, ts_answers);
        // The sealed segment's index files were rewritten whole.
        let stem = files[0]
            .to_str()
            .unwrap()
            .strip_suffix(LOG_FILE_SUFFIX)
            .unwrap();
        let len = fs::metadata(format!("{stem}{OFFSET_INDEX_FILE_SUFFIX}"))
            .unwrap()
            .len();
        assert_eq!((len - FILE_HEADER_SIZE) % 8, 0);
    }

    #[test]
    fn checkpoint_limits_replay() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = open(dir.path());
        append_n(&mut log, 3, Term(1), 0);
        let (file, point) = log.sync_target();
        file.sync_data().unwrap();
        log.write_checkpoint(&point, b"state@4").unwrap();
        append_n(&mut log, 2, Term(1), 0);
        drop(log);
        let (log, extra, seen) = open(dir.path());
        assert_eq!(extra, b"state@4");
        assert_eq!(
            seen.iter().map(|m| m.index.0).collect::<Vec<_>>(),
            vec![4, 5]
        );
        assert_eq!(log.next_index(), RaftIndex(6));
    }

    #[test]
    fn checkpoint_in_a_rolled_segment_replays_from_there() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = open(dir.path());
        append_n(&mut log, 3, Term(1), 0);
        let (file, point) = log.sync_target();
        file.sync_data().unwrap();
        log.write_checkpoint(&point, b"s").unwrap();
        append_n(&mut log, 20, Term(1), 0); // rolls past the checkpointed segment
        assert!(log.segments().unwrap().len() >= 2);
        drop(log);
        let (log, extra, seen) = open(dir.path());
        assert_eq!(extra, b"s");
        assert_eq!(
            seen.iter().map(|m| m.index.0).collect::<Vec<_>>(),
            (4..=23).collect::<Vec<_>>()
        );
        assert_eq!(log.next_index(), RaftIndex(24));
    }

    #[test]
    fn invalid_or_stale_checkpoint_falls_back_to_scanning_last_segment() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = open(dir.path());
        append_n(&mut log, 25, Term(1), 0);
        let (_, point) = log.sync_target();
        log.write_checkpoint(&point, b"s").unwrap();
        let last_segment_entries = entries_in(&log_files(dir.path()).pop().unwrap()).len();
        drop(log);
        flip_byte(
            &dir.path().join(RECOVERY_POINT_FILE_NAME),
            FILE_HEADER_SIZE + 20,
        );
        let (log, extra, seen) = open(dir.path());
        assert!(extra.is_empty());
        assert_eq!(seen.len(), last_segment_entries);
        assert_eq!(log.next_index(), RaftIndex(26));

        // A recovery point taken before a truncation cannot be written.
        let (mut log, _, _) = open(dir.path());
        let (_, point) = log.sync_target();
        log.truncate_from(RaftIndex(20)).unwrap();
        assert!(matches!(
            log.write_checkpoint(&point, b""),
            Err(Error::StaleRecoveryPoint)
        ));
    }

    #[test]
    fn checkpoint_past_the_file_end_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = open(dir.path());
        append_n(&mut log, 5, Term(1), 0);
        let (_, point) = log.sync_target();
        log.write_checkpoint(&point, b"s").unwrap();
        drop(log);
        let last = log_files(dir.path()).pop().unwrap();
        let (pos, _) = entries_in(&last)[3];
        fs::OpenOptions::new()
            .write(true)
            .open(&last)
            .unwrap()
            .set_len(pos)
            .unwrap();
        let (log, extra, seen) = open(dir.path());
        assert!(extra.is_empty());
        assert_eq!(seen.len(), 3);
        assert_eq!(log.next_index(), RaftIndex(4));
        assert!(
            !dir.path().join(RECOVERY_POINT_FILE_NAME).exists(),
            "an unusable checkpoint is removed before the log grows back past it"
        );
    }

    #[test]
    fn truncate_from_then_append() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = open(dir.path());
        let entries = append_n(&mut log, 40, Term(1), 0);
        let (_, point) = log.sync_target();
        log.write_checkpoint(&point, b"s").unwrap();
        let segments_before = log.segments().unwrap().len();

        // Cut inside an older segment.
        let cut = RaftIndex(12);
        log.truncate_from(cut).unwrap();
        let kept = &entries[..11];
        assert_eq!(log.next_index(), cut);
        assert_eq!(log.last_term(), Term(1));
        assert_eq!(log.next_offset(), entries[11].0.base_offset);
        assert!(log.segments().unwrap().len() < segments_before);
        assert!(
            !dir.path().join(RECOVERY_POINT_FILE_NAME).exists(),
            "checkpoint past the cut is removed"
        );
        let more = append_n(&mut log, 15, Term(2), 0);
        let all: Vec<_> = kept.iter().chain(more.iter()).cloned().collect();
        let end = log.next_offset();
        assert_eq!(
            log.read(Offset(0), end, usize::MAX).unwrap(),
            expected(&all, 0, i64::MAX)
        );
        let answer = log.offset_for_timestamp(1000 + 10 * 13, end).unwrap();
        assert_eq!(answer, Some(more[1].0.base_offset));
        drop(log);

        let (mut log, extra, _) = open(dir.path());
        assert!(extra.is_empty());
        assert_eq!(
            (log.next_index(), log.last_term(), log.next_offset()),
            (RaftIndex(27), Term(2), end)
        );
        for from in 0..end.0 {
            assert_eq!(
                log.read(Offset(from), end, usize::MAX).unwrap(),
                expected(&all, from, end.0)
            );
        }

        // Cut inside the active segment, then everything.
        log.truncate_from(RaftIndex(26)).unwrap();
        assert_eq!(log.next_index(), RaftIndex(26));
        assert!(matches!(
            log.truncate_from(RaftIndex(0)),
            Err(Error::TruncateOutOfRange { .. })
        ));
        log.truncate_from(RaftIndex(1)).unwrap();
        assert_eq!(
            (log.next_index(), log.next_offset(), log.last_term()),
            (RaftIndex(1), Offset(0), Term(0))
        );
        assert_eq!(log_files(dir.path()).len(), 1);
        let fresh = append_n(&mut log, 3, Term(3), 0);
        drop(log);
        let (log, _, _) = open(dir.path());
        assert_eq!(
            log.read(Offset(0), log.next_offset(), usize::MAX).unwrap(),
            expected(&fresh, 0, i64::MAX)
        );
    }

    #[test]
    fn truncate_at_a_segment_boundary_reuses_the_previous_segment() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = open(dir.path());
        append_n(&mut log, 30, Term(1), 0);
        let files = log_files(dir.path());
        let first_of_second = entries_in(&files[1])[0].1;
        log.truncate_from(first_of_second.index).unwrap();
        assert_eq!(log_files(dir.path()), files[..1]);
        assert_eq!(log.next_offset(), first_of_second.base_offset);
        let more = append_n(&mut log, 20, Term(2), 0);
        assert_eq!(more[0].0.index, first_of_second.index);
        assert!(log_files(dir.path()).len() >= 2);
    }

    #[test]
    fn a_planned_read_survives_retention_deleting_its_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = open(dir.path());
        let entries = append_n(&mut log, 60, Term(1), 0);
        let end = log.next_offset();
        let planned = log.plan_read(Offset(0), end, usize::MAX).unwrap();
        // Retention deletes the planned segments before the (lock-free) read runs.
        let segs = log.segments().unwrap();
        log.drop_prefix(segs[2].base_offset).unwrap();
        assert_eq!(log_files(dir.path()).len(), segs.len() - 2);
        assert_eq!(planned.read().unwrap(), expected(&entries, 0, end.0));
        // A plan stops at max_bytes: entries appended after it are not part of it.
        let small = log.plan_read(segs[2].base_offset, end, 1).unwrap();
        append_n(&mut log, 5, Term(1), 0);
        let read = small.read().unwrap();
        assert!(!read.is_empty() && read.len() < expected(&entries, segs[2].base_offset.0, end.0).len());
    }

    #[test]
    fn drop_prefix_deletes_segments_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = open(dir.path());
        let entries = append_n(&mut log, 60, Term(1), 0);
        let end = log.next_offset();
        let segs = log.segments().unwrap();
        let new_start = Offset(segs[2].base_offset.0 + 1);
        log.drop_prefix(new_start).unwrap();
        assert_eq!(log.log_start_offset(), new_start);
        assert_eq!(log.segments().unwrap()[0].base_offset, segs[2].base_offset);
        assert_eq!(log_files(dir.path()).len(), segs.len() - 2);
        assert!(matches!(
            log.read(Offset(0), end, 10),
            Err(Error::OffsetOutOfRange { .. })
        ));
        assert!(matches!(
            log.drop_prefix(Offset(end.0 + 1)),
            Err(Error::OffsetOutOfRange { .. })
        ));
        drop(log);

        let (mut log, _, _) = open(dir.path());
        assert_eq!(log.log_start_offset(), new_start);
        assert_eq!(
            log.read(new_start, end, usize::MAX).unwrap(),
            expected(&entries, new_start.0, end.0)
        );
        assert_eq!(log.offset_for_timestamp(0, end).unwrap(), Some(new_start));
        // Dropping everything keeps the segment holding the last entry.
        log.drop_prefix(end).unwrap();
        assert_eq!(
            log.read(end, Offset(i64::MAX), 10).unwrap(),
            Vec::<u8>::new()
        );
        drop(log);
        let (log, _, _) = open(dir.path());
        assert_eq!(
            (log.next_offset(), log.next_index(), log.log_start_offset()),
            (end, RaftIndex(61), end)
        );
    }

    #[test]
    fn offset_for_timestamp_finds_first_entry_at_or_after() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = open(dir.path());
        let entries = append_n(&mut log, 50, Term(1), 0);
        let end = log.next_offset();
        let data: Vec<_> = entries
            .iter()
            .map(|(m, _)| *m)
            .filter(|m| m.kind == EntryKind::Data)
            .collect();
        for ts in 990..1520 {
            let want = data
                .iter()
                .find(|m| m.max_timestamp >= ts)
                .map(|m| m.base_offset);
            assert_eq!(log.offset_for_timestamp(ts, end).unwrap(), want, "ts {ts}");
        }
        assert_eq!(
            log.offset_for_timestamp(1000 + 10 * 30, Offset(10))
                .unwrap(),
            None
        );
        drop(log);
        let (log, _, _) = open(dir.path());
        assert_eq!(
            log.offset_for_timestamp(1000 + 10 * 30 - 5, end).unwrap(),
            Some(data.iter().find(|m| m.index.0 == 30).unwrap().base_offset)
        );
    }

    #[test]
    fn offset_for_timestamp_with_unordered_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = open(dir.path());
        let stamps = [50, 10, 70, 20, 90, 30, 60, 100, 5, 95, 40, 80];
        for (i, ts) in stamps.iter().enumerate() {
            let meta = EntryMeta {
                kind: EntryKind::Data,
                term: Term(1),
                index: RaftIndex(i as u64 + 1),
                base_offset: log.next_offset(),
                record_count: 1,
                max_timestamp: *ts,
            };
            log.append(meta, &[0u8; 200], 0).unwrap();
        }
        for ts in 0..110 {
            let want = stamps
                .iter()
                .position(|&s| s >= ts)
                .map(|i| Offset(i as i64));
            assert_eq!(
                log.offset_for_timestamp(ts, log.next_offset()).unwrap(),
                want,
                "ts {ts}"
            );
        }
    }

    #[test]
    fn segment_ms_rolls_old_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = open_with(
            dir.path(),
            LogConfig {
                segment_ms: 100,
                segment_bytes: 1 << 20,
                ..cfg()
            },
        );
        append_n(&mut log, 1, Term(1), 1_000);
        append_n(&mut log, 1, Term(1), 1_099);
        assert_eq!(log.segments().unwrap().len(), 1);
        append_n(&mut log, 1, Term(1), 1_100);
        let segs = log.segments().unwrap();
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[1].created_ms, Some(1_100));
        append_n(&mut log, 1, Term(1), 1_150);
        assert_eq!(log.segments().unwrap().len(), 2);
    }

    #[test]
    fn torn_header_of_new_segment_is_recreated() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = open(dir.path());
        append_n(&mut log, 20, Term(1), 0);
        let end = log.next_offset();
        // A crash right after a roll: the new segment exists but its header is torn.
        let name = dir
            .path()
            .join(format::segment_file_name(end, LOG_FILE_SUFFIX));
        log.roll(0).unwrap();
        drop(log);
        fs::OpenOptions::new()
            .write(true)
            .open(&name)
            .unwrap()
            .set_len(7)
            .unwrap();
        let (mut log, _, _) = open(dir.path());
        assert_eq!((log.next_offset(), log.next_index()), (end, RaftIndex(21)));
        assert_eq!(fs::metadata(&name).unwrap().len(), FILE_HEADER_SIZE);
        append_n(&mut log, 2, Term(1), 0);
    }

    #[test]
    fn control_entries_take_indexes_not_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = open(dir.path());
        let entries = append_n(&mut log, 8, Term(1), 0);
        let control = entries[6].0;
        assert_eq!(control.kind, EntryKind::Control);
        assert_eq!(control.base_offset, entries[7].0.base_offset);
        assert_eq!(log.next_offset(), Offset(21));
        assert_eq!(log.next_index(), RaftIndex(9));
        assert_eq!(
            log.read(control.base_offset, log.next_offset(), usize::MAX)
                .unwrap(),
            entries[7].1
        );
    }

    fn scanned(log: &PartitionLog) -> Vec<EntryMeta> {
        let mut out = Vec::new();
        log.scan_metas(|m, _| out.push(*m)).unwrap();
        out
    }

    /// `read_entries` from `from` with the base offset the caller's table would give as hint.
    fn entries_from(
        log: &PartitionLog,
        all: &[(EntryMeta, Vec<u8>)],
        from: u64,
        upto: u64,
        max_bytes: usize,
    ) -> Result<Vec<(EntryMeta, Vec<u8>)>, Error> {
        let hint = all
            .iter()
            .find(|(m, _)| m.index.0 == from)
            .map_or(log.next_offset(), |(m, _)| m.base_offset);
        log.read_entries(RaftIndex(from), hint, RaftIndex(upto), max_bytes)
    }

    /// The entries of `all` with index in `from..upto`.
    fn in_range(all: &[(EntryMeta, Vec<u8>)], from: u64, upto: u64) -> Vec<(EntryMeta, Vec<u8>)> {
        all.iter()
            .filter(|(m, _)| (from..upto).contains(&m.index.0))
            .cloned()
            .collect()
    }

    #[test]
    fn scan_metas_sees_every_stored_entry_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = open(dir.path());
        assert!(scanned(&log).is_empty());
        let entries = append_n(&mut log, 80, Term(1), 0);
        let metas: Vec<_> = entries.iter().map(|(m, _)| *m).collect();
        assert_eq!(scanned(&log), metas);
        log.close(b"").unwrap();

        let (mut log, _, _) = open(dir.path());
        assert!(log.segments().unwrap().len() >= 5);
        assert_eq!(scanned(&log), metas);
        // Payloads are not read: a damaged one goes unnoticed here (reading it reports it).
        let second = log_files(dir.path())[1].clone();
        let (pos, _) = entries_in(&second)[2];
        flip_byte(&second, pos + ENTRY_HEADER_SIZE as u64 + 1);
        assert_eq!(scanned(&log), metas);

        // After a prefix drop, the first kept segment's entries below the start are still seen.
        let segs = log.segments().unwrap();
        log.drop_prefix(Offset(segs[2].base_offset.0 + 1)).unwrap();
        let first_kept = entries_in(&log_files(dir.path())[0])[0].1.index.0 as usize - 1;
        assert_eq!(metas[first_kept].base_offset, segs[2].base_offset);
        assert_eq!(scanned(&log), metas[first_kept..]);
        // And after a truncation, nothing past the cut.
        log.truncate_from(RaftIndex(70)).unwrap();
        assert_eq!(scanned(&log), metas[first_kept..69]);
    }

    #[test]
    fn scan_metas_reports_bad_headers() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = open(dir.path());
        let entries = append_n(&mut log, 40, Term(1), 0);
        drop(log);
        let second = log_files(dir.path())[1].clone();
        let (pos, bad) = entries_in(&second)[3];
        // A raft index that does not follow: the header decodes, but the chain breaks.
        flip_byte(&second, pos + 24);
        let (log, _, _) = open(dir.path());
        let mut seen = Vec::new();
        match log.scan_metas(|m, _| seen.push(*m)) {
            Err(Error::Corruption {
                segment, position, ..
            }) => {
                assert_eq!(segment, second);
                assert_eq!(position, pos);
            }
            other => panic!("expected corruption, got {other:?}"),
        }
        let before = (bad.index.0 - 1) as usize;
        assert_eq!(
            seen,
            entries[..before]
                .iter()
                .map(|(m, _)| *m)
                .collect::<Vec<_>>()
        );
        drop(log);
        // A header that does not decode.
        flip_byte(&second, pos + 24);
        flip_byte(&second, pos + 8);
        let (log, _, _) = open(dir.path());
        assert!(matches!(
            log.scan_metas(|_, _| {}),
            Err(Error::Corruption { position, .. }) if position == pos
        ));
    }

    #[test]
    fn read_entries_returns_index_ranges_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = open(dir.path());
        let entries = append_n(&mut log, 60, Term(1), 0);
        let check = |log: &PartitionLog| {
            assert!(log.segments().unwrap().len() >= 4);
            for from in 1..=60 {
                for upto in [from + 1, from + 4, from + 15, 61, 1000] {
                    let got = entries_from(log, &entries, from, upto, usize::MAX).unwrap();
                    assert_eq!(got, in_range(&entries, from, upto), "{from}..{upto}");
                }
            }
        };
        check(&log);
        log.close(b"").unwrap();
        let (log, _, _) = open(dir.path());
        check(&log);
        // An empty range reads nothing, even past the end.
        assert_eq!(entries_from(&log, &entries, 5, 5, 10).unwrap(), vec![]);
        assert_eq!(entries_from(&log, &entries, 90, 80, 10).unwrap(), vec![]);
    }

    #[test]
    fn read_entries_finds_control_entries_sharing_a_base_offset() {
        // Every data entry but a segment's first gets an offset index record, so the record at
        // a control entry's base offset points past it.
        let config = LogConfig {
            index_interval_bytes: 1,
            ..cfg()
        };
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = open_with(dir.path(), config.clone());
        let mut all = append_n(&mut log, 3, Term(1), 0); // indexes 1..=3
        let mut push = |log: &mut PartitionLog, kind: EntryKind| {
            let meta = EntryMeta {
                kind,
                term: Term(1),
                index: log.next_index(),
                base_offset: log.next_offset(),
                record_count: if kind == EntryKind::Data { 2 } else { 0 },
                max_timestamp: 5000,
            };
            let payload = payload_for(meta.index);
            log.append(meta, &payload, 0).unwrap();
            all.push((meta, payload));
        };
        // Control entries end one segment and start the next, all with the new segment's base.
        push(&mut log, EntryKind::Control);
        push(&mut log, EntryKind::Control);
        log.roll(0).unwrap();
        push(&mut log, EntryKind::Control);
        push(&mut log, EntryKind::Data);
        push(&mut log, EntryKind::Control);
        push(&mut log, EntryKind::Data);
        push(&mut log, EntryKind::Data);
        let base = log.segments().unwrap()[1].base_offset;
        assert_eq!(all[3].0.base_offset, base);
        let check = |log: &PartitionLog| {
            let last = all.len() as u64;
            for from in 1..=last {
                for upto in [from + 1, from + 2, last + 1] {
                    let got = entries_from(log, &all, from, upto, usize::MAX).unwrap();
                    assert_eq!(got, in_range(&all, from, upto), "{from}..{upto}");
                }
            }
        };
        check(&log);
        drop(log);
        let (log, _, _) = open_with(dir.path(), config);
        check(&log);
    }

    #[test]
    fn read_entries_max_bytes_returns_at_least_one_entry() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = open(dir.path());
        let entries = append_n(&mut log, 20, Term(1), 0);
        let one = entries[0].1.len();
        let read = |max| entries_from(&log, &entries, 9, 21, max).unwrap();
        assert_eq!(read(0), in_range(&entries, 9, 10));
        assert_eq!(read(3 * one - 1), in_range(&entries, 9, 11));
        assert_eq!(read(3 * one), in_range(&entries, 9, 12));
        assert_eq!(read(usize::MAX), in_range(&entries, 9, 21));
    }

    #[test]
    fn read_entries_reports_entries_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = open(dir.path());
        let entries = append_n(&mut log, 60, Term(1), 0);
        let not_found = |r: Result<Vec<(EntryMeta, Vec<u8>)>, Error>, index: u64| {
            assert!(
                matches!(r, Err(Error::EntryNotFound { index: i }) if i == RaftIndex(index)),
                "{index}: {r:?}"
            );
        };
        not_found(entries_from(&log, &entries, 0, 5, usize::MAX), 0);
        not_found(entries_from(&log, &entries, 61, 70, usize::MAX), 61);
        // A hint past the entry: it is not where the caller said.
        let wrong = entries[40].0.base_offset;
        not_found(
            log.read_entries(RaftIndex(20), wrong, RaftIndex(30), usize::MAX),
            20,
        );
        // A hint before it only costs a longer scan.
        assert_eq!(
            log.read_entries(RaftIndex(20), Offset(0), RaftIndex(30), usize::MAX)
                .unwrap(),
            in_range(&entries, 20, 30)
        );

        let segs = log.segments().unwrap();
        log.drop_prefix(segs[2].base_offset).unwrap();
        let first_kept = entries_in(&log_files(dir.path())[0])[0].1.index.0;
        not_found(entries_from(&log, &entries, 1, 5, usize::MAX), 1);
        not_found(
            entries_from(&log, &entries, first_kept - 1, 61, usize::MAX),
            first_kept - 1,
        );
        assert_eq!(
            entries_from(&log, &entries, first_kept, 61, usize::MAX).unwrap(),
            in_range(&entries, first_kept, 61)
        );
    }

    #[test]
    fn read_entries_checks_crcs() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = open(dir.path());
        let entries = append_n(&mut log, 40, Term(1), 0);
        drop(log);
        let second = log_files(dir.path())[1].clone();
        let (pos, bad) = entries_in(&second)[2];
        flip_byte(&second, pos + ENTRY_HEADER_SIZE as u64 + 1);
        let (log, _, _) = open(dir.path());
        let bad = bad.index.0;
        match entries_from(&log, &entries, bad, 41, usize::MAX) {
            Err(Error::Corruption {
                segment, position, ..
            }) => {
                assert_eq!(segment, second);
                assert_eq!(position, pos);
            }
            other => panic!("expected corruption, got {other:?}"),
        }
        // Entries before it are returned, and the answer stops there.
        assert_eq!(
            entries_from(&log, &entries, bad - 3, 41, usize::MAX).unwrap(),
            in_range(&entries, bad - 3, bad)
        );
        // Skipped entries before `from` are not read.
        assert_eq!(
            log.read_entries(RaftIndex(bad + 1), Offset(0), RaftIndex(41), usize::MAX)
                .unwrap(),
            in_range(&entries, bad + 1, 41)
        );
    }
}
