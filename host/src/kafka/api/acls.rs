//! CreateAcls, DescribeAcls and DeleteAcls: ACLs stored in the metadata group, so every node
//! enforces the same ones once the change applies. Changing them needs ALTER on the cluster,
//! reading them DESCRIBE.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{DeleteAclsFilterResult, DeleteAclsMatchingAcl};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse, DescribeAclsRequest, DescribeAclsResponse};
use kafka_protocol::protocol::StrBytes;

use super::{cluster_error_code, code, message, respond};
use crate::kafka::KafkaContext;
use crate::kafka::frame::{FrameError, Request, decode_body};
use crate::security::{AclBinding, AclFilter, Operation, SecurityChange};

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub async fn create(ctx: &KafkaContext, request: &Request) -> Result<Bytes, FrameError> {
    let body: CreateAclsRequest = decode_body(request)?;
    let allowed = ctx.permits_cluster(request, Operation::Alter);
    let mut results = Vec::with_capacity(body.creations.len());
    let mut valid = Vec::new();
    for c in &body.creations {
        let mut result = AclCreationResult::default();
        if !allowed {
            result.error_code = code(ResponseError::ClusterAuthorizationFailed);
        } else {
            match AclBinding::new(c.resource_type, c.resource_name.as_str(), c.resource_pattern_type, c.principal.as_str(), c.host.as_str(), c.operation, c.permission_type) {
                Ok(binding) => valid.push((results.len(), binding)),
                Err(e) => {
                    result.error_code = code(ResponseError::InvalidRequest);
                    result.error_message = message(e.to_string());
                }
            }
        }
        results.push(result);
    }
    if !valid.is_empty() {
        let bindings = valid.iter().map(|(_, b)| b.clone()).collect();
        if let Err(e) = ctx.control.change_security(SecurityChange::AddAcls(bindings)).await {
            for (i, _) in &valid {
                results[*i].error_code = cluster_error_code(&e);
                results[*i].error_message = message(e.to_string());
            }
        }
    }
    let mut response = CreateAclsResponse::default();
    response.results = results;
    respond(request, &response)
}

pub fn describe(ctx: &KafkaContext, request: &Request) -> Result<Bytes, FrameError> {
    let body: DescribeAclsRequest = decode_body(request)?;
    let mut response = DescribeAclsResponse::default();
    if !ctx.permits_cluster(request, Operation::Describe) {
        response.error_code = code(ResponseError::ClusterAuthorizationFailed);
        return respond(request, &response);
    }
    let filter = AclFilter::new(
        body.resource_type_filter,
        body.resource_name_filter.as_ref().map(|s| s.as_str()),
        body.pattern_type_filter,
        body.principal_filter.as_ref().map(|s| s.as_str()),
        body.host_filter.as_ref().map(|s| s.as_str()),
        body.operation,
        body.permission_type,
    );
    let filter = match filter {
        Ok(f) => f,
        Err(e) => {
            response.error_code = code(ResponseError::InvalidRequest);
            response.error_message = message(e.to_string());
            return respond(request, &response);
        }
    };
    let security = ctx.cluster.security();
    let mut by_resource: BTreeMap<(i8, &str, i8), Vec<AclDescription>> = BTreeMap::new();
    for acl in security.acls.iter().filter(|a| filter.matches(a)) {
        let mut d = AclDescription::default();
        d.principal = text(&acl.principal);
        d.host = text(&acl.host);
        d.operation = acl.operation.code();
        d.permission_type = acl.permission.code();
        by_resource.entry((acl.resource_type.code(), &acl.resource_name, acl.pattern_type.code())).or_default().push(d);
    }
    response.resources = by_resource
        .into_iter()
        .map(|((resource_type, name, pattern_type), acls)| {
            let mut r = DescribeAclsResource::default();
            r.resource_type = resource_type;
            r.resource_name = text(name);
            r.pattern_type = pattern_type;
            r.acls = acls;
            r
        })
        .collect();
    respond(request, &response)
}

pub async fn delete(ctx: &KafkaContext, request: &Request) -> Result<Bytes, FrameError> {
    let body: DeleteAclsRequest = decode_body(request)?;
    let allowed = ctx.permits_cluster(request, Operation::Alter);
    let security = ctx.cluster.security();
    let mut results = Vec::with_capacity(body.filters.len());
    let mut doomed: Vec<AclBinding> = Vec::new();
    for f in &body.filters {
        let mut result = DeleteAclsFilterResult::default();
        let filter = AclFilter::new(
            f.resource_type_filter,
            f.resource_name_filter.as_ref().map(|s| s.as_str()),
            f.pattern_type_filter,
            f.principal_filter.as_ref().map(|s| s.as_str()),
            f.host_filter.as_ref().map(|s| s.as_str()),
            f.operation,
            f.permission_type,
        );
        match filter {
            _ if !allowed => result.error_code = code(ResponseError::ClusterAuthorizationFailed),
            Err(e) => {
                result.error_code = code(ResponseError::InvalidRequest);
                result.error_message = message(e.to_string());
            }
            Ok(filter) => {
                for acl in security.acls.iter().filter(|a| filter.matches(a)) {
                    result.matching_acls.push(matching(acl));
                    doomed.push(acl.clone());
                }
            }
        }
        results.push(result);
    }
    if !doomed.is_empty()
        && let Err(e) = ctx.control.change_security(SecurityChange::RemoveAcls(doomed)).await
    {
        for result in results.iter_mut().filter(|r| !r.matching_acls.is_empty()) {
            result.error_code = cluster_error_code(&e);
            result.error_message = message(e.to_string());
            result.matching_acls.clear();
        }
    }
    let mut response = DeleteAclsResponse::default();
    response.filter_results = results;
    respond(request, &response)
}

fn matching(acl: &AclBinding) -> DeleteAclsMatchingAcl {
    let mut m = DeleteAclsMatchingAcl::default();
    m.resource_type = acl.resource_type.code();
    m.resource_name = text(&acl.resource_name);
    m.pattern_type = acl.pattern_type.code();
    m.principal = text(&acl.principal);
    m.host = text(&acl.host);
    m.operation = acl.operation.code();
    m.permission_type = acl.permission.code();
    m
}
