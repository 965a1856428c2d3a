//! DescribeConfigs, AlterConfigs (which replaces a topic's whole set of overrides) and
//! IncrementalAlterConfigs for topics (stored overrides over the node's defaults) and,
//! read-only, for this broker.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::admin::{SOURCE_DEFAULT, SOURCE_TOPIC};
use super::{cluster_error_code, code, message, respond};
use crate::cluster::topic_config::{self, ConfigChange, ConfigType};
use crate::kafka::KafkaContext;
use crate::kafka::frame::{FrameError, Request, decode_body};
use crate::security::acl::CLUSTER_RESOURCE;
use crate::security::{Operation, ResourceType};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// DescribeConfigs' `config_source` for a broker's static configuration file.
const SOURCE_STATIC_BROKER: i8 = 4;

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

pub fn describe(ctx: &KafkaContext, request: &Request) -> Result<Bytes, FrameError> {
    let body: DescribeConfigsRequest = decode_body(request)?;
    let mut response = DescribeConfigsResponse::default();
    for resource in body.resources {
        let mut result = DescribeConfigsResult::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        let wanted = |name: &str| resource.configuration_keys.as_ref().is_none_or(|keys| keys.iter().any(|k| k.as_str() == name));
        let entry = |name: &str, value: String, source: i8, read_only: bool, config_type: ConfigType, doc: &str| {
            let mut c = DescribeConfigsResourceResult::default();
            c.name = StrBytes::from_string(name.to_string());
            c.value = Some(StrBytes::from_string(value));
            c.config_source = source;
            c.read_only = read_only;
            c.config_type = config_type as i8;
            if body.include_documentation {
                c.documentation = Some(StrBytes::from_string(doc.to_string()));
            }
            c
        };
        let (resource_type, resource_name) = match resource.resource_type {
            RESOURCE_BROKER => (ResourceType::Cluster, CLUSTER_RESOURCE),
            _ => (ResourceType::Topic, resource.resource_name.as_str()),
        };
        if !ctx.permits(request, Operation::DescribeConfigs, resource_type, resource_name) {
            result.error_code = cluster_error_code(&crate::cluster::Error::NotAuthorized(resource_type));
            response.results.push(result);
            continue;
        }
        match resource.resource_type {
            RESOURCE_TOPIC => match ctx.cluster.topic(resource.resource_name.as_str()) {
                Some(topic) => {
                    result.configs = topic_config::effective(&topic.configs, &ctx.cluster.config().log)
                        .into_iter()
                        .filter(|e| wanted(&e.name))
                        .map(|e| {
                            let source = if e.overridden { SOURCE_TOPIC } else { SOURCE_DEFAULT };
                            entry(&e.name, e.value, source, false, e.key.config_type, e.key.doc)
                        })
                        .collect();
                }
                None => {
                    result.error_code = code(ResponseError::UnknownTopicOrPartition);
                    result.error_message = message(format!("topic {} does not exist", resource.resource_name.as_str()));
                }
            },
            RESOURCE_BROKER => {
                result.configs = broker_configs(ctx)
                    .into_iter()
                    .filter(|(name, _, _)| wanted(name))
                    .map(|(name, value, config_type)| entry(name, value, SOURCE_STATIC_BROKER, true, config_type, "set in the node's configuration"))
                    .collect();
            }
            other => {
                result.error_code = code(ResponseError::InvalidRequest);
                result.error_message = message(format!("resource type {other} has no configs here"));
            }
        }
        response.results.push(result);
    }
    respond(request, &response)
}

pub async fn incremental_alter(ctx: &KafkaContext, request: &Request) -> Result<Bytes, FrameError> {
    let body: IncrementalAlterConfigsRequest = decode_body(request)?;
    let mut response = IncrementalAlterConfigsResponse::default();
    for resource in body.resources {
        let mut result = AlterConfigsResourceResponse::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        let outcome = if resource.resource_type != RESOURCE_TOPIC {
            Err((code(ResponseError::InvalidRequest), "only topic configs can be altered; broker settings live in the node's configuration".to_string()))
        } else if !ctx.permits(request, Operation::AlterConfigs, ResourceType::Topic, resource.resource_name.as_str()) {
            Err((code(ResponseError::TopicAuthorizationFailed), "not authorized to alter this topic's configs".to_string()))
        } else {
            alter_topic(ctx, resource.resource_name.as_str(), &resource.configs, body.validate_only).await
        };
        if let Err((error_code, why)) = outcome {
            result.error_code = error_code;
            result.error_message = message(why);
        }
        response.responses.push(result);
    }
    respond(request, &response)
}

