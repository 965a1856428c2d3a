//! Consumer group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups. The decisions live in
//! [`crate::groups`]; these handlers translate between the wire and the coordinator.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::{code, message, respond};
use crate::clock::now_ms;
use crate::groups::group::JoinRequest;
use crate::groups::offsets::CommittedOffset;
use crate::groups::{CommitRequest, GroupSummary};
use crate::kafka::KafkaContext;
use crate::kafka::frame::{FrameError, Request, decode_body};
use crate::security::{Operation, ResourceType};

const KEY_TYPE_GROUP: i8 = 0;

/// Whether the request's principal may do `operation` on the group.
fn on_group(ctx: &KafkaContext, request: &Request, operation: Operation, group: &str) -> bool {
    ctx.permits(request, operation, ResourceType::Group, group)
}

/// GROUP_AUTHORIZATION_FAILED.
fn group_refused() -> i16 {
    code(ResponseError::GroupAuthorizationFailed)
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub fn find_coordinator(ctx: &KafkaContext, request: &Request) -> Result<Bytes, FrameError> {
    let body: FindCoordinatorRequest = decode_body(request)?;
    let mut response = FindCoordinatorResponse::default();
    let transactions = body.key_type != KEY_TYPE_GROUP;
    let find = |key: &str| -> Result<(i32, String, i32), (i16, String)> {
        if !transactions && !on_group(ctx, request, Operation::Describe, key) {
            return Err((group_refused(), "not authorized to describe this group".to_string()));
        }
        if transactions {
            return Err((code(ResponseError::CoordinatorNotAvailable), "only consumer group coordinators exist here; transactions are not supported".to_string()));
        }
        coordinator_of(ctx, key).ok_or((code(ResponseError::CoordinatorNotAvailable), "the group's offsets partition has no leader yet".to_string()))
    };
    if request.header.request_api_version >= 4 {
        response.coordinators = body
            .coordinator_keys
            .iter()
            .map(|key| {
                let mut c = Coordinator::default();
                c.key = key.clone();
                match find(key.as_str()) {
                    Ok((id, host, port)) => {
                        c.node_id = BrokerId(id);
                        c.host = text(&host);
                        c.port = port;
                    }
                    Err((error, why)) => {
                        c.node_id = BrokerId(-1);
                        c.port = -1;
                        c.error_code = error;
                        c.error_message = message(why);
                    }
                }
                c
            })
            .collect();
    } else {
        match find(body.key.as_str()) {
            Ok((id, host, port)) => {
                response.node_id = BrokerId(id);
                response.host = text(&host);
                response.port = port;
            }
            Err((error, why)) => {
                response.node_id = BrokerId(-1);
                response.port = -1;
                response.error_code = error;
                response.error_message = message(why);
            }
        }
    }
    respond(request, &response)
}

/// The broker leading the offsets partition of `group`: (id, host, port).
fn coordinator_of(ctx: &KafkaContext, group: &str) -> Option<(i32, String, i32)> {
    let topic = ctx.cluster.topic(crate::groups::offsets::OFFSETS_TOPIC)?;
    let index = crate::groups::offsets::partition_for(group, topic.partitions.len() as i32);
    let leader = i32::try_from(ctx.control.replication().leadership(crate::cluster::group_of(topic.id, index)).leader).ok().filter(|l| *l > 0)?;
    super::metadata::brokers(ctx).into_iter().find(|(id, _, _)| *id == leader)
}

pub async fn join_group(ctx: &KafkaContext, request: &Request) -> Result<Bytes, FrameError> {
    let body: JoinGroupRequest = decode_body(request)?;
    let version = request.header.request_api_version;
    let session = Duration::from_millis(body.session_timeout_ms.max(0) as u64);
    // v0 has no rebalance timeout: the session timeout served for both.
    let rebalance = if version >= 1 { Duration::from_millis(body.rebalance_timeout_ms.max(0) as u64) } else { session };
    if !on_group(ctx, request, Operation::Read, body.group_id.as_str()) {
        let mut response = JoinGroupResponse::default();
        response.error_code = group_refused();
        response.generation_id = -1;
        response.protocol_name = (version < 7).then(StrBytes::default);
        response.member_id = body.member_id;
        return respond(request, &response);
    }
    let join = JoinRequest {
        member_id: body.member_id.to_string(),
        instance_id: body.group_instance_id.map(|s| s.to_string()),
        requires_known_member_id: version >= 4,
        client_id: request.header.client_id.as_ref().map(|s| s.to_string()).unwrap_or_default(),
        client_host: request.peer.map(|p| format!("/{}", p.ip())).unwrap_or_default(),
        session_timeout: session,
        rebalance_timeout: rebalance,
        protocol_type: body.protocol_type.to_string(),
        protocols: body.protocols.into_iter().map(|p| (p.name.to_string(), p.metadata)).collect(),
    };
    let outcome = ctx.groups.join(body.group_id.as_str(), join).await;
    let mut response = JoinGroupResponse::default();
    response.error_code = outcome.error;
    response.generation_id = outcome.generation;
    response.protocol_type = outcome.protocol_type.map(|s| text(&s));
    response.protocol_name = outcome.protocol_name.map(|s| text(&s));
    if version < 7 && response.protocol_name.is_none() {
        // Before v7 the protocol name is not nullable.
        response.protocol_name = Some(StrBytes::default());
    }
    response.leader = text(&outcome.leader);
    response.member_id = text(&outcome.member_id);
    response.members = outcome
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            let mut m = JoinGroupResponseMember::default();
            m.member_id = text(&id);
            m.group_instance_id = instance.map(|s| text(&s));
            m.metadata = metadata;
            m
        })
        .collect();
    respond(request, &response)
}

