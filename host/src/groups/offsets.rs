//! Committed offsets as records of the internal `__consumer_offsets` topic. Each commit is one
//! record batch (one record per partition) appended to the offsets partition of its group;
//! at start the coordinator replays those partitions to rebuild its cache. A null value is a
//! tombstone (group or topic deleted, offsets expired). The key and value layouts follow
//! Kafka's own offset commit records (key version 1, value versions 3 and 1), so the topic reads
//! like Kafka's. As in Kafka, a commit that names its own retention (OffsetCommit v2-v4) is
//! written as version 1, the one layout with an expire timestamp.
//!
//! ```text
//! key:   version i16 = 1 | group string | topic string | partition i32
//! value: version i16 = 3 | offset i64 | leader_epoch i32 | metadata string | commit_timestamp i64
//!      | version i16 = 1 | offset i64 | metadata string | commit_timestamp i64 | expire_timestamp i64
//! string = i16 length + UTF-8 bytes
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

/// The internal topic holding committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

const KEY_VERSION: i16 = 1;
const VALUE_VERSION: i16 = 3;
const VALUE_VERSION_WITH_EXPIRY: i16 = 1;

/// One committed offset of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The next offset the group will read.
    pub offset: i64,
    /// The leader epoch the consumer saw, -1 if unknown.
    pub leader_epoch: i32,
    /// The client's metadata string.
    pub metadata: String,
    /// When it was committed (ms since the epoch).
    pub commit_timestamp: i64,
    /// When it expires, if the commit named its own retention (ms since the epoch); otherwise
    /// `groups.offsets-retention-ms` decides.
    pub expire_timestamp: Option<i64>,
}

/// Which partition of which group an offset belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OffsetKey {
    /// The group.
    pub group: String,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
}

/// One record of the offsets topic: a commit, or a tombstone (`None`) that deletes it.
pub type OffsetRecord = (OffsetKey, Option<CommittedOffset>);

/// Encodes commits (or tombstones, `None`) as one uncompressed record batch.
pub fn encode_batch(commits: &[OffsetRecord], now_ms: i64) -> Result<Bytes, String> {
    let records: Vec<Record> = commits
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: now_ms,
            key: Some(encode_key(key)),
            value: value.as_ref().map(encode_value),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression: Compression::None }).map_err(|e| e.to_string())?;
    Ok(buf.freeze())
}

/// Decodes every commit in stored batches. Records that do not decode are skipped and counted.
pub fn decode_batches(mut bytes: Bytes) -> Result<(Vec<OffsetRecord>, usize), String> {
    let sets = RecordBatchDecoder::decode_all(&mut bytes).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut skipped = 0;
    for set in sets {
        for record in set.records {
            let Some(key) = record.key.and_then(|k| decode_key(k).ok()) else {
                skipped += 1;
                continue;
            };
            match record.value.map(decode_value) {
                None => out.push((key, None)),
                Some(Ok(v)) => out.push((key, Some(v))),
                Some(Err(_)) => skipped += 1,
            }
        }
    }
    Ok((out, skipped))
}

/// The offset after the last record of stored batches (for resuming a replay).
pub fn next_offset(bytes: &[u8]) -> Option<i64> {
    let mut at = 0;
    let mut next = None;
    while at + 27 <= bytes.len() {
        let base = i64::from_be_bytes(bytes[at..at + 8].try_into().ok()?);
        let length = i32::from_be_bytes(bytes[at + 8..at + 12].try_into().ok()?);
        let last_delta = i32::from_be_bytes(bytes[at + 23..at + 27].try_into().ok()?);
        next = Some(base + i64::from(last_delta) + 1);
        at += 12 + usize::try_from(length).ok()?;
    }
    next
}

/// A snapshot of an offsets partition: every live commit of its groups as one record batch,
/// tombstones dropped (no bytes at all when there is none).
pub fn encode_snapshot(commits: &[OffsetRecord]) -> Result<Vec<u8>, String> {
    if commits.is_empty() {
        return Ok(Vec::new());
    }
    encode_batch(commits, 0).map(|b| b.to_vec())
}

/// Reads a snapshot of an offsets partition; a record that does not decode is an error.
pub fn decode_snapshot(bytes: &[u8]) -> Result<Vec<OffsetRecord>, String> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let (commits, skipped) = decode_batches(Bytes::copy_from_slice(bytes))?;
    if skipped > 0 {
        return Err(format!("{skipped} records of the offsets snapshot do not decode"));
    }
    Ok(commits)
}

fn put_string(buf: &mut BytesMut, s: &str) {
    // Group ids, topic names and metadata are capped far below i16::MAX before they get here.
    buf.put_i16(s.len() as i16);
    buf.put_slice(s.as_bytes());
}

fn get_string(buf: &mut Bytes) -> Result<String, String> {
    if buf.remaining() < 2 {
        return Err("truncated string length".into());
    }
    let len = buf.get_i16();
    let len = usize::try_from(len).map_err(|_| format!("negative string length {len}"))?;
    if buf.remaining() < len {
        return Err("truncated string".into());
    }
    String::from_utf8(buf.split_to(len).to_vec()).map_err(|e| e.to_string())
}

