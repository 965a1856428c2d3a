//! DescribeUserScramCredentials and AlterUserScramCredentials: SCRAM users as Kafka's admin
//! clients manage them. The client salts the password; the broker stores only the keys derived
//! from it, in the metadata group. Reading needs DESCRIBE on the cluster, changing ALTER.

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
    // Every deletion, then every upsertion, checked on its own: its user, its mechanism as sent,
    // and the change to make or why not.
    let deletions = body.deletions.iter().map(|d| {
        let user = d.name.to_string();
        let change = match Mechanism::from_kafka_type(d.mechanism) {
            None => Err(refusal(ResponseError::UnsupportedSaslMechanism, format!("unknown SCRAM mechanism {}", d.mechanism))),
            Some(m) if security.credential(&user, m).is_none() => Err(refusal(ResponseError::ResourceNotFound, format!("user {user} has no {} credential", m.name()))),
            Some(mechanism) => Ok(SecurityChange::SetCredential { user: user.clone(), mechanism, credential: None }),
        };
        (user, d.mechanism, change)
    });
    let upsertions = body.upsertions.iter().map(|u| {
        let user = u.name.to_string();
        let change = Mechanism::from_kafka_type(u.mechanism)
            .ok_or_else(|| refusal(ResponseError::UnsupportedSaslMechanism, format!("unknown SCRAM mechanism {}", u.mechanism)))
            .and_then(|mechanism| match ScramCredential::from_salted_password(mechanism, &u.salt, &u.salted_password, u.iterations.into()) {
                Ok(credential) => Ok(SecurityChange::SetCredential { user: user.clone(), mechanism, credential: Some(credential) }),
                Err(e @ CredentialError::Random) => Err(refusal(ResponseError::UnknownServerError, e.to_string())),
                Err(e) => Err(refusal(ResponseError::UnacceptableCredential, e.to_string())),
            });
        (user, u.mechanism, change)
    });
    let checked: Vec<(String, i8, Result<SecurityChange, (i16, String)>)> = deletions.chain(upsertions).collect();
    // One result per user, in the order users first appear; a user's changes apply only if
    // every one of them is acceptable.
    let mut users: Vec<&str> = Vec::new();
    for (user, _, _) in &checked {
        if !users.contains(&user.as_str()) {
            users.push(user);
        }
    }
    let mut response = AlterUserScramCredentialsResponse::default();
    for user in users {
        let mine: Vec<_> = checked.iter().filter(|(u, _, _)| u == user).collect();
        let duplicated = mine.iter().enumerate().any(|(i, (_, m, _))| mine[..i].iter().any(|(_, earlier, _)| earlier == m));
        let outcome = if !allowed {
            Err(refusal(ResponseError::ClusterAuthorizationFailed, "not authorized to alter users".into()))
        } else if user.is_empty() {
            Err(refusal(ResponseError::UnacceptableCredential, "a user name must not be empty".into()))
        } else if duplicated {
            Err(refusal(ResponseError::DuplicateResource, format!("user {user} has one mechanism changed more than once")))
        } else {
            mine.iter().map(|(_, _, change)| change.clone()).collect::<Result<Vec<_>, _>>()
        };
        let applied = match outcome {
            Ok(changes) => apply_all(ctx, changes).await,
            Err(refused) => Err(refused),
        };
        let mut result = AlterUserScramCredentialsResult::default();
        result.user = StrBytes::from_string(user.to_string());
        if let Err((error_code, why)) = applied {
            result.error_code = error_code;
            result.error_message = message(why);
        }
        response.results.push(result);
    }
    respond(request, &response)
}

/// An error code and its message.
fn refusal(error: ResponseError, why: String) -> (i16, String) {
    (code(error), why)
}

async fn apply_all(ctx: &KafkaContext, changes: Vec<SecurityChange>) -> Result<(), (i16, String)> {
    for change in changes {
        ctx.control.change_security(change).await.map_err(|e| (cluster_error_code(&e), e.to_string()))?;
    }
    Ok(())
}
