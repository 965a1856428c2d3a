//! ApiVersions: which APIs and versions this broker serves. A version we do not know is
//! answered at v0 with UNSUPPORTED_VERSION and the full list, so the client can retry lower.

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiVersionsResponse;
use kafka_protocol::messages::api_versions_response::ApiVersion;

use super::{SUPPORTED, code, supported_versions};
use crate::kafka::frame::{FrameError, Request, encode_response};

pub fn handle(request: &Request) -> Result<Bytes, FrameError> {
    let mut response = ApiVersionsResponse::default();
    response.api_keys = SUPPORTED
        .iter()
        .filter_map(|(key, _, _)| {
            let range = supported_versions(*key)?;
            let mut v = ApiVersion::default();
            v.api_key = *key as i16;
            v.min_version = range.min;
            v.max_version = range.max;
            Some(v)
        })
        .collect();
    let version = request.header.request_api_version;
    let served = supported_versions(request.api_key).is_some_and(|r| version >= r.min && version <= r.max);
    let response_version = if served {
        version
    } else {
        response.error_code = code(ResponseError::UnsupportedVersion);
        0
    };
    encode_response(&request.header, request.api_key, response_version, &response).map_err(|e| FrameError::Malformed {
        api: request.api_key,
        version,
        cause: e.to_string(),
    })
}
