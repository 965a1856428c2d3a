//! One segment: a `.log` file of entries and its two index files. Owns reading entries back
//! (with their crc checked), appending to the active segment, and sealing it on roll. Which
//! segment to use, and recovery, belong to the callers in `mod.rs` and `recovery.rs`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use tracing::warn;

use super::error::io_err;
use super::fs::{FileHandle, FileSystem};
use super::format::{
    ENTRY_HEADER_SIZE, EntryHeader, FILE_HEADER_SIZE, FileKind, LOG_FILE_SUFFIX,
    OFFSET_INDEX_FILE_SUFFIX, TIME_INDEX_FILE_SUFFIX, decode_entry_header, encode_entry_header,
    encode_file_header, segment_file_name,
};
use super::index::{self, IndexBounds, IndexPolicy, IndexWriter, OffsetEntry, TimeEntry};
use super::{EntryKind, EntryMeta, Error, Offset};

/// Size of the reads that check a payload's crc without holding the whole payload.
const CRC_CHUNK: usize = 64 << 10;

/// Size of the reads of [`HeaderReader`] among small entries: the headers of many per read.
const SCAN_CHUNK: usize = 64 << 10;

/// Size of the reads of [`HeaderReader`] after an entry longer than this: a whole chunk would
/// mostly copy payload that is then skipped.
const SCAN_PAGE: usize = 4 << 10;

/// The three files of a segment.
#[derive(Debug, Clone)]
pub(super) struct SegmentPaths {
    pub log: PathBuf,
    pub offset_index: PathBuf,
    pub time_index: PathBuf,
}

impl SegmentPaths {
    pub fn new(dir: &Path, base: Offset) -> Self {
        SegmentPaths {
            log: dir.join(segment_file_name(base, LOG_FILE_SUFFIX)),
            offset_index: dir.join(segment_file_name(base, OFFSET_INDEX_FILE_SUFFIX)),
            time_index: dir.join(segment_file_name(base, TIME_INDEX_FILE_SUFFIX)),
        }
    }

    /// Deletes the three files; a missing one is fine. The log file goes first, so a crash in
    /// between leaves orphan indexes, which open removes, never a log without its name.
    pub fn remove(&self, fs: &dyn FileSystem) -> Result<(), Error> {
        for path in [&self.log, &self.offset_index, &self.time_index] {
            match fs.remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(path)(e)),
            }
        }
        Ok(())
    }
}

/// A sealed segment's indexes, loaded on first use.
#[derive(Debug)]
pub(super) struct SealedIndexes {
    pub offsets: Vec<OffsetEntry>,
    pub times: Vec<TimeEntry>,
}

/// A segment's files and the facts about it that do not need reading it.
#[derive(Debug)]
pub(super) struct Segment {
    /// Offset of the first entry; the number in the file names.
    pub base: Offset,
    /// Offset after the last data entry.
    /// Invariant: for a sealed segment, equals the next segment's `base`.
    pub next_offset: Offset,
    /// Length of the log file.
    /// Invariant: bytes below it are the file header and whole entries, written or scanned by
    /// this process, or in a sealed segment that was fsynced when it was rolled.
    pub size: u64,
    /// `now_ms` when this process created the segment, if it did (or first appended to it).
    pub created_ms: Option<i64>,
    pub paths: SegmentPaths,
    /// `index_interval_bytes` to rebuild damaged indexes with.
    index_interval: u32,
    /// Where its files live.
    fs: Arc<dyn FileSystem>,
    /// The log file, opened on first read (read-write for the active segment).
    file: OnceLock<Arc<dyn FileHandle>>,
    /// Indexes of a sealed segment, loaded on first use.
    /// Invariant: never set while the segment is active (the writers hold its indexes).
    sealed_indexes: OnceLock<SealedIndexes>,
}

impl Segment {
    /// A sealed segment found on disk; nothing is read.
    pub fn sealed(
        fs: &Arc<dyn FileSystem>,
        dir: &Path,
        base: Offset,
        next_offset: Offset,
        size: u64,
        index_interval: u32,
    ) -> Self {
        Segment {
            index_interval,
            fs: Arc::clone(fs),
            base,
            next_offset,
            size,
            created_ms: None,
            paths: SegmentPaths::new(dir, base),
            file: OnceLock::new(),
            sealed_indexes: OnceLock::new(),
        }
    }

