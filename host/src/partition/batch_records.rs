//! The records of a batch read as a stream: in place when uncompressed, through a decoder when
//! compressed, which never holds more than a buffer of them and stops at a limit of uncompressed
//! bytes. Produce uses it to hold every batch to the records its header claims ([`check`]): one
//! claiming more (or fewer) records than it holds is refused, and a small batch that inflates
//! without end costs the time to read the limit, never the memory. ListOffsets
//! uses it to find the first record at or after a timestamp ([`first_at_or_after`]).
//!
//! The codecs are Kafka's: gzip (a gzip stream), snappy (the xerial framing Kafka clients write,
//! or a bare snappy block), lz4 (the LZ4 frame format) and zstd (a zstd frame).

use std::io::{self, BufRead, BufReader, Read};

/// Largest zstd window accepted (2^24 = 16 MiB); producers compress batches of a few MiB.
const ZSTD_WINDOW_LOG_MAX: u32 = 24;
/// Magic of the xerial snappy framing.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
/// Magic, version and compatible version.
const XERIAL_HEADER: usize = 16;

/// Why a batch's records were refused, and which record, when one is to blame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The index of the record in its batch.
    pub record: Option<u32>,
    /// What is wrong.
    pub reason: String,
}

impl Invalid {
    fn of_record(record: u32, reason: String) -> Invalid {
        Invalid { record: Some(record), reason: format!("record {record} {reason}") }
    }

    fn of_batch(reason: String) -> Invalid {
        Invalid { record: None, reason }
    }
}

/// Checks that `records` (a batch's records, after its header) hold, decompressed with `codec`
/// (0: none), exactly `count` records with offset deltas 0, 1, ..., within
/// `max_uncompressed_bytes`.
pub fn check(codec: i16, records: &[u8], count: u32, max_uncompressed_bytes: u64) -> Result<(), Invalid> {
    let walked = walk(codec, records, count, max_uncompressed_bytes, |i, _, delta| {
        if delta != i64::from(i) {
            return Err(Invalid::of_record(i, format!("has offset delta {delta}")));
        }
        Ok(true)
    })?;
    if walked != Walked::AllThenEnd {
        return Err(Invalid::of_batch(format!("bytes after its {count} records")));
    }
    Ok(())
}

/// (offset delta, timestamp delta) of the first record of a batch whose timestamp
/// (`base_timestamp` + its delta) is at or after `timestamp`; `None` if no record is.
pub fn first_at_or_after(codec: i16, records: &[u8], count: u32, base_timestamp: i64, timestamp: i64) -> Result<Option<(i64, i64)>, Invalid> {
    let mut found = None;
    walk(codec, records, count, u64::MAX, |_, ts_delta, offset_delta| {
        if base_timestamp.saturating_add(ts_delta) >= timestamp {
            found = Some((offset_delta, ts_delta));
            return Ok(false);
        }
        Ok(true)
    })?;
    Ok(found)
}

/// How a walk ended.
#[derive(Debug, PartialEq, Eq)]
enum Walked {
    /// `visit` asked to stop.
    Stopped,
    /// Every record was visited and nothing follows them.
    AllThenEnd,
    /// Every record was visited and more bytes follow.
    AllThenMore,
}

/// Calls `visit(index, timestamp delta, offset delta)` for each of the `count` records of a
/// batch's records section (`codec` 0: uncompressed, read in place) until it returns `false`.
fn walk(codec: i16, data: &[u8], count: u32, max_uncompressed_bytes: u64, visit: impl FnMut(u32, i64, i64) -> Result<bool, Invalid>) -> Result<Walked, Invalid> {
    let decoder: Box<dyn Read + '_> = match codec {
        0 => return walk_stream(data, count, max_uncompressed_bytes, visit),
        1 => Box::new(flate2::read::MultiGzDecoder::new(data)),
        2 => Box::new(Snappy::new(data)),
        3 => Box::new(lz4_flex::frame::FrameDecoder::new(data)),
        4 => {
            let mut d = zstd::stream::read::Decoder::with_buffer(data).map_err(|e| Invalid::of_batch(format!("zstd: {e}")))?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(|e| Invalid::of_batch(format!("zstd: {e}")))?;
            Box::new(d)
        }
        other => return Err(Invalid::of_batch(format!("unknown compression codec {other}"))),
    };
    // One byte past the limit tells a batch at the limit from one beyond it.
    let records = BufReader::with_capacity(64 << 10, decoder.take(max_uncompressed_bytes.saturating_add(1)));
    walk_stream(records, count, max_uncompressed_bytes, visit)
}

