//! `POST /v1/vms/:id/exec`, `/run-ts`, `/run-js` (`docs/reference/api.md` §3.7–3.8).

use crate::api::error::ApiError;
use crate::api::extract::{JsonObject, VmId, KIB};
use crate::api::schema::{
    ErrorBody, ExecBody, ExecResultView, RunJsBody, RunResultView, RunTsBody, StreamLine,
};
use crate::api::{validate, AppState};
use crate::lifecycle::Runtime;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;

type Body1M = JsonObject<{ 1024 * KIB }>;

#[utoipa::path(post, path = "/vms/{id}/exec", tag = "vms", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = uuid::Uuid, Path, description = "VM id (UUID v4)")), request_body = ExecBody,
    responses((status = 200, description = "The result; with `Accept: application/x-ndjson`, the call streamed as JSON lines", content((ExecResultView = "application/json"), (StreamLine = "application/x-ndjson"))), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 502, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub async fn exec(
    State(st): State<AppState>,
    VmId(id): VmId,
    headers: HeaderMap,
    JsonObject(body): Body1M,
) -> Result<Response, ApiError> {
    let (req, timeout_ms) = validate::exec(&body, &st.limits)?;
    let started = std::time::Instant::now();
    if wants_stream(&headers) {
        let stream = st.vms.exec_stream(&id, req, timeout_ms).await;
        count(&st, "exec", started, stream.as_ref().err());
        return Ok(streamed(stream?));
    }
    let result = st.vms.exec(&id, &req, timeout_ms).await;
    count(&st, "exec", started, result.as_ref().err());
    let result = result?;
    Ok(
        Json(serde_json::to_value(result).map_err(|e| ApiError::internal(e.to_string()))?)
            .into_response(),
    )
}

/// `Accept: application/x-ndjson` asks for a streamed reply (`docs/api.md` "Streaming").
pub(super) fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(rds_protocol::stream::accepts_ndjson)
}

/// A 200 whose body is the call's JSON lines as they come; the duration metric counts until the
/// stream started.
fn streamed(lines: crate::lifecycle::LineStream) -> Response {
    (
        [
            (header::CONTENT_TYPE, rds_protocol::stream::NDJSON),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        axum::body::Body::from_stream(lines),
    )
        .into_response()
}

#[utoipa::path(post, path = "/vms/{id}/run-ts", tag = "vms", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = uuid::Uuid, Path, description = "VM id (UUID v4)")), request_body = RunTsBody,
    responses((status = 200, description = "The result; with `Accept: application/x-ndjson`, the run streamed as JSON lines", content((RunResultView = "application/json"), (StreamLine = "application/x-ndjson"))), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 502, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub async fn run_ts(
    st: State<AppState>,
    id: VmId,
    headers: HeaderMap,
    body: Body1M,
) -> Result<Response, ApiError> {
    run(st, id, headers, body, Runtime::Deno).await
}

#[utoipa::path(post, path = "/vms/{id}/run-js", tag = "vms", security(("ApiKeyAuth" = []), ("SessionCookie" = [])),
    params(("id" = uuid::Uuid, Path, description = "VM id (UUID v4)")), request_body = RunJsBody,
    responses((status = 200, description = "The result; with `Accept: application/x-ndjson`, the run streamed as JSON lines", content((RunResultView = "application/json"), (StreamLine = "application/x-ndjson"))), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 502, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub async fn run_js(
    st: State<AppState>,
    id: VmId,
    headers: HeaderMap,
    body: Body1M,
) -> Result<Response, ApiError> {
    run(st, id, headers, body, Runtime::Node).await
}

async fn run(
    State(st): State<AppState>,
    VmId(id): VmId,
    headers: HeaderMap,
    JsonObject(body): Body1M,
    rt: Runtime,
) -> Result<Response, ApiError> {
    let (req, timeout_ms) = validate::run(&body, &st.limits, rt == Runtime::Deno)?;
    let started = std::time::Instant::now();
    let kind = if rt == Runtime::Deno {
        "run-ts"
    } else {
        "run-js"
    };
    if wants_stream(&headers) {
        let stream = st.vms.run_stream(&id, rt, req, timeout_ms).await;
        count(&st, kind, started, stream.as_ref().err());
        return Ok(streamed(stream?));
    }
    let reply = st.vms.run(&id, rt, req, timeout_ms).await;
    count(&st, kind, started, reply.as_ref().err());
    let reply = reply?;
    // Serialised from the raw agent JSON, so `result` keeps every digit as produced.
    let bytes = serde_json::to_vec(&reply).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

/// `exec_total{kind,result}`, `exec_duration_seconds{kind}` and agent failures by kind.
fn count(
    st: &AppState,
    kind: &'static str,
    started: std::time::Instant,
    err: Option<&crate::lifecycle::LifecycleError>,
) {
    use crate::agent::AgentError;
    use crate::lifecycle::LifecycleError as L;
    let result = match err {
        None => "ok",
        Some(L::Agent(AgentError::Status { .. })) => "rejected",
        Some(_) => "error",
    };
    st.metrics
        .inc("rds_exec_total", &[("kind", kind), ("result", result)]);
    st.metrics.observe(
        "rds_exec_duration_seconds",
        &[("kind", kind)],
        started.elapsed().as_secs_f64(),
    );
    let failure = match err {
        Some(L::Agent(AgentError::Unreachable(_))) => Some("unreachable"),
        Some(L::Agent(AgentError::Timeout(_))) => Some("timeout"),
        Some(L::Agent(AgentError::Invalid(_))) => Some("invalid"),
        Some(L::Agent(AgentError::Status { status, .. })) if *status >= 500 => Some("error"),
        _ => None,
    };
    if let Some(f) = failure {
        st.metrics.inc(
            "rds_agent_errors_total",
            &[("endpoint", kind), ("outcome", f)],
        );
    }
}
