//! The retention policy adapter. The host clamps the answer: never past the high watermark,
//! never before the current log start; a failing policy deletes nothing.

use super::wit::latest::retention::exports::sluice::plugins::retention_policy::{PartitionInfo, Retention, SegmentInfo};
use super::{Bindings, Error, Params, Plugin};

impl Plugin {
    /// Asks the policy where the partition's log should start.
    pub fn retain(&self, params: &Params, partition: &PartitionInfo, configs: &Params, segments: &[SegmentInfo]) -> Result<Retention, Error> {
        if self.info.kind != super::PluginKind::Retention {
            return Err(Error::Invalid(format!("{} is not a retention policy", self.info.label())));
        }
        self.call(params, |_| 0, |store, b| match b {
            Bindings::Retention(r) => r.sluice_plugins_retention_policy().call_retain(store, partition, configs, segments),
            _ => unreachable!("kind checked above"),
        })
    }
}

/// An empty partition and default configs (for the load-time self-check).
pub fn empty_partition() -> (PartitionInfo, Params) {
    let partition = PartitionInfo {
        topic: "sluice-self-check".into(),
        partition: 0,
        log_start_offset: 0,
        high_watermark: 0,
        total_bytes: 0,
        now_ms: crate::clock::now_ms(),
    };
    let configs = vec![("retention.ms".to_string(), "604800000".to_string()), ("retention.bytes".to_string(), "-1".to_string())];
    (partition, configs)
}

/// The new log start offset a policy's answer allows: `None` to keep everything.
pub fn clamp(answer: &Retention, log_start: i64, high_watermark: i64) -> Option<i64> {
    match answer {
        Retention::KeepAll => None,
        Retention::DeleteBefore(offset) => {
            let start = (*offset).min(high_watermark);
            (start > log_start).then_some(start)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_clamped_to_the_committed_log() {
        assert_eq!(clamp(&Retention::KeepAll, 0, 100), None);
        assert_eq!(clamp(&Retention::DeleteBefore(50), 0, 100), Some(50));
        assert_eq!(clamp(&Retention::DeleteBefore(500), 0, 100), Some(100));
        assert_eq!(clamp(&Retention::DeleteBefore(10), 20, 100), None);
        assert_eq!(clamp(&Retention::DeleteBefore(-5), 0, 100), None);
    }
}
