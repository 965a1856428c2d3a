//! The data of a Raft entry, one codec for the proposer, the merger of proposals, the log writer
//! and every reader:
//!
//! - **records**: `base offset (i64) | record count (u32) | max timestamp (i64)` followed by
//!   record batches (data partitions: offsets and leader epoch already written; the metadata
//!   group: one JSON command, numbered when written);
//! - **no-op**: empty, a new leader's first entry;
//! - **log start**: `"SLLS" | offset (i64)`, the log start offset a leader's retention policy
//!   chose; every replica drops the prefix before it when it applies the entry.
//!
//! The three never collide: records are at least [`ENTRY_PREFIX`] bytes, a log start exactly
//! [`LOG_START_LEN`].

/// Bytes before the record batches in a records entry.
pub const ENTRY_PREFIX: usize = 20;
/// Bytes of a log-start entry.
pub const LOG_START_LEN: usize = 12;
const LOG_START_MAGIC: &[u8; 4] = b"SLLS";

/// Encodes a records entry.
pub fn encode_entry(base_offset: i64, record_count: u32, max_timestamp: i64, batches: &[u8]) -> Vec<u8> {
    let mut data = records_entry(batches);
    write_prefix(&mut data, base_offset, record_count, max_timestamp);
    data
}

/// A records entry holding a copy of `batches` whose prefix is still to be written with
/// [`write_prefix`]: the proposer edits the batches in place and copies them only once.
pub fn records_entry(batches: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(ENTRY_PREFIX + batches.len());
    data.resize(ENTRY_PREFIX, 0);
    data.extend_from_slice(batches);
    data
}

/// Writes a records entry's prefix; `data` is at least [`ENTRY_PREFIX`] bytes.
pub fn write_prefix(data: &mut [u8], base_offset: i64, record_count: u32, max_timestamp: i64) {
    data[0..8].copy_from_slice(&base_offset.to_be_bytes());
    data[8..12].copy_from_slice(&record_count.to_be_bytes());
    data[12..20].copy_from_slice(&max_timestamp.to_be_bytes());
}

/// Splits a records entry into (base offset, record count, max timestamp, batches); `None` for
/// any other entry.
pub fn decode_entry(data: &[u8]) -> Option<(i64, u32, i64, &[u8])> {
    if data.len() < ENTRY_PREFIX {
        return None;
    }
    let base = i64::from_be_bytes(data[0..8].try_into().ok()?);
    let count = u32::from_be_bytes(data[8..12].try_into().ok()?);
    let max_ts = i64::from_be_bytes(data[12..20].try_into().ok()?);
    Some((base, count, max_ts, &data[ENTRY_PREFIX..]))
}

/// Appends the records entry `next` to the records entry `into` when `next`'s offsets continue
/// `into`'s and the merged batches stay within `max_batch_bytes`; returns whether it did.
pub fn merge_entries(into: &mut Vec<u8>, next: &[u8], max_batch_bytes: usize) -> bool {
    let (Some((base, count, max_ts, batches)), Some((next_base, next_count, next_ts, next_batches))) = (decode_entry(into), decode_entry(next)) else {
        return false;
    };
    let Some(total) = count.checked_add(next_count) else { return false };
    if base.checked_add(i64::from(count)) != Some(next_base) || batches.len() + next_batches.len() > max_batch_bytes {
        return false;
    }
    into[8..12].copy_from_slice(&total.to_be_bytes());
    into[12..20].copy_from_slice(&max_ts.max(next_ts).to_be_bytes());
    into.extend_from_slice(next_batches);
    true
}

/// Encodes a log-start entry.
pub fn encode_log_start(offset: i64) -> Vec<u8> {
    let mut data = Vec::with_capacity(LOG_START_LEN);
    data.extend_from_slice(LOG_START_MAGIC);
    data.extend_from_slice(&offset.to_be_bytes());
    data
}

/// The offset of a log-start entry; `None` for any other entry.
pub fn decode_log_start(data: &[u8]) -> Option<i64> {
    if data.len() != LOG_START_LEN || &data[0..4] != LOG_START_MAGIC {
        return None;
    }
    Some(i64::from_be_bytes(data[4..12].try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_kinds_never_decode_as_each_other() {
        let records = encode_entry(7, 3, 99, b"batches");
        assert_eq!(decode_entry(&records), Some((7, 3, 99, &b"batches"[..])));
        assert_eq!(decode_log_start(&records), None);
        let start = encode_log_start(1234);
        assert_eq!(decode_log_start(&start), Some(1234));
        assert_eq!(decode_entry(&start), None);
        assert_eq!((decode_entry(&[]), decode_log_start(&[])), (None, None));
    }

    #[test]
    fn only_contiguous_records_entries_within_the_limit_merge() {
        let mut first = encode_entry(10, 2, 50, b"ab");
        assert!(merge_entries(&mut first, &encode_entry(12, 3, 40, b"cde"), 5));
        assert_eq!(decode_entry(&first), Some((10, 5, 50, &b"abcde"[..])));
        assert!(!merge_entries(&mut first, &encode_entry(16, 1, 0, b"f"), 100), "a gap");
        assert!(!merge_entries(&mut first, &encode_entry(15, 1, 0, b"f"), 5), "over the limit");
        assert!(!merge_entries(&mut first, &encode_log_start(15), 100), "not records");
        assert_eq!(decode_entry(&first), Some((10, 5, 50, &b"abcde"[..])));
    }
}