pub async fn sync_group(ctx: &KafkaContext, request: &Request) -> Result<Bytes, FrameError> {
    let body: SyncGroupRequest = decode_body(request)?;
    if !on_group(ctx, request, Operation::Read, body.group_id.as_str()) {
        let mut response = SyncGroupResponse::default();
        response.error_code = group_refused();
        return respond(request, &response);
    }
    let assignments = body.assignments.into_iter().map(|a| (a.member_id.to_string(), a.assignment)).collect();
    let instance = body.group_instance_id.map(|s| s.to_string());
    // v5+ names the protocol type and assignor; they must be the group's.
    let protocol = (body.protocol_type.as_ref().map(|s| s.to_string()), body.protocol_name.as_ref().map(|s| s.to_string()));
    let outcome = ctx.groups.sync(body.group_id.as_str(), body.member_id.as_str(), instance.as_deref(), body.generation_id, protocol, assignments).await;
    let mut response = SyncGroupResponse::default();
    response.error_code = outcome.error;
    response.protocol_type = outcome.protocol_type.map(|s| text(&s));
    response.protocol_name = outcome.protocol_name.map(|s| text(&s));
    response.assignment = outcome.assignment;
    respond(request, &response)
}

pub fn heartbeat(ctx: &KafkaContext, request: &Request) -> Result<Bytes, FrameError> {
    let body: HeartbeatRequest = decode_body(request)?;
    let instance = body.group_instance_id.map(|s| s.to_string());
    let mut response = HeartbeatResponse::default();
    if !on_group(ctx, request, Operation::Read, body.group_id.as_str()) {
        response.error_code = group_refused();
        return respond(request, &response);
    }
    response.error_code = ctx.groups.heartbeat(body.group_id.as_str(), body.member_id.as_str(), instance.as_deref(), body.generation_id);
    respond(request, &response)
}

pub fn leave_group(ctx: &KafkaContext, request: &Request) -> Result<Bytes, FrameError> {
    let body: LeaveGroupRequest = decode_body(request)?;
    let version = request.header.request_api_version;
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        body.members.iter().map(|m| (m.member_id.to_string(), m.group_instance_id.as_ref().map(|s| s.to_string()))).collect()
    } else {
        vec![(body.member_id.to_string(), None)]
    };
    let mut response = LeaveGroupResponse::default();
    if !on_group(ctx, request, Operation::Read, body.group_id.as_str()) {
        response.error_code = group_refused();
        return respond(request, &response);
    }
    match ctx.groups.leave(body.group_id.as_str(), &members) {
        Ok(codes) if version >= 3 => {
            response.members = members
                .iter()
                .zip(codes)
                .map(|((id, instance), error)| {
                    let mut m = MemberResponse::default();
                    m.member_id = text(id);
                    m.group_instance_id = instance.as_deref().map(text);
                    m.error_code = error;
                    m
                })
                .collect();
        }
        Ok(codes) => response.error_code = codes.first().copied().unwrap_or(0),
        Err(e) => response.error_code = code(e),
    }
    respond(request, &response)
}