    /// The file system its files live on.
    pub fn fs(&self) -> &Arc<dyn FileSystem> {
        &self.fs
    }

    /// The log file, opened read-only on first use.
    pub fn file(&self) -> Result<&Arc<dyn FileHandle>, Error> {
        if let Some(f) = self.file.get() {
            return Ok(f);
        }
        let f = self.fs.open_read(&self.paths.log).map_err(io_err(&self.paths.log))?;
        Ok(self.file.get_or_init(|| Arc::new(f)))
    }

    /// Whether nothing of the segment has been opened or loaded yet.
    #[cfg(test)]
    pub fn untouched(&self) -> bool {
        self.file.get().is_none() && self.sealed_indexes.get().is_none()
    }

    /// Whether the segment holds at least one entry.
    pub fn has_entries(&self) -> bool {
        self.size > FILE_HEADER_SIZE
    }

    /// A sealed segment's indexes, loaded (and rebuilt if they cannot be believed) on first use.
    pub fn sealed_indexes(&self) -> Result<&SealedIndexes, Error> {
        if let Some(ix) = self.sealed_indexes.get() {
            return Ok(ix);
        }
        let ix = self.load_or_rebuild_indexes()?;
        Ok(self.sealed_indexes.get_or_init(|| ix))
    }

    fn bounds(&self) -> IndexBounds {
        IndexBounds {
            segment_size: self.size,
            offset_span: u64::try_from(self.next_offset.0 - self.base.0).unwrap_or(0),
        }
    }

    fn load_or_rebuild_indexes(&self) -> Result<SealedIndexes, Error> {
        let bounds = self.bounds();
        let offsets = index::load::<OffsetEntry>(&*self.fs, &self.paths.offset_index, &bounds)?;
        let times = index::load::<TimeEntry>(&*self.fs, &self.paths.time_index, &bounds)?;
        // A segment with data always has a time record for its first data entry.
        let times_missing = times.entries.is_empty() && self.next_offset > self.base;
        if offsets.clean && times.clean && !times_missing {
            return Ok(SealedIndexes {
                offsets: offsets.entries,
                times: times.entries,
            });
        }
        warn!(segment = %self.paths.log.display(), "rebuilding damaged indexes of a sealed segment");
        let file = self.file()?;
        let mut policy = IndexPolicy::new(self.base, self.index_interval, 0, None);
        let mut rebuilt = SealedIndexes {
            offsets: Vec::new(),
            times: Vec::new(),
        };
        let mut scratch = Vec::new();
        let mut pos = FILE_HEADER_SIZE;
        loop {
            match probe(file, pos, self.size).map_err(io_err(&self.paths.log))? {
                Probe::End => break,
                Probe::Bad(reason) => {
                    // Reads report this when they reach it; the index covers what precedes it.
                    warn!(segment = %self.paths.log.display(), position = pos, %reason, "corrupt entry in a sealed segment");
                    break;
                }
                Probe::Entry(h) => {
                    if !verify_payload(file, pos, &h, &mut scratch)
                        .map_err(io_err(&self.paths.log))?
                    {
                        warn!(segment = %self.paths.log.display(), position = pos, "crc mismatch in a sealed segment");
                        break;
                    }
                    let (o, t) = policy.observe(&h.meta, pos, h.entry_len(), rebuilt.times.last());
                    rebuilt.offsets.extend(o);
                    rebuilt.times.extend(t);
                    pos += h.entry_len();
                }
            }
        }
        rebuilt
            .times
            .extend(policy.final_time_record(rebuilt.times.last()));
        index::write_all(&*self.fs, &self.paths.offset_index, &rebuilt.offsets)?;
        index::write_all(&*self.fs, &self.paths.time_index, &rebuilt.times)?;
        Ok(rebuilt)
    }

    /// Largest timestamp and first data entry's timestamp of a sealed segment, from its time index.
    pub fn sealed_timestamps(&self) -> Result<(Option<i64>, Option<i64>), Error> {
        let ix = self.sealed_indexes()?;
        Ok((
            ix.times.first().map(|t| t.timestamp),
            ix.times.last().map(|t| t.timestamp),
        ))
    }
}

