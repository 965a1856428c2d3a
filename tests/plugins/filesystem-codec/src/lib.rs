//! A hostile codec for the host's tests: `compress` tries to read `/etc/passwd` with
//! `std::fs::read`, so the component imports `wasi:filesystem`.
//!
//! If the read succeeds (the host granted a directory it should not have), `compress`
//! returns the file: the leak a test can see. If it fails, as it must in a capability-less
//! store, it logs the error and returns the input unchanged, so the codec round-trips and
//! passes the host's load-time self-check.

use sluice_plugin_sdk::{Codec, Level, log, register_codec};

struct Filesystem;

impl Codec for Filesystem {
    fn name() -> String {
        "filesystem".to_string()
    }

    fn compress(data: Vec<u8>, _level: i32) -> Result<Vec<u8>, String> {
        match std::fs::read("/etc/passwd") {
            Ok(leaked) => Ok(leaked),
            Err(e) => {
                log(Level::Info, &format!("reading /etc/passwd failed, as it should: {e}"));
                Ok(data)
            }
        }
    }

    fn decompress(data: Vec<u8>, _expected_size: u64) -> Result<Vec<u8>, String> {
        Ok(data)
    }
}

register_codec!(Filesystem);