fn encode_key(key: &OffsetKey) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(KEY_VERSION);
    put_string(&mut buf, &key.group);
    put_string(&mut buf, &key.topic);
    buf.put_i32(key.partition);
    buf.freeze()
}

fn decode_key(mut buf: Bytes) -> Result<OffsetKey, String> {
    if buf.remaining() < 2 || buf.get_i16() != KEY_VERSION {
        return Err("not an offset commit key".into());
    }
    let group = get_string(&mut buf)?;
    let topic = get_string(&mut buf)?;
    if buf.remaining() < 4 {
        return Err("truncated partition".into());
    }
    Ok(OffsetKey { group, topic, partition: buf.get_i32() })
}

fn encode_value(value: &CommittedOffset) -> Bytes {
    let mut buf = BytesMut::new();
    match value.expire_timestamp {
        None => {
            buf.put_i16(VALUE_VERSION);
            buf.put_i64(value.offset);
            buf.put_i32(value.leader_epoch);
            put_string(&mut buf, &value.metadata);
            buf.put_i64(value.commit_timestamp);
        }
        Some(expire) => {
            buf.put_i16(VALUE_VERSION_WITH_EXPIRY);
            buf.put_i64(value.offset);
            put_string(&mut buf, &value.metadata);
            buf.put_i64(value.commit_timestamp);
            buf.put_i64(expire);
        }
    }
    buf.freeze()
}

fn decode_value(mut buf: Bytes) -> Result<CommittedOffset, String> {
    let version = if buf.remaining() < 2 { -1 } else { buf.get_i16() };
    let with_expiry = match version {
        VALUE_VERSION => false,
        VALUE_VERSION_WITH_EXPIRY => true,
        _ => return Err("unknown offset value version".into()),
    };
    let offset = get_i64(&mut buf, "offset")?;
    let leader_epoch = if with_expiry { -1 } else { get_i32(&mut buf)? };
    let metadata = get_string(&mut buf)?;
    let commit_timestamp = get_i64(&mut buf, "commit timestamp")?;
    let expire_timestamp = if with_expiry { Some(get_i64(&mut buf, "expire timestamp")?) } else { None };
    Ok(CommittedOffset { offset, leader_epoch, metadata, commit_timestamp, expire_timestamp })
}

fn get_i64(buf: &mut Bytes, what: &str) -> Result<i64, String> {
    if buf.remaining() < 8 {
        return Err(format!("truncated {what}"));
    }
    Ok(buf.get_i64())
}

fn get_i32(buf: &mut Bytes) -> Result<i32, String> {
    if buf.remaining() < 4 {
        return Err("truncated leader epoch".into());
    }
    Ok(buf.get_i32())
}

/// Kafka's choice of offsets partition for a group: Java's `String.hashCode`, made
/// non-negative, modulo the partition count — so clients and tools agree on it.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let hash = group.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    let positive = if hash == i32::MIN { 0 } else { hash.abs() };
    positive % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: i32) -> OffsetKey {
        OffsetKey { group: "g".into(), topic: "t".into(), partition: p }
    }

    #[test]
    fn commits_round_trip_through_a_record_batch() {
        let value = CommittedOffset { offset: 42, leader_epoch: 3, metadata: "m".into(), commit_timestamp: 7, expire_timestamp: None };
        // A commit with its own retention carries no leader epoch (Kafka's value version 1).
        let expiring = CommittedOffset { offset: 43, leader_epoch: -1, metadata: "n".into(), commit_timestamp: 8, expire_timestamp: Some(9) };
        let batch = encode_batch(&[(key(0), Some(value.clone())), (key(1), None), (key(2), Some(expiring.clone()))], 7).unwrap();
        let (decoded, skipped) = decode_batches(batch.clone()).unwrap();
        assert_eq!(skipped, 0);
        assert_eq!(decoded, vec![(key(0), Some(value)), (key(1), None), (key(2), Some(expiring))]);
        assert_eq!(next_offset(&batch), Some(3));
    }

    #[test]
    fn damaged_keys_and_values_are_errors_not_panics() {
        assert!(decode_key(Bytes::from_static(&[0, 1, 0x7f, 0xff])).is_err());
        assert!(decode_key(Bytes::from_static(&[0, 9])).is_err());
        assert!(decode_value(Bytes::from_static(&[0, 3, 1])).is_err());
        assert!(decode_value(Bytes::from_static(&[0, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0xff, 0xff])).is_err());
        assert!(decode_value(Bytes::from_static(&[0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2])).is_err(), "no expire timestamp");
    }

    #[test]
    fn group_partitions_match_kafka() {
        // Java: "my-group".hashCode() == -1906497762, and Math.abs of it % 50 == 12.
        assert_eq!(partition_for("my-group", 50), 12);
        assert_eq!(partition_for("", 50), 0);
        assert!((0..8).contains(&partition_for("any group at all", 8)));
    }
}
