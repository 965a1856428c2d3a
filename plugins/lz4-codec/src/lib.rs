//! The `lz4` codec: the LZ4 block format (no frame, no checksum; the host keeps the original
//! length and a checksum beside every blob). LZ4 has no levels, so `level` is ignored.

use sluice_plugin_sdk::{Codec, register_codec};

struct Lz4;

impl Codec for Lz4 {
    fn name() -> String {
        "lz4".to_string()
    }

    fn compress(data: Vec<u8>, _level: i32) -> Result<Vec<u8>, String> {
        Ok(compress(&data))
    }

    fn decompress(data: Vec<u8>, expected_size: u64) -> Result<Vec<u8>, String> {
        decompress(&data, expected_size)
    }
}

register_codec!(Lz4);

fn compress(data: &[u8]) -> Vec<u8> {
    lz4_flex::block::compress(data)
}

/// Decompresses into a buffer of exactly `expected_size` bytes; a blob that decodes to any other
/// length is refused rather than returned short.
fn decompress(data: &[u8], expected_size: u64) -> Result<Vec<u8>, String> {
    let expected = usize::try_from(expected_size).map_err(|_| format!("expected size {expected_size} does not fit in memory"))?;
    let out = lz4_flex::block::decompress(data, expected).map_err(|e| format!("corrupt lz4 block: {e}"))?;
    if out.len() != expected {
        return Err(format!("lz4 block decodes to {} bytes, expected {expected}", out.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        b"sluice lz4 round trip; ".repeat(1000)
    }

    #[test]
    fn round_trips_and_shrinks_repetitive_data() {
        let data = sample();
        let packed = compress(&data);
        assert!(packed.len() < data.len() / 4, "{} bytes", packed.len());
        assert_eq!(decompress(&packed, data.len() as u64), Ok(data));
    }

    #[test]
    fn round_trips_empty_input() {
        assert_eq!(decompress(&compress(&[]), 0), Ok(Vec::new()));
    }

    #[test]
    fn refuses_a_wrong_expected_size() {
        let data = sample();
        let packed = compress(&data);
        assert!(decompress(&packed, data.len() as u64 - 1).is_err());
        assert!(decompress(&packed, data.len() as u64 + 1).is_err());
    }

    #[test]
    fn refuses_garbage() {
        assert!(decompress(&[0xff; 16], 1000).is_err());
    }

    #[test]
    fn the_trait_names_the_codec() {
        assert_eq!(<Lz4 as Codec>::name(), "lz4");
        assert_eq!(<Lz4 as Codec>::compress(sample(), 9), Ok(compress(&sample())));
    }
}