/// The segment being appended to.
#[derive(Debug)]
pub(super) struct ActiveSegment {
    pub seg: Segment,
    /// Same handle as `seg.file`, kept here to hand to group commit.
    pub file: Arc<dyn FileHandle>,
    pub offsets: IndexWriter<OffsetEntry>,
    pub times: IndexWriter<TimeEntry>,
    pub policy: IndexPolicy,
}

impl ActiveSegment {
    /// Creates a new, empty segment at `base` and makes its names durable.
    pub fn create(
        fs: &Arc<dyn FileSystem>,
        dir: &Path,
        base: Offset,
        created_ms: Option<i64>,
        index_interval: u32,
    ) -> Result<Self, Error> {
        let paths = SegmentPaths::new(dir, base);
        let file = fs.open_write(&paths.log, true).map_err(io_err(&paths.log))?;
        file.write_all_at(&encode_file_header(FileKind::Segment), 0)
            .map_err(io_err(&paths.log))?;
        // File header must be persisted: entries appended later are synced by group commit
        // (sync_data), and a crash must not leave them behind a missing header.
        file.sync_all().map_err(io_err(&paths.log))?;
        let offsets = IndexWriter::resume(&**fs, &paths.offset_index, Vec::new())?;
        let times = IndexWriter::resume(&**fs, &paths.time_index, Vec::new())?;
        offsets.sync()?;
        times.sync()?;
        // The new names must survive a crash, or entries synced into the new file would be
        // lost together with its directory entry.
        fs.sync_dir(dir).map_err(io_err(dir))?;
        let mut seg = Segment::sealed(fs, dir, base, base, FILE_HEADER_SIZE, index_interval);
        seg.created_ms = created_ms;
        Ok(Self::from_parts(
            seg,
            file,
            offsets,
            times,
            IndexPolicy::new(base, index_interval, 0, None),
        ))
    }

    /// Assembles an active segment whose log file is `file`, opened read-write.
    pub fn from_parts(
        seg: Segment,
        file: Arc<dyn FileHandle>,
        offsets: IndexWriter<OffsetEntry>,
        times: IndexWriter<TimeEntry>,
        policy: IndexPolicy,
    ) -> Self {
        debug_assert!(seg.sealed_indexes.get().is_none());
        // `seg.file` is fresh in every caller, so this sets it; if not, it already holds this file.
        let _ = seg.file.set(Arc::clone(&file));
        ActiveSegment {
            seg,
            file,
            offsets,
            times,
            policy,
        }
    }

    /// Takes a sealed segment's loaded indexes for re-activation.
    pub fn take_sealed_indexes(seg: &mut Segment) -> Result<SealedIndexes, Error> {
        seg.sealed_indexes()?;
        seg.file = OnceLock::new();
        Ok(seg.sealed_indexes.take().unwrap_or(SealedIndexes {
            offsets: Vec::new(),
            times: Vec::new(),
        }))
    }

    /// Records an entry written (or found) at `position` of length `entry_len` in the indexes.
    pub fn index_entry(
        &mut self,
        meta: &EntryMeta,
        position: u64,
        entry_len: u64,
    ) -> Result<(), Error> {
        let (o, t) = self
            .policy
            .observe(meta, position, entry_len, self.times.entries().last());
        if let Some(o) = o {
            self.offsets.append(o)?;
        }
        if let Some(t) = t {
            self.times.append(t)?;
        }
        debug_assert_eq!(position, self.seg.size);
        self.seg.size = position + entry_len;
        if meta.kind == EntryKind::Data {
            self.seg.next_offset = meta.next_offset();
        }
        Ok(())
    }

    /// Writes an entry at the end of the file (page cache only) and indexes it.
    pub fn append(&mut self, meta: &EntryMeta, payload: &[u8]) -> Result<(), Error> {
        let header = encode_entry_header(meta, payload);
        let pos = self.seg.size;
        let written = self.file.write_all_at(&header, pos).and_then(|()| {
            self.file
                .write_all_at(payload, pos + ENTRY_HEADER_SIZE as u64)
        });
        if let Err(e) = written {
            // Best effort: cut the partial entry so the next append starts clean. If this fails
            // too, recovery cuts it (its crc cannot match).
            let _ = self.file.set_len(pos);
            return Err(io_err(&self.seg.paths.log)(e));
        }
        self.index_entry(meta, pos, (ENTRY_HEADER_SIZE + payload.len()) as u64)
    }

