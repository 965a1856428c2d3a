//! Fetch: whole stored batches from each requested offset up to the high watermark, long-polling
//! until `min_bytes` are available or `max_wait_ms` passes. Stored bytes are returned as they
//! are; a fetch from the middle of a batch returns that whole batch (clients skip the records
//! before their offset). No fetch sessions are created: the response's session id is 0, which
//! tells clients to keep sending full requests.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::future::select_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse, ResponseHeader, TopicName};
use kafka_protocol::protocol::Encodable;
use tokio::time::Instant;
use tracing::warn;

use super::{code, partition_error_code};
use crate::kafka::KafkaContext;
use crate::kafka::response_budget::{Held, ResponseBudget};
use crate::kafka::frame::{FrameError, Request, Response, decode_body};
use crate::partition::Partition;
use crate::security::{Operation, ResourceType};

struct Target {
    index: i32,
    /// The partition, or the error it is answered with.
    partition: Result<Arc<Partition>, i16>,
    offset: i64,
    max_bytes: usize,
    /// The leader epoch the client believes current (-1: not checked).
    current_leader_epoch: i32,
    /// The partition is listed earlier in the request: it is read once, and answered empty here.
    repeated: bool,
}

pub async fn handle(ctx: &KafkaContext, request: &Request) -> Result<Response, FrameError> {
    let body: FetchRequest = decode_body(request)?;
    let kafka = &ctx.cluster.config().kafka;
    let max_wait = Duration::from_millis(body.max_wait_ms.max(0) as u64).min(Duration::from_millis(kafka.max_fetch_wait_ms));
    let deadline = Instant::now() + max_wait;
    let min_bytes = body.min_bytes.max(0) as usize;
    // Kafka's broker-side fetch.max.bytes caps what the client asks for (or leaves unlimited).
    let max_bytes = if body.max_bytes > 0 { (body.max_bytes as usize).min(kafka.fetch_max_bytes) } else { kafka.fetch_max_bytes };
    let read_committed = body.isolation_level == 1;
    let mut listed = HashSet::new();
    let topics: Vec<(TopicName, Vec<Target>)> = body
        .topics
        .iter()
        .map(|t| {
            let allowed = ctx.permits(request, Operation::Read, ResourceType::Topic, t.topic.as_str());
            let targets = t
                .partitions
                .iter()
                .map(|p| Target {
                    index: p.partition,
                    partition: if allowed {
                        ctx.cluster.partition(t.topic.as_str(), p.partition).ok_or(code(ResponseError::UnknownTopicOrPartition))
                    } else {
                        Err(code(ResponseError::TopicAuthorizationFailed))
                    },
                    offset: p.fetch_offset,
                    max_bytes: p.partition_max_bytes.max(0) as usize,
                    current_leader_epoch: p.current_leader_epoch,
                    repeated: !listed.insert((t.topic.clone(), p.partition)),
                })
                .collect();
            (t.topic.clone(), targets)
        })
        .collect();
    loop {
        // Subscribe, and note what is committed, before reading, so an append between the read
        // and the wait is not missed.
        let mut watches: Vec<_> = topics
            .iter()
            .flat_map(|(_, targets)| targets.iter())
            .filter_map(|t| t.partition.as_ref().ok().map(|p| p.watch_high_watermark()))
            .collect();
        let seen: Vec<(u64, u64)> = watches.iter_mut().map(|w| w.borrow_and_update()).map(|d| (d.committed_bytes(), d.lease())).collect();
        let built = build(ctx, &topics, max_bytes, read_committed).await;
        if built.bytes >= min_bytes || built.has_error || watches.is_empty() || Instant::now() >= deadline {
            return finish(ctx, request, built);
        }
        let read = built.bytes;
        // Nothing is held while waiting.
        drop(built);
        // As Kafka: read again once the bytes committed since this read reach `min_bytes`
        // (judged from sizes, without reading), or leadership changed, or the time is up.
        loop {
            let any_change = select_all(watches.iter_mut().map(|w| Box::pin(w.changed())));
            let Ok((changed, _, _)) = tokio::time::timeout_at(deadline, any_change).await else {
                let built = build(ctx, &topics, max_bytes, read_committed).await;
                return finish(ctx, request, built);
            };
            let now: Vec<(u64, u64)> = watches.iter().map(|w| w.borrow()).map(|d| (d.committed_bytes(), d.lease())).collect();
            let arrived: u64 = now.iter().zip(&seen).map(|(n, s)| n.0.saturating_sub(s.0)).sum();
            let lease_changed = now.iter().zip(&seen).any(|(n, s)| n.1 != s.1);
            if changed.is_err() || lease_changed || read as u64 + arrived >= min_bytes as u64 {
                break;
            }
        }
    }
}

