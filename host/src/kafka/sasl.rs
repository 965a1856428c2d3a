//! SASL on one connection: SaslHandshake (v1) picks a mechanism, SaslAuthenticate carries its
//! messages (PLAIN: one; SCRAM: two), and the connection then acts as the user. Until then it
//! may only ask for ApiVersions. A failed authentication is answered with
//! SASL_AUTHENTICATION_FAILED, the same for an unknown user and a wrong password, and closes
//! the connection. A v0 handshake (unframed tokens, before Kafka 1.0) is answered with
//! ILLEGAL_SASL_STATE and closed.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse};
use kafka_protocol::protocol::StrBytes;
use tracing::{debug, info};

use super::KafkaContext;
use super::api::respond as encode;
use super::frame::{FrameError, Request, decode_body};
use crate::security::scram::{self, Mechanism, ScramServer};
use crate::security::{PLAIN, SecurityState, principal_of};

/// Where a connection is in authenticating.
enum State {
    /// Before SaslHandshake.
    Start,
    /// PLAIN chosen; its one message is next.
    Plain,
    /// A SCRAM mechanism chosen; the client's first message is next.
    ScramFirst(Mechanism),
    /// The server's first message sent; the client's final one is next.
    ScramFinal(ScramServer),
    /// Authenticated as this principal.
    Done(Arc<str>),
    /// A step failed; the connection closes.
    Failed,
}

/// One connection's authentication.
pub struct Session {
    state: State,
}

/// A response to a SASL request, and whether the connection closes after it.
pub struct Answer {
    /// The encoded response.
    pub response: Bytes,
    /// Close after sending it.
    pub close: bool,
}

/// Whether `api` may be sent before authenticating.
pub fn allowed_before_auth(api: ApiKey) -> bool {
    matches!(api, ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate)
}

impl Session {
    /// A connection that has not authenticated yet.
    pub fn new() -> Session {
        Session { state: State::Start }
    }

    /// The principal, once authenticated.
    pub fn principal(&self) -> Option<&Arc<str>> {
        match &self.state {
            State::Done(principal) => Some(principal),
            _ => None,
        }
    }

    /// Answers a SaslHandshake or SaslAuthenticate request.
    pub async fn handle(&mut self, ctx: &KafkaContext, request: &Request) -> Result<Answer, FrameError> {
        match request.api_key {
            ApiKey::SaslHandshake => self.handshake(ctx, request),
            _ => self.authenticate(ctx, request).await,
        }
    }

    fn handshake(&mut self, ctx: &KafkaContext, request: &Request) -> Result<Answer, FrameError> {
        let body: SaslHandshakeRequest = decode_body(request)?;
        let enabled = &ctx.cluster.config().kafka.sasl.mechanisms;
        let mut response = SaslHandshakeResponse::default();
        response.mechanisms = enabled.iter().map(|m| StrBytes::from_string(m.clone())).collect();
        let wanted = body.mechanism.as_str();
        let mut close = false;
        if !matches!(self.state, State::Start) || request.header.request_api_version == 0 {
            response.error_code = ResponseError::IllegalSaslState.code();
            self.state = State::Failed;
            close = true;
        } else if !enabled.iter().any(|m| m == wanted) {
            // The client may pick another one from the list.
            response.error_code = ResponseError::UnsupportedSaslMechanism.code();
        } else if wanted == PLAIN {
            self.state = State::Plain;
        } else if let Some(mechanism) = Mechanism::from_name(wanted) {
            self.state = State::ScramFirst(mechanism);
        }
        Ok(Answer { response: encode(request, &response)?, close })
    }

    async fn authenticate(&mut self, ctx: &KafkaContext, request: &Request) -> Result<Answer, FrameError> {
        let body: SaslAuthenticateRequest = decode_body(request)?;
        let security = ctx.cluster.security();
        let outcome = match std::mem::replace(&mut self.state, State::Failed) {
            State::Plain => {
                // PBKDF2 takes milliseconds: off the async workers.
                let checked = tokio::task::spawn_blocking(move || plain_login(&security, &body.auth_bytes)).await;
                checked.unwrap_or(Err(scram::ScramError::BadProof)).map(|user| {
                    self.state = State::Done(principal_of(&user).into());
                    Bytes::new()
                })
            }
            State::ScramFirst(mechanism) => scram::client_first_user(&body.auth_bytes).and_then(|user| {
                let credential = security.credential(&user, mechanism).cloned();
                let (server, first) = ScramServer::start(mechanism, &body.auth_bytes, credential)?;
                self.state = State::ScramFinal(server);
                Ok(Bytes::from(first))
            }),
            State::ScramFinal(server) => {
                let principal = principal_of(server.user());
                server.finish(&body.auth_bytes).map(|last| {
                    self.state = State::Done(principal.into());
                    Bytes::from(last)
                })
            }
            State::Start | State::Done(_) | State::Failed => {
                let mut response = SaslAuthenticateResponse::default();
                response.error_code = ResponseError::IllegalSaslState.code();
                response.error_message = Some(StrBytes::from_static_str("SaslAuthenticate without a SaslHandshake"));
                return Ok(Answer { response: encode(request, &response)?, close: true });
            }
        };
        let mut response = SaslAuthenticateResponse::default();
        let close = match outcome {
            Ok(bytes) => {
                response.auth_bytes = bytes;
                if let State::Done(principal) = &self.state {
                    ctx.metrics.authentications.with_label_values(&["succeeded"]).inc();
                    info!(peer = ?request.peer, %principal, "client authenticated");
                }
                false
            }
            Err(e) => {
                ctx.metrics.authentications.with_label_values(&["failed"]).inc();
                debug!(peer = ?request.peer, cause = %e, "SASL authentication failed");
                response.error_code = ResponseError::SaslAuthenticationFailed.code();
                response.error_message = Some(StrBytes::from_static_str("Authentication failed: invalid user name or password"));
                true
            }
        };
        Ok(Answer { response: encode(request, &response)?, close })
    }
}

/// The user a PLAIN message names, if its password matches one of the user's stored
/// credentials.
fn plain_login(security: &SecurityState, message: &[u8]) -> Result<String, scram::ScramError> {
    let (user, password) = scram::parse_plain(message)?;
    let Some(credentials) = security.users.get(&user) else {
        // As long as a wrong password takes: the time does not tell which users exist.
        if let Ok(decoy) = scram::decoy(Mechanism::Sha256, &user) {
            decoy.matches_password(Mechanism::Sha256, &password);
        }
        return Err(scram::ScramError::BadProof);
    };
    let mut matching = credentials.iter().filter(|(mechanism, credential)| credential.matches_password(**mechanism, &password));
    matching.next().map(|_| user).ok_or(scram::ScramError::BadProof)
}
