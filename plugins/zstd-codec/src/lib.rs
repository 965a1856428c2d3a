//! The `zstd` codec: the Zstandard frame format (RFC 8878), by the pure-Rust ruzstd. What it
//! writes is a plain `.zst` file with a content checksum: `zstd -dc` reads it.
//!
//! Levels: every level is accepted and all of them map to ruzstd's fastest level, about zstd
//! level 1 (a 128 KiB window). ruzstd implements no slower levels, so asking for a higher one
//! neither fails nor compresses harder. Decoding reads frames from any zstd encoder at any
//! level.
//!
//! A blob may hold several frames one after another, and skippable frames, as `zstd -d`
//! accepts; it decodes to the frames' concatenation. Anything after the last frame is refused,
//! and every frame's checksum, where it has one, is checked.

use std::io::Read;

use ruzstd::decoding::StreamingDecoder;
use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::encoding::CompressionLevel;
use sluice_plugin_sdk::{Codec, register_codec};

/// The largest window a frame may ask for whatever its size: zstd's own for levels up to 19.
/// A frame never needs a window much larger than its content, and the decoder allocates the
/// whole window up front, so a larger claim (a corrupt header) is refused rather than allowed
/// to exhaust the plugin's memory.
const MAX_SMALL_FRAME_WINDOW: u64 = 8 << 20;

struct Zstd;

impl Codec for Zstd {
    fn name() -> String {
        "zstd".to_string()
    }

    fn compress(data: Vec<u8>, level: i32) -> Result<Vec<u8>, String> {
        Ok(compress(&data, level))
    }

    fn decompress(data: Vec<u8>, expected_size: u64) -> Result<Vec<u8>, String> {
        decompress(&data, expected_size)
    }
}

register_codec!(Zstd);

/// The ruzstd level for the host's `level`: always the fastest, the only compressing level
/// ruzstd implements (its `Default`, `Better` and `Best` panic).
fn zstd_level(_level: i32) -> CompressionLevel {
    CompressionLevel::Fastest
}

fn compress(data: &[u8], level: i32) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, zstd_level(level))
}

