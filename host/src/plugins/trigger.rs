//! The snapshot trigger adapter and the built-in threshold a failing trigger falls back to.

use super::wit::latest::trigger::exports::sluice::plugins::snapshot_trigger::{Decision, GroupStats};
use super::{Bindings, Error, Params, Plugin};

/// The classic thresholds used when no trigger answers: 10,000 entries or one hour.
pub const FALLBACK_ENTRIES: u64 = 10_000;
/// See [`FALLBACK_ENTRIES`].
pub const FALLBACK_AGE_MS: u64 = 3_600_000;

impl Plugin {
    /// Asks the trigger whether the group should snapshot now.
    pub fn should_snapshot(&self, params: &Params, stats: &GroupStats) -> Result<Decision, Error> {
        if self.info.kind != super::PluginKind::Trigger {
            return Err(Error::Invalid(format!("{} is not a snapshot trigger", self.info.label())));
        }
        self.call(params, |_| 0, |store, b| match b {
            Bindings::Trigger(t) => t.sluice_plugins_snapshot_trigger().call_should_snapshot(store, stats),
            _ => unreachable!("kind checked above"),
        })
    }
}

/// The statistics of a metadata group with nothing to snapshot (for the load-time self-check).
pub fn idle_group() -> GroupStats {
    GroupStats {
        group: super::wit::latest::trigger::exports::sluice::plugins::snapshot_trigger::GroupId::Metadata,
        applied_index: 0,
        entries_since_snapshot: 0,
        bytes_since_snapshot: 0,
        millis_since_snapshot: 0,
        log_bytes: 0,
        is_leader: true,
        slowest_follower_lag: 0,
    }
}

/// The trigger's answer, or the built-in threshold when it fails.
pub fn decide(trigger: Option<(&Plugin, &Params)>, stats: &GroupStats) -> Decision {
    if let Some((plugin, params)) = trigger
        && let Ok(decision) = plugin.should_snapshot(params, stats)
    {
        return decision;
    }
    let due = stats.entries_since_snapshot >= FALLBACK_ENTRIES || (stats.millis_since_snapshot >= FALLBACK_AGE_MS && stats.entries_since_snapshot > 0);
    if due { Decision::Snapshot } else { Decision::Wait }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_answer_the_classic_thresholds_decide() {
        let mut stats = idle_group();
        assert_eq!(decide(None, &stats), Decision::Wait);
        stats.entries_since_snapshot = FALLBACK_ENTRIES;
        assert_eq!(decide(None, &stats), Decision::Snapshot);
        stats.entries_since_snapshot = 1;
        stats.millis_since_snapshot = FALLBACK_AGE_MS;
        assert_eq!(decide(None, &stats), Decision::Snapshot);
        stats.entries_since_snapshot = 0;
        assert_eq!(decide(None, &stats), Decision::Wait, "nothing new to snapshot");
    }
}
