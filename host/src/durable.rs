//! Replacing a small file so that a crash leaves either its old or its new contents, for the
//! node's files outside partition logs (cluster metadata, topic ids, the plugin registry).

use std::path::Path;

use crate::log::fs::{StdFs, replace_file as replace};

/// Writes `bytes` to `dir/tmp_name`, makes them durable, renames the file to `dir/name` and
/// makes the rename durable ([`crate::log::fs::replace_file`] on the real file system).
pub fn replace_file(dir: &Path, tmp_name: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    replace(&StdFs, dir, tmp_name, name, bytes)
}
