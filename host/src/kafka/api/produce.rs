//! Produce: validate and append each partition's record batches, then answer once they are
//! durable (acks=1/-1; on one node both mean "persisted here") or not at all (acks=0).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use tracing::debug;

use super::{code, message, partition_error_code, respond};
use crate::clock::now_ms;
use crate::groups::offsets::OFFSETS_TOPIC;
use crate::kafka::KafkaContext;
use crate::kafka::frame::{FrameError, Request, decode_body};
use crate::partition::batch::BatchError;
use crate::partition::{Appended, Partition, ProduceChecks};
use crate::security::{Operation, ResourceType};

/// One partition's outcome before durability is awaited.
enum Outcome {
    Appended(Arc<Partition>, Appended),
    /// Error code, message, and the index of the record to blame (reported in the response's
    /// record errors, as Kafka does).
    Failed(i16, Option<String>, Option<u32>),
}

fn failed(error: ResponseError, why: Option<String>) -> Outcome {
    Outcome::Failed(code(error), why, None)
}

pub async fn handle(ctx: &KafkaContext, request: &Request) -> Result<Option<Bytes>, FrameError> {
    let body: ProduceRequest = decode_body(request)?;
    let acks = body.acks;
    let now_ms = now_ms();
    let checks = ProduceChecks {
        max_uncompressed_batch_bytes: ctx.cluster.config().kafka.max_uncompressed_batch_bytes,
        zstd_allowed: request.header.request_api_version >= 7,
    };
    let mut topics = Vec::with_capacity(body.topic_data.len());
    for topic in &body.topic_data {
        let mut outcomes = Vec::with_capacity(topic.partition_data.len());
        let allowed = ctx.permits(request, Operation::Write, ResourceType::Topic, topic.name.as_str());
        for data in &topic.partition_data {
            let outcome = if !matches!(acks, -1..=1) {
                failed(ResponseError::InvalidRequiredAcks, None)
            } else if !allowed {
                failed(ResponseError::TopicAuthorizationFailed, None)
            } else {
                append(ctx, topic.name.as_str(), data.index, data.records.as_ref(), now_ms, &checks)
            };
            outcomes.push((data.index, outcome));
        }
        topics.push((topic.name.clone(), outcomes));
    }
    ctx.metrics.produced_requests.inc();
    if acks == 0 {
        // No response can carry an error: a failure closes the connection so the client notices.
        for (name, outcomes) in &topics {
            for (index, outcome) in outcomes {
                if let Outcome::Failed(error_code, why, _) = outcome {
                    let why = why.as_deref().unwrap_or("");
                    return Err(FrameError::UnacknowledgedProduceFailed(format!("{}-{index}: error {error_code} {why}", name.as_str())));
                }
            }
        }
        return Ok(None);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(body.timeout_ms.max(0) as u64);
    let mut response = ProduceResponse::default();
    for (name, outcomes) in topics {
        let mut t = TopicProduceResponse::default();
        t.name = name;
        for (index, outcome) in outcomes {
            let mut p = PartitionProduceResponse::default();
            p.index = index;
            p.log_append_time_ms = -1;
            p.base_offset = -1;
            p.log_start_offset = -1;
            match outcome {
                Outcome::Appended(partition, appended) => {
                    match tokio::time::timeout_at(deadline, partition.wait_durable(&appended, acks == -1)).await {
                        Ok(Ok(())) => {
                            p.base_offset = appended.base_offset;
                            p.log_start_offset = partition.log_start_offset().unwrap_or(-1);
                            ctx.metrics.produced_records.inc_by((appended.end_offset - appended.base_offset) as u64);
                        }
                        Ok(Err(e)) => {
                            p.error_code = partition_error_code(&e);
                            p.error_message = message(e.to_string());
                        }
                        Err(_) => p.error_code = code(ResponseError::RequestTimedOut),
                    }
                }
                Outcome::Failed(error_code, why, record) => {
                    p.error_code = error_code;
                    if let Some(record) = record {
                        let mut blamed = BatchIndexAndErrorMessage::default();
                        blamed.batch_index = i32::try_from(record).unwrap_or(i32::MAX);
                        blamed.batch_index_error_message = why.clone().and_then(message);
                        p.record_errors.push(blamed);
                    }
                    p.error_message = why.and_then(message);
                }
            }
            t.partition_responses.push(p);
        }
        response.responses.push(t);
    }
    respond(request, &response).map(Some)
}

fn append(ctx: &KafkaContext, topic: &str, index: i32, records: Option<&Bytes>, now_ms: i64, checks: &ProduceChecks) -> Outcome {
    if topic == OFFSETS_TOPIC {
        return failed(ResponseError::InvalidTopicException, Some(format!("{OFFSETS_TOPIC} is internal; clients cannot produce to it")));
    }
    let Some(partition) = ctx.cluster.partition(topic, index) else {
        return failed(ResponseError::UnknownTopicOrPartition, None);
    };
    let Some(records) = records else {
        return failed(ResponseError::CorruptMessage, Some("no records".into()));
    };
    match partition.append_produced(records, now_ms, checks) {
        Ok(appended) => {
            ctx.metrics.produced_bytes.inc_by(records.len() as u64);
            Outcome::Appended(partition, appended)
        }
        Err(e) => {
            debug!(topic, partition = index, cause = %e, "produce refused");
            let record = match &e {
                crate::partition::Error::Batch(BatchError::BadRecord { record, .. }) => Some(*record),
                _ => None,
            };
            Outcome::Failed(partition_error_code(&e), Some(e.to_string()), record)
        }
    }
}
