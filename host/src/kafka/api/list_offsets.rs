//! ListOffsets: the earliest offset (-2), the latest (-1: the high watermark), or the first
//! offset at or after a timestamp, found through the time index. A timestamp lookup answers at
//! batch granularity: the offset of the first batch whose newest record is at or after it.

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::{code, partition_error_code, respond};
use crate::kafka::KafkaContext;
use crate::kafka::frame::{FrameError, Request, decode_body};
use crate::security::{Operation, ResourceType};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

pub fn handle(ctx: &KafkaContext, request: &Request) -> Result<Bytes, FrameError> {
    let body: ListOffsetsRequest = decode_body(request)?;
    let mut response = ListOffsetsResponse::default();
    for topic in &body.topics {
        let mut t = ListOffsetsTopicResponse::default();
        t.name = topic.name.clone();
        let allowed = ctx.permits(request, Operation::Describe, ResourceType::Topic, topic.name.as_str());
        for requested in &topic.partitions {
            let mut p = ListOffsetsPartitionResponse::default();
            p.partition_index = requested.partition_index;
            p.timestamp = -1;
            p.offset = -1;
            if request.header.request_api_version >= 4 {
                p.leader_epoch = leader_epoch(ctx, topic.name.as_str(), requested.partition_index);
            }
            let found = if allowed { lookup(ctx, topic.name.as_str(), requested.partition_index, requested.timestamp) } else { Err(code(ResponseError::TopicAuthorizationFailed)) };
            match found {
                Ok((offset, timestamp)) => {
                    p.offset = offset;
                    p.timestamp = timestamp;
                }
                Err(error_code) => p.error_code = error_code,
            }
            t.partitions.push(p);
        }
        response.topics.push(t);
    }
    respond(request, &response)
}

/// The partition's current leader epoch (its Raft term).
fn leader_epoch(ctx: &KafkaContext, topic: &str, index: i32) -> i32 {
    match ctx.cluster.topic(topic) {
        Some(t) => i32::try_from(ctx.control.replication().leadership(crate::cluster::group_of(t.id, index)).term).unwrap_or(-1),
        None => -1,
    }
}

/// (offset, timestamp) for one partition; (-1, -1) when no record is that recent.
fn lookup(ctx: &KafkaContext, topic: &str, index: i32, timestamp: i64) -> Result<(i64, i64), i16> {
    let partition = ctx.cluster.partition(topic, index).ok_or(code(ResponseError::UnknownTopicOrPartition))?;
    if !partition.is_leader() {
        return Err(code(ResponseError::NotLeaderOrFollower));
    }
    match timestamp {
        LATEST => Ok((partition.high_watermark(), -1)),
        EARLIEST => partition.log_start_offset().map(|o| (o, -1)).map_err(|e| partition_error_code(&e)),
        ts if ts >= 0 => partition
            .offset_for_timestamp(ts)
            .map(|found| found.unwrap_or((-1, -1)))
            .map_err(|e| partition_error_code(&e)),
        _ => Err(code(ResponseError::InvalidRequest)),
    }
}