pub async fn alter(ctx: &KafkaContext, request: &Request) -> Result<Bytes, FrameError> {
    let body: AlterConfigsRequest = decode_body(request)?;
    let mut response = AlterConfigsResponse::default();
    for resource in body.resources {
        let mut result = kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        let outcome = if resource.resource_type != RESOURCE_TOPIC {
            Err((code(ResponseError::InvalidRequest), "only topic configs can be altered; broker settings live in the node's configuration".to_string()))
        } else if !ctx.permits(request, Operation::AlterConfigs, ResourceType::Topic, resource.resource_name.as_str()) {
            Err((code(ResponseError::TopicAuthorizationFailed), "not authorized to alter this topic's configs".to_string()))
        } else {
            let configs = resource
                .configs
                .iter()
                .filter_map(|c| c.value.as_ref().map(|v| (c.name.to_string(), v.to_string())))
                .collect();
            replace_topic_configs(ctx, resource.resource_name.as_str(), configs, body.validate_only).await
        };
        if let Err((error_code, why)) = outcome {
            result.error_code = error_code;
            result.error_message = message(why);
        }
        response.responses.push(result);
    }
    respond(request, &response)
}

async fn alter_topic(
    ctx: &KafkaContext,
    name: &str,
    changes: &[kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig],
    validate_only: bool,
) -> Result<(), (i16, String)> {
    let unknown = || (code(ResponseError::UnknownTopicOrPartition), format!("topic {name} does not exist"));
    let invalid = |why: String| (code(ResponseError::InvalidConfig), why);
    let topic = ctx.cluster.topic(name).ok_or_else(unknown)?;
    let mut delta = Vec::with_capacity(changes.len());
    for change in changes {
        let key = change.name.to_string();
        topic_config::key(&key).ok_or_else(|| invalid(format!("unknown topic config {key}")))?;
        let value = || change.value.as_ref().map(|v| v.to_string()).ok_or_else(|| invalid(format!("{key} needs a value for operation {}", change.config_operation)));
        delta.push(match change.config_operation {
            OP_SET => ConfigChange::Set(key.clone(), value()?),
            OP_DELETE => ConfigChange::Delete(key.clone()),
            OP_APPEND => ConfigChange::Append(key.clone(), value()?),
            OP_SUBTRACT => ConfigChange::Subtract(key.clone(), value()?),
            other => return Err(invalid(format!("unknown config operation {other}"))),
        });
    }
    // Checked against the configs as they are now; the metadata entry applies the changes (not
    // this result) to the configs as they are then, so concurrent changes of other keys stay.
    let configs = topic_config::apply_changes(&topic.configs, &delta, &ctx.cluster.config().log).map_err(invalid)?;
    check_topic_configs(ctx, &configs)?;
    if validate_only {
        return Ok(());
    }
    ctx.control.alter_topic_configs(name, delta).await.map_err(|e| (cluster_error_code(&e), e.to_string()))
}

/// Checks a topic's complete new set of overrides: every value, and plugin bindings that must
/// name loaded plugins accepting the topic's parameters.
fn check_topic_configs(ctx: &KafkaContext, configs: &BTreeMap<String, String>) -> Result<(), (i16, String)> {
    for (k, v) in configs {
        topic_config::validate(k, v).map_err(|why| (code(ResponseError::InvalidConfig), why))?;
    }
    ctx.plugins.check_topic_configs(configs).map_err(|why| (code(ResponseError::InvalidConfig), why))
}

/// Validates a topic's complete new set of overrides and, unless only validating, stores it.
async fn replace_topic_configs(ctx: &KafkaContext, name: &str, configs: BTreeMap<String, String>, validate_only: bool) -> Result<(), (i16, String)> {
    if ctx.cluster.topic(name).is_none() {
        return Err((code(ResponseError::UnknownTopicOrPartition), format!("topic {name} does not exist")));
    }
    // A refused binding leaves the topic's configs as they were.
    check_topic_configs(ctx, &configs)?;
    if validate_only {
        return Ok(());
    }
    ctx.control.set_topic_configs(name, configs).await.map_err(|e| (cluster_error_code(&e), e.to_string()))
}

fn broker_configs(ctx: &KafkaContext) -> Vec<(&'static str, String, ConfigType)> {
    let config = ctx.cluster.config();
    vec![
        ("broker.id", ctx.node_id.to_string(), ConfigType::Int),
        ("auto.create.topics.enable", config.kafka.auto_create_topics.to_string(), ConfigType::String),
        ("num.partitions", config.kafka.default_partitions.to_string(), ConfigType::Int),
        ("socket.request.max.bytes", config.kafka.max_request_bytes.to_string(), ConfigType::Int),
        ("message.max.bytes", config.log.max_message_bytes.to_string(), ConfigType::Int),
        ("log.segment.bytes", config.log.segment_bytes.to_string(), ConfigType::Int),
        ("log.retention.ms", config.log.retention_ms.to_string(), ConfigType::Long),
        ("log.retention.bytes", config.log.retention_bytes.to_string(), ConfigType::Long),
    ]
}
