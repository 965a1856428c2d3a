//! Representations of objects in filesystem.
//!
//! Everything the log writes is little endian. Every file starts with the same 16-byte header:
//!
//! ```text
//! 0..8    magic, one per file kind (see `FileKind::magic`)
//! 8..12   format version, u32 = FORMAT_VERSION (1)
//! 12..16  reserved, u32 = 0
//! ```
//!
//! A partition directory holds:
//!
//! ```text
//! {base_offset:020}.log        segment: header, then entries back to back
//! {base_offset:020}.index      sparse offset index: header, then OffsetEntry records (8 bytes)
//! {base_offset:020}.timeindex  sparse time index: header, then TimeEntry records (12 bytes)
//! recovery-point               checkpoint: header, then the recovery point and the caller's bytes
//! log-start-offset             header, then the log start offset
//! ```
//!
//! An entry is a fixed 48-byte header followed by `payload length` opaque bytes:
//!
//! ```text
//! 0..4    payload length u32 (bytes after the header)
//! 4..8    crc32c u32 over bytes 8..48 of the header, then the payload
//! 8       kind u8: 0 = data, 1 = control (leader no-op or configuration change)
//! 9..12   reserved, 0
//! 12..16  record count u32: > 0 for data, 0 for control
//! 16..24  raft term u64
//! 24..32  raft index u64
//! 32..40  Kafka base offset i64
//! 40..48  max timestamp i64 (largest record timestamp in the payload, ms)
//! ```
//!
//! Offset index record (8 bytes): relative offset u32 (`base_offset - segment base`) of a data
//! entry, then its byte position u32 in the segment. Both strictly increase along the file.
//!
//! Time index record (12 bytes): timestamp i64, then relative offset u32. Record `(t, r)` says
//! that the data entry at relative offset `r` has max timestamp `t` and that no entry at or
//! before it has a larger one. Both fields strictly increase along the file. The first data
//! entry of a segment always gets a record, and a sealed segment's last record carries the
//! segment's largest timestamp.
//!
//! Recovery point (after the file header):
//!
//! ```text
//! 0..4    crc32c u32 over every byte after this field
//! 4..8    length of the caller's bytes u32
//! 8..16   segment base offset i64        16..24  byte position u64 (an entry boundary)
//! 24..32  next offset i64                32..40  next raft index u64
//! 40..48  last term u64                  48..56  segment max timestamp i64 (i64::MIN: none)
//! 56..64  offset of the entry carrying that timestamp i64
//! 64..    the caller's bytes
//! ```
//!
//! Log start offset (after the file header): crc32c u32 over bytes 4..16, reserved u32, offset i64.

use std::fmt;

use super::Error;

/// Suffix of a segment's entry file, `{base_offset:020}.log`.
pub const LOG_FILE_SUFFIX: &str = ".log";
/// Suffix of a segment's sparse offset index.
pub const OFFSET_INDEX_FILE_SUFFIX: &str = ".index";
/// Suffix of a segment's sparse time index.
pub const TIME_INDEX_FILE_SUFFIX: &str = ".timeindex";
/// Name of the checkpoint file.
pub const RECOVERY_POINT_FILE_NAME: &str = "recovery-point";
/// Name of the file holding the log start offset.
pub const LOG_START_OFFSET_FILE_NAME: &str = "log-start-offset";
/// Suffix of a file being written before it is renamed into place.
pub const TEMP_FILE_SUFFIX: &str = ".tmp";

/// Version written in every file header; readers refuse any other.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the header every file starts with.
pub const FILE_HEADER_SIZE: u64 = 16;
/// Size of an entry header.
pub const ENTRY_HEADER_SIZE: usize = 48;
/// Largest caller data a checkpoint may carry, so reading one never allocates without bound.
pub const MAX_CHECKPOINT_EXTRA: usize = 64 << 20;
/// Size of the fixed part of a checkpoint after the file header.
const CHECKPOINT_FIXED_SIZE: usize = 64;

