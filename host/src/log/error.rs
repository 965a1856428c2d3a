//! The errors of the partition log.

use std::io;
use std::path::{Path, PathBuf};

use super::{Offset, RaftIndex};

/// What can go wrong in the partition log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The filesystem failed.
    #[error("log: i/o error on {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the filesystem said.
        #[source]
        source: io::Error,
    },
    /// Bytes on disk are not what the log wrote; they are never served.
    #[error("log: corruption in {} at position {position}: {reason}", segment.display())]
    Corruption {
        /// The damaged file.
        segment: PathBuf,
        /// Byte position of the damage.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// The offset is below the log start or past the log end.
    #[error("log: offset {offset} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: Offset,
        /// First offset still in the log.
        log_start: Offset,
        /// Offset the next record will get.
        log_end: Offset,
    },
    /// An appended entry does not follow the last one.
    #[error(
        "log: entry (offset {offset}, index {index}) does not follow the log end (offset {expected_offset}, index {expected_index})"
    )]
    NotContiguous {
        /// The entry's base offset.
        offset: Offset,
        /// The entry's raft index.
        index: RaftIndex,
        /// The log end offset.
        expected_offset: Offset,
        /// The next raft index.
        expected_index: RaftIndex,
    },
    /// An appended payload is larger than `max_entry_bytes`.
    #[error("log: entry payload of {size} bytes exceeds max-entry-bytes {max}")]
    EntryTooLarge {
        /// Payload size.
        size: usize,
        /// The configured limit.
        max: u32,
    },
    /// An appended entry's header is inconsistent (kind vs record count, term going back).
    #[error("log: invalid entry: {0}")]
    InvalidEntry(String),
    /// The configuration is unusable.
    #[error("log: invalid config: {0}")]
    InvalidConfig(String),
    /// `truncate_from` would remove entries the log cannot account for afterwards.
    #[error(
        "log: cannot truncate from raft index {from}: the log holds indexes {first_index}..{next_index}"
    )]
    TruncateOutOfRange {
        /// The index asked for.
        from: RaftIndex,
        /// First index in the log.
        first_index: RaftIndex,
        /// Next index to be appended.
        next_index: RaftIndex,
    },
    /// A raft entry asked for is not in the log: dropped with a prefix, not yet appended, or
    /// not where the caller's base offset hint says it is.
    #[error("log: raft entry {index} is not in the log")]
    EntryNotFound {
        /// The raft index asked for.
        index: RaftIndex,
    },
    /// The recovery point was taken before a truncation, so it no longer describes the log.
    #[error("log: recovery point is stale: the log was truncated after it was taken")]
    StaleRecoveryPoint,
    /// The caller's checkpoint bytes are too large.
    #[error("log: checkpoint data of {size} bytes exceeds the limit of {max}")]
    CheckpointTooLarge {
        /// Bytes given.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// Wraps an `io::Error` with the path it happened on.
pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}
