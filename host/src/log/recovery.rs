//! Opening a partition directory after a clean or unclean shutdown.
//!
//! Restart time depends on the unflushed tail, not on the size of the log: every segment but the
//! last was fsynced (log and indexes) when it was rolled, so it is trusted and only its name and
//! length are looked at; its indexes are loaded when it is first read. The last segment is
//! scanned from the checkpoint if the checkpoint names it, else from its header. Scanning checks
//! each entry (header, length against the file, crc, offsets and raft index following the
//! previous entry) and cuts the file at the first one that fails. Index records before the scan
//! start are kept if they can be believed; the scanned region is indexed again.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tracing::{info, warn};

use super::checkpoint;
use super::error::io_err;
use super::fs::FileSystem;
use super::format::{
    FILE_HEADER_SIZE, FileKind, LOG_FILE_SUFFIX, OFFSET_INDEX_FILE_SUFFIX, RecoveryPoint,
    TEMP_FILE_SUFFIX, TIME_INDEX_FILE_SUFFIX, check_file_header, parse_segment_file_name,
};
use super::index::{self, IndexBounds, IndexPolicy, IndexWriter, OffsetEntry, TimeEntry};
use super::segment::{
    ActiveSegment, Probe, Segment, SegmentPaths, probe, read_payload, verify_payload,
};
use super::{EntryMeta, Error, LogConfig, Offset, PartitionLog, RaftIndex, Term};

/// Where the scan of the last segment starts and what its first entry must follow.
enum Start {
    /// At a checkpoint in the last segment.
    Checkpoint(RecoveryPoint),
    /// At the header; `follows` is the (next index, last term) the first entry must follow, if known.
    Header { follows: Option<(RaftIndex, Term)> },
}

/// The recovered last segment and the raft position after its last entry, if it has entries
/// or the position was otherwise known.
struct RecoveredTail {
    active: ActiveSegment,
    next: Option<(RaftIndex, Term)>,
}

/// Result of scanning the last segment: the tail, or `None` if the scan started at a
/// checkpoint that does not match the segment (then nothing was replayed and the caller
/// scans again from the header).
type Scan = Option<RecoveredTail>;

pub(super) fn open(
    fs: Arc<dyn FileSystem>,
    dir: &Path,
    config: LogConfig,
    mut on_recovered: impl FnMut(&EntryMeta, &[u8]),
) -> Result<(PartitionLog, Vec<u8>), Error> {
    config.validate()?;
    fs.create_dir_all(dir).map_err(io_err(dir))?;
    let bases = list_segments(&*fs, dir)?;
    let stored_start = checkpoint::read_log_start(&*fs, dir)?;
    let stored_checkpoint = checkpoint::read_checkpoint(&*fs, dir)?;
    let had_checkpoint = stored_checkpoint.is_some();

    let Some((&last_base, older)) = bases.split_last() else {
        // A new log starts at 0, or where it was told to ([`PartitionLog::start_new_at`]).
        let base = stored_start.unwrap_or(Offset(0)).max(Offset(0));
        let active = ActiveSegment::create(&fs, dir, base, None, config.index_interval_bytes)?;
        if had_checkpoint {
            checkpoint::remove_checkpoint(&*fs, dir)?;
        }
        let log = assemble(
            dir,
            config,
            Vec::new(),
            active,
            (RaftIndex(1), Term(0)),
            stored_start,
            0,
        )?;
        return Ok((log, Vec::new()));
    };
    let mut sealed = Vec::with_capacity(older.len());
    for (i, &base) in older.iter().enumerate() {
        let next = bases[i + 1];
        let paths = SegmentPaths::new(dir, base);
        let size = fs.open_read(&paths.log).and_then(|f| f.len()).map_err(io_err(&paths.log))?;
        sealed.push(Segment::sealed(
            &fs,
            dir,
            base,
            next,
            size,
            config.index_interval_bytes,
        ));
    }

    // Decide where scanning starts, replaying sealed segments after a checkpoint that names one.
    let mut extra = Vec::new();
    let mut checkpoint_index = 0;
    let mut start = Start::Header { follows: None };
    if let Some((point, bytes)) = stored_checkpoint {
        if point.segment_base == last_base {
            checkpoint_index = point.next_index.0;
            start = Start::Checkpoint(point);
            extra = bytes;
        } else if let Some(i) = sealed.iter().position(|s| s.base == point.segment_base) {
            if let Some(follows) = replay_sealed(
                &sealed[i..],
                &point,
                config.max_entry_bytes,
                &mut on_recovered,
            )? {
                checkpoint_index = point.next_index.0;
                start = Start::Header {
                    follows: Some(follows),
                };
                extra = bytes;
            }
        } else {
            warn!(dir = %dir.display(), segment = point.segment_base.0, "recovery point names a segment that is gone");
        }
    }

    let tail = match recover_last(&fs, dir, &config, last_base, start, &mut on_recovered)? {
        Some(tail) => tail,
        None => {
            warn!(dir = %dir.display(), "recovery point does not match the last segment; scanning it whole");
            extra.clear();
            checkpoint_index = 0;
            match recover_last(
                &fs,
                dir,
                &config,
                last_base,
                Start::Header { follows: None },
                &mut on_recovered,
            )? {
                Some(tail) => tail,
                // Only a checkpoint start can mismatch; a header start always finishes.
                None => {
                    return Err(Error::Corruption {
                        segment: SegmentPaths::new(dir, last_base).log,
                        position: FILE_HEADER_SIZE,
                        reason: "recovery could not settle on a scan start".into(),
                    });
                }
            }
        }
    };
    if checkpoint_index == 0 && had_checkpoint {
        // An unusable checkpoint must not become usable later, once the log has grown past it.
        checkpoint::remove_checkpoint(&*fs, dir)?;
    }
    let next = match (tail.next, sealed.last()) {
        (Some(next), _) => next,
        (None, Some(prev)) => sealed_tail(prev)?,
        (None, None) => (RaftIndex(1), Term(0)),
    };
    let log = assemble(
        dir,
        config,
        sealed,
        tail.active,
        next,
        stored_start,
        checkpoint_index,
    )?;
    info!(
        dir = %dir.display(),
        next_offset = log.next_offset().0,
        next_index = log.next_index.0,
        log_start = log.log_start.0,
        "partition log opened"
    );
    Ok((log, extra))
}

