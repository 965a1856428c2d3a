//! A hostile codec for the host's tests: `compress` returns at least `bytes` bytes (param,
//! default 8388608) whatever the input, to run into the host's output cap.
//!
//! It still round-trips, so it passes the host's load-time self-check: the output is the
//! input's length (u64 LE), the input, then zero padding up to `bytes`.

use std::sync::atomic::{AtomicUsize, Ordering};

use sluice_plugin_sdk::{Codec, Params, register_codec};

const DEFAULT_BYTES: usize = 8 << 20;

/// This instance's output size, set by `configure`.
static BYTES: AtomicUsize = AtomicUsize::new(DEFAULT_BYTES);

struct HugeOutput;

impl Codec for HugeOutput {
    fn name() -> String {
        "huge-output".to_string()
    }

    fn configure(params: Vec<(String, String)>) -> Result<(), String> {
        let params = Params::new(params);
        BYTES.store(params.parse_or("bytes", DEFAULT_BYTES)?, Ordering::Relaxed);
        Ok(())
    }

    fn compress(data: Vec<u8>, _level: i32) -> Result<Vec<u8>, String> {
        Ok(inflate(&data, BYTES.load(Ordering::Relaxed)))
    }

    fn decompress(data: Vec<u8>, _expected_size: u64) -> Result<Vec<u8>, String> {
        deflate(&data)
    }
}

register_codec!(HugeOutput);

fn inflate(data: &[u8], bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.max(data.len() + 8));
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(data);
    out.resize(bytes.max(out.len()), 0);
    out
}

fn deflate(data: &[u8]) -> Result<Vec<u8>, String> {
    let (len, rest) = data.split_first_chunk::<8>().ok_or("shorter than its length prefix")?;
    let len = usize::try_from(u64::from_le_bytes(*len)).map_err(|e| e.to_string())?;
    rest.get(..len).map(<[u8]>::to_vec).ok_or_else(|| "shorter than its length prefix says".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_huge_and_still_round_trips() {
        let out = inflate(b"hello", 1000);
        assert_eq!(out.len(), 1000);
        assert_eq!(deflate(&out), Ok(b"hello".to_vec()));
        let big = vec![7u8; 2000];
        assert_eq!(deflate(&inflate(&big, 1000)), Ok(big));
        assert!(deflate(&[1, 2, 3]).is_err());
    }
}