    /// fsyncs the log file and both indexes.
    pub fn sync_all(&self) -> Result<(), Error> {
        self.file.sync_all().map_err(io_err(&self.seg.paths.log))?;
        self.offsets.sync()?;
        self.times.sync()
    }

    /// Appends the final time record and fsyncs the log and both indexes, so the segment can
    /// be trusted without a scan after a crash. Called before the next segment is created.
    pub fn prepare_seal(&mut self) -> Result<(), Error> {
        if let Some(t) = self.policy.final_time_record(self.times.entries().last()) {
            self.times.append(t)?;
        }
        // Sealed segments are never scanned at recovery: their entries and indexes must be
        // durable before the next segment exists.
        self.sync_all()
    }

    /// The segment as a sealed one, its indexes kept in memory. Call [`Self::prepare_seal`] first.
    pub fn into_sealed(self) -> Segment {
        let ix = SealedIndexes {
            offsets: self.offsets.into_entries(),
            times: self.times.into_entries(),
        };
        let seg = self.seg;
        // Never set while active (invariant on the field), so this sets it.
        let _ = seg.sealed_indexes.set(ix);
        seg
    }

    /// First data entry's timestamp and largest timestamp so far.
    pub fn timestamps(&self) -> (Option<i64>, Option<i64>) {
        (
            self.times.entries().first().map(|t| t.timestamp),
            self.policy.max_timestamp.map(|(t, _)| t),
        )
    }
}

/// What is at a position of a log file.
#[derive(Debug)]
pub(super) enum Probe {
    /// The position is the end of the file.
    End,
    /// A header that decodes and whose payload lies within the file (crc not yet checked).
    Entry(EntryHeader),
    /// Torn or garbage bytes.
    Bad(String),
}

/// Reads `buf.len()` bytes at `pos`; `false` if the file ends first.
fn pread(file: &dyn FileHandle, buf: &mut [u8], pos: u64) -> io::Result<bool> {
    match file.read_exact_at(buf, pos) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reads and decodes the entry header at `pos` of a file of length `file_len`. Allocates nothing:
/// a length prefix is checked against the file before anything is sized by it.
pub(super) fn probe(file: &dyn FileHandle, pos: u64, file_len: u64) -> io::Result<Probe> {
    if pos == file_len {
        return Ok(Probe::End);
    }
    let left = file_len.saturating_sub(pos);
    if left < ENTRY_HEADER_SIZE as u64 {
        return Ok(Probe::Bad(format!(
            "torn entry header: {left} bytes before end of file"
        )));
    }
    let mut h = [0u8; ENTRY_HEADER_SIZE];
    if !pread(file, &mut h, pos)? {
        return Ok(Probe::Bad("file ends inside an entry header".into()));
    }
    Ok(check_header(&h, left))
}

/// Decodes header bytes read with `left` bytes of file from their start.
fn check_header(h: &[u8; ENTRY_HEADER_SIZE], left: u64) -> Probe {
    let header = match decode_entry_header(h) {
        Ok(header) => header,
        Err(reason) => return Probe::Bad(reason),
    };
    if header.entry_len() > left {
        return Probe::Bad(format!(
            "entry of {} bytes extends past end of file ({left} bytes left)",
            header.entry_len()
        ));
    }
    Probe::Entry(header)
}

/// [`probe`] for walking a whole file forward: headers come from a buffer filled by large reads,
/// so a scan that skips payloads costs one read per buffer, not one per entry (start-up reads
/// every header of every segment).
pub(super) struct HeaderReader<'a> {
    file: &'a dyn FileHandle,
    file_len: u64,
    buf: Vec<u8>,
    /// File position of `buf[0]`.
    buf_start: u64,
    /// Position of the previous header asked for, to tell small entries from large ones.
    last_pos: Option<u64>,
}

impl<'a> HeaderReader<'a> {
    pub fn new(file: &'a dyn FileHandle, file_len: u64) -> Self {
        HeaderReader {
            file,
            file_len,
            buf: Vec::new(),
            buf_start: 0,
            last_pos: None,
        }
    }

