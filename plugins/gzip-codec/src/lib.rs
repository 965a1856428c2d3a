//! The `gzip` codec: the gzip format (RFC 1952: a 10-byte header, a DEFLATE stream, then the
//! CRC-32 and length of the data), by flate2 on its pure-Rust miniz_oxide backend. What it writes
//! is a plain `.gz` file: `gzip -dc` reads it.
//!
//! Levels are gzip's 1 (fastest) to 9 (smallest); 0 means 6, and anything outside 1..=9 is
//! clamped into it.
//!
//! A blob may hold several gzip members one after another (as `cat a.gz b.gz` makes); it
//! decodes to their concatenation, as with `gzip -d`. Anything after the last member is refused.

use std::io::{Read, Write};

use flate2::Compression;
use flate2::bufread::MultiGzDecoder;
use flate2::write::GzEncoder;
use sluice_plugin_sdk::{Codec, register_codec};

/// The level used when the host asks for level 0.
const DEFAULT_LEVEL: u32 = 6;

struct Gzip;

impl Codec for Gzip {
    fn name() -> String {
        "gzip".to_string()
    }

    fn compress(data: Vec<u8>, level: i32) -> Result<Vec<u8>, String> {
        compress(&data, level)
    }

    fn decompress(data: Vec<u8>, expected_size: u64) -> Result<Vec<u8>, String> {
        decompress(&data, expected_size)
    }
}

register_codec!(Gzip);

/// The gzip level for the host's `level`.
fn gzip_level(level: i32) -> u32 {
    match level {
        0 => DEFAULT_LEVEL,
        // The clamp makes the cast lossless.
        other => other.clamp(1, 9) as u32,
    }
}

fn compress(data: &[u8], level: i32) -> Result<Vec<u8>, String> {
    // The header has no file name and a zero modification time, so equal input gives equal
    // output.
    let mut encoder = GzEncoder::new(Vec::with_capacity(data.len() / 2 + 64), Compression::new(gzip_level(level)));
    encoder.write_all(data).map_err(|e| format!("gzip compression failed: {e}"))?;
    encoder.finish().map_err(|e| format!("gzip compression failed: {e}"))
}

