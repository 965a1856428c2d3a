//! The file system under every durable file of a replica: segments, indexes, checkpoints, the
//! log start and the Raft hard state. [`StdFs`] is the real one. [`FaultyFs`] is the real one
//! plus faults a test turns on: fsyncs that fail, writes that find the disk full or tear after a
//! prefix, and a crash that takes back everything not made durable (file contents not fsynced,
//! names created, renamed or removed without an fsync of their directory).

use std::collections::HashMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Opens, names and syncs files. Paths are absolute or relative to the process's directory.
pub trait FileSystem: Send + Sync + Debug {
    /// Opens an existing file for reading.
    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>>;
    /// Opens a file for reading and writing, creating it if it is missing; `truncate` empties it.
    fn open_write(&self, path: &Path, truncate: bool) -> io::Result<Arc<dyn FileHandle>>;
    /// Removes a file (durable once its directory is synced).
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Renames a file over another (durable once their directory is synced).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Creates a directory and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Makes the names created, renamed or removed in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// The paths of the entries of `dir`.
    fn read_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
}

/// An open file; reads and writes are positional, so one handle serves concurrent readers.
pub trait FileHandle: Send + Sync + Debug {
    /// Reads at `pos`; returns how many bytes were read (0 at the end).
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `pos` (page cache).
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    /// Cuts or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The file's length.
    fn len(&self) -> io::Result<u64>;
    /// Makes the contents durable (not necessarily the metadata a read does not need).
    fn sync_data(&self) -> io::Result<()>;
    /// Makes the contents and all metadata durable.
    fn sync_all(&self) -> io::Result<()>;
}

/// A shared handle is a handle: positional I/O needs no exclusive access.
impl<T: FileHandle + ?Sized> FileHandle for Arc<T> {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        (**self).read_at(buf, pos)
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        (**self).write_all_at(buf, pos)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        (**self).set_len(len)
    }

    fn len(&self) -> io::Result<u64> {
        (**self).len()
    }

    fn sync_data(&self) -> io::Result<()> {
        (**self).sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        (**self).sync_all()
    }
}

impl<'a> dyn FileHandle + 'a {
    /// Reads exactly `buf.len()` bytes at `pos`; `UnexpectedEof` if the file ends first.
    pub fn read_exact_at(&self, mut buf: &mut [u8], mut pos: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, pos) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file ends before the bytes asked for")),
                Ok(n) => {
                    buf = &mut buf[n..];
                    pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads the whole file, refusing one longer than `max` bytes.
    pub fn read_to_end(&self, max: u64) -> io::Result<Vec<u8>> {
        let len = self.len()?;
        if len > max {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("file of {len} bytes, at most {max} expected")));
        }
        let mut bytes = vec![0; len as usize];
        self.read_exact_at(&mut bytes, 0)?;
        Ok(bytes)
    }
}

/// Replaces `dir/name` with `bytes` so that a crash leaves either the old or the new contents:
/// written to `dir/tmp_name`, fsynced, renamed over `dir/name`, and the rename fsynced.
pub fn replace_file(fs: &dyn FileSystem, dir: &Path, tmp_name: &str, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(tmp_name);
    let file = fs.open_write(&tmp, true)?;
    file.write_all_at(bytes, 0)?;
    // The contents must be on disk before the rename publishes them, or a crash could leave an
    // empty or partial file under the real name.
    file.sync_all()?;
    fs.rename(&tmp, &dir.join(name))?;
    // The rename itself lives in the directory; without this a crash may bring back the old file.
    fs.sync_dir(dir)
}

/// The operating system's file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFs;

impl StdFs {
    /// A shared handle on it, as logs take their file system.
    pub fn shared() -> Arc<dyn FileSystem> {
        Arc::new(StdFs)
    }
}

#[derive(Debug)]
struct StdFile(File);

impl FileHandle for StdFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.0.read_at(buf, pos)
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.0.write_all_at(buf, pos)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn len(&self) -> io::Result<u64> {
        self.0.metadata().map(|m| m.len())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }
}

impl FileSystem for StdFs {
    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>> {
        Ok(Arc::new(StdFile(File::open(path)?)))
    }

    fn open_write(&self, path: &Path, truncate: bool) -> io::Result<Arc<dyn FileHandle>> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(truncate).open(path)?;
        Ok(Arc::new(StdFile(file)))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        std::fs::read_dir(dir)?.map(|e| e.map(|e| e.path())).collect()
    }
}

/// What a crash would leave of one file: its contents at its last fsync (`None`: no durable
/// contents, the file is gone after a crash).
#[derive(Debug, Clone)]
struct Durable(Option<Vec<u8>>);

