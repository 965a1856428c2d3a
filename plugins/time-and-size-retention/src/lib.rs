//! The `time-and-size` retention policy, Sluice's default: Kafka's semantics for the topic
//! configs `retention.ms` and `retention.bytes` (missing or negative, as Kafka's -1, means
//! unlimited). It has no params of its own.
//!
//! Only whole segments go, oldest first, and never the newest segment (the one being written).
//! A segment is deletable when either rule allows it:
//! - time: its largest timestamp is older than `now-ms - retention.ms`; the scan stops at the
//!   first segment that is not (or whose timestamp is unknown), as Kafka's does;
//! - size: the partition would still hold at least `retention.bytes` without it and every older
//!   segment.
//!
//! Both rules pick a prefix, so the answer is the longer of the two.

use sluice_plugin_sdk::{Params, PartitionInfo, Retention, RetentionPolicy, SegmentInfo, register_retention};

struct TimeAndSize;

impl RetentionPolicy for TimeAndSize {
    fn retain(partition: PartitionInfo, configs: Vec<(String, String)>, segments: Vec<SegmentInfo>) -> Result<Retention, String> {
        let limits = Limits::from_configs(&Params::new(configs))?;
        Ok(retain(&partition, limits, &segments))
    }
}

register_retention!(TimeAndSize);

/// The topic's limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Limits {
    retention_ms: Option<i64>,
    retention_bytes: Option<u64>,
}

impl Limits {
    fn from_configs(configs: &Params) -> Result<Limits, String> {
        let limit = |key: &str| -> Result<Option<i64>, String> { Ok(Some(configs.parse_or::<i64>(key, -1)?).filter(|v| *v >= 0)) };
        Ok(Limits {
            retention_ms: limit("retention.ms")?,
            // Filtered to non-negative above, so `unsigned_abs` is the value itself.
            retention_bytes: limit("retention.bytes")?.map(|v| v.unsigned_abs()),
        })
    }
}

fn retain(partition: &PartitionInfo, limits: Limits, segments: &[SegmentInfo]) -> Retention {
    // Invariant: the newest segment is never a candidate.
    let candidates = &segments[..segments.len().saturating_sub(1)];
    let by_time = limits.retention_ms.map_or(0, |ms| expired_by_time(partition.now_ms, ms, candidates));
    let by_size = limits.retention_bytes.map_or(0, |bytes| over_size(partition.total_bytes, bytes, candidates));
    let deletable = by_time.max(by_size);
    // `deletable <= candidates.len() < segments.len()`, so the first kept segment exists.
    match deletable {
        0 => Retention::KeepAll,
        n => Retention::DeleteBefore(segments[n].base_offset),
    }
}

/// How many of the oldest `segments` have only records older than `now_ms - retention_ms`.
fn expired_by_time(now_ms: i64, retention_ms: i64, segments: &[SegmentInfo]) -> usize {
    let cutoff = now_ms.saturating_sub(retention_ms);
    segments.iter().take_while(|s| s.max_timestamp >= 0 && s.max_timestamp < cutoff).count()
}

