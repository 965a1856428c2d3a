//! Kafka record batches (magic v2) as they arrive in a Produce request: the fixed header is read
//! and the CRC-32C checked; [`check_records`] walks the records of each batch (through a bounded
//! streaming decoder when compressed, see [`super::batch_records`]) to hold its header to them.
//! The only bytes the broker changes are the two the protocol reserves for it — the base offset
//! and the partition leader epoch — which lie outside the CRC.
//!
//! Layout of the batch header (big endian, as on the wire):
//! ```text
//! 0  base_offset i64        | 8  batch_length i32 | 12 partition_leader_epoch i32 | 16 magic i8
//! 17 crc u32 (CRC-32C of bytes 21..end)           | 21 attributes i16 | 23 last_offset_delta i32
//! 27 base_timestamp i64     | 35 max_timestamp i64 | 43 producer_id i64 | 51 producer_epoch i16
//! 53 base_sequence i32      | 57 records_count i32 | 61 records...
//! ```

/// Bytes of the v2 batch header, up to and including `records_count`.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before `batch_length` counts: the base offset and the length itself.
const LOG_OVERHEAD: usize = 12;
const CRC_START: usize = 21;

const ATTR_LOG_APPEND_TIME: i16 = 1 << 3;
const ATTR_TRANSACTIONAL: i16 = 1 << 4;
const ATTR_CONTROL: i16 = 1 << 5;
/// The compression codec bits of the attributes; 0 is none, 1–4 gzip, snappy, lz4, zstd.
const ATTR_CODEC: i16 = 0x07;
const ZSTD: i16 = 4;
const LAST_CODEC: i16 = ZSTD;

/// Why a Produce payload was refused; each maps to one Kafka error code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    /// Truncated, bad CRC, bad lengths: CORRUPT_MESSAGE.
    #[error("corrupt record batch: {0}")]
    Corrupt(String),
    /// Magic v0/v1 message sets: UNSUPPORTED_FOR_MESSAGE_FORMAT.
    #[error("record batch magic {0} is not supported; only v2 is")]
    UnsupportedMagic(i8),
    /// Larger than `max.message.bytes`: MESSAGE_TOO_LARGE.
    #[error("record batch of {size} bytes exceeds max.message.bytes {limit}")]
    TooLarge {
        /// The batch's size.
        size: usize,
        /// The topic's limit.
        limit: u32,
    },
    /// Transactional or control batches from a client: INVALID_RECORD.
    #[error("transactional and control batches are not supported")]
    Transactional,
    /// A produced record set of other than one batch (Produce v3+ carries exactly one per
    /// partition): INVALID_RECORD.
    #[error("a partition's records hold {0} batches; exactly one is allowed")]
    NotOneBatch(usize),
    /// A record of a batch is malformed or not where its header says: CORRUPT_MESSAGE, with the
    /// record's index in the response's record errors, as Kafka reports it.
    #[error("corrupt record batch at byte {position}: {reason}")]
    BadRecord {
        /// Where the batch starts in the record set.
        position: usize,
        /// The record's index in its batch.
        record: u32,
        /// What is wrong.
        reason: String,
    },
    /// zstd in a Produce request older than v7: UNSUPPORTED_COMPRESSION_TYPE.
    #[error("zstd needs Produce v7 or later")]
    ZstdBeforeV7,
}

/// How a produced record set is checked beyond its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceChecks {
    /// Most bytes a compressed batch may decompress to.
    pub max_uncompressed_batch_bytes: u64,
    /// zstd is allowed (Produce v7+).
    pub zstd_allowed: bool,
}

impl ProduceChecks {
    /// For batches the broker writes itself (committed offsets).
    pub const INTERNAL: ProduceChecks = ProduceChecks { max_uncompressed_batch_bytes: 1 << 30, zstd_allowed: true };
}

