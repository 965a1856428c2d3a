//! Kafka requests built by the protocol crate, for tests that must send exact bytes: record
//! batches with chosen producer ids and sequences, and produce requests carrying them.

use anyhow::Result;
use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
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

