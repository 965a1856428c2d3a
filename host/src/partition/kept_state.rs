//! A group's state-machine snapshot kept beside its log (the `__consumer_offsets` partitions'):
//! the log is compacted below it, so a restart loads it first and replays the log after. It
//! also tells, after a crash part way through installing a leader's snapshot, whether the state
//! reached it (see [`crate::raft::storage::RaftStore::open`]).
//!
//! ```text
//! magic u32 | index u64 | offset i64 | crc32c(state) u32 | state
//! ```

use std::path::Path;

use crate::log::fs::{FileSystem, replace_file};

const FILE: &str = "state-snapshot";
const TMP_FILE: &str = "state-snapshot.tmp";
const MAGIC: u32 = 0x534c_4b53; // "SLKS"
const HEADER: usize = 24;

/// The largest kept state read back.
const MAX_BYTES: u64 = 1 << 30;

/// A state machine's snapshot at a Raft index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptState {
    /// The last entry the state includes.
    pub index: u64,
    /// The offset after that entry in the group's log.
    pub offset: i64,
    /// The state machine's bytes.
    pub state: Vec<u8>,
}

impl KeptState {
    /// Replaces `dir`'s kept state, durably.
    pub fn write(&self, fs: &dyn FileSystem, dir: &Path) -> std::io::Result<()> {
        let mut bytes = Vec::with_capacity(HEADER + self.state.len());
        bytes.extend_from_slice(&MAGIC.to_be_bytes());
        bytes.extend_from_slice(&self.index.to_be_bytes());
        bytes.extend_from_slice(&self.offset.to_be_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(&self.state).to_be_bytes());
        bytes.extend_from_slice(&self.state);
        replace_file(fs, dir, TMP_FILE, FILE, &bytes)
    }

    /// `dir`'s kept state: `Ok(None)` if there is none, an error if it is damaged.
    pub fn read(fs: &dyn FileSystem, dir: &Path) -> std::io::Result<Option<KeptState>> {
        let file = match fs.open_read(&dir.join(FILE)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let bytes = file.read_to_end(MAX_BYTES)?;
        let damaged = || std::io::Error::new(std::io::ErrorKind::InvalidData, format!("damaged state snapshot {}", dir.join(FILE).display()));
        let (header, state) = bytes.split_at_checked(HEADER).ok_or_else(damaged)?;
        let field = |at: usize| -> [u8; 8] { header[at..at + 8].try_into().unwrap_or_default() };
        if header[0..4] != MAGIC.to_be_bytes() || header[20..24] != crc32c::crc32c(state).to_be_bytes() {
            return Err(damaged());
        }
        Ok(Some(KeptState { index: u64::from_be_bytes(field(4)), offset: i64::from_be_bytes(field(12)), state: state.to_vec() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::fs::StdFs;

    #[test]
    fn a_kept_state_round_trips_and_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(KeptState::read(&StdFs, dir.path()).unwrap(), None);
        let kept = KeptState { index: 42, offset: 1000, state: b"offsets".to_vec() };
        kept.write(&StdFs, dir.path()).unwrap();
        assert_eq!(KeptState::read(&StdFs, dir.path()).unwrap(), Some(kept));
        let path = dir.path().join(FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(KeptState::read(&StdFs, dir.path()).is_err());
        std::fs::write(&path, b"short").unwrap();
        assert!(KeptState::read(&StdFs, dir.path()).is_err());
    }
}