    /// Same answer as `probe(file, pos, file_len)`.
    pub fn probe(&mut self, pos: u64) -> io::Result<Probe> {
        let stride = self.last_pos.map_or(0, |last| pos.saturating_sub(last));
        self.last_pos = Some(pos);
        if pos == self.file_len {
            return Ok(Probe::End);
        }
        let left = self.file_len.saturating_sub(pos);
        if left < ENTRY_HEADER_SIZE as u64 {
            return Ok(Probe::Bad(format!(
                "torn entry header: {left} bytes before end of file"
            )));
        }
        let buf_end = self.buf_start + self.buf.len() as u64;
        if pos < self.buf_start || pos + ENTRY_HEADER_SIZE as u64 > buf_end {
            // Entry sizes tend to repeat, so the last one predicts how much is worth reading.
            // Shorter at the end of the file; `left` is at least a header.
            let want = if stride > SCAN_PAGE as u64 {
                SCAN_PAGE
            } else {
                SCAN_CHUNK
            };
            let n = left.min(want as u64) as usize;
            self.buf.resize(n, 0);
            if !pread(self.file, &mut self.buf, pos)? {
                self.buf.clear();
                return Ok(Probe::Bad("file ends before its recorded length".into()));
            }
            self.buf_start = pos;
        }
        // In bounds: checked above, or a fresh fill of at least a header.
        let at = (pos - self.buf_start) as usize;
        let mut h = [0u8; ENTRY_HEADER_SIZE];
        h.copy_from_slice(&self.buf[at..at + ENTRY_HEADER_SIZE]);
        Ok(check_header(&h, left))
    }
}

/// Checks the payload crc of the entry at `pos` in chunks, without holding the payload.
pub(super) fn verify_payload(
    file: &dyn FileHandle,
    pos: u64,
    h: &EntryHeader,
    scratch: &mut Vec<u8>,
) -> io::Result<bool> {
    let mut crc = h.header_crc;
    let mut at = pos + ENTRY_HEADER_SIZE as u64;
    let mut left = u64::from(h.payload_len);
    scratch.resize(CRC_CHUNK, 0);
    while left > 0 {
        let n = left.min(CRC_CHUNK as u64) as usize;
        if !pread(file, &mut scratch[..n], at)? {
            return Ok(false);
        }
        crc = crc32c::crc32c_append(crc, &scratch[..n]);
        at += n as u64;
        left -= n as u64;
    }
    Ok(crc == h.crc)
}

/// Appends the payload of the entry at `pos` to `out` if its crc matches; `out` is unchanged if
/// not. A payload longer than `max_entry_bytes` is verified in chunks before it is allocated.
pub(super) fn read_payload(
    file: &dyn FileHandle,
    pos: u64,
    h: &EntryHeader,
    max_entry_bytes: u32,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> io::Result<bool> {
    if h.payload_len > max_entry_bytes && !verify_payload(file, pos, h, scratch)? {
        return Ok(false);
    }
    let start = out.len();
    out.resize(start + h.payload_len as usize, 0);
    let ok = pread(file, &mut out[start..], pos + ENTRY_HEADER_SIZE as u64)?
        && crc32c::crc32c_append(h.header_crc, &out[start..]) == h.crc;
    if !ok {
        out.truncate(start);
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{RaftIndex, Term};

    #[test]
    fn append_then_probe_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut active = ActiveSegment::create(&crate::log::fs::StdFs::shared(), dir.path(), Offset(0), Some(0), 4096).unwrap();
        let meta = EntryMeta {
            kind: EntryKind::Data,
            term: Term(1),
            index: RaftIndex(1),
            base_offset: Offset(0),
            record_count: 3,
            max_timestamp: 5,
        };
        active.append(&meta, b"hello").unwrap();
        assert_eq!(active.seg.next_offset, Offset(3));
        let Probe::Entry(h) = probe(&active.file, FILE_HEADER_SIZE, active.seg.size).unwrap()
        else {
            panic!("expected an entry");
        };
        assert_eq!(h.meta, meta);
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        assert!(
            read_payload(
                &active.file,
                FILE_HEADER_SIZE,
                &h,
                1,
                &mut out,
                &mut scratch
            )
            .unwrap()
        );
        assert_eq!(out, b"hello");
        assert!(matches!(
            probe(&active.file, active.seg.size, active.seg.size).unwrap(),
            Probe::End
        ));
        assert!(matches!(
            probe(&active.file, FILE_HEADER_SIZE, active.seg.size - 1).unwrap(),
            Probe::Bad(_)
        ));
    }
}