/// What the broker needs from one batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Where the batch starts in the request's record set.
    pub position: usize,
    /// The whole batch, header included.
    pub size: usize,
    /// Offsets the batch occupies: `last_offset_delta + 1`.
    pub offset_count: u32,
    /// Largest record timestamp in the batch.
    pub max_timestamp: i64,
    /// -1 when the producer is not idempotent.
    pub producer_id: i64,
    /// The idempotent producer's epoch.
    pub producer_epoch: i16,
    /// Sequence number of the first record.
    pub base_sequence: i32,
}

impl BatchHeader {
    /// Sequence number of the last record (sequences wrap at `i32::MAX`).
    pub fn last_sequence(&self) -> i32 {
        let last = i64::from(self.base_sequence) + i64::from(self.offset_count) - 1;
        (last % (i64::from(i32::MAX) + 1)) as i32
    }
}

/// Parses and checks every batch of a Produce record set.
///
/// Rejects the whole set if any batch is malformed, so a partial request is never stored.
pub fn parse_batches(records: &[u8], max_batch_bytes: u32) -> Result<Vec<BatchHeader>, BatchError> {
    let mut batches = Vec::new();
    let mut position = 0;
    if records.is_empty() {
        return Err(BatchError::Corrupt("empty record set".into()));
    }
    while position < records.len() {
        let rest = &records[position..];
        if rest.len() < LOG_OVERHEAD + 5 {
            return Err(BatchError::Corrupt(format!("truncated batch header at byte {position}")));
        }
        let batch_length = read_i32(rest, 8);
        let magic = rest[16] as i8;
        if magic != 2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        if batch_length < (BATCH_HEADER_BYTES - LOG_OVERHEAD) as i32 {
            return Err(BatchError::Corrupt(format!("batch length {batch_length} is too small")));
        }
        let size = LOG_OVERHEAD + batch_length as usize;
        if size > rest.len() {
            return Err(BatchError::Corrupt(format!(
                "batch at byte {position} claims {size} bytes, {} remain",
                rest.len()
            )));
        }
        if size > max_batch_bytes as usize {
            return Err(BatchError::TooLarge { size, limit: max_batch_bytes });
        }
        let batch = &rest[..size];
        let stored_crc = u32::from_be_bytes([batch[17], batch[18], batch[19], batch[20]]);
        let actual_crc = crc32c::crc32c(&batch[CRC_START..]);
        if stored_crc != actual_crc {
            return Err(BatchError::Corrupt(format!(
                "batch at byte {position}: crc {stored_crc:#010x} != computed {actual_crc:#010x}"
            )));
        }
        let attributes = read_i16(batch, 21);
        if attributes & (ATTR_TRANSACTIONAL | ATTR_CONTROL) != 0 {
            return Err(BatchError::Transactional);
        }
        if attributes & ATTR_CODEC > LAST_CODEC {
            return Err(BatchError::Corrupt(format!("batch at byte {position}: unknown compression codec {}", attributes & ATTR_CODEC)));
        }
        let last_offset_delta = read_i32(batch, 23);
        let records_count = read_i32(batch, 57);
        // As Kafka requires of produced batches, the records' offset deltas are 0..count, so a
        // batch cannot claim more offsets than it has records.
        if records_count <= 0 || last_offset_delta != records_count - 1 {
            return Err(BatchError::Corrupt(format!(
                "batch at byte {position}: {records_count} records with last offset delta {last_offset_delta}"
            )));
        }
        let base_sequence = read_i32(batch, 53);
        let producer_id = read_i64(batch, 43);
        if producer_id >= 0 && base_sequence < 0 {
            return Err(BatchError::Corrupt(format!(
                "batch at byte {position}: idempotent batch without a sequence number"
            )));
        }
        batches.push(BatchHeader {
            position,
            size,
            offset_count: last_offset_delta as u32 + 1,
            max_timestamp: read_i64(batch, 35),
            producer_id,
            producer_epoch: read_i16(batch, 51),
            base_sequence,
        });
        position += size;
    }
    Ok(batches)
}

