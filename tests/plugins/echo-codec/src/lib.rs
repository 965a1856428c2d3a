//! A well-behaved test codec named `echo`, version 1: the identity. With `echo-v2-codec`
//! (same name, different output) it tests that data stays readable across a codec swap.

use sluice_plugin_sdk::{Codec, register_codec};

struct Echo;

impl Codec for Echo {
    fn name() -> String {
        "echo".to_string()
    }

    fn compress(data: Vec<u8>, _level: i32) -> Result<Vec<u8>, String> {
        Ok(data)
    }

    fn decompress(data: Vec<u8>, _expected_size: u64) -> Result<Vec<u8>, String> {
        Ok(data)
    }
}

register_codec!(Echo);