/// A Kafka offset: the position of one record in the partition.
///
/// How offsets, raft indexes and terms relate: every entry occupies exactly one raft index, and
/// entry `n + 1` follows entry `n` with no gap. A data entry with `base_offset = o` and
/// `record_count = c` holds offsets `o .. o + c`, and the next entry's base offset is `o + c`.
/// Control entries (leader no-ops, configuration changes) take a raft index but no offset
/// (`record_count = 0`), so raft indexes run ahead of offsets and the two are translated by
/// reading entry headers. Terms never decrease along the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub i64);

/// A Raft log index. See [`Offset`] for how it maps to offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RaftIndex(pub u64);

/// A Raft term. See [`Offset`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Term(pub u64);

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for RaftIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What an entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum EntryKind {
    /// One or more Kafka record batches; advances offsets by `record_count`.
    Data = 0,
    /// A leader no-op or configuration change: a raft index but no offsets (`record_count = 0`).
    Control = 1,
}

impl EntryKind {
    fn from_u8(b: u8) -> Option<EntryKind> {
        match b {
            0 => Some(EntryKind::Data),
            1 => Some(EntryKind::Control),
            _ => None,
        }
    }
}

/// The header fields of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryMeta {
    /// Data or control.
    pub kind: EntryKind,
    /// Raft term the entry was proposed in.
    pub term: Term,
    /// Raft index of the entry.
    pub index: RaftIndex,
    /// Kafka offset of the first record; for a control entry, the offset the next data entry gets.
    pub base_offset: Offset,
    /// Records in the payload: > 0 for data entries, 0 for control entries.
    pub record_count: u32,
    /// Largest record timestamp in the payload (ms); ignored for control entries.
    pub max_timestamp: i64,
}

impl EntryMeta {
    /// The base offset of the entry after this one.
    ///
    /// Cannot overflow for a meta that passed [`EntryMeta::check`], which every meta written or
    /// decoded by the log has.
    pub fn next_offset(&self) -> Offset {
        Offset(
            self.base_offset
                .0
                .saturating_add(i64::from(self.record_count)),
        )
    }

    /// Checks the fields that do not depend on the log's position.
    pub(super) fn check(&self) -> Result<(), String> {
        match self.kind {
            EntryKind::Data if self.record_count == 0 => {
                return Err("data entry with record count 0".into());
            }
            EntryKind::Control if self.record_count != 0 => {
                return Err(format!(
                    "control entry with record count {}",
                    self.record_count
                ));
            }
            _ => {}
        }
        if self.base_offset.0 < 0 {
            return Err(format!("negative base offset {}", self.base_offset));
        }
        if self
            .base_offset
            .0
            .checked_add(i64::from(self.record_count))
            .is_none()
        {
            return Err("offsets overflow i64".into());
        }
        Ok(())
    }
}

/// The kinds of file the log writes, each with its own magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `{base}.log`
    Segment,
    /// `{base}.index`
    OffsetIndex,
    /// `{base}.timeindex`
    TimeIndex,
    /// `recovery-point`
    RecoveryPoint,
    /// `log-start-offset`
    LogStart,
}

impl FileKind {
    /// The 8 bytes the file starts with.
    pub const fn magic(self) -> [u8; 8] {
        match self {
            FileKind::Segment => *b"SLCLOG\0\x01",
            FileKind::OffsetIndex => *b"SLCIDX\0\x01",
            FileKind::TimeIndex => *b"SLCTIX\0\x01",
            FileKind::RecoveryPoint => *b"SLCRCP\0\x01",
            FileKind::LogStart => *b"SLCLSO\0\x01",
        }
    }
}

/// The 16-byte header of a file of `kind`.
pub fn encode_file_header(kind: FileKind) -> [u8; FILE_HEADER_SIZE as usize] {
    let mut h = [0u8; FILE_HEADER_SIZE as usize];
    h[0..8].copy_from_slice(&kind.magic());
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h
}

