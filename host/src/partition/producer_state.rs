//! Idempotent-producer state of one partition: per producer id, its epoch and the last few
//! batches it wrote, so a retried batch is recognised and answered with its original offset and
//! a gap in sequence numbers is refused. Rebuilt after a restart from the checkpoint plus the
//! log tail that recovery scans, so it is part of the partition's applied state.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::batch::BatchHeader;

/// Batches remembered per producer, as Kafka does (`max.in.flight.requests.per.connection` <= 5).
pub const BATCHES_REMEMBERED: usize = 5;

/// Outcome of checking one batch against the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Not idempotent, or the next batch in sequence: append it.
    Append,
    /// Already stored: answer with this base offset and store nothing.
    Duplicate {
        /// Base offset the batch got when first stored.
        base_offset: i64,
    },
    /// OUT_OF_ORDER_SEQUENCE_NUMBER.
    OutOfOrder,
    /// INVALID_PRODUCER_EPOCH: an older epoch of a producer that has moved on.
    StaleEpoch,
    /// UNKNOWN_PRODUCER_ID: no state for this producer and the batch does not start a sequence.
    UnknownProducer,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
struct BatchMeta {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
struct ProducerEntry {
    epoch: i16,
    /// When the producer last wrote here (ms since the epoch), for expiry.
    #[serde(default)]
    last_write_ms: i64,
    /// Oldest first; at most [`BATCHES_REMEMBERED`].
    batches: VecDeque<BatchMeta>,
}

/// Per-producer sequence state of one partition.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
}

impl ProducerStates {
    /// Checks a batch against the state without changing it.
    pub fn check(&self, batch: &BatchHeader) -> SequenceCheck {
        if batch.producer_id < 0 {
            return SequenceCheck::Append;
        }
        let Some(entry) = self.producers.get(&batch.producer_id) else {
            return if batch.base_sequence == 0 {
                SequenceCheck::Append
            } else {
                SequenceCheck::UnknownProducer
            };
        };
        if batch.producer_epoch < entry.epoch {
            return SequenceCheck::StaleEpoch;
        }
        if batch.producer_epoch > entry.epoch {
            // A bumped epoch restarts the sequence.
            return if batch.base_sequence == 0 {
                SequenceCheck::Append
            } else {
                SequenceCheck::OutOfOrder
            };
        }
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == batch.base_sequence && b.last_seq == batch.last_sequence())
        {
            return SequenceCheck::Duplicate { base_offset: dup.base_offset };
        }
        match entry.batches.back() {
            Some(last) if next_sequence(last.last_seq) == batch.base_sequence => SequenceCheck::Append,
            None if batch.base_sequence == 0 => SequenceCheck::Append,
            _ => SequenceCheck::OutOfOrder,
        }
    }

    /// Records a batch that was appended at `base_offset` at `now_ms`.
    pub fn record(&mut self, batch: &BatchHeader, base_offset: i64, now_ms: i64) {
        if batch.producer_id < 0 {
            return;
        }
        let entry = self.producers.entry(batch.producer_id).or_default();
        entry.last_write_ms = entry.last_write_ms.max(now_ms);
        if batch.producer_epoch != entry.epoch {
            entry.epoch = batch.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == BATCHES_REMEMBERED {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchMeta {
            first_seq: batch.base_sequence,
            last_seq: batch.last_sequence(),
            base_offset,
        });
    }

    /// Forgets producers that have not written for `max_age_ms` (Kafka's
    /// `producer.id.expiration.ms`), so made-up producer ids cannot grow the state for ever.
    /// A forgotten producer that comes back gets UNKNOWN_PRODUCER_ID and starts a new epoch.
    pub fn expire(&mut self, now_ms: i64, max_age_ms: i64) {
        self.producers.retain(|_, e| now_ms.saturating_sub(e.last_write_ms) <= max_age_ms);
    }

    /// The state as it stood before `offset`, as far as it can be told: batches at or past it
    /// are dropped. Replaying the log from `offset` onto it gives the whole state back. (A
    /// producer that bumped its epoch past `offset` keeps the new epoch: a retry from the old
    /// one is refused as fenced, never stored twice.)
    pub fn before(&self, offset: i64) -> ProducerStates {
        let mut kept = self.clone();
        for entry in kept.producers.values_mut() {
            entry.batches.retain(|b| b.base_offset < offset);
        }
        kept
    }

    /// Serialises the state for the recovery checkpoint.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain maps of integers cannot fail.
        serde_json::to_vec(self).expect("producer state serialises")
    }

    /// Restores the state from checkpoint bytes; empty bytes are an empty state.
    pub fn from_bytes(bytes: &[u8]) -> Result<ProducerStates, serde_json::Error> {
        if bytes.is_empty() {
            return Ok(ProducerStates::default());
        }
        serde_json::from_slice(bytes)
    }
}