pub async fn offset_commit(ctx: &KafkaContext, request: &Request) -> Result<Bytes, FrameError> {
    let body: OffsetCommitRequest = decode_body(request)?;
    let now = now_ms();
    // OffsetCommit v2-v4 may name a retention for these offsets (-1: the broker's).
    let expire_timestamp = (body.retention_time_ms >= 0).then(|| now.saturating_add(body.retention_time_ms));
    let group_allowed = on_group(ctx, request, Operation::Read, body.group_id.as_str());
    // Partitions of topics the principal may not read are refused here, the rest committed.
    let topic_allowed: Vec<bool> = body.topics.iter().map(|t| ctx.permits(request, Operation::Read, ResourceType::Topic, t.name.as_str())).collect();
    let mut commits = Vec::new();
    for (topic, _) in body.topics.iter().zip(&topic_allowed).filter(|(_, allowed)| group_allowed && **allowed) {
        for p in &topic.partitions {
            commits.push(CommitRequest {
                topic: topic.name.to_string(),
                partition: p.partition_index,
                offset: CommittedOffset {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()).unwrap_or_default(),
                    commit_timestamp: now,
                    expire_timestamp,
                },
            });
        }
    }
    let instance = body.group_instance_id.map(|s| s.to_string());
    let codes = if commits.is_empty() {
        Vec::new()
    } else {
        ctx.groups.commit(body.group_id.as_str(), body.member_id.as_str(), instance.as_deref(), body.generation_id_or_member_epoch, commits).await
    };
    let mut codes = codes.into_iter();
    let mut response = OffsetCommitResponse::default();
    response.topics = body
        .topics
        .iter()
        .zip(&topic_allowed)
        .map(|(topic, allowed)| {
            let mut t = OffsetCommitResponseTopic::default();
            t.name = topic.name.clone();
            t.partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let mut r = OffsetCommitResponsePartition::default();
                    r.partition_index = p.partition_index;
                    r.error_code = match (group_allowed, allowed) {
                        (false, _) => group_refused(),
                        (true, false) => code(ResponseError::TopicAuthorizationFailed),
                        (true, true) => codes.next().unwrap_or(0),
                    };
                    r
                })
                .collect();
            t
        })
        .collect();
    respond(request, &response)
}

pub fn offset_fetch(ctx: &KafkaContext, request: &Request) -> Result<Bytes, FrameError> {
    let body: OffsetFetchRequest = decode_body(request)?;
    let mut response = OffsetFetchResponse::default();
    if request.header.request_api_version >= 8 {
        response.groups = body
            .groups
            .iter()
            .map(|g| {
                let wanted = g.topics.as_ref().map(|ts| ts.iter().map(|t| (t.name.to_string(), t.partition_indexes.clone())).collect());
                let mut group = OffsetFetchResponseGroup::default();
                group.group_id = g.group_id.clone();
                if !on_group(ctx, request, Operation::Describe, g.group_id.as_str()) {
                    group.error_code = group_refused();
                    return group;
                }
                // Only the coordinator has every committed offset applied; any other node may lag.
                if !ctx.groups.is_coordinator(g.group_id.as_str()) {
                    group.error_code = code(ResponseError::NotCoordinator);
                    return group;
                }
                group.topics = visible_offsets(ctx, request, g.group_id.as_str(), wanted)
                    .into_iter()
                    .map(|(topic, partitions)| {
                        let mut t = OffsetFetchResponseTopics::default();
                        t.name = TopicName(text(&topic));
                        t.partitions = partitions
                            .into_iter()
                            .map(|(index, committed)| {
                                let mut p = OffsetFetchResponsePartitions::default();
                                p.partition_index = index;
                                (p.committed_offset, p.committed_leader_epoch, p.metadata) = fields(committed);
                                p
                            })
                            .collect();
                        t
                    })
                    .collect();
                group
            })
            .collect();
    } else if let Some(error) = [
        (!on_group(ctx, request, Operation::Describe, body.group_id.as_str())).then(group_refused),
        // Only the coordinator has every committed offset applied; any other node may lag.
        (!ctx.groups.is_coordinator(body.group_id.as_str())).then(|| code(ResponseError::NotCoordinator)),
    ]
    .into_iter()
    .flatten()
    .next()
    {
        // v2+ carry a top-level error; v0 and v1 only one per listed partition.
        response.error_code = error;
        response.topics = body
            .topics
            .iter()
            .flatten()
            .map(|t| {
                let mut topic = OffsetFetchResponseTopic::default();
                topic.name = t.name.clone();
                topic.partitions = t
                    .partition_indexes
                    .iter()
                    .map(|&index| {
                        let mut p = OffsetFetchResponsePartition::default();
                        p.partition_index = index;
                        p.committed_offset = -1;
                        p.error_code = error;
                        p
                    })
                    .collect();
                topic
            })
            .collect();
    } else {
        let wanted = body.topics.as_ref().map(|ts| ts.iter().map(|t| (t.name.to_string(), t.partition_indexes.clone())).collect());
        response.topics = visible_offsets(ctx, request, body.group_id.as_str(), wanted)
            .into_iter()
            .map(|(topic, partitions)| {
                let mut t = OffsetFetchResponseTopic::default();
                t.name = TopicName(text(&topic));
                t.partitions = partitions
                    .into_iter()
                    .map(|(index, committed)| {
                        let mut p = OffsetFetchResponsePartition::default();
                        p.partition_index = index;
                        (p.committed_offset, p.committed_leader_epoch, p.metadata) = fields(committed);
                        p
                    })
                    .collect();
                t
            })
            .collect();
    }
    respond(request, &response)
}