/// Checks that `bytes` starts with a valid header for `kind`.
pub fn check_file_header(kind: FileKind, bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < FILE_HEADER_SIZE as usize {
        return Err(format!(
            "file header is {} bytes, want {FILE_HEADER_SIZE}",
            bytes.len()
        ));
    }
    if bytes[0..8] != kind.magic() {
        return Err(format!(
            "bad magic {:02x?} for a {kind:?} file",
            &bytes[0..8]
        ));
    }
    let version = u32_at(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(format!("unsupported format version {version}"));
    }
    Ok(())
}

/// `{base:020}{suffix}`.
pub fn segment_file_name(base: Offset, suffix: &str) -> String {
    format!("{:020}{suffix}", base.0)
}

/// The base offset in a name made by [`segment_file_name`] with `suffix`, if it is one.
pub fn parse_segment_file_name(name: &str, suffix: &str) -> Option<Offset> {
    let digits = name.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<i64>().ok().map(Offset)
}

/// A decoded entry header.
#[derive(Debug, Clone, Copy)]
pub struct EntryHeader {
    /// The entry's fields.
    pub meta: EntryMeta,
    /// Bytes of payload after the header.
    pub payload_len: u32,
    /// The stored crc.
    pub crc: u32,
    /// crc32c of header bytes 8..48, to be continued over the payload.
    pub header_crc: u32,
}

impl EntryHeader {
    /// Header plus payload.
    pub fn entry_len(&self) -> u64 {
        ENTRY_HEADER_SIZE as u64 + u64::from(self.payload_len)
    }
}

/// Encodes the header of an entry with `payload`.
///
/// The caller has checked that `payload.len()` fits in `u32` (it is at most `max_entry_bytes`).
pub fn encode_entry_header(meta: &EntryMeta, payload: &[u8]) -> [u8; ENTRY_HEADER_SIZE] {
    let mut h = [0u8; ENTRY_HEADER_SIZE];
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    h[0..4].copy_from_slice(&len.to_le_bytes());
    h[8] = meta.kind as u8;
    h[12..16].copy_from_slice(&meta.record_count.to_le_bytes());
    h[16..24].copy_from_slice(&meta.term.0.to_le_bytes());
    h[24..32].copy_from_slice(&meta.index.0.to_le_bytes());
    h[32..40].copy_from_slice(&meta.base_offset.0.to_le_bytes());
    h[40..48].copy_from_slice(&meta.max_timestamp.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&h[8..]), payload);
    h[4..8].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Decodes an entry header read from disk. The crc is not checked here: it covers the payload.
pub fn decode_entry_header(h: &[u8; ENTRY_HEADER_SIZE]) -> Result<EntryHeader, String> {
    let kind = EntryKind::from_u8(h[8]).ok_or_else(|| format!("unknown entry kind {}", h[8]))?;
    let meta = EntryMeta {
        kind,
        record_count: u32_at(h, 12),
        term: Term(u64_at(h, 16)),
        index: RaftIndex(u64_at(h, 24)),
        base_offset: Offset(i64_at(h, 32)),
        max_timestamp: i64_at(h, 40),
    };
    meta.check()?;
    Ok(EntryHeader {
        meta,
        payload_len: u32_at(h, 0),
        crc: u32_at(h, 4),
        header_crc: crc32c::crc32c(&h[8..]),
    })
}

/// A place in the log from which recovery can resume scanning without reading anything before
/// it: the end of the entries that were in the page cache when [`super::PartitionLog::sync_target`]
/// was called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryPoint {
    /// Base offset of the segment the point is in.
    pub segment_base: Offset,
    /// Byte position in that segment; an entry boundary.
    pub position: u64,
    /// Offset of the entry at `position` (the log end at the time).
    pub next_offset: Offset,
    /// Raft index of the entry at `position`.
    pub next_index: RaftIndex,
    /// Term of the entry before `position` (0 if none).
    pub last_term: Term,
    /// Largest timestamp in the segment before `position`, and the offset of the entry carrying it.
    pub segment_max_timestamp: Option<(i64, Offset)>,
    /// Truncation generation of the log when the point was taken; not persisted.
    pub(super) generation: u64,
}

