//! A hostile retention policy for the host's tests: `retain` panics, which traps the instance,
//! whenever the partition has segments. Asked about an empty partition (the host's load-time
//! self-check) it keeps everything, so it loads and binds and only fails once it is in use.

use sluice_plugin_sdk::{PartitionInfo, Retention, RetentionPolicy, SegmentInfo, register_retention};

struct Trapping;

impl RetentionPolicy for Trapping {
    fn retain(partition: PartitionInfo, _configs: Vec<(String, String)>, segments: Vec<SegmentInfo>) -> Result<Retention, String> {
        if segments.is_empty() {
            return Ok(Retention::KeepAll);
        }
        panic!("trapping-retention traps on a real partition ({}-{})", partition.topic, partition.partition);
    }
}

register_retention!(Trapping);