/// Holds each batch of a produce record set to its header, as Kafka's validator does: exactly
/// `records_count` records, each inside the batch, with offset deltas 0, 1, 2, ... and nothing
/// after the last. A compressed batch is decompressed as a stream to be counted, within
/// `checks.max_uncompressed_batch_bytes` (see [`super::batch_records`]).
pub fn check_records(records: &[u8], headers: &[BatchHeader], checks: &ProduceChecks) -> Result<(), BatchError> {
    for h in headers {
        let batch = &records[h.position..h.position + h.size];
        let codec = read_i16(batch, 21) & ATTR_CODEC;
        if codec == ZSTD && !checks.zstd_allowed {
            return Err(BatchError::ZstdBeforeV7);
        }
        // An uncompressed batch is bounded by max.message.bytes already.
        let limit = if codec == 0 { u64::MAX } else { checks.max_uncompressed_batch_bytes };
        let checked = super::batch_records::check(codec, &batch[BATCH_HEADER_BYTES..], h.offset_count, limit);
        checked.map_err(|invalid| match invalid.record {
            Some(record) => BatchError::BadRecord { position: h.position, record, reason: invalid.reason },
            None => BatchError::Corrupt(format!("batch at byte {}: {}", h.position, invalid.reason)),
        })?;
    }
    Ok(())
}

/// (offset delta, timestamp) of the first record of `batch` (whole, header included) whose
/// timestamp is at or after `timestamp`. `None` for a log-append-time batch (its records carry
/// the batch's timestamp only) or one whose records cannot be read.
pub fn first_record_at_or_after(batch: &[u8], count: u32, timestamp: i64) -> Option<(i64, i64)> {
    let attributes = read_i16(batch, 21);
    if attributes & ATTR_LOG_APPEND_TIME != 0 {
        return None;
    }
    let base_timestamp = read_i64(batch, 27);
    let found = super::batch_records::first_at_or_after(attributes & ATTR_CODEC, &batch[BATCH_HEADER_BYTES..], count, base_timestamp, timestamp);
    found.ok().flatten().map(|(offset_delta, ts_delta)| (offset_delta, base_timestamp + ts_delta))
}

/// Writes the broker-assigned base offset and leader epoch into a batch in place; neither is
/// covered by the CRC, so the client's checksum stays valid.
pub fn assign_offset(batch: &mut [u8], base_offset: i64, leader_epoch: i32) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
    batch[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
}

fn read_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