/// A response read from the logs, and the share of the node's response budget it holds.
struct Built {
    response: FetchResponse,
    /// Record bytes in it.
    bytes: usize,
    /// Some partition answered with an error (returned at once rather than long-polled).
    has_error: bool,
    held: Held,
}

/// Encodes the response; it holds its budget until written.
fn finish(ctx: &KafkaContext, request: &Request, built: Built) -> Result<Response, FrameError> {
    ctx.metrics.fetched_bytes.inc_by(built.bytes as u64);
    let chunks = encode_chunked(request, built.response)?;
    Ok(built.held.into_response(chunks))
}

/// Encodes a Fetch response as its frame's chunks, each partition's records a chunk of its own
/// (the bytes read from the log, not copied). Everything around the records is encoded by the
/// protocol crate, partition by partition with the records left null: a null record set ends a
/// partition (v4-v11: length -1; v12: null, then no tagged fields), so that ending is cut and
/// the record set's length and bytes put in its place.
fn encode_chunked(request: &Request, mut response: FetchResponse) -> Result<Vec<Bytes>, FrameError> {
    let version = request.header.request_api_version;
    let malformed = |e: anyhow::Error| FrameError::Malformed { api: request.api_key, version, cause: format!("response did not encode: {e}") };
    let flexible = version >= 12;
    let mut chunks = Vec::new();
    let mut out = BytesMut::new();
    let mut header = ResponseHeader::default();
    header.correlation_id = request.header.correlation_id;
    header.encode(&mut out, ApiKey::Fetch.response_header_version(version)).map_err(malformed)?;
    out.put_i32(response.throttle_time_ms);
    if version >= 7 {
        out.put_i16(response.error_code);
        out.put_i32(response.session_id);
    }
    put_length(&mut out, response.responses.len(), flexible);
    for topic in &mut response.responses {
        let name = topic.topic.as_bytes();
        if flexible {
            put_unsigned_varint(&mut out, name.len() + 1);
        } else {
            out.put_i16(i16::try_from(name.len()).map_err(|e| malformed(e.into()))?);
        }
        out.put_slice(name);
        put_length(&mut out, topic.partitions.len(), flexible);
        for partition in &mut topic.partitions {
            let records = partition.records.take();
            partition.encode(&mut out, version).map_err(malformed)?;
            out.truncate(out.len() - if flexible { 2 } else { 4 });
            match records {
                None if flexible => out.put_u8(0),
                None => out.put_i32(-1),
                Some(records) => {
                    if flexible {
                        put_unsigned_varint(&mut out, records.len() + 1);
                    } else {
                        out.put_i32(i32::try_from(records.len()).map_err(|e| malformed(e.into()))?);
                    }
                    if !records.is_empty() {
                        chunks.push(out.split().freeze());
                        chunks.push(records);
                    }
                }
            }
            if flexible {
                out.put_u8(0); // the partition's tagged fields: none
            }
        }
        if flexible {
            out.put_u8(0); // the topic's tagged fields: none
        }
    }
    if flexible {
        out.put_u8(0); // the response's tagged fields: none
    }
    chunks.push(out.freeze());
    let size: usize = chunks.iter().map(Bytes::len).sum();
    let size = i32::try_from(size).map_err(|e| malformed(e.into()))?;
    chunks.insert(0, Bytes::copy_from_slice(&size.to_be_bytes()));
    Ok(chunks)
}

/// An array's length: i32, or (flexible versions) an unsigned varint of length + 1.
fn put_length(out: &mut BytesMut, len: usize, flexible: bool) {
    if flexible {
        put_unsigned_varint(out, len + 1);
    } else {
        out.put_i32(len as i32);
    }
}

