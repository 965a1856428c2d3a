//! Version 2 of the test codec `echo`: `compress` prefixes the input with `b"v2"` and
//! `decompress` strips it.
//!
//! Deliberately, neither version reads the other's output (version 1 would return the prefix,
//! which the host's length check refuses; version 2 refuses data without its prefix), so a
//! host that decodes stored data with the currently bound version instead of the version that
//! wrote it fails the swap test loudly.

use sluice_plugin_sdk::{Codec, register_codec};

const PREFIX: &[u8] = b"v2";

struct EchoV2;

impl Codec for EchoV2 {
    fn name() -> String {
        "echo".to_string()
    }

    fn compress(data: Vec<u8>, _level: i32) -> Result<Vec<u8>, String> {
        Ok(compress(&data))
    }

    fn decompress(data: Vec<u8>, expected_size: u64) -> Result<Vec<u8>, String> {
        decompress(&data, expected_size)
    }
}

register_codec!(EchoV2);

fn compress(data: &[u8]) -> Vec<u8> {
    [PREFIX, data].concat()
}

fn decompress(data: &[u8], expected_size: u64) -> Result<Vec<u8>, String> {
    match data.strip_prefix(PREFIX) {
        Some(rest) if rest.len() as u64 == expected_size => Ok(rest.to_vec()),
        Some(rest) => Err(format!("echo v2: {} bytes after the prefix, expected {expected_size}", rest.len())),
        None => Err("echo v2: missing the v2 prefix (not written by this version)".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_version_one_output() {
        assert_eq!(compress(b"abc"), b"v2abc");
        assert_eq!(decompress(&compress(b"abc"), 3), Ok(b"abc".to_vec()));
        assert_eq!(decompress(&compress(b""), 0), Ok(Vec::new()));
        assert!(decompress(b"abc", 3).is_err());
        assert!(decompress(b"v2abc", 4).is_err());
    }
}