fn next_sequence(seq: i32) -> i32 {
    if seq == i32::MAX { 0 } else { seq + 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: u32) -> BatchHeader {
        BatchHeader {
            position: 0,
            size: 0,
            offset_count: count,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
        }
    }

    #[test]
    fn sequence_rules() {
        let mut s = ProducerStates::default();
        assert_eq!(s.check(&header(1, 0, 5, 1)), SequenceCheck::UnknownProducer);
        assert_eq!(s.check(&header(1, 0, 0, 2)), SequenceCheck::Append);
        s.record(&header(1, 0, 0, 2), 100, 0);
        assert_eq!(s.check(&header(1, 0, 0, 2)), SequenceCheck::Duplicate { base_offset: 100 });
        assert_eq!(s.check(&header(1, 0, 3, 1)), SequenceCheck::OutOfOrder);
        assert_eq!(s.check(&header(1, 0, 2, 1)), SequenceCheck::Append);
        s.record(&header(1, 0, 2, 1), 102, 0);
        assert_eq!(s.check(&header(1, 1, 3, 1)), SequenceCheck::OutOfOrder);
        assert_eq!(s.check(&header(1, 1, 0, 1)), SequenceCheck::Append);
        s.record(&header(1, 1, 0, 1), 103, 0);
        assert_eq!(s.check(&header(1, 0, 3, 1)), SequenceCheck::StaleEpoch);
        assert_eq!(s.check(&header(-1, -1, -1, 1)), SequenceCheck::Append);
    }

    #[test]
    fn remembers_only_the_last_batches() {
        let mut s = ProducerStates::default();
        for i in 0..10 {
            s.record(&header(9, 0, i, 1), i64::from(i), 0);
        }
        assert_eq!(s.check(&header(9, 0, 9, 1)), SequenceCheck::Duplicate { base_offset: 9 });
        assert_eq!(s.check(&header(9, 0, 1, 1)), SequenceCheck::OutOfOrder);
        let restored = ProducerStates::from_bytes(&s.to_bytes()).unwrap();
        assert_eq!(restored, s);
    }

    #[test]
    fn the_state_before_an_offset_plus_the_replayed_rest_is_the_whole_state() {
        let mut whole = ProducerStates::default();
        let batches = [(1, 0, 0), (2, 0, 0), (1, 0, 1), (1, 0, 2), (2, 1, 0), (1, 0, 3), (1, 0, 4), (1, 0, 5), (2, 1, 1)];
        for (at, &(pid, epoch, seq)) in batches.iter().enumerate() {
            whole.record(&header(pid, epoch, seq, 1), at as i64, 0);
        }
        for cut in 0..=batches.len() {
            let mut rebuilt = whole.before(cut as i64);
            for (at, &(pid, epoch, seq)) in batches.iter().enumerate().skip(cut) {
                rebuilt.record(&header(pid, epoch, seq, 1), at as i64, 0);
            }
            assert_eq!(rebuilt, whole, "cut at {cut}");
        }
        let early = whole.before(3);
        assert_eq!(early.check(&header(1, 0, 1, 1)), SequenceCheck::Duplicate { base_offset: 2 });
        assert_eq!(early.check(&header(1, 0, 2, 1)), SequenceCheck::Append);
        // Producer 2 bumped its epoch later: its old epoch is fenced, not appended twice.
        assert_eq!(early.check(&header(2, 0, 0, 1)), SequenceCheck::StaleEpoch);
    }

    #[test]
    fn silent_producers_expire() {
        let mut s = ProducerStates::default();
        s.record(&header(1, 0, 0, 1), 0, 1_000);
        s.record(&header(2, 0, 0, 1), 1, 5_000);
        s.expire(6_000, 2_000);
        assert_eq!(s.check(&header(1, 0, 1, 1)), SequenceCheck::UnknownProducer);
        assert_eq!(s.check(&header(2, 0, 1, 1)), SequenceCheck::Append);
        assert!(ProducerStates::from_bytes(b"{garbage").is_err());
    }
}
