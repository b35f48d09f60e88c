//! The envelope every response gets (`docs/reference/api.md` §1.1, §1.6): `X-Request-Id`,
//! `nosniff`, JSON bodies for axum's own 404/405, and the `requestId` (plus hidden detail) of 500s.

use super::error::InternalDetail;
use super::AppState;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tracing::Instrument;

pub const REQUEST_ID: &str = "x-request-id";

fn valid_request_id(v: &str) -> bool {
    (1..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub async fn request_envelope(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_request_id(v))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    // The route template, not the path: ids stay out of span names (OTel HTTP conventions).
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let name = match &route {
        Some(r) => format!("{method} {r}"),
        None => method.to_string(),
    };
    // Probes arrive every few seconds: their spans are debug-level, so neither logged nor exported
    // at the default levels.
    macro_rules! request_span {
        ($level:expr) => {
            tracing::span!(
                $level,
                "request",
                otel.name = %name,
                otel.kind = "server",
                otel.status_code = tracing::field::Empty,
                request_id = %id,
                http.request.method = %method,
                http.route = route,
                http.response.status_code = tracing::field::Empty,
            )
        };
    }
    let probe = path == "/healthz" || path == "/readyz";
    let span = if probe {
        request_span!(tracing::Level::DEBUG)
    } else {
        request_span!(tracing::Level::INFO)
    };
    let started = std::time::Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    if let Some(InternalDetail { public, detail }) =
        resp.extensions_mut().remove::<InternalDetail>()
    {
        let message = if state.expose_internal_errors {
            detail
        } else {
            public
        };
        resp = (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({ "message": message, "requestId": id })),
        )
            .into_response();
    } else if resp.status() == StatusCode::METHOD_NOT_ALLOWED && is_empty(&resp) {
        let allow = resp.headers().get(header::ALLOW).cloned();
        resp = (
            StatusCode::METHOD_NOT_ALLOWED,
            Json(serde_json::json!({ "message": "Method Not Allowed" })),
        )
            .into_response();
        if let Some(a) = allow {
            resp.headers_mut().insert(header::ALLOW, a);
        }
    }
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&id) {
        headers.insert(REQUEST_ID, v);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let status = resp.status().as_u16();
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    let ms = started.elapsed().as_millis() as u64;
    if probe {
        tracing::debug!(parent: &span, status, ms, "request");
    } else {
        tracing::info!(parent: &span, status, ms, path = %path, "request");
    }
    resp
}

fn is_empty(resp: &Response<Body>) -> bool {
    use axum::body::HttpBody;
    resp.body().size_hint().exact() == Some(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_id_rule() {
        assert!(super::valid_request_id("abc-1.2_3"));
        assert!(!super::valid_request_id(""));
        assert!(!super::valid_request_id("a b"));
        assert!(!super::valid_request_id(&"a".repeat(129)));
    }
}
