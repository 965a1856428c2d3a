//! Kafka requests built by the protocol crate, for tests that must send exact bytes: record
//! batches with chosen producer ids and sequences, produce requests carrying them, and offset
//! commits and fetches.

use anyhow::Result;
use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{GroupId, OffsetCommitRequest, OffsetFetchRequest, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

use crate::RawClient;

/// A topic name as requests carry it.
pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// One record batch, encoded by the protocol crate (not by the broker's code).
pub fn batch(producer_id: i64, epoch: i16, sequence: i32, values: &[&str]) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // Without a producer id the base sequence is -1; the encoder keeps records in one
            // batch while offset minus sequence stays the same.
            sequence: if producer_id < 0 { i as i32 - 1 } else { sequence + i as i32 },
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(Bytes::from(v.to_string())),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression: Compression::None }).expect("encode batch");
    buf.freeze()
}

/// Produces `records` to partition 0 of `topic` with acks=all: the error code and base offset.
pub fn produce_raw(client: &mut RawClient, topic: &str, records: Bytes) -> Result<(i16, i64)> {
    let response: ProduceResponse = client.send(9, &produce_request(topic, records, -1))?;
    let p = &response.responses[0].partition_responses[0];
    Ok((p.error_code, p.base_offset))
}

/// A Produce of `records` to partition 0 of `topic`.
pub fn produce_request(topic: &str, records: Bytes, acks: i16) -> ProduceRequest {
    let mut data = PartitionProduceData::default();
    data.index = 0;
    data.records = Some(records);
    let mut t = TopicProduceData::default();
    t.name = topic_name(topic);
    t.partition_data = vec![data];
    let mut request = ProduceRequest::default();
    request.acks = acks;
    request.timeout_ms = 10_000;
    request.topic_data = vec![t];
    request
}


/// A group id as requests carry it.
pub fn group_id(s: &str) -> GroupId {
    GroupId(StrBytes::from_string(s.to_string()))
}

/// A string as requests carry it.
pub fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Commits `offset` for partition 0 of topic `raw` as `member` of `group` at `generation`.
pub fn commit(client: &mut RawClient, group: &str, member: &str, generation: i32, offset: i64) -> Result<i16> {
    let response = client.send(8, &commit_request(group, member, generation, offset))?;
    Ok(response.topics[0].partitions[0].error_code)
}

/// An OffsetCommit of `offset` for partition 0 of topic `raw`.
pub fn commit_request(group: &str, member: &str, generation: i32, offset: i64) -> OffsetCommitRequest {
    let mut p = OffsetCommitRequestPartition::default();
    p.partition_index = 0;
    p.committed_offset = offset;
    p.committed_metadata = Some(text("note"));
    let mut t = OffsetCommitRequestTopic::default();
    t.name = TopicName(text("raw"));
    t.partitions = vec![p];
    let mut request = OffsetCommitRequest::default();
    request.group_id = group_id(group);
    request.generation_id_or_member_epoch = generation;
    request.member_id = text(member);
    request.topics = vec![t];
    request
}

/// The offset `group` committed for partition 0 of topic `raw`, with its metadata.
pub fn fetch_committed(client: &mut RawClient, group: &str) -> Result<(i64, Option<String>)> {
    let response = client.send(7, &fetch_committed_request(group))?;
    let p = &response.topics[0].partitions[0];
    Ok((p.committed_offset, p.metadata.as_ref().map(|m| m.to_string())))
}

/// An OffsetFetch of partition 0 of topic `raw`.
pub fn fetch_committed_request(group: &str) -> OffsetFetchRequest {
    let mut t = OffsetFetchRequestTopic::default();
    t.name = TopicName(text("raw"));
    t.partition_indexes = vec![0];
    let mut request = OffsetFetchRequest::default();
    request.group_id = group_id(group);
    request.topics = Some(vec![t]);
    request
}
