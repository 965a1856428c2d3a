//! Replacing a small file so that a crash leaves either its old or its new contents.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `dir/tmp_name`, makes them durable, renames the file to `dir/name` and
/// makes the rename durable.
pub fn replace_file(dir: &Path, tmp_name: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(tmp_name);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    // The contents must be on disk before the rename publishes them, or a crash could leave an
    // empty or partial file under the real name.
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    // The rename itself lives in the directory; without this a crash may bring back the old file.
    std::fs::File::open(dir)?.sync_all()
}