#[derive(Debug, Default)]
struct FaultState {
    /// For every path changed since the last crash (or since tracking began): what is durable of
    /// its contents, and whether its name is durable (its directory synced since it appeared).
    files: HashMap<PathBuf, (Durable, bool)>,
    /// Names removed or renamed away whose directory was not synced since: the durable file
    /// that a crash brings back.
    gone: HashMap<PathBuf, Durable>,
    /// The next this many fsyncs fail with EIO.
    failing_syncs: u32,
    /// Writes fail with ENOSPC while set.
    disk_full: bool,
    /// The next write stores only this many bytes, then fails with EIO.
    torn_write: Option<usize>,
}

/// [`StdFs`] with faults a test turns on, and [`FaultyFs::crash`]. Files that exist before their
/// first change through it count as durable.
#[derive(Debug, Clone, Default)]
pub struct FaultyFs {
    state: Arc<Mutex<FaultState>>,
}

impl FaultyFs {
    /// A file system without faults yet.
    pub fn new() -> FaultyFs {
        FaultyFs::default()
    }

    fn lock(&self) -> MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next `n` fsyncs (of files or directories) fail with EIO.
    pub fn fail_syncs(&self, n: u32) {
        self.lock().failing_syncs = n;
    }

    /// While `full`, every write fails with ENOSPC.
    pub fn set_disk_full(&self, full: bool) {
        self.lock().disk_full = full;
    }

    /// The next write stores only its first `prefix` bytes, then fails with EIO.
    pub fn tear_next_write(&self, prefix: usize) {
        self.lock().torn_write = Some(prefix);
    }

