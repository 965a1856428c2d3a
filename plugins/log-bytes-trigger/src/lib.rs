//! The `log-bytes` snapshot trigger: snapshot once the group's log on disk reaches `bytes`
//! (default 268435456, 256 MiB; at least 1), whatever the entry count or age.

use std::sync::atomic::{AtomicU64, Ordering};

use sluice_plugin_sdk::{Decision, GroupStats, Params, SnapshotTrigger, register_trigger};

const DEFAULT_BYTES: u64 = 256 << 20;

/// This instance's threshold, set by `configure` (the default until then).
static BYTES: AtomicU64 = AtomicU64::new(DEFAULT_BYTES);

fn threshold(params: Vec<(String, String)>) -> Result<u64, String> {
    let params = Params::new(params);
    match params.parse_or("bytes", DEFAULT_BYTES)? {
        0 => Err("param `bytes` must be at least 1".to_string()),
        bytes => Ok(bytes),
    }
}

fn decide(threshold: u64, stats: &GroupStats) -> Decision {
    if stats.log_bytes >= threshold { Decision::Snapshot } else { Decision::Wait }
}

struct LogBytes;

impl SnapshotTrigger for LogBytes {
    fn configure(params: Vec<(String, String)>) -> Result<(), String> {
        BYTES.store(threshold(params)?, Ordering::Relaxed);
        Ok(())
    }

    fn should_snapshot(stats: GroupStats) -> Result<Decision, String> {
        Ok(decide(BYTES.load(Ordering::Relaxed), &stats))
    }
}

register_trigger!(LogBytes);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin_sdk::{GroupId, TopicPartition};

    fn stats(log_bytes: u64) -> GroupStats {
        GroupStats {
            group: GroupId::Partition(TopicPartition { topic: "t".into(), partition: 3 }),
            applied_index: 10,
            entries_since_snapshot: 0,
            bytes_since_snapshot: 0,
            millis_since_snapshot: u64::MAX,
            log_bytes,
            is_leader: false,
            slowest_follower_lag: 0,
        }
    }

    #[test]
    fn params() {
        assert_eq!(threshold(vec![]), Ok(DEFAULT_BYTES));
        assert_eq!(threshold(vec![("bytes".into(), "4096".into())]), Ok(4096));
        assert!(threshold(vec![("bytes".into(), "0".into())]).is_err());
        assert!(threshold(vec![("bytes".into(), "4k".into())]).is_err());
        assert_eq!(threshold(vec![("entries".into(), "4".into())]), Ok(DEFAULT_BYTES));
    }

    #[test]
    fn decisions() {
        for (log_bytes, want) in [(0, Decision::Wait), (4095, Decision::Wait), (4096, Decision::Snapshot), (u64::MAX, Decision::Snapshot)] {
            assert_eq!(decide(4096, &stats(log_bytes)), want, "log_bytes={log_bytes}");
        }
    }
}
