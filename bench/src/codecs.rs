//! The shipped codec plugins' work done natively by the same crates: the reference the
//! benchmarks compare the WASM codecs against.

use anyhow::Result;

/// What each codec plugin does, done by the same crate natively (the plugins' level 0).
pub fn native_round_trip(codec: &str, data: &[u8]) -> Result<Vec<u8>> {
    use std::io::{Read, Write};
    Ok(match codec {
        "lz4" => lz4_flex::block::decompress(&lz4_flex::block::compress(data), data.len())?,
        "deflate" => {
            let packed = miniz_oxide::deflate::compress_to_vec(data, 6);
            miniz_oxide::inflate::decompress_to_vec_with_limit(&packed, data.len()).map_err(|e| anyhow::anyhow!("{e:?}"))?
        }
        "gzip" => {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
            encoder.write_all(data)?;
            let mut out = Vec::with_capacity(data.len());
            flate2::read::GzDecoder::new(&encoder.finish()?[..]).read_to_end(&mut out)?;
            out
        }
        _ => {
            let packed = ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest);
            let mut out = Vec::with_capacity(data.len());
            ruzstd::decoding::StreamingDecoder::new(&packed[..]).map_err(|e| anyhow::anyhow!("{e}"))?.read_to_end(&mut out)?;
            out
        }
    })
}
