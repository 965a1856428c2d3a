//! Metadata: the brokers (this node), and for each requested topic its id and partitions with
//! leader, replicas and ISR. Unknown topics get UNKNOWN_TOPIC_OR_PARTITION unless auto-creation
//! is enabled and the client allows it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
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
use crate::security::{Operation, ResourceType};
use crate::raft::METADATA_GROUP;

pub async fn handle(ctx: &KafkaContext, request: &Request) -> Result<Bytes, FrameError> {
    let body: MetadataRequest = decode_body(request)?;
    let version = request.header.request_api_version;
    let mut response = MetadataResponse::default();
    response.brokers = brokers(ctx)
        .into_iter()
        .map(|(id, host, port)| {
            let mut broker = MetadataResponseBroker::default();
            broker.node_id = BrokerId(id);
            broker.host = StrBytes::from_string(host);
            broker.port = port;
            broker
        })
        .collect();
    response.cluster_id = Some(StrBytes::from_string(ctx.cluster.cluster_id().to_string()));
    // Any node accepts admin requests in a cluster (they go through the metadata group), so
    // while no metadata leader is known, or clients cannot reach it yet, this node stands in:
    // clients never wait for a controller.
    let metadata_leader = i32::try_from(ctx.control.replication().leadership(METADATA_GROUP).leader).ok();
    response.controller_id = BrokerId(match metadata_leader {
        Some(leader) if response.brokers.iter().any(|b| b.node_id.0 == leader) => leader,
        _ => ctx.node_id,
    });
    // v0 has no null topic list: an empty list means "all topics" there.
    let requested = match body.topics {
        Some(topics) if !(version == 0 && topics.is_empty()) => Some(topics),
        _ => None,
    };
    response.topics = match requested {
        None => ctx.cluster.topics().iter().filter(|t| ctx.may(request, Operation::Describe, ResourceType::Topic, &t.name)).map(|t| describe(ctx, t)).collect(),
        Some(topics) => {
            let mut out = Vec::with_capacity(topics.len());
            for requested in topics {
                let found = match &requested.name {
                    Some(name) if !ctx.permits(request, Operation::Describe, ResourceType::Topic, name.as_str()) => Err(code(ResponseError::TopicAuthorizationFailed)),
                    Some(name) => lookup_or_create(ctx, request, name.as_str(), body.allow_auto_topic_creation || version < 4).await,
                    None => match ctx.cluster.topic_by_id(requested.topic_id) {
                        Some(t) if !ctx.permits(request, Operation::Describe, ResourceType::Topic, &t.name) => Err(code(ResponseError::TopicAuthorizationFailed)),
                        found => found.ok_or(code(ResponseError::UnknownTopicId)),
                    },
                };
                out.push(match found {
                    Ok(topic) => describe(ctx, &topic),
                    Err(error_code) => {
                        let mut t = MetadataResponseTopic::default();
                        t.error_code = error_code;
                        t.name = requested.name;
                        t.topic_id = requested.topic_id;
                        t
                    }
                });
            }
            out
        }
    };
    respond(request, &response)
}

/// (id, host, port) of every broker: every node that registered with the metadata group, and
/// this node (as it advertises itself now).
pub(super) fn brokers(ctx: &KafkaContext) -> Vec<(i32, String, i32)> {
    let me = (ctx.node_id, ctx.advertised.ip().to_string(), i32::from(ctx.advertised.port()));
    let mut out: Vec<(i32, String, i32)> = ctx
        .cluster
        .brokers()
        .into_iter()
        .filter(|(id, _)| *id != ctx.node_id)
        .filter_map(|(id, addr)| addr.parse::<SocketAddr>().ok().map(|a| (id, a.ip().to_string(), i32::from(a.port()))))
        .collect();
    out.push(me);
    out.sort();
    out
}

async fn lookup_or_create(ctx: &KafkaContext, request: &Request, name: &str, client_allows: bool) -> Result<Arc<Topic>, i16> {
    if let Some(topic) = ctx.cluster.topic(name) {
        return Ok(topic);
    }
    if !(client_allows && ctx.cluster.config().kafka.auto_create_topics) {
        return Err(code(ResponseError::UnknownTopicOrPartition));
    }
    if !super::admin::may_create_topic(ctx, request, name) {
        return Err(code(ResponseError::TopicAuthorizationFailed));
    }
    let partitions = ctx.cluster.config().kafka.default_partitions;
    match ctx.control.create_topic(name, partitions, -1, BTreeMap::new()).await {
        Ok(topic) => Ok(topic),
        // Another request created it first.
        Err(crate::cluster::Error::TopicExists(_)) => ctx.cluster.topic(name).ok_or(code(ResponseError::UnknownTopicOrPartition)),
        Err(e) => Err(cluster_error_code(&e)),
    }
}

/// A topic as Metadata reports it: each partition's leader, replicas and in-sync replicas.
pub fn describe(ctx: &KafkaContext, topic: &Topic) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.name = Some(TopicName(StrBytes::from_string(topic.name.clone())));
    t.topic_id = topic.id;
    t.is_internal = topic.name == crate::groups::offsets::OFFSETS_TOPIC;
    t.partitions = topic
        .partitions
        .iter()
        .map(|p| {
            let mut m = MetadataResponsePartition::default();
            m.partition_index = p.index();
            let r = ctx.control.replication();
                let view = r.leadership(crate::cluster::group_of(topic.id, p.index()));
                let node = |id: u64| BrokerId(i32::try_from(id).unwrap_or(-1));
                m.replica_nodes = r.voters().iter().map(|v| node(*v)).collect();
                if view.leader == 0 {
                    m.error_code = code(ResponseError::LeaderNotAvailable);
                    m.leader_id = BrokerId(-1);
                    m.isr_nodes = m.replica_nodes.clone();
                } else {
                    m.leader_id = node(view.leader);
                    // Followers only know the leader; its own view names who is caught up.
                    m.isr_nodes = if view.leader == r.me() {
                        r.voters().iter().filter(|v| **v == r.me() || view.caught_up & (1 << (**v % 64)) != 0).map(|v| node(*v)).collect()
                    } else {
                        m.replica_nodes.clone()
                    };
                }
                m.leader_epoch = i32::try_from(view.term).unwrap_or(i32::MAX);
            m
        })
        .collect();
    t
}
