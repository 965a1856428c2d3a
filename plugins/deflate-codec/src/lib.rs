//! The `deflate` codec: raw DEFLATE (RFC 1951, no zlib or gzip header; the host keeps the
//! original length and a checksum beside every blob), by miniz_oxide.
//!
//! Levels are miniz's 1 (fastest) to 10 (smallest); 0 means 6, and anything outside 1..=10 is
//! clamped into it.

use miniz_oxide::inflate::TINFLStatus;
use sluice_plugin_sdk::{Codec, register_codec};

/// The level used when the host asks for level 0.
const DEFAULT_LEVEL: u8 = 6;

struct Deflate;

impl Codec for Deflate {
    fn name() -> String {
        "deflate".to_string()
    }

    fn compress(data: Vec<u8>, level: i32) -> Result<Vec<u8>, String> {
        Ok(compress(&data, level))
    }

    fn decompress(data: Vec<u8>, expected_size: u64) -> Result<Vec<u8>, String> {
        decompress(&data, expected_size)
    }
}

register_codec!(Deflate);

/// The miniz level for the host's `level`.
fn miniz_level(level: i32) -> u8 {
    match level {
        0 => DEFAULT_LEVEL,
        // The clamp makes the cast lossless.
        other => other.clamp(1, 10) as u8,
    }
}

fn compress(data: &[u8], level: i32) -> Vec<u8> {
    miniz_oxide::deflate::compress_to_vec(data, miniz_level(level))
}

/// Inflates at most `expected_size` bytes, so a corrupt or hostile stream cannot make the
/// output grow past what the host said to expect; any other length is refused.
fn decompress(data: &[u8], expected_size: u64) -> Result<Vec<u8>, String> {
    let expected = usize::try_from(expected_size).map_err(|_| format!("expected size {expected_size} does not fit in memory"))?;
    let out = miniz_oxide::inflate::decompress_to_vec_with_limit(data, expected).map_err(|e| match e.status {
        TINFLStatus::HasMoreOutput => format!("deflate stream decodes to more than the expected {expected} bytes"),
        _ => format!("corrupt deflate stream: {e}"),
    })?;
    if out.len() != expected {
        return Err(format!("deflate stream decodes to {} bytes, expected {expected}", out.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        b"sluice deflate round trip; ".repeat(1000)
    }

    #[test]
    fn levels_default_and_clamp() {
        assert_eq!(miniz_level(0), 6);
        assert_eq!(miniz_level(1), 1);
        assert_eq!(miniz_level(9), 9);
        assert_eq!(miniz_level(10), 10);
        assert_eq!(miniz_level(11), 10);
        assert_eq!(miniz_level(-3), 1);
        assert_eq!(miniz_level(i32::MAX), 10);
    }

    #[test]
    fn round_trips_at_every_level() {
        let data = sample();
        for level in [-1, 0, 1, 6, 9, 10, 99] {
            let packed = compress(&data, level);
            assert!(packed.len() < data.len() / 4, "level {level}: {} bytes", packed.len());
            assert_eq!(decompress(&packed, data.len() as u64), Ok(data.clone()), "level {level}");
        }
    }

    #[test]
    fn round_trips_empty_input() {
        assert_eq!(decompress(&compress(&[], 0), 0), Ok(Vec::new()));
    }

    #[test]
    fn refuses_a_wrong_expected_size() {
        let data = sample();
        let packed = compress(&data, 0);
        let short = decompress(&packed, data.len() as u64 - 1).unwrap_err();
        assert!(short.contains("more than the expected"), "{short}");
        assert!(decompress(&packed, data.len() as u64 + 1).is_err());
    }

    #[test]
    fn refuses_garbage() {
        assert!(decompress(&[0xff; 16], 1000).is_err());
    }

    #[test]
    fn the_trait_names_the_codec() {
        assert_eq!(<Deflate as Codec>::name(), "deflate");
    }
}