    /// Power loss: every file goes back to its last fsynced contents, files whose name was never
    /// made durable vanish, and unsynced removals and renames are undone. Handles opened before
    /// must not be used after. Faults stay as they are.
    pub fn crash(&self) -> io::Result<()> {
        let mut state = self.lock();
        let files = std::mem::take(&mut state.files);
        let gone = std::mem::take(&mut state.gone);
        for (path, (durable, name_durable)) in files {
            match (durable.0, name_durable) {
                (Some(bytes), true) => std::fs::write(&path, bytes)?,
                // A durable name whose contents never were: an empty file.
                (None, true) => std::fs::write(&path, b"")?,
                (_, false) => match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                },
            }
        }
        for (path, durable) in gone {
            if let Some(bytes) = durable.0 {
                std::fs::write(&path, bytes)?;
            }
        }
        Ok(())
    }

    /// Starts tracking `path` (before its first change): what exists now counts as durable.
    fn track(state: &mut FaultState, path: &Path) {
        if !state.files.contains_key(path) {
            let existing = std::fs::read(path).ok();
            let named = existing.is_some();
            state.files.insert(path.to_path_buf(), (Durable(existing), named));
        }
    }

    fn sync_fault(state: &mut FaultState) -> io::Result<()> {
        if state.failing_syncs > 0 {
            state.failing_syncs -= 1;
            return Err(io::Error::other("injected fsync failure"));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct FaultyFile {
    fs: FaultyFs,
    path: PathBuf,
    file: File,
}

impl FileHandle for FaultyFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.file.read_at(buf, pos)
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        let mut state = self.fs.lock();
        if state.disk_full {
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        FaultyFs::track(&mut state, &self.path);
        if let Some(prefix) = state.torn_write.take() {
            self.file.write_all_at(&buf[..prefix.min(buf.len())], pos)?;
            return Err(io::Error::other("injected torn write"));
        }
        self.file.write_all_at(buf, pos)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        FaultyFs::track(&mut self.fs.lock(), &self.path);
        self.file.set_len(len)
    }

    fn len(&self) -> io::Result<u64> {
        self.file.metadata().map(|m| m.len())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync_all()
    }

    fn sync_all(&self) -> io::Result<()> {
        let mut state = self.fs.lock();
        FaultyFs::sync_fault(&mut state)?;
        let bytes = std::fs::read(&self.path)?;
        if let Some((durable, _)) = state.files.get_mut(&self.path) {
            durable.0 = Some(bytes);
        }
        Ok(())
    }
}

impl FileSystem for FaultyFs {
    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>> {
        Ok(Arc::new(FaultyFile { fs: self.clone(), path: path.to_path_buf(), file: File::open(path)? }))
    }

    fn open_write(&self, path: &Path, truncate: bool) -> io::Result<Arc<dyn FileHandle>> {
        let mut state = self.lock();
        FaultyFs::track(&mut state, path);
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(truncate).open(path)?;
        Ok(Arc::new(FaultyFile { fs: self.clone(), path: path.to_path_buf(), file }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        FaultyFs::track(&mut state, path);
        std::fs::remove_file(path)?;
        if let Some((durable, true)) = state.files.remove(path) {
            state.gone.entry(path.to_path_buf()).or_insert(durable);
        }
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        FaultyFs::track(&mut state, from);
        FaultyFs::track(&mut state, to);
        std::fs::rename(from, to)?;
        // Until the directory is synced a crash may undo the rename: `to` comes back as it was
        // and `from` as it was.
        let (moved, from_named) = state.files.remove(from).unwrap_or((Durable(None), false));
        if from_named {
            state.gone.entry(from.to_path_buf()).or_insert(moved.clone());
        }
        let (old_to, to_named) = state.files.remove(to).unwrap_or((Durable(None), false));
        if to_named {
            state.gone.entry(to.to_path_buf()).or_insert(old_to);
        }
        // The renamed contents are durable under the new name only once the directory is synced.
        state.files.insert(to.to_path_buf(), (moved, false));
        Ok(())
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        FaultyFs::sync_fault(&mut state)?;
        File::open(dir)?.sync_all()?;
        for (path, (_, named)) in state.files.iter_mut() {
            if path.parent() == Some(dir) {
                *named = true;
            }
        }
        state.gone.retain(|path, _| path.parent() != Some(dir));
        Ok(())
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        StdFs.read_dir(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_keeps_exactly_what_was_made_durable() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("old"), b"before").unwrap();
        let fs = FaultyFs::new();
        // Synced contents, unsynced name (its directory is never synced): gone.
        std::fs::create_dir(d.join("sub")).unwrap();
        let unnamed = fs.open_write(&d.join("sub/unnamed"), true).unwrap();
        unnamed.write_all_at(b"data", 0).unwrap();
        unnamed.sync_all().unwrap();
        // Synced contents and name, then an unsynced tail.
        let kept = fs.open_write(&d.join("kept"), true).unwrap();
        kept.write_all_at(b"synced", 0).unwrap();
        kept.sync_data().unwrap();
        fs.sync_dir(d).unwrap();
        kept.write_all_at(b" and not", 6).unwrap();
        // A file that was there before, changed without an fsync.
        fs.open_write(&d.join("old"), false).unwrap().write_all_at(b"AFTER!", 0).unwrap();
        // A durable replacement of another file.
        replace_file(&fs, d, "r.tmp", "replaced", b"new").unwrap();
        fs.crash().unwrap();
        assert!(!d.join("sub/unnamed").exists());
        assert_eq!(std::fs::read(d.join("kept")).unwrap(), b"synced");
        assert_eq!(std::fs::read(d.join("old")).unwrap(), b"before");
        assert_eq!(std::fs::read(d.join("replaced")).unwrap(), b"new");
        assert!(!d.join("r.tmp").exists());
    }

    #[test]
    fn unsynced_removals_and_renames_are_undone_by_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a"), b"A").unwrap();
        std::fs::write(d.join("b"), b"B").unwrap();
        let fs = FaultyFs::new();
        fs.remove_file(&d.join("a")).unwrap();
        fs.rename(&d.join("b"), &d.join("c")).unwrap();
        fs.crash().unwrap();
        assert_eq!(std::fs::read(d.join("a")).unwrap(), b"A");
        assert_eq!(std::fs::read(d.join("b")).unwrap(), b"B");
        assert!(!d.join("c").exists());
        fs.remove_file(&d.join("a")).unwrap();
        fs.rename(&d.join("b"), &d.join("c")).unwrap();
        fs.sync_dir(d).unwrap();
        fs.crash().unwrap();
        assert!(!d.join("a").exists() && !d.join("b").exists());
        assert_eq!(std::fs::read(d.join("c")).unwrap(), b"B");
    }

    #[test]
    fn injected_faults_fail_the_operation_they_hit() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultyFs::new();
        let f = fs.open_write(&dir.path().join("f"), true).unwrap();
        fs.fail_syncs(1);
        assert!(f.sync_data().is_err());
        assert!(f.sync_data().is_ok(), "only the next fsync fails");
        fs.set_disk_full(true);
        assert_eq!(f.write_all_at(b"x", 0).unwrap_err().raw_os_error(), Some(28));
        fs.set_disk_full(false);
        fs.tear_next_write(3);
        assert!(f.write_all_at(b"abcdef", 0).is_err());
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"abc");
        f.write_all_at(b"abcdef", 0).unwrap();
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"abcdef");
    }
}