/// [`walk`] over the records themselves. Record bodies are skipped in the reader's buffer, never
/// copied out of it.
fn walk_stream(mut records: impl BufRead, count: u32, max_uncompressed_bytes: u64, mut visit: impl FnMut(u32, i64, i64) -> Result<bool, Invalid>) -> Result<Walked, Invalid> {
    let mut total = 0u64;
    for i in 0..count {
        let length = read_varint(&mut records).map_err(|e| Invalid::of_record(i, format!("has no readable length ({e})")))?;
        let length = u64::try_from(length).ok().filter(|&l| l > 0).ok_or_else(|| Invalid::of_record(i, format!("has length {length}")))?;
        total = total.saturating_add(length);
        if total > max_uncompressed_bytes {
            return Err(Invalid::of_record(i, format!("takes the records past {max_uncompressed_bytes} uncompressed bytes")));
        }
        let mut record = (&mut records).take(length);
        // attributes (1 byte), timestamp delta, then the offset delta.
        let fields = read_byte(&mut record).and_then(|_| Ok((read_varint(&mut record)?, read_varint(&mut record)?)));
        let (ts_delta, offset_delta) = fields.map_err(|e| Invalid::of_record(i, format!("is cut short ({e})")))?;
        if !visit(i, ts_delta, offset_delta)? {
            return Ok(Walked::Stopped);
        }
        loop {
            let skipped = record.fill_buf().map_err(|e| Invalid::of_record(i, format!("does not decode ({e})")))?.len();
            if skipped == 0 {
                break;
            }
            record.consume(skipped);
        }
        if record.limit() != 0 {
            return Err(Invalid::of_record(i, format!("of {length} bytes does not fit the batch")));
        }
    }
    let after = records.fill_buf().map_err(|e| Invalid::of_batch(format!("after the last record: {e}")))?;
    Ok(if after.is_empty() { Walked::AllThenEnd } else { Walked::AllThenMore })
}

fn read_byte(reader: &mut impl Read) -> io::Result<u8> {
    let mut byte = [0u8];
    reader.read_exact(&mut byte)?;
    Ok(byte[0])
}

/// A zigzag varint read from a stream.
fn read_varint(reader: &mut impl Read) -> io::Result<i64> {
    let mut raw = 0u64;
    for i in 0..10 {
        let byte = read_byte(reader)?;
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
        }
    }
    Err(io::Error::new(io::ErrorKind::InvalidData, "varint longer than 10 bytes"))
}

/// Snappy as Kafka clients write it: xerial blocks (`length u32 | raw snappy block`, after a
/// 16-byte header), or one bare block. One block is decompressed at a time.
struct Snappy<'a> {
    /// Blocks still to decompress.
    blocks: &'a [u8],
    framed: bool,
    block: Vec<u8>,
    at: usize,
}