fn put_unsigned_varint(out: &mut BytesMut, mut value: usize) {
    while value >= 0x80 {
        out.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

/// Reads every target once, within `max_bytes` and the node's response budget (each read
/// reserves what it may read, then keeps what it did: the records are sent as read, so the
/// response holds no second copy of them).
async fn build(ctx: &KafkaContext, topics: &[(TopicName, Vec<Target>)], max_bytes: usize, read_committed: bool) -> Built {
    let mut response = FetchResponse::default();
    let mut total = 0usize;
    let mut has_error = false;
    let mut held = ResponseBudget::none();
    let mut budget_spent = false;
    for (name, targets) in topics {
        let mut topic = FetchableTopicResponse::default();
        topic.topic = name.clone();
        for target in targets {
            let mut p = PartitionData::default();
            p.partition_index = target.index;
            p.preferred_read_replica = BrokerId(-1);
            p.high_watermark = -1;
            p.last_stable_offset = -1;
            p.log_start_offset = -1;
            p.records = Some(Bytes::new());
            if read_committed {
                p.aborted_transactions = Some(Vec::new());
            }
            let mut budget = if target.repeated || budget_spent { 0 } else { target.max_bytes.min(max_bytes.saturating_sub(total)) };
            if budget > 0 && !ctx.response_budget.reserve(&mut held, budget).await {
                // Other responses hold the node's budget: answer with what is read already.
                budget_spent = true;
                budget = 0;
            }
            match read_partition(target, budget).await {
                Ok((mut records, high_watermark, log_start_offset)) => {
                    if records.len() > budget && total > 0 {
                        // Only the first partition may exceed the limits (with one entry), as
                        // in Kafka, so that a consumer always makes progress.
                        records = Bytes::new();
                    } else if records.len() > budget {
                        ctx.response_budget.reserve(&mut held, records.len() - budget).await;
                    }
                    total += records.len();
                    p.high_watermark = high_watermark;
                    p.last_stable_offset = high_watermark;
                    p.log_start_offset = log_start_offset;
                    p.records = Some(records);
                }
                Err(error_code) => {
                    has_error = true;
                    p.error_code = error_code;
                }
            }
            held.shrink_to(total);
            topic.partitions.push(p);
        }
        response.responses.push(topic);
    }
    Built { response, bytes: total, has_error, held }
}

/// Reads one partition from the fetch offset, `budget` bytes (at least one entry when above 0).
async fn read_partition(target: &Target, budget: usize) -> Result<(Bytes, i64, i64), i16> {
    let partition = target.partition.as_ref().map_err(|e| *e)?;
    if !partition.is_leader() {
        return Err(code(ResponseError::NotLeaderOrFollower));
    }
    // As Kafka: a client behind on leadership is fenced, one ahead of this replica waits.
    if let Some(epoch) = partition.leader_epoch().filter(|_| target.current_leader_epoch >= 0) {
        if target.current_leader_epoch < epoch {
            return Err(code(ResponseError::FencedLeaderEpoch));
        }
        if target.current_leader_epoch > epoch {
            return Err(code(ResponseError::UnknownLeaderEpoch));
        }
    }
    let high_watermark = partition.high_watermark();
    let (log_start, log_end) = partition.offset_range().map_err(|e| partition_error_code(&e))?;
    // As Kafka: out of range only outside the log. Between the high watermark and the log end
    // (a new leader whose high watermark has not caught up yet) the answer is empty.
    if target.offset < log_start || target.offset > log_end {
        return Err(code(ResponseError::OffsetOutOfRange));
    }
    if budget == 0 || target.offset >= high_watermark {
        return Ok((Bytes::new(), high_watermark, log_start));
    }
    // The disk read runs off the async workers.
    let (reading, offset) = (Arc::clone(partition), target.offset);
    let read = tokio::task::spawn_blocking(move || reading.read(offset, budget)).await.map_err(|_| code(ResponseError::UnknownServerError))?;
    match read {
        Ok(read) => Ok((Bytes::from(read.records), read.high_watermark, read.log_start_offset)),
        Err(e) => {
            warn!(topic = partition.topic(), partition = partition.index(), offset = target.offset, cause = %e, "fetch failed");
            Err(partition_error_code(&e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::batch::tests::batch;
    use crate::partition::replica::ReplicaSetup;
    use crate::partition::replica::tests::{data_entry, settings};

    /// A replica of a three-voter group in `dir`, driven by hand.
    fn replica(dir: &std::path::Path) -> Arc<Partition> {
        let (tx, _rx) = tokio::sync::mpsc::channel(16);
        let setup = ReplicaSetup { group: 7, voters: vec![1, 2, 3], proposals: tx, cache_bytes: 1 << 20, offsets_on_write: false, applied: None };
        Partition::open_replica("t", 0, dir, settings(1 << 20), setup).unwrap()
    }

    #[test]
    fn a_chunked_response_is_byte_for_byte_what_the_protocol_crate_encodes() {
        use kafka_protocol::messages::RequestHeader;
        use kafka_protocol::messages::fetch_response::AbortedTransaction;
        use kafka_protocol::protocol::StrBytes;
        let mut response = FetchResponse::default();
        response.throttle_time_ms = 7;
        response.session_id = 0;
        for (t, name) in ["a", "a-longer-topic-name"].iter().enumerate() {
            let mut topic = FetchableTopicResponse::default();
            topic.topic = TopicName(StrBytes::from_string(name.to_string()));
            for i in 0..4 {
                let mut p = PartitionData::default();
                p.partition_index = i;
                p.error_code = if i == 3 { 6 } else { 0 };
                p.high_watermark = 1000 + i64::from(i);
                p.last_stable_offset = 999;
                p.log_start_offset = 5;
                p.preferred_read_replica = BrokerId(-1);
                p.records = match i {
                    0 => Some(Bytes::from(vec![t as u8; 300])),
                    1 => Some(Bytes::new()),
                    2 => Some(Bytes::from(vec![9u8; 70_000])),
                    _ => None,
                };
                if i == 2 {
                    let mut aborted = AbortedTransaction::default();
                    aborted.producer_id = kafka_protocol::messages::ProducerId(4);
                    aborted.first_offset = 8;
                    p.aborted_transactions = Some(vec![aborted]);
                }
                topic.partitions.push(p);
            }
            response.responses.push(topic);
        }
        for version in 4..=12 {
            let mut header = RequestHeader::default();
            header.request_api_key = ApiKey::Fetch as i16;
            header.request_api_version = version;
            header.correlation_id = 42;
            let request = Request { api_key: ApiKey::Fetch, header: header.clone(), body: Bytes::new(), peer: None, principal: None };
            let expected = crate::kafka::frame::encode_response(&header, ApiKey::Fetch, version, &response).unwrap();
            let chunks = encode_chunked(&request, response.clone()).unwrap();
            assert_eq!(chunks.concat(), expected.to_vec(), "version {version}");
            assert!(chunks.iter().any(|c| c.len() == 70_000), "version {version}: the records are a chunk of their own");
        }
    }

    #[tokio::test]
    async fn a_fetch_between_the_high_watermark_and_the_log_end_is_empty_not_out_of_range() {
        let dir = tempfile::tempdir().unwrap();
        let partition = replica(dir.path());
        // Offsets 0..3 committed, 3..8 written but not committed yet (a new leader's high
        // watermark lags until it commits an entry of its term).
        partition.write_entries(&[data_entry(1, 1, 0, batch(3, -1, -1, -1)), data_entry(2, 1, 3, batch(5, -1, -1, -1))], 0).unwrap();
        partition.commit_to(1);
        assert!(partition.become_leader(1));
        let target = |offset| Target { index: 0, partition: Ok(Arc::clone(&partition)), offset, max_bytes: 1 << 20, current_leader_epoch: -1, repeated: false };
        let (records, high_watermark, _) = read_partition(&target(5), 1 << 20).await.expect("an offset the log holds is in range");
        assert!(records.is_empty());
        assert_eq!(high_watermark, 3);
        let (records, _, _) = read_partition(&target(8), 1 << 20).await.expect("the log end is in range");
        assert!(records.is_empty());
        assert_eq!(read_partition(&target(9), 1 << 20).await.unwrap_err(), code(ResponseError::OffsetOutOfRange), "past the log end");
        assert!(!read_partition(&target(0), 1 << 20).await.unwrap().0.is_empty());
    }

    #[tokio::test]
    async fn a_fetch_checks_the_leader_epoch_the_client_believes_current() {
        let dir = tempfile::tempdir().unwrap();
        let partition = replica(dir.path());
        partition.write_entries(&[data_entry(1, 4, 0, batch(3, -1, -1, -1))], 0).unwrap();
        partition.commit_to(1);
        assert!(partition.become_leader(4));
        let target = |current_leader_epoch| Target { index: 0, partition: Ok(Arc::clone(&partition)), offset: 0, max_bytes: 1 << 20, current_leader_epoch, repeated: false };
        assert_eq!(read_partition(&target(3), 1 << 20).await.unwrap_err(), code(ResponseError::FencedLeaderEpoch));
        assert_eq!(read_partition(&target(5), 1 << 20).await.unwrap_err(), code(ResponseError::UnknownLeaderEpoch));
        for current in [4, -1] {
            assert!(!read_partition(&target(current), 1 << 20).await.unwrap().0.is_empty(), "epoch {current}");
        }
    }
}
