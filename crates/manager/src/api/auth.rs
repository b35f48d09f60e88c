//! `X-API-Key` on every `/v1` route, checked before routing so an unknown `/v1` path answers 401
//! without a key and 404 with one. The master key is compared as SHA-256 digests in constant time.

use super::{error::ApiError, AppState};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

pub async fn require_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get("x-api-key")
        .map(|v| digest_bytes(v.as_bytes()));
    let ok = presented.is_some_and(|d| bool::from(d.ct_eq(&state.api_key_digest[..])));
    if !ok {
        return ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
    }
    next.run(req).await
}

/// `/metrics` also takes `Authorization: Bearer <key>`, which scrapers send.
pub async fn require_scraper(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let h = req.headers();
    let bearer = h
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let candidates = [
        h.get("x-api-key").map(|v| v.as_bytes()),
        bearer.map(str::as_bytes),
    ];
    let ok = candidates
        .into_iter()
        .flatten()
        .any(|k| bool::from(digest_bytes(k).ct_eq(&state.api_key_digest[..])));
    if !ok {
        return ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
    }
    next.run(req).await
}

fn digest_bytes(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}