impl<'a> Snappy<'a> {
    fn new(data: &'a [u8]) -> Snappy<'a> {
        let framed = data.len() >= XERIAL_HEADER && data.starts_with(XERIAL_MAGIC);
        let blocks = if framed { &data[XERIAL_HEADER..] } else { data };
        Snappy { blocks, framed, block: Vec::new(), at: 0 }
    }

    /// Decompresses the next block; `false` at the end.
    fn next_block(&mut self) -> io::Result<bool> {
        if self.blocks.is_empty() {
            return Ok(false);
        }
        let raw = if self.framed {
            let bad = || io::Error::new(io::ErrorKind::InvalidData, "truncated snappy block");
            let length = self.blocks.get(..4).ok_or_else(bad)?;
            let length = u32::from_be_bytes([length[0], length[1], length[2], length[3]]) as usize;
            let raw = self.blocks.get(4..4 + length).ok_or_else(bad)?;
            self.blocks = &self.blocks[4 + length..];
            raw
        } else {
            std::mem::take(&mut self.blocks)
        };
        // The block states its decompressed size; the caller's limit bounds how many are read.
        self.block.resize(snap::raw::decompress_len(raw).map_err(io::Error::other)?, 0);
        snap::raw::Decoder::new().decompress(raw, &mut self.block).map_err(io::Error::other)?;
        self.at = 0;
        Ok(true)
    }
}

impl Read for Snappy<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.block.len() {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.block.len() - self.at);
        out[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// `count` records with offset deltas 0.., uncompressed.
    fn records(count: u32, value_bytes: usize) -> Vec<u8> {
        (0..count).flat_map(|i| record(i, value_bytes)).collect()
    }

    fn record(offset_delta: u32, value_bytes: usize) -> Vec<u8> {
        let mut body = vec![0u8]; // attributes
        put_varint(&mut body, 0); // timestamp delta
        put_varint(&mut body, i64::from(offset_delta));
        put_varint(&mut body, -1); // key: null
        put_varint(&mut body, value_bytes as i64);
        body.extend(std::iter::repeat_n(b'v', value_bytes));
        put_varint(&mut body, 0); // headers
        let mut out = Vec::new();
        put_varint(&mut out, body.len() as i64);
        out.extend(body);
        out
    }

    fn put_varint(out: &mut Vec<u8>, v: i64) {
        let mut raw = ((v << 1) ^ (v >> 63)) as u64;
        while raw >= 0x80 {
            out.push((raw as u8) | 0x80);
            raw >>= 7;
        }
        out.push(raw as u8);
    }

    fn compress(codec: i16, raw: &[u8]) -> Vec<u8> {
        match codec {
            1 => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(raw).unwrap();
                e.finish().unwrap()
            }
            2 => {
                let mut framed = XERIAL_MAGIC.to_vec();
                framed.extend([0, 0, 0, 1, 0, 0, 0, 1]);
                for chunk in raw.chunks(32 << 10) {
                    let block = snap::raw::Encoder::new().compress_vec(chunk).unwrap();
                    framed.extend((block.len() as u32).to_be_bytes());
                    framed.extend(block);
                }
                framed
            }
            3 => {
                let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
                e.write_all(raw).unwrap();
                e.finish().unwrap()
            }
            4 => zstd::encode_all(raw, 1).unwrap(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn every_codec_counts_exactly_the_records_present() {
        let raw = records(100, 300);
        for codec in 1..=4 {
            let c = compress(codec, &raw);
            assert_eq!(check(codec, &c, 100, 1 << 20), Ok(()), "codec {codec}");
            assert!(check(codec, &c, 101, 1 << 20).is_err(), "codec {codec}: more claimed than present");
            assert!(check(codec, &c, 99, 1 << 20).is_err(), "codec {codec}: fewer claimed than present");
            assert!(check(codec, &c, i32::MAX as u32, 1 << 20).is_err(), "codec {codec}: 2^31-1 claimed");
            assert!(check(codec, &c[..c.len() / 2], 100, 1 << 20).is_err(), "codec {codec}: truncated");
            assert!(check(codec, &c, 100, 10_000).is_err(), "codec {codec}: beyond the uncompressed limit");
        }
        let bare = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
        assert_eq!(check(2, &bare, 100, 1 << 20), Ok(()), "a bare snappy block");
    }

    #[test]
    fn a_small_batch_that_inflates_without_end_stops_at_the_limit() {
        // 64 records of 1 MiB each, which gzip packs a thousandfold.
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        for i in 0..64 {
            e.write_all(&record(i, 1 << 20)).unwrap();
        }
        let bomb = e.finish().unwrap();
        assert!(bomb.len() < 1 << 20);
        let err = check(1, &bomb, 64, 8 << 20).unwrap_err();
        // Records 0..7 take 8 MiB and a little more: record 7 crosses the limit.
        assert_eq!(err.record, Some(7), "{err:?}");
        // One record claiming 1 GiB is refused from its length alone.
        let mut one = Vec::new();
        put_varint(&mut one, 1 << 30);
        let err = check(4, &zstd::encode_all(&one[..], 1).unwrap(), 1, 8 << 20).unwrap_err();
        assert!(err.reason.contains("uncompressed bytes"), "{err:?}");
    }

    #[test]
    fn the_first_record_at_or_after_a_timestamp_is_found_in_every_codec() {
        // Record i has timestamp delta 0 in `records`; give them deltas 0, 10, 20, ...
        let raw: Vec<u8> = (0..5u32)
            .flat_map(|i| {
                let mut body = vec![0u8];
                put_varint(&mut body, i64::from(i) * 10);
                put_varint(&mut body, i64::from(i));
                body.extend([1, 0, 0]); // null key, empty value, no headers
                let mut out = Vec::new();
                put_varint(&mut out, body.len() as i64);
                out.extend(body);
                out
            })
            .collect();
        for codec in 0..=4 {
            let data = if codec == 0 { raw.clone() } else { compress(codec, &raw) };
            assert_eq!(first_at_or_after(codec, &data, 5, 1000, 1015), Ok(Some((2, 20))), "codec {codec}");
            assert_eq!(first_at_or_after(codec, &data, 5, 1000, 0), Ok(Some((0, 0))), "codec {codec}");
            assert_eq!(first_at_or_after(codec, &data, 5, 1000, 1041), Ok(None), "codec {codec}");
        }
    }

    #[test]
    fn garbage_is_an_error_for_every_codec() {
        for codec in 1..=4 {
            assert!(check(codec, b"definitely not compressed data", 1, 1 << 20).is_err(), "codec {codec}");
            assert!(check(codec, &[], 1, 1 << 20).is_err(), "codec {codec}: empty");
        }
    }
}
