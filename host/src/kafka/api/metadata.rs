//! Metadata: the brokers (this node), and for each requested topic its id and partitions with
//! leader, replicas and ISR. Unknown topics get UNKNOWN_TOPIC_OR_PARTITION unless auto-creation
//! is enabled and the client allows it.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{cluster_error_code, code, respond};
use crate::cluster::Topic;
use crate::kafka::KafkaContext;
use crate::kafka::frame::{FrameError, Request, decode_body};
use crate::partition::SINGLE_NODE_TERM;

pub fn handle(ctx: &KafkaContext, request: &Request) -> Result<Bytes, FrameError> {
    let body: MetadataRequest = decode_body(request)?;
    let version = request.header.request_api_version;
    let mut response = MetadataResponse::default();
    let mut broker = MetadataResponseBroker::default();
    broker.node_id = BrokerId(ctx.node_id);
    broker.host = StrBytes::from_string(ctx.advertised.ip().to_string());
    broker.port = i32::from(ctx.advertised.port());
    response.brokers = vec![broker];
    response.cluster_id = Some(StrBytes::from_string(ctx.cluster.cluster_id().to_string()));
    response.controller_id = BrokerId(ctx.node_id);
    // v0 has no null topic list: an empty list means "all topics" there.
    let requested = match body.topics {
        Some(topics) if !(version == 0 && topics.is_empty()) => Some(topics),
        _ => None,
    };
    response.topics = match requested {
        None => ctx.cluster.topics().iter().map(|t| describe(t, ctx.node_id)).collect(),
        Some(topics) => topics
            .into_iter()
            .map(|requested| {
                let found = match &requested.name {
                    Some(name) => lookup_or_create(ctx, name.as_str(), body.allow_auto_topic_creation || version < 4),
                    None => ctx.cluster.topic_by_id(requested.topic_id).ok_or(code(ResponseError::UnknownTopicId)),
                };
                match found {
                    Ok(topic) => describe(&topic, ctx.node_id),
                    Err(error_code) => {
                        let mut t = MetadataResponseTopic::default();
                        t.error_code = error_code;
                        t.name = requested.name;
                        t.topic_id = requested.topic_id;
                        t
                    }
                }
            })
            .collect(),
    };
    respond(request, &response)
}

fn lookup_or_create(ctx: &KafkaContext, name: &str, client_allows: bool) -> Result<Arc<Topic>, i16> {
    if let Some(topic) = ctx.cluster.topic(name) {
        return Ok(topic);
    }
    if !(client_allows && ctx.cluster.config().kafka.auto_create_topics) {
        return Err(code(ResponseError::UnknownTopicOrPartition));
    }
    let partitions = ctx.cluster.config().kafka.default_partitions;
    match ctx.cluster.create_topic(name, partitions, 1, BTreeMap::new()) {
        Ok(topic) => Ok(topic),
        // Another request created it first.
        Err(crate::cluster::Error::TopicExists(_)) => ctx.cluster.topic(name).ok_or(code(ResponseError::UnknownTopicOrPartition)),
        Err(e) => Err(cluster_error_code(&e)),
    }
}

/// A topic as Metadata reports it: this node leads every partition.
pub fn describe(topic: &Topic, node_id: i32) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.name = Some(TopicName(StrBytes::from_string(topic.name.clone())));
    t.topic_id = topic.id;
    t.is_internal = topic.name == crate::groups::offsets::OFFSETS_TOPIC;
    t.partitions = topic
        .partitions
        .iter()
        .map(|p| {
            let leader = BrokerId(node_id);
            let mut m = MetadataResponsePartition::default();
            m.partition_index = p.index();
            m.leader_id = leader;
            m.leader_epoch = SINGLE_NODE_TERM.0 as i32;
            m.replica_nodes = vec![leader];
            m.isr_nodes = vec![leader];
            m
        })
        .collect();
    t
}