/// The group's committed offsets of the topics the principal may describe.
fn visible_offsets(ctx: &KafkaContext, request: &Request, group: &str, wanted: Option<Vec<(String, Vec<i32>)>>) -> Vec<crate::groups::TopicOffsets> {
    let mut offsets = ctx.groups.fetch_offsets(group, wanted);
    offsets.retain(|(topic, _)| ctx.may(request, Operation::Describe, ResourceType::Topic, topic));
    offsets
}

/// (offset, leader epoch, metadata) of a committed offset; -1 and empty when there is none.
fn fields(committed: Option<CommittedOffset>) -> (i64, i32, Option<StrBytes>) {
    match committed {
        Some(c) => (c.offset, c.leader_epoch, Some(text(&c.metadata))),
        None => (-1, -1, Some(StrBytes::default())),
    }
}

pub fn list_groups(ctx: &KafkaContext, request: &Request) -> Result<Bytes, FrameError> {
    let body: ListGroupsRequest = decode_body(request)?;
    let mut response = ListGroupsResponse::default();
    // As in Kafka: DESCRIBE on the cluster lists every group, otherwise those the principal
    // may describe.
    let all = ctx.may(request, Operation::Describe, ResourceType::Cluster, crate::security::acl::CLUSTER_RESOURCE);
    response.groups = ctx
        .groups
        .list()
        .into_iter()
        .filter(|g| all || ctx.may(request, Operation::Describe, ResourceType::Group, &g.id))
        .filter(|g| body.states_filter.is_empty() || body.states_filter.iter().any(|s| s.as_str().eq_ignore_ascii_case(g.state)))
        .map(|g| {
            let mut l = ListedGroup::default();
            l.group_id = GroupId(text(&g.id));
            l.protocol_type = text(&g.protocol_type);
            l.group_state = text(g.state);
            l.group_type = text("classic");
            l
        })
        .collect();
    respond(request, &response)
}

pub fn describe_groups(ctx: &KafkaContext, request: &Request) -> Result<Bytes, FrameError> {
    let body: DescribeGroupsRequest = decode_body(request)?;
    let mut response = DescribeGroupsResponse::default();
    response.groups = body
        .groups
        .iter()
        .map(|id| {
            if !on_group(ctx, request, Operation::Describe, id.as_str()) {
                let mut g = DescribedGroup::default();
                g.group_id = id.clone();
                g.error_code = group_refused();
                return g;
            }
            let summary = match ctx.groups.describe(id.as_str()) {
                Ok(summary) => summary,
                Err(e) => {
                    let mut g = DescribedGroup::default();
                    g.group_id = id.clone();
                    g.error_code = code(e);
                    return g;
                }
            };
            let summary = summary.unwrap_or_else(|| GroupSummary {
                id: id.to_string(),
                state: "Dead",
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            });
            // As Kafka: the protocol and the members' metadata and assignments only once stable.
            let stable = summary.state == "Stable";
            let mut g = DescribedGroup::default();
            g.group_id = id.clone();
            g.group_state = text(summary.state);
            g.protocol_type = text(&summary.protocol_type);
            if stable {
                g.protocol_data = text(&summary.protocol);
            }
            g.members = summary
                .members
                .into_iter()
                .map(|(member_id, instance, client_id, host, metadata, assignment)| {
                    let mut m = DescribedGroupMember::default();
                    m.member_id = text(&member_id);
                    m.group_instance_id = instance.map(|s| text(&s));
                    m.client_id = text(&client_id);
                    m.client_host = text(&host);
                    if stable {
                        m.member_metadata = metadata;
                        m.member_assignment = assignment;
                    }
                    m
                })
                .collect();
            g
        })
        .collect();
    respond(request, &response)
}

pub async fn delete_groups(ctx: &KafkaContext, request: &Request) -> Result<Bytes, FrameError> {
    let body: DeleteGroupsRequest = decode_body(request)?;
    let mut response = DeleteGroupsResponse::default();
    for id in &body.groups_names {
        let mut r = DeletableGroupResult::default();
        r.group_id = id.clone();
        if !on_group(ctx, request, Operation::Delete, id.as_str()) {
            r.error_code = group_refused();
        } else if let Err(e) = ctx.groups.delete_group(id.as_str()).await {
            r.error_code = code(e);
        }
        response.results.push(r);
    }
    respond(request, &response)
}
