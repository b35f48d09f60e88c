//! Request and response helpers shared by the routes: bounded JSON bodies and JSON replies.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use rds_protocol::{messages, HEADER_MAX_RESPONSE_BYTES, MAX_JSON_BODY_BYTES};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ApiError;

pub type Body = Full<Bytes>;

/// A JSON reply with `status`.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    // Our reply types always serialise.
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

pub fn error(err: &ApiError) -> Response<Body> {
    let mut resp = json(err.status(), &err.body());
    if let ApiError::MethodNotAllowed { allow } = err {
        resp.headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static(allow));
    }
    resp
}

/// Reads a JSON body of at most [`MAX_JSON_BODY_BYTES`], refusing larger ones as soon as that is known
/// (from `Content-Length`, or while reading).
pub async fn read_json<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_JSON_BODY_BYTES as u64) {
        return Err(ApiError::BodyTooLarge);
    }
    let collected = Limited::new(req.into_body(), MAX_JSON_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                ApiError::BodyTooLarge
            } else {
                ApiError::BadRequest {
                    message: "Could not read request body".into(),
                    detail: Some(e.to_string()),
                }
            }
        })?;
    serde_json::from_slice(&collected.to_bytes()).map_err(|e| ApiError::BadRequest {
        message: messages::INVALID_JSON.into(),
        detail: Some(e.to_string()),
    })
}

/// The manager's body budget (`X-RDS-Max-Response-Bytes`), if it sent a valid one.
pub fn max_response_bytes(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(HEADER_MAX_RESPONSE_BYTES)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_header() {
        let mut h = HeaderMap::new();
        assert_eq!(max_response_bytes(&h), None);
        h.insert(HEADER_MAX_RESPONSE_BYTES, HeaderValue::from_static("4096"));
        assert_eq!(max_response_bytes(&h), Some(4096));
        h.insert(HEADER_MAX_RESPONSE_BYTES, HeaderValue::from_static("-1"));
        assert_eq!(max_response_bytes(&h), None);
    }

    #[test]
    fn method_not_allowed_names_the_allowed_one() {
        let resp = error(&ApiError::MethodNotAllowed { allow: "GET" });
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(resp.headers()["allow"], "GET");
        assert_eq!(resp.headers()["content-type"], "application/json");
    }
}
