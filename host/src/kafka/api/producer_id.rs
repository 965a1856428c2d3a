//! InitProducerId: hands out producer ids for idempotent producers. As in Kafka, a request
//! without a transactional id always gets a fresh id (this also serves KIP-360 recovery, where a
//! producer that lost its sequence state asks again). Transactions are not supported yet, so a
//! transactional id is refused.

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::{code, respond};
use crate::kafka::KafkaContext;
use crate::kafka::frame::{FrameError, Request, decode_body};
use crate::security::Operation;

pub async fn handle(ctx: &KafkaContext, request: &Request) -> Result<Bytes, FrameError> {
    let body: InitProducerIdRequest = decode_body(request)?;
    let mut response = InitProducerIdResponse::default();
    response.producer_id = ProducerId(-1);
    response.producer_epoch = -1;
    // As in Kafka, WRITE on any topic also lets a producer be idempotent.
    let may_be_idempotent = !ctx.authorizer.enabled()
        || ctx.authorizer.may_write_some_topic(&ctx.cluster.security(), request.principal())
        || ctx.permits_cluster(request, Operation::IdempotentWrite);
    if body.transactional_id.is_some() {
        response.error_code = code(ResponseError::InvalidRequest);
    } else if !may_be_idempotent {
        response.error_code = code(ResponseError::ClusterAuthorizationFailed);
    } else {
        match ctx.control.allocate_producer_id().await {
            Ok(id) => {
                response.producer_id = ProducerId(id);
                response.producer_epoch = 0;
            }
            Err(e) => response.error_code = super::cluster_error_code(&e),
        }
    }
    respond(request, &response)
}
