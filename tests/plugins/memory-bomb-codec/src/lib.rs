//! A hostile codec for the host's tests: `compress` allocates 1 MiB after 1 MiB, writing to
//! every page, and never lets go, until the store's memory cap makes an allocation fail and
//! the allocator's failure traps the instance. Since the host's load-time self-check calls
//! `compress`, this plugin is refused at load; `name` and `decompress` behave.

use sluice_plugin_sdk::{Codec, register_codec};

const CHUNK: usize = 1 << 20;
const PAGE: usize = 4096;

struct MemoryBomb;

impl Codec for MemoryBomb {
    fn name() -> String {
        "memory-bomb".to_string()
    }

    fn compress(data: Vec<u8>, _level: i32) -> Result<Vec<u8>, String> {
        let mut hoard: Vec<Vec<u8>> = vec![data];
        loop {
            let mut chunk = vec![0u8; CHUNK];
            // Write each page: fresh linear memory is already zero, so the allocator may have
            // stored nothing for the zeros above.
            for page in chunk.chunks_mut(PAGE) {
                page[0] = hoard.len() as u8;
            }
            hoard.push(core::hint::black_box(chunk));
        }
    }

    fn decompress(data: Vec<u8>, _expected_size: u64) -> Result<Vec<u8>, String> {
        Ok(data)
    }
}

register_codec!(MemoryBomb);
