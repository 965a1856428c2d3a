//! The sparse offset and time indexes of a segment: their records, how they are loaded and
//! checked, how they are appended to, and which entries they record.
//!
//! An index only speeds up finding an entry; it never decides what the log contains. A record
//! that cannot be believed (torn, out of order, pointing past the data) ends the usable part of
//! the file, and a sparser index is still a correct one: lookups then scan a little further.

use std::sync::Arc;
use std::path::{Path, PathBuf};

use super::error::io_err;
use super::fs::{FileHandle, FileSystem};
use super::format::{
    ENTRY_HEADER_SIZE, FILE_HEADER_SIZE, FileKind, check_file_header, encode_file_header, i64_at,
    u32_at,
};
use super::{EntryKind, EntryMeta, Error, Offset};

/// A fixed-size index record.
pub(super) trait IndexRecord: Copy + std::fmt::Debug {
    /// Encoded size.
    const LEN: usize;
    /// Which file it lives in.
    const KIND: FileKind;
    /// Writes the record into `out` (`out.len() == LEN`).
    fn encode(&self, out: &mut [u8]);
    /// Reads a record from `b` (`b.len() == LEN`).
    fn decode(b: &[u8]) -> Self;
    /// Whether the record may follow `prev` in a segment of the given bounds.
    fn follows(&self, prev: Option<&Self>, bounds: &IndexBounds) -> bool;
}

/// Maps the relative offset of a data entry to its byte position in the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct OffsetEntry {
    /// `base_offset - segment base`.
    pub relative_offset: u32,
    /// Byte position of the entry's header.
    pub position: u32,
}

/// The data entry at `relative_offset` has max timestamp `timestamp`, and no entry at or before
/// it in the segment has a larger one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TimeEntry {
    /// Largest timestamp so far in the segment.
    pub timestamp: i64,
    /// Relative offset of the entry carrying it.
    pub relative_offset: u32,
}

/// What an index record must stay within to be believed.
#[derive(Debug, Clone, Copy)]
pub(super) struct IndexBounds {
    /// Length of the segment's log file: positions point below it.
    pub segment_size: u64,
    /// `next_offset - base` of the segment: relative offsets are below it.
    pub offset_span: u64,
}

impl IndexRecord for OffsetEntry {
    const LEN: usize = 8;
    const KIND: FileKind = FileKind::OffsetIndex;

    fn encode(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.relative_offset.to_le_bytes());
        out[4..8].copy_from_slice(&self.position.to_le_bytes());
    }

    fn decode(b: &[u8]) -> Self {
        OffsetEntry {
            relative_offset: u32_at(b, 0),
            position: u32_at(b, 4),
        }
    }

    fn follows(&self, prev: Option<&Self>, bounds: &IndexBounds) -> bool {
        let in_bounds = u64::from(self.position) >= FILE_HEADER_SIZE
            && u64::from(self.position) < bounds.segment_size
            && u64::from(self.relative_offset) < bounds.offset_span;
        in_bounds
            && prev.is_none_or(|p| {
                self.relative_offset > p.relative_offset && self.position > p.position
            })
    }
}

impl IndexRecord for TimeEntry {
    const LEN: usize = 12;
    const KIND: FileKind = FileKind::TimeIndex;

    fn encode(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.timestamp.to_le_bytes());
        out[8..12].copy_from_slice(&self.relative_offset.to_le_bytes());
    }

    fn decode(b: &[u8]) -> Self {
        TimeEntry {
            timestamp: i64_at(b, 0),
            relative_offset: u32_at(b, 8),
        }
    }

    fn follows(&self, prev: Option<&Self>, bounds: &IndexBounds) -> bool {
        u64::from(self.relative_offset) < bounds.offset_span
            && prev.is_none_or(|p| {
                self.timestamp > p.timestamp && self.relative_offset > p.relative_offset
            })
    }
}

/// The believable prefix of an index file.
#[derive(Debug)]
pub(super) struct Loaded<E> {
    /// Records up to the first one that cannot be believed.
    pub entries: Vec<E>,
    /// Whether the whole file was believable (header and every record).
    pub clean: bool,
}

