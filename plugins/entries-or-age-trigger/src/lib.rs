//! The `entries-or-age` snapshot trigger, the classic thresholds: snapshot once `entries` log
//! entries have been appended since the last snapshot, or once `max-age-ms` have passed since
//! it and at least one entry was appended (an idle group never snapshots for age alone).
//!
//! Params: `entries` (default 10000, at least 1) and `max-age-ms` (default 3600000, at
//! least 1).

use std::sync::{Mutex, PoisonError};

use sluice_plugin_sdk::{Decision, GroupStats, Params, SnapshotTrigger, register_trigger};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Thresholds {
    entries: u64,
    max_age_ms: u64,
}

impl Thresholds {
    const DEFAULT: Thresholds = Thresholds { entries: 10_000, max_age_ms: 3_600_000 };

    fn from_params(params: Vec<(String, String)>) -> Result<Thresholds, String> {
        let params = Params::new(params);
        let thresholds = Thresholds {
            entries: params.parse_or("entries", Thresholds::DEFAULT.entries)?,
            max_age_ms: params.parse_or("max-age-ms", Thresholds::DEFAULT.max_age_ms)?,
        };
        if thresholds.entries == 0 {
            return Err("param `entries` must be at least 1".to_string());
        }
        if thresholds.max_age_ms == 0 {
            return Err("param `max-age-ms` must be at least 1".to_string());
        }
        Ok(thresholds)
    }

    fn decide(&self, stats: &GroupStats) -> Decision {
        let full = stats.entries_since_snapshot >= self.entries;
        let old = stats.millis_since_snapshot >= self.max_age_ms && stats.entries_since_snapshot > 0;
        if full || old { Decision::Snapshot } else { Decision::Wait }
    }
}

/// This instance's thresholds, set by `configure` (the defaults until then).
static THRESHOLDS: Mutex<Thresholds> = Mutex::new(Thresholds::DEFAULT);

struct EntriesOrAge;

impl SnapshotTrigger for EntriesOrAge {
    fn configure(params: Vec<(String, String)>) -> Result<(), String> {
        let thresholds = Thresholds::from_params(params)?;
        // A poisoned lock only means an earlier call panicked, and that trapped the whole
        // instance; the value inside is still a whole `Thresholds`.
        *THRESHOLDS.lock().unwrap_or_else(PoisonError::into_inner) = thresholds;
        Ok(())
    }

    fn should_snapshot(stats: GroupStats) -> Result<Decision, String> {
        Ok(THRESHOLDS.lock().unwrap_or_else(PoisonError::into_inner).decide(&stats))
    }
}

register_trigger!(EntriesOrAge);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin_sdk::GroupId;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn stats(entries: u64, millis: u64) -> GroupStats {
        GroupStats {
            group: GroupId::Metadata,
            applied_index: 1234,
            entries_since_snapshot: entries,
            bytes_since_snapshot: entries * 100,
            millis_since_snapshot: millis,
            log_bytes: 1 << 20,
            is_leader: true,
            slowest_follower_lag: 0,
        }
    }

    #[test]
    fn params_default_parse_and_are_checked() {
        assert_eq!(Thresholds::from_params(vec![]), Ok(Thresholds::DEFAULT));
        assert_eq!(
            Thresholds::from_params(params(&[("entries", "50"), ("max-age-ms", "1000")])),
            Ok(Thresholds { entries: 50, max_age_ms: 1000 })
        );
        assert!(Thresholds::from_params(params(&[("entries", "lots")])).is_err());
        assert!(Thresholds::from_params(params(&[("entries", "-1")])).is_err());
        assert!(Thresholds::from_params(params(&[("entries", "0")])).is_err());
        assert!(Thresholds::from_params(params(&[("max-age-ms", "0")])).is_err());
        // Other plugins' params (a topic's params reach all its plugins) are ignored.
        assert_eq!(Thresholds::from_params(params(&[("segments", "5")])), Ok(Thresholds::DEFAULT));
    }

    #[test]
    fn decisions() {
        let t = Thresholds { entries: 100, max_age_ms: 1000 };
        // (entries since snapshot, millis since snapshot, snapshot?)
        let table = [
            (0, 0, false),
            (99, 999, false),
            (100, 0, true),
            (5000, 5, true),
            (1, 1000, true),
            (1, 999, false),
            (0, 1000, false),
            (0, u64::MAX, false),
        ];
        for (entries, millis, want) in table {
            let got = t.decide(&stats(entries, millis)) == Decision::Snapshot;
            assert_eq!(got, want, "entries={entries} millis={millis}");
        }
    }

    #[test]
    fn configure_changes_the_answer() {
        assert_eq!(EntriesOrAge::configure(params(&[("entries", "10")])), Ok(()));
        assert_eq!(EntriesOrAge::should_snapshot(stats(10, 0)), Ok(Decision::Snapshot));
        assert!(EntriesOrAge::configure(params(&[("entries", "x")])).is_err());
        // A refused configuration leaves the previous one in place.
        assert_eq!(EntriesOrAge::should_snapshot(stats(10, 0)), Ok(Decision::Snapshot));
        assert_eq!(EntriesOrAge::configure(vec![]), Ok(()));
        assert_eq!(EntriesOrAge::should_snapshot(stats(10, 0)), Ok(Decision::Wait));
    }
}
