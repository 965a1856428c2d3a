//! The `keep-last-segments` retention policy: keep the newest `segments` segments (a required
//! param, at least 1) and delete everything older, whatever the topic's configs say.

use std::sync::atomic::{AtomicUsize, Ordering};

use sluice_plugin_sdk::{Params, PartitionInfo, Retention, RetentionPolicy, SegmentInfo, register_retention};

/// How many segments to keep; 0 until `configure` has accepted a value.
static KEEP: AtomicUsize = AtomicUsize::new(0);

fn keep_param(params: Vec<(String, String)>) -> Result<usize, String> {
    let params = Params::new(params);
    match params.parse_required::<usize>("segments")? {
        0 => Err("param `segments` must be at least 1".to_string()),
        n => Ok(n),
    }
}

fn retain(keep: usize, segments: &[SegmentInfo]) -> Retention {
    match segments.len().checked_sub(keep) {
        None | Some(0) => Retention::KeepAll,
        // `first_kept < segments.len()` because `keep >= 1`.
        Some(first_kept) => Retention::DeleteBefore(segments[first_kept].base_offset),
    }
}

struct KeepLastSegments;

impl RetentionPolicy for KeepLastSegments {
    fn configure(params: Vec<(String, String)>) -> Result<(), String> {
        KEEP.store(keep_param(params)?, Ordering::Relaxed);
        Ok(())
    }

    fn retain(_partition: PartitionInfo, _configs: Vec<(String, String)>, segments: Vec<SegmentInfo>) -> Result<Retention, String> {
        match KEEP.load(Ordering::Relaxed) {
            0 => Err("not configured: param `segments` is required".to_string()),
            keep => Ok(retain(keep, &segments)),
        }
    }
}

register_retention!(KeepLastSegments);

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(n: i64) -> Vec<SegmentInfo> {
        (0..n)
            .map(|i| SegmentInfo { base_offset: i * 10, last_offset: i * 10 + 9, size_bytes: 4096, first_timestamp: -1, max_timestamp: -1 })
            .collect()
    }

    #[test]
    fn params() {
        let p = |v: &str| vec![("segments".to_string(), v.to_string())];
        assert_eq!(keep_param(p("3")), Ok(3));
        assert!(keep_param(vec![]).is_err());
        assert!(keep_param(p("0")).is_err());
        assert!(keep_param(p("-2")).is_err());
        assert!(keep_param(p("three")).is_err());
    }

    #[test]
    fn keeps_the_newest_segments() {
        // (segments present, segments to keep, answer)
        let table = [
            (0, 1, Retention::KeepAll),
            (1, 1, Retention::KeepAll),
            (3, 3, Retention::KeepAll),
            (2, 5, Retention::KeepAll),
            (2, 1, Retention::DeleteBefore(10)),
            (5, 2, Retention::DeleteBefore(30)),
            (5, 1, Retention::DeleteBefore(40)),
        ];
        for (present, keep, want) in table {
            assert_eq!(retain(keep, &segments(present)), want, "{present} segments, keep {keep}");
        }
    }
}