/// Reads the believable prefix of the index at `path`. A missing file loads as empty and unclean.
///
/// Reads at most one record per possible entry of the segment, so a huge file costs no more
/// memory than a full index would.
pub(super) fn load<E: IndexRecord>(fs: &dyn FileSystem, path: &Path, bounds: &IndexBounds) -> Result<Loaded<E>, Error> {
    let file = match fs.open_read(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Loaded {
                entries: Vec::new(),
                clean: false,
            });
        }
        Err(e) => return Err(io_err(path)(e)),
    };
    let len = file.len().map_err(io_err(path))?;
    let max_records = bounds.segment_size / ENTRY_HEADER_SIZE as u64 + 1;
    let cap = FILE_HEADER_SIZE + max_records * E::LEN as u64;
    let mut bytes = vec![0; len.min(cap) as usize];
    file.read_exact_at(&mut bytes, 0).map_err(io_err(path))?;
    if check_file_header(E::KIND, &bytes).is_err() {
        return Ok(Loaded {
            entries: Vec::new(),
            clean: false,
        });
    }
    let body = &bytes[FILE_HEADER_SIZE as usize..];
    let mut entries: Vec<E> = Vec::with_capacity(body.len() / E::LEN);
    let mut clean = len <= cap && body.len().is_multiple_of(E::LEN);
    for chunk in body.chunks_exact(E::LEN) {
        let e = E::decode(chunk);
        if !e.follows(entries.last(), bounds) {
            clean = false;
            break;
        }
        entries.push(e);
    }
    Ok(Loaded { entries, clean })
}

/// Writes a whole index file (header and `entries`) and syncs it.
pub(super) fn write_all<E: IndexRecord>(fs: &dyn FileSystem, path: &Path, entries: &[E]) -> Result<(), Error> {
    let mut w = IndexWriter::<E>::resume(fs, path, Vec::new())?;
    for e in entries {
        w.append(*e)?;
    }
    w.sync()
}

/// The index file of the active segment, open for appending.
///
/// Invariant: the file holds the header and then exactly `entries`, encoded, from the start.
#[derive(Debug)]
pub(super) struct IndexWriter<E> {
    path: PathBuf,
    /// Shared so a checkpoint can sync it without holding the log.
    file: Arc<dyn FileHandle>,
    entries: Vec<E>,
}

impl<E: IndexRecord> IndexWriter<E> {
    /// Opens (or creates) the file at `path` whose believable prefix is `entries`, and cuts
    /// everything after it. The caller got `entries` from [`load`] on the same file, truncated
    /// it, or passes none.
    pub fn resume(fs: &dyn FileSystem, path: &Path, entries: Vec<E>) -> Result<Self, Error> {
        let file = fs.open_write(path, false).map_err(io_err(path))?;
        file.write_all_at(&encode_file_header(E::KIND), 0)
            .map_err(io_err(path))?;
        let len = FILE_HEADER_SIZE + (entries.len() * E::LEN) as u64;
        file.set_len(len).map_err(io_err(path))?;
        Ok(IndexWriter {
            path: path.to_path_buf(),
            file,
            entries,
        })
    }

    /// Appends a record (to the page cache).
    pub fn append(&mut self, e: E) -> Result<(), Error> {
        let mut buf = [0u8; 16];
        let buf = &mut buf[..E::LEN];
        e.encode(buf);
        let pos = FILE_HEADER_SIZE + (self.entries.len() * E::LEN) as u64;
        self.file
            .write_all_at(buf, pos)
            .map_err(io_err(&self.path))?;
        self.entries.push(e);
        Ok(())
    }

    /// Keeps the first `n` records.
    pub fn truncate(&mut self, n: usize) -> Result<(), Error> {
        if n < self.entries.len() {
            self.entries.truncate(n);
            let len = FILE_HEADER_SIZE + (n * E::LEN) as u64;
            self.file.set_len(len).map_err(io_err(&self.path))?;
        }
        Ok(())
    }

    /// fsyncs the file.
    pub fn sync(&self) -> Result<(), Error> {
        self.file.sync_all().map_err(io_err(&self.path))
    }

    /// The open file and its path, for syncing outside the log's lock.
    pub fn handle(&self) -> (Arc<dyn FileHandle>, PathBuf) {
        (Arc::clone(&self.file), self.path.clone())
    }

    /// The records.
    pub fn entries(&self) -> &[E] {
        &self.entries
    }

    /// The records, dropping the file handle.
    pub fn into_entries(self) -> Vec<E> {
        self.entries
    }
}

/// The last offset record at or before `relative_offset`.
pub(super) fn floor_offset(entries: &[OffsetEntry], relative_offset: u32) -> Option<OffsetEntry> {
    let n = entries.partition_point(|e| e.relative_offset <= relative_offset);
    n.checked_sub(1).map(|i| entries[i])
}

/// The last time record with a timestamp below `ts`: the answer to "first entry with a timestamp
/// >= ts" lies after the entry it names.
pub(super) fn last_time_below(entries: &[TimeEntry], ts: i64) -> Option<TimeEntry> {
    let n = entries.partition_point(|e| e.timestamp < ts);
    n.checked_sub(1).map(|i| entries[i])
}

/// Decides which index records each appended (or rescanned) entry adds. The same policy runs on
/// append, on recovery and on rebuild, so a rebuilt index equals the one appends would have made.
#[derive(Debug, Clone)]
pub(super) struct IndexPolicy {
    base: Offset,
    interval: u64,
    /// Bytes of entries since the last offset record.
    pub bytes_since_index: u64,
    /// Largest max timestamp of a data entry in the segment so far, and that entry's base offset.
    pub max_timestamp: Option<(i64, Offset)>,
}