/// Decodes at most one byte more than `expected_size`, so a corrupt or hostile stream cannot
/// make the output grow past what the host said to expect; any other length is refused. Every
/// member's CRC-32 and length are checked.
fn decompress(data: &[u8], expected_size: u64) -> Result<Vec<u8>, String> {
    let expected = usize::try_from(expected_size).map_err(|_| format!("expected size {expected_size} does not fit in memory"))?;
    let mut out = Vec::new();
    out.try_reserve_exact(expected).map_err(|_| format!("cannot allocate the expected {expected} bytes"))?;
    MultiGzDecoder::new(data)
        .take(expected_size.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| format!("corrupt gzip stream: {e}"))?;
    if out.len() > expected {
        return Err(format!("gzip stream decodes to more than the expected {expected} bytes"));
    }
    if out.len() != expected {
        return Err(format!("gzip stream decodes to {} bytes, expected {expected}", out.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        b"sluice gzip round trip; ".repeat(1000)
    }

    /// Incompressible bytes from a fixed xorshift, so runs repeat.
    fn random(len: usize) -> Vec<u8> {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    }

    fn round_trip(data: &[u8], level: i32) -> Vec<u8> {
        let packed = compress(data, level).unwrap();
        assert_eq!(decompress(&packed, data.len() as u64).as_deref(), Ok(data), "level {level}");
        packed
    }

    #[test]
    fn levels_default_and_clamp() {
        assert_eq!(gzip_level(0), 6);
        assert_eq!(gzip_level(1), 1);
        assert_eq!(gzip_level(9), 9);
        assert_eq!(gzip_level(10), 9);
        assert_eq!(gzip_level(-3), 1);
        assert_eq!(gzip_level(i32::MIN), 1);
        assert_eq!(gzip_level(i32::MAX), 9);
    }

    #[test]
    fn round_trips_text_at_every_level() {
        let data = sample();
        for level in -5..=25 {
            let packed = round_trip(&data, level);
            assert!(packed.len() < data.len() / 4, "level {level}: {} bytes", packed.len());
        }
        round_trip(&data, i32::MIN);
        round_trip(&data, i32::MAX);
    }

    #[test]
    fn round_trips_random_data_at_every_level() {
        let data = random(100_000);
        for level in -5..=25 {
            round_trip(&data, level);
        }
    }

    #[test]
    fn round_trips_empty_input() {
        for level in -5..=25 {
            round_trip(&[], level);
        }
    }

    #[test]
    fn writes_the_gzip_header() {
        let packed = compress(b"x", 0).unwrap();
        // Magic, deflate, no flags, zero mtime.
        assert_eq!(packed[..8], [0x1f, 0x8b, 8, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn refuses_a_wrong_expected_size() {
        let data = sample();
        let packed = compress(&data, 0).unwrap();
        let short = decompress(&packed, data.len() as u64 - 1).unwrap_err();
        assert!(short.contains("more than the expected"), "{short}");
        assert!(decompress(&packed, 0).unwrap_err().contains("more than the expected"));
        let long = decompress(&packed, data.len() as u64 + 1).unwrap_err();
        assert!(long.contains("expected"), "{long}");
    }

    #[test]
    fn stops_decoding_a_bomb_at_the_expected_size() {
        let bomb = compress(&vec![0; 16 << 20], 9).unwrap();
        assert!(bomb.len() < 100_000, "{} bytes", bomb.len());
        let refused = decompress(&bomb, 1000).unwrap_err();
        assert!(refused.contains("more than the expected 1000 bytes"), "{refused}");
    }

    #[test]
    fn refuses_garbage_and_empty_input() {
        assert!(decompress(&[0xff; 16], 1000).is_err());
        assert!(decompress(&[], 0).is_err());
        // A raw deflate stream is not gzip.
        assert!(decompress(&[0x03, 0x00], 0).is_err());
    }

    #[test]
    fn refuses_corruption_without_panicking() {
        let data = sample()[..3000].to_vec();
        let packed = compress(&data, 0).unwrap();
        for at in 0..packed.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut damaged = packed.clone();
                damaged[at] ^= flip;
                // A flipped bit that gzip ignores (the OS byte, say) may still decode, but never
                // to anything else.
                if let Ok(out) = decompress(&damaged, data.len() as u64) {
                    assert_eq!(out, data, "byte {at} ^ {flip:#x}");
                }
            }
        }
        for len in 0..packed.len() {
            assert!(decompress(&packed[..len], data.len() as u64).is_err(), "truncated to {len} bytes");
        }
        let mut damaged = packed.clone();
        let crc = packed.len() - 8;
        damaged[crc] ^= 1;
        assert!(decompress(&damaged, data.len() as u64).unwrap_err().contains("corrupt gzip stream"));
    }

    #[test]
    fn reads_concatenated_members_and_refuses_trailing_bytes() {
        let mut two = compress(b"hello, ", 1).unwrap();
        two.extend(compress(b"world", 9).unwrap());
        assert_eq!(decompress(&two, 12), Ok(b"hello, world".to_vec()));
        let mut trailing = compress(b"hello", 0).unwrap();
        trailing.extend_from_slice(b"junk");
        assert!(decompress(&trailing, 5).is_err());
    }

    /// Runs `gzip` with `args`, feeding nothing on stdin, and returns its stdout.
    fn gzip(args: &[&str]) -> Vec<u8> {
        let output = std::process::Command::new("gzip").args(args).output().unwrap_or_else(|e| {
            panic!("cannot run the gzip command-line tool ({e}); install it (Debian: apt-get install gzip), or run scripts/test, which does")
        });
        assert!(output.status.success(), "gzip {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        output.stdout
    }

    #[test]
    fn the_gzip_tool_reads_the_output_and_the_codec_reads_the_tools() {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("blob.gz");
        for data in [sample(), random(50_000), Vec::new()] {
            for level in [0, 1, 9] {
                std::fs::write(&blob, compress(&data, level).unwrap()).unwrap();
                assert!(gzip(&["-dc", blob.to_str().unwrap()]) == data, "gzip -dc disagrees at level {level} on {} bytes", data.len());
            }
            let plain = dir.path().join("plain");
            std::fs::write(&plain, &data).unwrap();
            for level in ["-1", "-9"] {
                let packed = gzip(&["-c", "-n", level, plain.to_str().unwrap()]);
                assert!(decompress(&packed, data.len() as u64).as_deref() == Ok(&data[..]), "gzip {level} output on {} bytes", data.len());
            }
        }
    }

    #[test]
    fn the_trait_names_the_codec() {
        assert_eq!(<Gzip as Codec>::name(), "gzip");
        assert_eq!(<Gzip as Codec>::compress(sample(), 0), compress(&sample(), 6));
        assert_eq!(<Gzip as Codec>::decompress(compress(&sample(), 3).unwrap(), sample().len() as u64), Ok(sample()));
    }
}
