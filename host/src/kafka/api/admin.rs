//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::{cluster_error_code, code, message, respond};
use crate::cluster::topic_config;
use crate::groups::offsets::OFFSETS_TOPIC;
use crate::kafka::KafkaContext;
use crate::kafka::frame::{FrameError, Request, decode_body};
use crate::security::acl::CLUSTER_RESOURCE;
use crate::security::{Operation, ResourceType};

/// DescribeConfigs' `config_source` for a value set on the topic.
pub const SOURCE_TOPIC: i8 = 1;
/// DescribeConfigs' `config_source` for the broker's default.
pub const SOURCE_DEFAULT: i8 = 5;

/// CREATE on the cluster or on the topic, as Kafka asks of CreateTopics.
pub fn may_create_topic(ctx: &KafkaContext, request: &Request, name: &str) -> bool {
    ctx.may(request, Operation::Create, ResourceType::Cluster, CLUSTER_RESOURCE) || ctx.permits(request, Operation::Create, ResourceType::Topic, name)
}

pub async fn create_topics(ctx: &KafkaContext, request: &Request) -> Result<Bytes, FrameError> {
    let body: CreateTopicsRequest = decode_body(request)?;
    let mut response = CreateTopicsResponse::default();
    for topic in body.topics {
        let name = topic.name.as_str().to_string();
        let mut result = CreatableTopicResult::default();
        result.name = topic.name.clone();
        result.num_partitions = -1;
        result.replication_factor = -1;
        let partitions = if topic.num_partitions == -1 { ctx.cluster.config().kafka.default_partitions } else { topic.num_partitions };
        // -1 is the cluster's default: every partition is replicated on every node.
        let nodes = i16::try_from(ctx.control.replication().voters().len()).unwrap_or(i16::MAX);
        let replication_factor = if topic.replication_factor == -1 { nodes } else { topic.replication_factor };
        let mut configs = BTreeMap::new();
        let mut bad_config = None;
        for c in &topic.configs {
            match &c.value {
                Some(v) => {
                    configs.insert(c.name.to_string(), v.to_string());
                }
                None => bad_config = Some(format!("config {} has no value", c.name.as_str())),
            }
        }
        let bad_config = bad_config.or_else(|| ctx.plugins.check_topic_configs(&configs).err());
        let outcome = if !may_create_topic(ctx, request, &name) {
            Err(crate::cluster::Error::NotAuthorized(ResourceType::Topic))
        } else if let Some(why) = bad_config {
            Err(crate::cluster::Error::InvalidConfig(why))
        } else if !topic.assignments.is_empty() {
            Err(crate::cluster::Error::InvalidPartitions("manual replica assignment is not supported".into()))
        } else if body.validate_only {
            ctx.cluster.validate_new_topic(&name, partitions, replication_factor, &configs).map(|()| None)
        } else {
            ctx.control.create_topic(&name, partitions, replication_factor, configs.clone()).await.map(Some)
        };
        match outcome {
            Ok(created) => {
                if let Some(topic) = created {
                    result.topic_id = topic.id;
                }
                result.num_partitions = partitions;
                result.replication_factor = replication_factor;
                result.configs = Some(
                    topic_config::effective(&configs, &ctx.cluster.config().log)
                        .into_iter()
                        .map(|e| {
                            let mut c = CreatableTopicConfigs::default();
                            c.name = StrBytes::from_string(e.name);
                            c.value = Some(StrBytes::from_string(e.value));
                            c.config_source = if e.overridden { SOURCE_TOPIC } else { SOURCE_DEFAULT };
                            c
                        })
                        .collect(),
                );
            }
            Err(e) => {
                result.error_code = cluster_error_code(&e);
                result.error_message = message(e.to_string());
            }
        }
        response.topics.push(result);
    }
    respond(request, &response)
}

pub async fn delete_topics(ctx: &KafkaContext, request: &Request) -> Result<Bytes, FrameError> {
    let body: DeleteTopicsRequest = decode_body(request)?;
    let mut response = DeleteTopicsResponse::default();
    // v0-5 name topics in `topic_names`; v6 in `topics`, by name or by id.
    let mut wanted: Vec<(Option<TopicName>, uuid::Uuid)> = body.topic_names.into_iter().map(|n| (Some(n), uuid::Uuid::nil())).collect();
    wanted.extend(body.topics.into_iter().map(|t| (t.name, t.topic_id)));
    for (name, id) in wanted {
        let mut result = DeletableTopicResult::default();
        result.name = name.clone();
        result.topic_id = id;
        let found = match &name {
            Some(n) => ctx.cluster.topic(n.as_str()),
            None => ctx.cluster.topic_by_id(id),
        };
        let allowed = |topic: &str| ctx.permits(request, Operation::Delete, ResourceType::Topic, topic);
        match found {
            None if name.as_ref().is_some_and(|n| !allowed(n.as_str())) => result.error_code = code(ResponseError::TopicAuthorizationFailed),
            Some(topic) if !allowed(&topic.name) => result.error_code = code(ResponseError::TopicAuthorizationFailed),
            None if name.is_none() => result.error_code = code(ResponseError::UnknownTopicId),
            None => result.error_code = code(ResponseError::UnknownTopicOrPartition),
            Some(topic) => {
                result.name = Some(TopicName(StrBytes::from_string(topic.name.clone())));
                result.topic_id = topic.id;
                if topic.name == OFFSETS_TOPIC {
                    result.error_code = code(ResponseError::InvalidTopicException);
                    result.error_message = message(format!("{OFFSETS_TOPIC} is internal and cannot be deleted"));
                } else if let Err(e) = ctx.control.delete_topic(&topic.name).await {
                    // (Committed offsets of the topic are dropped by every coordinator when the
                    // deletion applies there.)
                    result.error_code = cluster_error_code(&e);
                    result.error_message = message(e.to_string());
                }
            }
        }
        response.responses.push(result);
    }
    respond(request, &response)
}

pub async fn create_partitions(ctx: &KafkaContext, request: &Request) -> Result<Bytes, FrameError> {
    let body: CreatePartitionsRequest = decode_body(request)?;
    let mut response = CreatePartitionsResponse::default();
    for topic in body.topics {
        let mut result = CreatePartitionsTopicResult::default();
        result.name = topic.name.clone();
        let outcome = if !ctx.permits(request, Operation::Alter, ResourceType::Topic, topic.name.as_str()) {
            Err(crate::cluster::Error::NotAuthorized(ResourceType::Topic))
        } else if topic.name.as_str() == OFFSETS_TOPIC {
            // Groups are placed by the partition count: changing it would move every group.
            Err(crate::cluster::Error::InvalidPartitions(format!("the partitions of {OFFSETS_TOPIC} cannot change")))
        } else if topic.assignments.is_some() {
            Err(crate::cluster::Error::InvalidPartitions("manual replica assignment is not supported".into()))
        } else {
            ctx.control.create_partitions(topic.name.as_str(), topic.count, body.validate_only).await
        };
        if let Err(e) = outcome {
            result.error_code = cluster_error_code(&e);
            result.error_message = message(e.to_string());
        }
        response.results.push(result);
    }
    respond(request, &response)
}