/// How many of the oldest `segments` can go while at least `retention_bytes` of the
/// partition's `total_bytes` stay.
fn over_size(total_bytes: u64, retention_bytes: u64, segments: &[SegmentInfo]) -> usize {
    let mut marked = 0u64;
    segments
        .iter()
        .take_while(|s| {
            let excess = total_bytes.saturating_sub(marked).saturating_sub(retention_bytes);
            let deletable = excess >= s.size_bytes;
            if deletable {
                marked += s.size_bytes;
            }
            deletable
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    /// Segments of 100 offsets and `size` bytes each, with these max timestamps.
    fn segments(size: u64, max_timestamps: &[i64]) -> Vec<SegmentInfo> {
        max_timestamps
            .iter()
            .enumerate()
            .map(|(i, &ts)| SegmentInfo {
                base_offset: i as i64 * 100,
                last_offset: i as i64 * 100 + 99,
                size_bytes: size,
                first_timestamp: ts.saturating_sub(10),
                max_timestamp: ts,
            })
            .collect()
    }

    fn partition(segments: &[SegmentInfo]) -> PartitionInfo {
        PartitionInfo {
            topic: "t".into(),
            partition: 0,
            log_start_offset: 0,
            high_watermark: segments.last().map_or(0, |s| s.last_offset + 1),
            total_bytes: segments.iter().map(|s| s.size_bytes).sum(),
            now_ms: NOW,
        }
    }

    fn configs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn answer(pairs: &[(&str, &str)], segs: &[SegmentInfo]) -> Result<Retention, String> {
        TimeAndSize::retain(partition(segs), configs(pairs), segs.to_vec())
    }

    #[test]
    fn unlimited_keeps_everything() {
        let old = segments(1000, &[1, 2, 3]);
        assert_eq!(answer(&[], &old), Ok(Retention::KeepAll));
        assert_eq!(answer(&[("retention.ms", "-1"), ("retention.bytes", "-1")], &old), Ok(Retention::KeepAll));
        assert_eq!(answer(&[("retention.ms", "0")], &[]), Ok(Retention::KeepAll));
    }

    #[test]
    fn bad_configs_are_errors() {
        let segs = segments(1000, &[1, 2]);
        assert!(answer(&[("retention.ms", "week")], &segs).is_err());
        assert!(answer(&[("retention.bytes", "1GB")], &segs).is_err());
    }

    #[test]
    fn time_deletes_an_expired_prefix_but_never_the_newest_segment() {
        let ms = [("retention.ms", "1000")];
        // Cutoff is NOW - 1000: a segment whose max timestamp is below it is expired.
        let table: &[(&[i64], Retention)] = &[
            (&[NOW - 1001], Retention::KeepAll),
            (&[NOW - 5000, NOW - 4000], Retention::DeleteBefore(100)),
            (&[NOW - 5000, NOW - 4000, NOW - 3000], Retention::DeleteBefore(200)),
            (&[NOW - 5000, NOW - 1000, NOW - 3000, NOW], Retention::DeleteBefore(100)),
            (&[NOW - 999, NOW - 5000, NOW], Retention::KeepAll),
            (&[-1, NOW - 5000, NOW], Retention::KeepAll),
        ];
        for (timestamps, want) in table {
            assert_eq!(answer(&ms, &segments(10, timestamps)), Ok(*want), "{timestamps:?}");
        }
    }

    #[test]
    fn size_deletes_while_the_rest_still_holds_retention_bytes() {
        let fresh = [NOW; 5];
        // Five segments of 100 bytes: 500 bytes in all.
        let table = [
            ("500", Retention::KeepAll),
            ("401", Retention::KeepAll),
            ("400", Retention::DeleteBefore(100)),
            ("250", Retention::DeleteBefore(200)),
            ("200", Retention::DeleteBefore(300)),
            ("100", Retention::DeleteBefore(400)),
            // The newest segment stays even when it alone is over the limit.
            ("0", Retention::DeleteBefore(400)),
        ];
        for (bytes, want) in table {
            assert_eq!(answer(&[("retention.bytes", bytes)], &segments(100, &fresh)), Ok(want), "retention.bytes={bytes}");
        }
    }

    #[test]
    fn the_longer_prefix_of_the_two_rules_wins() {
        let segs = segments(100, &[NOW - 5000, NOW - 4000, NOW, NOW, NOW]);
        let both = |ms: &str, bytes: &str| answer(&[("retention.ms", ms), ("retention.bytes", bytes)], &segs);
        assert_eq!(both("1000", "400"), Ok(Retention::DeleteBefore(200)));
        assert_eq!(both("1000", "100"), Ok(Retention::DeleteBefore(400)));
        assert_eq!(both("-1", "100"), Ok(Retention::DeleteBefore(400)));
    }

    #[test]
    fn huge_limits_do_not_overflow() {
        let segs = segments(u64::MAX / 4, &[i64::MIN + 1, 0, NOW]);
        assert_eq!(answer(&[("retention.ms", &i64::MAX.to_string())], &segs), Ok(Retention::KeepAll));
        assert_eq!(answer(&[("retention.bytes", &i64::MAX.to_string())], &segs), Ok(Retention::KeepAll));
    }
}