fn read_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn read_i64(b: &[u8], at: usize) -> i64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(x)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A well-formed batch of `count` records without key or value.
    pub(crate) fn batch(count: i32, producer_id: i64, epoch: i16, base_sequence: i32) -> Vec<u8> {
        batch_with_value(count, producer_id, epoch, base_sequence, None)
    }

    /// [`batch`] whose last record has `value` (at most 63 bytes) and ends with it, but for a
    /// final zero byte (no headers).
    pub(crate) fn batch_with_value(count: i32, producer_id: i64, epoch: i16, base_sequence: i32, value: Option<&[u8]>) -> Vec<u8> {
        let mut b = vec![0u8; BATCH_HEADER_BYTES];
        for i in 0..count {
            // attributes, timestamp delta 0, offset delta i (zigzag, i < 64), key null, value.
            let mut body = vec![0u8, 0, (i as u8) << 1, 1];
            match value.filter(|_| i == count - 1) {
                Some(v) => {
                    body.push((v.len() as u8) << 1);
                    body.extend_from_slice(v);
                }
                None => body.push(1),
            }
            body.push(0);
            b.push((body.len() as u8) << 1);
            b.extend(body);
        }
        let len = (b.len() - LOG_OVERHEAD) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b[16] = 2;
        b[23..27].copy_from_slice(&(count - 1).to_be_bytes());
        b[35..43].copy_from_slice(&1_700_000_000_000i64.to_be_bytes());
        b[43..51].copy_from_slice(&producer_id.to_be_bytes());
        b[51..53].copy_from_slice(&epoch.to_be_bytes());
        b[53..57].copy_from_slice(&base_sequence.to_be_bytes());
        b[57..61].copy_from_slice(&count.to_be_bytes());
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn parses_consecutive_batches() {
        let mut set = batch(3, -1, -1, -1);
        set.extend(batch(2, 7, 0, 3));
        let headers = parse_batches(&set, 1 << 20).unwrap();
        assert_eq!(headers.len(), 2);
        assert_eq!(headers[0].offset_count, 3);
        assert_eq!(headers[1].position, headers[0].size);
        assert_eq!(headers[1].producer_id, 7);
        assert_eq!(headers[1].last_sequence(), 4);
    }

    #[test]
    fn offset_assignment_keeps_the_crc_valid() {
        let mut b = batch(1, -1, -1, -1);
        assign_offset(&mut b, 42, 3);
        assert!(parse_batches(&b, 1 << 20).is_ok());
    }

    #[test]
    fn rejects_bad_input_without_panicking() {
        let good = batch(2, -1, -1, -1);
        for cut in 0..good.len() {
            assert!(parse_batches(&good[..cut], 1 << 20).is_err(), "cut at {cut}");
        }
        let mut flipped = good.clone();
        flipped[40] ^= 1;
        assert!(matches!(parse_batches(&flipped, 1 << 20), Err(BatchError::Corrupt(_))));
        let mut v1 = good.clone();
        v1[16] = 1;
        assert_eq!(parse_batches(&v1, 1 << 20), Err(BatchError::UnsupportedMagic(1)));
        let mut huge = good.clone();
        huge[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(parse_batches(&huge, 1 << 20).is_err());
        let mut negative = good.clone();
        negative[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(parse_batches(&negative, 1 << 20).is_err());
        assert!(matches!(parse_batches(&good, 10), Err(BatchError::TooLarge { .. })));
    }

    #[test]
    fn a_batch_must_hold_the_records_its_header_claims() {
        let good = batch(3, -1, -1, -1);
        let check = |b: &[u8]| parse_batches(b, 1 << 20).and_then(|h| check_records(b, &h, &ProduceChecks::INTERNAL));
        assert!(check(&good).is_ok());
        // 2^31-1 records claimed, none present: a valid CRC does not make it a batch.
        let mut empty = good[..BATCH_HEADER_BYTES].to_vec();
        empty[8..12].copy_from_slice(&((BATCH_HEADER_BYTES - LOG_OVERHEAD) as i32).to_be_bytes());
        empty[23..27].copy_from_slice(&(i32::MAX - 1).to_be_bytes());
        empty[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        let reseal = |b: &mut Vec<u8>| {
            let crc = crc32c::crc32c(&b[CRC_START..]);
            b[17..21].copy_from_slice(&crc.to_be_bytes());
        };
        reseal(&mut empty);
        assert!(parse_batches(&empty, 1 << 20).is_ok(), "the header alone looks fine");
        assert!(matches!(check(&empty), Err(BatchError::BadRecord { record: 0, .. })));
        // More records than claimed, fewer, and offset deltas out of order.
        for (claimed, fix) in [(2i32, None), (4, None), (3, Some(3u8))] {
            let mut b = good.clone();
            b[23..27].copy_from_slice(&(claimed - 1).to_be_bytes());
            b[57..61].copy_from_slice(&claimed.to_be_bytes());
            if let Some(record) = fix {
                // The third record (offset delta 2) claims delta 3.
                let at = BATCH_HEADER_BYTES + 2 * 7 + 3;
                assert_eq!(b[at], 2 << 1);
                b[at] = record << 1;
            }
            reseal(&mut b);
            assert!(matches!(check(&b), Err(BatchError::Corrupt(_) | BatchError::BadRecord { .. })), "claimed {claimed}, fix {fix:?}");
        }
        // Codec ids past zstd do not exist.
        let mut codec = good.clone();
        codec[22] = 5;
        reseal(&mut codec);
        assert!(matches!(parse_batches(&codec, 1 << 20), Err(BatchError::Corrupt(_))));
    }

    #[test]
    fn sequences_wrap() {
        let h = BatchHeader {
            position: 0,
            size: 0,
            offset_count: 3,
            max_timestamp: 0,
            producer_id: 1,
            producer_epoch: 0,
            base_sequence: i32::MAX - 1,
        };
        // MAX-1, MAX, then 0.
        assert_eq!(h.last_sequence(), 0);
    }
}