impl RecoveryPoint {
    /// The log's truncation generation when the point was taken.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// Encodes a checkpoint file.
pub fn encode_checkpoint(point: &RecoveryPoint, extra: &[u8]) -> Result<Vec<u8>, Error> {
    if extra.len() > MAX_CHECKPOINT_EXTRA {
        return Err(Error::CheckpointTooLarge {
            size: extra.len(),
            max: MAX_CHECKPOINT_EXTRA,
        });
    }
    let mut out =
        Vec::with_capacity(FILE_HEADER_SIZE as usize + CHECKPOINT_FIXED_SIZE + extra.len());
    out.extend_from_slice(&encode_file_header(FileKind::RecoveryPoint));
    let body_start = out.len();
    out.extend_from_slice(&[0u8; 4]); // crc, filled below
    // Fits: checked against MAX_CHECKPOINT_EXTRA above.
    out.extend_from_slice(&(extra.len() as u32).to_le_bytes());
    out.extend_from_slice(&point.segment_base.0.to_le_bytes());
    out.extend_from_slice(&point.position.to_le_bytes());
    out.extend_from_slice(&point.next_offset.0.to_le_bytes());
    out.extend_from_slice(&point.next_index.0.to_le_bytes());
    out.extend_from_slice(&point.last_term.0.to_le_bytes());
    let (ts, ts_offset) = point
        .segment_max_timestamp
        .map_or((i64::MIN, Offset(0)), |(t, o)| (t, o));
    out.extend_from_slice(&ts.to_le_bytes());
    out.extend_from_slice(&ts_offset.0.to_le_bytes());
    out.extend_from_slice(extra);
    let crc = crc32c::crc32c(&out[body_start + 4..]);
    out[body_start..body_start + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Decodes a checkpoint file; `Err` says why it cannot be trusted.
pub fn decode_checkpoint(bytes: &[u8]) -> Result<(RecoveryPoint, Vec<u8>), String> {
    check_file_header(FileKind::RecoveryPoint, bytes)?;
    let body = &bytes[FILE_HEADER_SIZE as usize..];
    if body.len() < CHECKPOINT_FIXED_SIZE {
        return Err(format!(
            "checkpoint body is {} bytes, want at least {CHECKPOINT_FIXED_SIZE}",
            body.len()
        ));
    }
    if crc32c::crc32c(&body[4..]) != u32_at(body, 0) {
        return Err("checkpoint crc mismatch".into());
    }
    let extra_len = u32_at(body, 4) as usize;
    if body.len() - CHECKPOINT_FIXED_SIZE != extra_len {
        return Err(format!(
            "checkpoint says {extra_len} extra bytes, file has {}",
            body.len() - CHECKPOINT_FIXED_SIZE
        ));
    }
    let ts = i64_at(body, 48);
    let point = RecoveryPoint {
        segment_base: Offset(i64_at(body, 8)),
        position: u64_at(body, 16),
        next_offset: Offset(i64_at(body, 24)),
        next_index: RaftIndex(u64_at(body, 32)),
        last_term: Term(u64_at(body, 40)),
        segment_max_timestamp: (ts != i64::MIN).then(|| (ts, Offset(i64_at(body, 56)))),
        generation: 0,
    };
    Ok((point, body[CHECKPOINT_FIXED_SIZE..].to_vec()))
}

/// Size of a log-start-offset file.
pub const LOG_START_FILE_SIZE: usize = FILE_HEADER_SIZE as usize + 16;

/// Encodes a log-start-offset file.
pub fn encode_log_start(offset: Offset) -> [u8; LOG_START_FILE_SIZE] {
    let mut out = [0u8; LOG_START_FILE_SIZE];
    out[..16].copy_from_slice(&encode_file_header(FileKind::LogStart));
    out[24..32].copy_from_slice(&offset.0.to_le_bytes());
    let crc = crc32c::crc32c(&out[20..32]);
    out[16..20].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a log-start-offset file; `Err` says why it cannot be trusted.
pub fn decode_log_start(bytes: &[u8]) -> Result<Offset, String> {
    check_file_header(FileKind::LogStart, bytes)?;
    if bytes.len() != LOG_START_FILE_SIZE {
        return Err(format!(
            "log start file is {} bytes, want {LOG_START_FILE_SIZE}",
            bytes.len()
        ));
    }
    if crc32c::crc32c(&bytes[20..32]) != u32_at(bytes, 16) {
        return Err("log start crc mismatch".into());
    }
    Ok(Offset(i64_at(bytes, 24)))
}

// Fixed-width little-endian readers. Callers pass buffers whose length they have checked
// against the record layout, so `at + N <= b.len()` always holds.
pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

pub(super) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

pub(super) fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> EntryMeta {
        EntryMeta {
            kind: EntryKind::Data,
            term: Term(3),
            index: RaftIndex(7),
            base_offset: Offset(100),
            record_count: 5,
            max_timestamp: 1_700_000_000_000,
        }
    }

    #[test]
    fn entry_header_round_trips_and_crc_covers_payload() {
        let payload = b"batch bytes";
        let h = encode_entry_header(&meta(), payload);
        let d = decode_entry_header(&h).unwrap();
        assert_eq!(d.meta, meta());
        assert_eq!(d.payload_len as usize, payload.len());
        assert_eq!(crc32c::crc32c_append(d.header_crc, payload), d.crc);
        assert_ne!(crc32c::crc32c_append(d.header_crc, b"batch bytez"), d.crc);
    }

    #[test]
    fn entry_header_rejects_bad_kind_and_counts() {
        let mut h = encode_entry_header(&meta(), b"");
        h[8] = 9;
        assert!(decode_entry_header(&h).is_err());
        let control = EntryMeta {
            kind: EntryKind::Control,
            ..meta()
        };
        assert!(decode_entry_header(&encode_entry_header(&control, b"")).is_err());
    }

    #[test]
    fn file_names_round_trip() {
        let name = segment_file_name(Offset(42), LOG_FILE_SUFFIX);
        assert_eq!(name, "00000000000000000042.log");
        assert_eq!(
            parse_segment_file_name(&name, LOG_FILE_SUFFIX),
            Some(Offset(42))
        );
        assert_eq!(parse_segment_file_name("42.log", LOG_FILE_SUFFIX), None);
        assert_eq!(
            parse_segment_file_name(&name, OFFSET_INDEX_FILE_SUFFIX),
            None
        );
    }

    #[test]
    fn checkpoint_round_trips_and_detects_damage() {
        let point = RecoveryPoint {
            segment_base: Offset(10),
            position: 1234,
            next_offset: Offset(99),
            next_index: RaftIndex(50),
            last_term: Term(2),
            segment_max_timestamp: Some((77, Offset(90))),
            generation: 0,
        };
        let mut bytes = encode_checkpoint(&point, b"producer state").unwrap();
        let (p, extra) = decode_checkpoint(&bytes).unwrap();
        assert_eq!(p, point);
        assert_eq!(extra, b"producer state");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(decode_checkpoint(&bytes).is_err());
        assert!(decode_checkpoint(&bytes[..20]).is_err());
    }

    #[test]
    fn log_start_round_trips() {
        let bytes = encode_log_start(Offset(123));
        assert_eq!(decode_log_start(&bytes), Ok(Offset(123)));
        let mut bad = bytes;
        bad[30] ^= 1;
        assert!(decode_log_start(&bad).is_err());
    }
}