fn assemble(
    dir: &Path,
    config: LogConfig,
    sealed: Vec<Segment>,
    active: ActiveSegment,
    (next_index, last_term): (RaftIndex, Term),
    stored_start: Option<Offset>,
    checkpoint_index: u64,
) -> Result<PartitionLog, Error> {
    let first_base = sealed.first().map_or(active.seg.base, |s| s.base);
    let next_offset = active.seg.next_offset;
    let mut log_start = stored_start.unwrap_or(first_base).max(first_base);
    if log_start > next_offset {
        warn!(dir = %dir.display(), log_start = log_start.0, next_offset = next_offset.0, "log start is past the recovered log end");
        log_start = next_offset;
    }
    let mut log = PartitionLog {
        fs: Arc::clone(active.seg.fs()),
        dir: dir.to_path_buf(),
        config,
        sealed,
        active,
        log_start,
        next_index,
        last_term,
        generation: 0,
        checkpoint_index: AtomicU64::new(checkpoint_index),
    };
    // Finishes a drop_prefix that crashed after recording the new start.
    log.delete_segments_below_start()?;
    Ok(log)
}

/// Base offsets of the segments in `dir`, ascending. Removes leftover temporary files and index
/// files whose log file is gone (a crash while deleting a segment).
pub(super) fn list_segments(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<Offset>, Error> {
    let mut bases = Vec::new();
    let mut index_files = Vec::new();
    for path in fs.read_dir(dir).map_err(io_err(dir))? {
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        if name.ends_with(TEMP_FILE_SUFFIX) {
            fs.remove_file(&path).map_err(io_err(&path))?;
        } else if let Some(base) = parse_segment_file_name(&name, LOG_FILE_SUFFIX) {
            bases.push(base);
        } else if let Some(base) = parse_segment_file_name(&name, OFFSET_INDEX_FILE_SUFFIX)
            .or_else(|| parse_segment_file_name(&name, TIME_INDEX_FILE_SUFFIX))
        {
            index_files.push((base, path));
        }
    }
    bases.sort();
    for (base, path) in index_files {
        if bases.binary_search(&base).is_err() {
            fs.remove_file(&path).map_err(io_err(&path))?;
        }
    }
    Ok(bases)
}

/// Whether `meta` may follow an entry ending at `next_offset`, with the given next raft index
/// and last term (if known). `Err` says why not.
pub(super) fn check_follows(
    meta: &EntryMeta,
    next_offset: Offset,
    follows: Option<(RaftIndex, Term)>,
) -> Result<(), String> {
    if meta.base_offset != next_offset {
        return Err(format!(
            "base offset {} does not follow {}",
            meta.base_offset, next_offset
        ));
    }
    if let Some((index, term)) = follows {
        if meta.index != index {
            return Err(format!(
                "raft index {} does not follow {}",
                meta.index,
                index.0.wrapping_sub(1)
            ));
        }
        if meta.term < term {
            return Err(format!("term {} goes back from {}", meta.term, term));
        }
    }
    Ok(())
}

/// Replays the entries of trusted sealed segments after `point` (which names `segs[0]`) to
/// `on_recovered`. Returns the raft position after them, or `None` if the checkpoint does not
/// match the segment (nothing was replayed then).
fn replay_sealed(
    segs: &[Segment],
    point: &RecoveryPoint,
    max_entry_bytes: u32,
    on_recovered: &mut impl FnMut(&EntryMeta, &[u8]),
) -> Result<Option<(RaftIndex, Term)>, Error> {
    if segs
        .first()
        .is_none_or(|s| point.position < FILE_HEADER_SIZE || point.position > s.size)
    {
        warn!(
            segment = point.segment_base.0,
            position = point.position,
            "recovery point lies outside its segment"
        );
        return Ok(None);
    }
    let mut next_offset = point.next_offset;
    let mut follows = (point.next_index, point.last_term);
    let mut replayed_any = false;
    let (mut payload, mut scratch) = (Vec::new(), Vec::new());
    for (j, seg) in segs.iter().enumerate() {
        let file = seg.file()?;
        let mut pos = if j == 0 {
            point.position
        } else {
            FILE_HEADER_SIZE
        };
        let corrupt = |pos: u64, reason: String| Error::Corruption {
            segment: seg.paths.log.clone(),
            position: pos,
            reason,
        };
        loop {
            let h = match probe(file, pos, seg.size).map_err(io_err(&seg.paths.log))? {
                Probe::End => break,
                Probe::Bad(reason) => return Err(corrupt(pos, reason)),
                Probe::Entry(h) => h,
            };
            payload.clear();
            if !read_payload(file, pos, &h, max_entry_bytes, &mut payload, &mut scratch)
                .map_err(io_err(&seg.paths.log))?
            {
                return Err(corrupt(pos, "crc mismatch".into()));
            }
            if let Err(reason) = check_follows(&h.meta, next_offset, Some(follows)) {
                if !replayed_any {
                    warn!(segment = %seg.paths.log.display(), position = pos, %reason, "recovery point does not match its segment");
                    return Ok(None);
                }
                return Err(corrupt(pos, reason));
            }
            on_recovered(&h.meta, &payload);
            replayed_any = true;
            next_offset = h.meta.next_offset();
            follows = (RaftIndex(h.meta.index.0 + 1), h.meta.term);
            pos += h.entry_len();
        }
        if next_offset != seg.next_offset {
            return Err(corrupt(
                pos,
                format!(
                    "segment ends at offset {next_offset}, the next one starts at {}",
                    seg.next_offset
                ),
            ));
        }
    }
    Ok(Some(follows))
}

/// The raft position after the last entry of a trusted sealed segment: scans from its last
/// offset index record to its end.
fn sealed_tail(seg: &Segment) -> Result<(RaftIndex, Term), Error> {
    let file = seg.file()?;
    let mut pos = seg
        .sealed_indexes()?
        .offsets
        .last()
        .map_or(FILE_HEADER_SIZE, |e| u64::from(e.position));
    let mut last = None;
    let mut scratch = Vec::new();
    let corrupt = |pos: u64, reason: String| Error::Corruption {
        segment: seg.paths.log.clone(),
        position: pos,
        reason,
    };
    loop {
        match probe(file, pos, seg.size).map_err(io_err(&seg.paths.log))? {
            Probe::End => break,
            Probe::Bad(reason) => return Err(corrupt(pos, reason)),
            Probe::Entry(h) => {
                if !verify_payload(file, pos, &h, &mut scratch).map_err(io_err(&seg.paths.log))? {
                    return Err(corrupt(pos, "crc mismatch".into()));
                }
                last = Some(h.meta);
                pos += h.entry_len();
            }
        }
    }
    let last =
        last.ok_or_else(|| corrupt(FILE_HEADER_SIZE, "sealed segment holds no entries".into()))?;
    Ok((RaftIndex(last.index.0 + 1), last.term))
}

/// Recovers the last segment: checks its header, keeps believable index records before the
/// scan start, scans and re-indexes from there, and cuts the file at the first bad entry.
fn recover_last(
    fs: &Arc<dyn FileSystem>,
    dir: &Path,
    config: &LogConfig,
    base: Offset,
    start: Start,
    on_recovered: &mut impl FnMut(&EntryMeta, &[u8]),
) -> Result<Scan, Error> {
    let paths = SegmentPaths::new(dir, base);
    let file = fs.open_write(&paths.log, false).map_err(io_err(&paths.log))?;
    let len = file.len().map_err(io_err(&paths.log))?;
    let mut header = [0u8; FILE_HEADER_SIZE as usize];
    let header_ok = len >= FILE_HEADER_SIZE
        && file.read_exact_at(&mut header, 0).is_ok()
        && check_file_header(FileKind::Segment, &header).is_ok();
    if !header_ok {
        if len > FILE_HEADER_SIZE {
            // A header is synced before any entry is written, so this is not a torn roll.
            return Err(Error::Corruption {
                segment: paths.log.clone(),
                position: 0,
                reason: "bad segment header on a segment with entries".into(),
            });
        }
        warn!(segment = %paths.log.display(), "segment header torn at roll; recreating it empty");
        drop(file);
        let active = ActiveSegment::create(fs, dir, base, None, config.index_interval_bytes)?;
        let next = match start {
            Start::Header { follows } => follows,
            Start::Checkpoint(_) => return Ok(None),
        };
        return Ok(Some(RecoveredTail { active, next }));
    }

    let (start_pos, mut next_offset, mut follows, max_timestamp, from_checkpoint) = match start {
        Start::Checkpoint(p)
            if p.position >= FILE_HEADER_SIZE && p.position <= len && p.next_offset >= base =>
        {
            (
                p.position,
                p.next_offset,
                Some((p.next_index, p.last_term)),
                p.segment_max_timestamp,
                true,
            )
        }
        Start::Checkpoint(_) => return Ok(None),
        Start::Header { follows } => (FILE_HEADER_SIZE, base, follows, None, false),
    };

    // Index records pointing before the scan start were made durable with the checkpoint;
    // anything else is dropped and rebuilt by the scan.
    let bounds = IndexBounds {
        segment_size: start_pos,
        offset_span: u64::try_from(next_offset.0 - base.0).unwrap_or(0),
    };
    let offsets = index::load::<OffsetEntry>(&**fs, &paths.offset_index, &bounds)?.entries;
    let times = index::load::<TimeEntry>(&**fs, &paths.time_index, &bounds)?.entries;
    let bytes_since_index = start_pos
        - offsets
            .last()
            .map_or(FILE_HEADER_SIZE, |e| u64::from(e.position));
    let policy = IndexPolicy::new(
        base,
        config.index_interval_bytes,
        bytes_since_index,
        max_timestamp,
    );
    let offsets = IndexWriter::resume(&**fs, &paths.offset_index, offsets)?;
    let times = IndexWriter::resume(&**fs, &paths.time_index, times)?;
    let seg = Segment::sealed(
        fs,
        dir,
        base,
        next_offset,
        start_pos,
        config.index_interval_bytes,
    );
    let mut active = ActiveSegment::from_parts(seg, Arc::clone(&file), offsets, times, policy);

    let mut pos = start_pos;
    let (mut payload, mut scratch) = (Vec::new(), Vec::new());
    loop {
        let bad = match probe(&file, pos, len).map_err(io_err(&paths.log))? {
            Probe::End => break,
            Probe::Bad(reason) => reason,
            Probe::Entry(h) => {
                payload.clear();
                let crc_ok = read_payload(
                    &file,
                    pos,
                    &h,
                    config.max_entry_bytes,
                    &mut payload,
                    &mut scratch,
                )
                .map_err(io_err(&paths.log))?;
                match check_follows(&h.meta, next_offset, follows) {
                    Err(_) if crc_ok && from_checkpoint && pos == start_pos => return Ok(None),
                    Err(reason) => reason,
                    Ok(()) if !crc_ok => "crc mismatch".into(),
                    Ok(()) => {
                        on_recovered(&h.meta, &payload);
                        active.index_entry(&h.meta, pos, h.entry_len())?;
                        next_offset = h.meta.next_offset();
                        follows = Some((RaftIndex(h.meta.index.0 + 1), h.meta.term));
                        pos += h.entry_len();
                        continue;
                    }
                }
            }
        };
        warn!(segment = %paths.log.display(), position = pos, reason = %bad, "truncating log at a torn or corrupt entry");
        file.set_len(pos).map_err(io_err(&paths.log))?;
        // The cut must be durable before new entries are appended after it, or a crash could
        // leave them behind the old garbage.
        file.sync_all().map_err(io_err(&paths.log))?;
        break;
    }
    debug_assert_eq!(active.seg.size, pos);
    Ok(Some(RecoveredTail {
        active,
        next: follows,
    }))
}
