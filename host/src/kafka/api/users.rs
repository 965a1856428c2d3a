//! DescribeUserScramCredentials and AlterUserScramCredentials: SCRAM users as Kafka's admin
//! clients manage them. The client salts the password; the broker stores only the keys derived
//! from it, in the metadata group. Reading needs DESCRIBE on the cluster, changing ALTER.

use std::collections::BTreeSet;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{CredentialInfo, DescribeUserScramCredentialsResult};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::{cluster_error_code, code, message, respond};
use crate::kafka::KafkaContext;
use crate::kafka::frame::{FrameError, Request, decode_body};
use crate::security::scram::{CredentialError, Mechanism, ScramCredential};
use crate::security::{Operation, SecurityChange};

pub fn describe(ctx: &KafkaContext, request: &Request) -> Result<Bytes, FrameError> {
    let body: DescribeUserScramCredentialsRequest = decode_body(request)?;
    let mut response = DescribeUserScramCredentialsResponse::default();
    if !ctx.permits_cluster(request, Operation::Describe) {
        response.error_code = code(ResponseError::ClusterAuthorizationFailed);
        return respond(request, &response);
    }
    let security = ctx.cluster.security();
    let named: Vec<String> = body.users.unwrap_or_default().iter().map(|u| u.name.to_string()).collect();
    let wanted: Vec<String> = if named.is_empty() { security.users.keys().cloned().collect() } else { named.clone() };
    for user in wanted {
        let mut result = DescribeUserScramCredentialsResult::default();
        result.user = StrBytes::from_string(user.clone());
        if named.iter().filter(|n| **n == user).count() > 1 {
            result.error_code = code(ResponseError::DuplicateResource);
            result.error_message = message(format!("user {user} is named more than once"));
        } else if let Some(credentials) = security.users.get(&user) {
            result.credential_infos = credentials
                .iter()
                .map(|(mechanism, c)| {
                    let mut info = CredentialInfo::default();
                    info.mechanism = mechanism.kafka_type();
                    info.iterations = i32::try_from(c.iterations).unwrap_or(i32::MAX);
                    info
                })
                .collect();
        } else {
            result.error_code = code(ResponseError::ResourceNotFound);
            result.error_message = message(format!("user {user} has no SCRAM credentials"));
        }
        response.results.push(result);
    }
    respond(request, &response)
}

pub async fn alter(ctx: &KafkaContext, request: &Request) -> Result<Bytes, FrameError> {
    let body: AlterUserScramCredentialsRequest = decode_body(request)?;
    let allowed = ctx.permits_cluster(request, Operation::Alter);
    let security = ctx.cluster.security();
    // Each user's outcome, in the order users first appear, and the changes to make for it.
    let mut outcomes: Vec<(String, Result<Vec<SecurityChange>, (i16, String)>)> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut duplicated = BTreeSet::new();
    let names = body.deletions.iter().map(|d| (d.name.to_string(), d.mechanism)).chain(body.upsertions.iter().map(|u| (u.name.to_string(), u.mechanism)));
    for (user, mechanism) in names {
        if !seen.insert((user.clone(), mechanism)) {
            duplicated.insert(user.clone());
        }
        if !outcomes.iter().any(|(u, _)| *u == user) {
            outcomes.push((user, Ok(Vec::new())));
        }
    }
    let fail = |outcomes: &mut Vec<(String, Result<Vec<SecurityChange>, (i16, String)>)>, user: &str, error: ResponseError, why: String| {
        if let Some((_, outcome)) = outcomes.iter_mut().find(|(u, _)| u == user)
            && outcome.is_ok()
        {
            *outcome = Err((code(error), why));
        }
    };
    let add = |outcomes: &mut Vec<(String, Result<Vec<SecurityChange>, (i16, String)>)>, user: &str, change: SecurityChange| {
        if let Some((_, Ok(changes))) = outcomes.iter_mut().find(|(u, _)| u == user) {
            changes.push(change);
        }
    };
    for user in outcomes.iter().map(|(u, _)| u.clone()).collect::<Vec<_>>() {
        if !allowed {
            fail(&mut outcomes, &user, ResponseError::ClusterAuthorizationFailed, "not authorized to alter users".into());
        } else if user.is_empty() {
            fail(&mut outcomes, &user, ResponseError::UnacceptableCredential, "a user name must not be empty".into());
        } else if duplicated.contains(&user) {
            fail(&mut outcomes, &user, ResponseError::DuplicateResource, format!("user {user} has one mechanism changed more than once"));
        }
    }
    for deletion in &body.deletions {
        let user = deletion.name.to_string();
        match Mechanism::from_kafka_type(deletion.mechanism) {
            None => fail(&mut outcomes, &user, ResponseError::UnsupportedSaslMechanism, format!("unknown SCRAM mechanism {}", deletion.mechanism)),
            Some(m) if security.credential(&user, m).is_none() => fail(&mut outcomes, &user, ResponseError::ResourceNotFound, format!("user {user} has no {} credential", m.name())),
            Some(mechanism) => add(&mut outcomes, &user, SecurityChange::SetCredential { user: user.clone(), mechanism, credential: None }),
        }
    }
    for upsertion in &body.upsertions {
        let user = upsertion.name.to_string();
        let Some(mechanism) = Mechanism::from_kafka_type(upsertion.mechanism) else {
            fail(&mut outcomes, &user, ResponseError::UnsupportedSaslMechanism, format!("unknown SCRAM mechanism {}", upsertion.mechanism));
            continue;
        };
        match ScramCredential::from_salted_password(mechanism, &upsertion.salt, &upsertion.salted_password, upsertion.iterations.into()) {
            Ok(credential) => add(&mut outcomes, &user, SecurityChange::SetCredential { user: user.clone(), mechanism, credential: Some(credential) }),
            Err(e @ CredentialError::Random) => fail(&mut outcomes, &user, ResponseError::UnknownServerError, e.to_string()),
            Err(e) => fail(&mut outcomes, &user, ResponseError::UnacceptableCredential, e.to_string()),
        }
    }
    let mut response = AlterUserScramCredentialsResponse::default();
    for (user, outcome) in outcomes {
        let mut result = AlterUserScramCredentialsResult::default();
        result.user = StrBytes::from_string(user);
        let applied = match outcome {
            Ok(changes) => apply_all(ctx, changes).await,
            Err(refused) => Err(refused),
        };
        if let Err((error_code, why)) = applied {
            result.error_code = error_code;
            result.error_message = message(why);
        }
        response.results.push(result);
    }
    respond(request, &response)
}

async fn apply_all(ctx: &KafkaContext, changes: Vec<SecurityChange>) -> Result<(), (i16, String)> {
    for change in changes {
        ctx.control.change_security(change).await.map_err(|e| (cluster_error_code(&e), e.to_string()))?;
    }
    Ok(())
}