impl IndexPolicy {
    /// A policy for a segment with base `base`, resuming with the given state.
    pub fn new(
        base: Offset,
        interval: u32,
        bytes_since_index: u64,
        max_timestamp: Option<(i64, Offset)>,
    ) -> Self {
        IndexPolicy {
            base,
            interval: u64::from(interval),
            bytes_since_index,
            max_timestamp,
        }
    }

    fn relative(&self, offset: Offset) -> Option<u32> {
        u32::try_from(offset.0.checked_sub(self.base.0)?).ok()
    }

    /// Records for the entry at `position`, given the last time record so far.
    pub fn observe(
        &mut self,
        meta: &EntryMeta,
        position: u64,
        entry_len: u64,
        last_time: Option<&TimeEntry>,
    ) -> (Option<OffsetEntry>, Option<TimeEntry>) {
        let mut offset_record = None;
        let mut time_record = None;
        if meta.kind == EntryKind::Data {
            let due = self.bytes_since_index >= self.interval;
            if due
                && let (Some(relative_offset), Ok(position)) =
                    (self.relative(meta.base_offset), u32::try_from(position))
            {
                offset_record = Some(OffsetEntry {
                    relative_offset,
                    position,
                });
                self.bytes_since_index = 0;
            }
            if self
                .max_timestamp
                .is_none_or(|(t, _)| meta.max_timestamp > t)
            {
                self.max_timestamp = Some((meta.max_timestamp, meta.base_offset));
            }
            let want_time = match last_time {
                None => true,
                Some(last) => due && self.max_timestamp.is_some_and(|(t, _)| t > last.timestamp),
            };
            if want_time {
                time_record = self.time_record();
            }
        }
        self.bytes_since_index += entry_len;
        (offset_record, time_record)
    }

    /// The record that makes the time index end with the segment's largest timestamp, if it
    /// does not already (appended when the segment is sealed).
    pub fn final_time_record(&self, last_time: Option<&TimeEntry>) -> Option<TimeEntry> {
        match (self.max_timestamp, last_time) {
            (Some((t, _)), Some(last)) if t <= last.timestamp => None,
            (None, _) => None,
            _ => self.time_record(),
        }
    }

    fn time_record(&self) -> Option<TimeEntry> {
        let (timestamp, offset) = self.max_timestamp?;
        Some(TimeEntry {
            timestamp,
            relative_offset: self.relative(offset)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::fs::StdFs;
    use crate::log::{RaftIndex, Term};

    fn data(offset: i64, ts: i64) -> EntryMeta {
        EntryMeta {
            kind: EntryKind::Data,
            term: Term(1),
            index: RaftIndex(1),
            base_offset: Offset(offset),
            record_count: 1,
            max_timestamp: ts,
        }
    }

    #[test]
    fn policy_indexes_every_interval_and_first_timestamp() {
        let mut p = IndexPolicy::new(Offset(100), 100, 0, None);
        let mut times: Vec<TimeEntry> = Vec::new();
        let mut offsets = Vec::new();
        for i in 0..10 {
            let (o, t) = p.observe(
                &data(100 + i, 1000 + i),
                16 + 60 * i as u64,
                60,
                times.last(),
            );
            offsets.extend(o);
            times.extend(t);
        }
        // Records at bytes 120, 240, 360, 480 since the last one: every second entry after the first two.
        assert_eq!(
            offsets
                .iter()
                .map(|e| e.relative_offset)
                .collect::<Vec<_>>(),
            vec![2, 4, 6, 8]
        );
        assert_eq!(times.first().map(|t| t.timestamp), Some(1000));
        assert_eq!(times.len(), 5);
        assert_eq!(
            p.final_time_record(times.last()),
            Some(TimeEntry {
                timestamp: 1009,
                relative_offset: 9
            })
        );
    }

    #[test]
    fn load_keeps_believable_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.index");
        let entries = [
            OffsetEntry {
                relative_offset: 1,
                position: 100,
            },
            OffsetEntry {
                relative_offset: 5,
                position: 400,
            },
            OffsetEntry {
                relative_offset: 3,
                position: 900,
            },
        ];
        write_all(&StdFs, &path, &entries).unwrap();
        let bounds = IndexBounds {
            segment_size: 1000,
            offset_span: 10,
        };
        let l = load::<OffsetEntry>(&StdFs, &path, &bounds).unwrap();
        assert_eq!(l.entries, entries[..2]);
        assert!(!l.clean);
        std::fs::write(&path, b"garbage garbage garbage").unwrap();
        let l = load::<OffsetEntry>(&StdFs, &path, &bounds).unwrap();
        assert!(l.entries.is_empty() && !l.clean);
        assert_eq!(floor_offset(&entries[..2], 4), Some(entries[0]));
        assert_eq!(floor_offset(&entries[..2], 0), None);
    }
}
