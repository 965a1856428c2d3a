//! The two small files a partition directory holds besides its segments, `recovery-point` and
//! `log-start-offset`, and how they are replaced atomically. A damaged checkpoint is not an
//! error: recovery then scans more. A damaged log start falls back to the first segment.

use std::path::Path;

use tracing::warn;

use super::error::io_err;
use super::format::{
    FILE_HEADER_SIZE, LOG_START_FILE_SIZE, LOG_START_OFFSET_FILE_NAME, MAX_CHECKPOINT_EXTRA,
    RECOVERY_POINT_FILE_NAME, RecoveryPoint, TEMP_FILE_SUFFIX, decode_checkpoint, decode_log_start,
    encode_checkpoint, encode_log_start,
};
use super::fs::{FileSystem, replace_file as replace};
use super::{Error, Offset};

/// Replaces `dir/name` with `bytes` so that a crash leaves either the old or the new content.
fn replace_file(fs: &dyn FileSystem, dir: &Path, name: &str, bytes: &[u8]) -> Result<(), Error> {
    let tmp = format!("{name}{TEMP_FILE_SUFFIX}");
    replace(fs, dir, &tmp, name, bytes).map_err(io_err(&dir.join(name)))
}

/// Reads `dir/name` if it exists and is at most `max` bytes; `Ok(None)` otherwise.
fn read_small_file(fs: &dyn FileSystem, dir: &Path, name: &str, max: u64) -> Result<Option<Vec<u8>>, Error> {
    let path = dir.join(name);
    let f = match fs.open_read(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    match f.read_to_end(max) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            warn!(file = %path.display(), "ignoring oversized file");
            Ok(None)
        }
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// Writes the checkpoint durably.
pub(super) fn write_checkpoint(fs: &dyn FileSystem, dir: &Path, point: &RecoveryPoint, extra: &[u8]) -> Result<(), Error> {
    replace_file(fs, dir, RECOVERY_POINT_FILE_NAME, &encode_checkpoint(point, extra)?)
}

/// The last checkpoint, or `None` if there is none or it cannot be trusted.
pub(super) fn read_checkpoint(fs: &dyn FileSystem, dir: &Path) -> Result<Option<(RecoveryPoint, Vec<u8>)>, Error> {
    let max = FILE_HEADER_SIZE + 64 + MAX_CHECKPOINT_EXTRA as u64;
    let Some(bytes) = read_small_file(fs, dir, RECOVERY_POINT_FILE_NAME, max)? else {
        return Ok(None);
    };
    match decode_checkpoint(&bytes) {
        Ok(cp) => Ok(Some(cp)),
        Err(reason) => {
            warn!(dir = %dir.display(), %reason, "ignoring invalid recovery point");
            Ok(None)
        }
    }
}

/// Removes the checkpoint durably (it described entries that are gone).
pub(super) fn remove_checkpoint(fs: &dyn FileSystem, dir: &Path) -> Result<(), Error> {
    let path = dir.join(RECOVERY_POINT_FILE_NAME);
    match fs.remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(&path)(e)),
    }
    // A removal lost in a crash would bring back a checkpoint pointing into truncated entries.
    fs.sync_dir(dir).map_err(io_err(dir))
}

/// Writes the log start offset durably.
pub(super) fn write_log_start(fs: &dyn FileSystem, dir: &Path, offset: Offset) -> Result<(), Error> {
    replace_file(fs, dir, LOG_START_OFFSET_FILE_NAME, &encode_log_start(offset))
}

/// The stored log start offset, or `None` if there is none or it cannot be trusted.
pub(super) fn read_log_start(fs: &dyn FileSystem, dir: &Path) -> Result<Option<Offset>, Error> {
    let Some(bytes) = read_small_file(fs, dir, LOG_START_OFFSET_FILE_NAME, LOG_START_FILE_SIZE as u64)? else {
        return Ok(None);
    };
    match decode_log_start(&bytes) {
        Ok(o) => Ok(Some(o)),
        Err(reason) => {
            warn!(dir = %dir.display(), %reason, "ignoring invalid log start offset file");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::fs::StdFs;
    use crate::log::{RaftIndex, Term};

    #[test]
    fn checkpoint_replace_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_checkpoint(&StdFs, dir.path()).unwrap().is_none());
        let point = RecoveryPoint {
            segment_base: Offset(0),
            position: 16,
            next_offset: Offset(0),
            next_index: RaftIndex(1),
            last_term: Term(0),
            segment_max_timestamp: None,
            generation: 0,
        };
        write_checkpoint(&StdFs, dir.path(), &point, b"x").unwrap();
        assert_eq!(
            read_checkpoint(&StdFs, dir.path()).unwrap(),
            Some((point, b"x".to_vec()))
        );
        std::fs::write(dir.path().join(RECOVERY_POINT_FILE_NAME), b"junk").unwrap();
        assert!(read_checkpoint(&StdFs, dir.path()).unwrap().is_none());
        remove_checkpoint(&StdFs, dir.path()).unwrap();
        remove_checkpoint(&StdFs, dir.path()).unwrap();
        write_log_start(&StdFs, dir.path(), Offset(9)).unwrap();
        assert_eq!(read_log_start(&StdFs, dir.path()).unwrap(), Some(Offset(9)));
    }
}