/// Decodes at most one byte more than `expected_size`, so a corrupt or hostile stream cannot
/// make the output grow past what the host said to expect; any other length is refused.
fn decompress(data: &[u8], expected_size: u64) -> Result<Vec<u8>, String> {
    let expected = usize::try_from(expected_size).map_err(|_| format!("expected size {expected_size} does not fit in memory"))?;
    let max_window = expected_size.saturating_mul(2).max(MAX_SMALL_FRAME_WINDOW);
    let mut out = Vec::new();
    out.try_reserve_exact(expected).map_err(|_| format!("cannot allocate the expected {expected} bytes"))?;
    let mut rest = data;
    let mut frames = 0;
    while !rest.is_empty() {
        // Reading a frame header advances `rest` past it.
        let mut frame = match StreamingDecoder::new_with_max_window_size(&mut rest, max_window) {
            Ok(frame) => frame,
            Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame { length, .. })) => {
                rest = usize::try_from(length).ok().and_then(|length| rest.get(length..)).ok_or("truncated skippable zstd frame")?;
                continue;
            }
            Err(e) => return Err(format!("corrupt zstd stream: {e}")),
        };
        let room = (expected - out.len()) as u64 + 1;
        (&mut frame).take(room).read_to_end(&mut out).map_err(|e| format!("corrupt zstd stream: {e}"))?;
        if out.len() > expected {
            return Err(format!("zstd stream decodes to more than the expected {expected} bytes"));
        }
        // The whole frame is decoded and drained, so the running checksum covers all of it.
        let decoder = frame.into_frame_decoder();
        if let Some(stored) = decoder.get_checksum_from_data()
            && decoder.get_calculated_checksum() != Some(stored)
        {
            return Err("corrupt zstd stream: content checksum mismatch".to_string());
        }
        frames += 1;
    }
    if frames == 0 {
        return Err("no zstd frame in the input".to_string());
    }
    if out.len() != expected {
        return Err(format!("zstd stream decodes to {} bytes, expected {expected}", out.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        b"sluice zstd round trip; ".repeat(1000)
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
        let packed = compress(data, level);
        assert_eq!(decompress(&packed, data.len() as u64).as_deref(), Ok(data), "level {level}");
        packed
    }

    /// A frame with no checksum holding one empty raw block, whose header asks for a window of
    /// 2^(10 + exponent) bytes.
    fn empty_frame_with_window(exponent: u8) -> Vec<u8> {
        vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, exponent << 3, 0x01, 0x00, 0x00]
    }

    #[test]
    fn every_level_is_the_fastest() {
        for level in [i32::MIN, -5, 0, 1, 3, 19, 22, i32::MAX] {
            assert!(matches!(zstd_level(level), CompressionLevel::Fastest), "level {level}");
        }
    }

    #[test]
    fn round_trips_text_at_every_level() {
        // Larger than one 128 KiB block.
        let data = sample().repeat(10);
        let fastest = round_trip(&data, 0);
        assert!(fastest.len() < data.len() / 4, "{} bytes", fastest.len());
        for level in (-5..=25).chain([i32::MIN, i32::MAX]) {
            assert_eq!(round_trip(&data, level), fastest, "level {level}");
        }
    }

    #[test]
    fn round_trips_random_data_at_every_level() {
        let data = random(300_000);
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
    fn refuses_a_wrong_expected_size() {
        let data = sample();
        let packed = compress(&data, 0);
        let short = decompress(&packed, data.len() as u64 - 1).unwrap_err();
        assert!(short.contains("more than the expected"), "{short}");
        assert!(decompress(&packed, 0).unwrap_err().contains("more than the expected"));
        let long = decompress(&packed, data.len() as u64 + 1).unwrap_err();
        assert!(long.contains("expected"), "{long}");
    }

    #[test]
    fn stops_decoding_a_bomb_at_the_expected_size() {
        let bomb = compress(&vec![0; 16 << 20], 0);
        assert!(bomb.len() < 100_000, "{} bytes", bomb.len());
        let refused = decompress(&bomb, 1000).unwrap_err();
        assert!(refused.contains("more than the expected 1000 bytes"), "{refused}");
    }

    #[test]
    fn refuses_garbage_and_empty_input() {
        assert!(decompress(&[0xff; 16], 1000).is_err());
        assert!(decompress(&[], 0).unwrap_err().contains("no zstd frame"));
        assert!(decompress(&[0x28, 0xb5, 0x2f], 0).is_err());
    }

    #[test]
    fn refuses_a_window_larger_than_the_frame_needs() {
        assert_eq!(decompress(&empty_frame_with_window(0), 0), Ok(Vec::new()));
        assert_eq!(decompress(&empty_frame_with_window(13), 0), Ok(Vec::new()));
        // 64 MiB for an empty frame.
        let refused = decompress(&empty_frame_with_window(16), 0).unwrap_err();
        assert!(refused.contains("corrupt zstd stream"), "{refused}");
    }

    #[test]
    fn refuses_corruption_without_panicking() {
        let data = sample()[..3000].to_vec();
        let packed = compress(&data, 0);
        for at in 0..packed.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut damaged = packed.clone();
                damaged[at] ^= flip;
                if let Ok(out) = decompress(&damaged, data.len() as u64) {
                    assert_eq!(out, data, "byte {at} ^ {flip:#x}");
                }
            }
        }
        for len in 0..packed.len() {
            assert!(decompress(&packed[..len], data.len() as u64).is_err(), "truncated to {len} bytes");
        }
        let mut damaged = packed.clone();
        let checksum = packed.len() - 4;
        damaged[checksum] ^= 1;
        assert!(decompress(&damaged, data.len() as u64).unwrap_err().contains("checksum"));
    }

    #[test]
    fn reads_concatenated_and_skippable_frames_and_refuses_trailing_bytes() {
        let mut blob = vec![0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3];
        blob.extend(compress(b"hello, ", 0));
        blob.extend(compress(b"world", 0));
        assert_eq!(decompress(&blob, 12), Ok(b"hello, world".to_vec()));
        let mut trailing = compress(b"hello", 0);
        trailing.extend_from_slice(b"junk");
        assert!(decompress(&trailing, 5).is_err());
        assert!(decompress(&[0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0], 0).is_err());
    }

    /// Runs `zstd` with `args` and returns its stdout.
    fn zstd(args: &[&str]) -> Vec<u8> {
        let output = std::process::Command::new("zstd").args(args).output().unwrap_or_else(|e| {
            panic!("cannot run the zstd command-line tool ({e}); install it (Debian: apt-get install zstd), or run scripts/test, which does")
        });
        assert!(output.status.success(), "zstd {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        output.stdout
    }

    #[test]
    fn the_zstd_tool_reads_the_output_and_the_codec_reads_the_tools() {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("blob.zst");
        for data in [sample().repeat(10), random(300_000), Vec::new()] {
            std::fs::write(&blob, compress(&data, 0)).unwrap();
            assert!(zstd(&["-q", "-dc", blob.to_str().unwrap()]) == data, "zstd -dc disagrees on {} bytes", data.len());
            let plain = dir.path().join("plain");
            std::fs::write(&plain, &data).unwrap();
            for level in [&["-1"][..], &["-3", "--no-check"], &["-19"], &["--ultra", "-22"]] {
                let args: Vec<&str> = ["-q", "-c"].iter().chain(level).copied().chain([plain.to_str().unwrap()]).collect();
                let packed = zstd(&args);
                assert!(decompress(&packed, data.len() as u64).as_deref() == Ok(&data[..]), "zstd {level:?} output on {} bytes", data.len());
            }
        }
    }

    #[test]
    fn the_trait_names_the_codec() {
        assert_eq!(<Zstd as Codec>::name(), "zstd");
        assert_eq!(<Zstd as Codec>::compress(sample(), 9), Ok(compress(&sample(), 0)));
        assert_eq!(<Zstd as Codec>::decompress(compress(&sample(), 3), sample().len() as u64), Ok(sample()));
    }
}
